//! Checkpoint storage for the `weir` binary: `file://` URIs (and plain paths) on the local
//! filesystem, `s3://` on S3 through `weir-s3`, with `spec.checkpointing.s3` over the standard
//! AWS chain. The storage a job gets routes every location by its scheme, so checkpoints on
//! one and savepoints on the other both work.
//!
//! Embedded mode cannot read Kubernetes Secrets, so `spec.checkpointing.s3.credentialsSecret`
//! is not used here: credentials come from the AWS chain of the `weir` process.

use std::sync::{Arc, Mutex};

use weir_api::S3StorageSpec;
use weir_core::checkpoint::latest::{LatestPointer, VersionedPointer};
use weir_core::checkpoint::storage::{
    CheckpointStorage, LocalFsStorage, StorageError, StorageFactory,
};
use weir_s3::{S3Settings, S3Storage};

/// The S3 settings of a spec: endpoint, region and path style where given, the AWS chain for
/// the rest.
pub fn s3_settings(spec: Option<&S3StorageSpec>) -> S3Settings {
    let Some(s) = spec else {
        return S3Settings::default();
    };
    S3Settings {
        endpoint: s.endpoint.clone(),
        region: s.region.clone(),
        path_style: s.path_style,
        ..S3Settings::default()
    }
}

/// The note for a spec whose credentials Secret embedded mode cannot read, if it has one.
pub fn credentials_secret_note(spec: Option<&S3StorageSpec>) -> Option<String> {
    let secret = spec?.credentials_secret.as_ref()?;
    Some(format!(
        "note: spec.checkpointing.s3.credentialsSecret ({}) is read by the operator only; \
         `weir run` takes S3 credentials from the AWS chain (AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity)",
        secret.name
    ))
}

fn is_s3(uri: &str) -> bool {
    uri.get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("s3://"))
}

/// Opens the storage rooted at `uri`. An S3 root is checked at once (bucket, credentials,
/// endpoint), so a job fails at start with that error rather than at its first checkpoint.
pub fn open(uri: &str, settings: &S3Settings) -> Result<Arc<dyn CheckpointStorage>, StorageError> {
    let primary: Arc<dyn CheckpointStorage> = if is_s3(uri) {
        let s3 = S3Storage::open(uri, settings.clone())?;
        s3.check()?;
        Arc::new(s3)
    } else {
        Arc::new(LocalFsStorage::new(uri)?)
    };
    Ok(Arc::new(Routed {
        primary,
        settings: settings.clone(),
        s3: Mutex::new(None),
    }))
}

/// The factory to install in `JobSettings::storage`.
pub fn factory(settings: S3Settings) -> StorageFactory {
    Arc::new(move |uri: &str| open(uri, &settings))
}

/// A storage whose root-wide operations (listing, the latest pointer) go to the root's
/// backend, and whose operations on one location go to that location's backend.
struct Routed {
    primary: Arc<dyn CheckpointStorage>,
    settings: S3Settings,
    /// For `s3://` locations under a local root (savepoint targets), opened on first use.
    s3: Mutex<Option<Arc<dyn CheckpointStorage>>>,
}

impl std::fmt::Debug for Routed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routed")
            .field("primary", &self.primary)
            .finish()
    }
}

impl Routed {
    fn backend(&self, location: &str) -> Result<Arc<dyn CheckpointStorage>, StorageError> {
        let root_is_s3 = is_s3(&self.primary.root());
        if is_s3(location) == root_is_s3 {
            return Ok(self.primary.clone());
        }
        if !is_s3(location) {
            // The local storage's per-location operations use only the location.
            return Ok(Arc::new(LocalFsStorage::new(location)?));
        }
        let mut s3 = self
            .s3
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = s3.as_ref() {
            return Ok(s.clone());
        }
        // One client serves every bucket, whatever location it was opened for.
        let opened: Arc<dyn CheckpointStorage> =
            Arc::new(S3Storage::open(location, self.settings.clone())?);
        *s3 = Some(opened.clone());
        Ok(opened)
    }
}

impl CheckpointStorage for Routed {
    fn root(&self) -> String {
        self.primary.root()
    }

    fn checkpoint_location(&self, id: u64) -> String {
        self.primary.checkpoint_location(id)
    }

    fn write_file(&self, location: &str, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.backend(location)?.write_file(location, name, bytes)
    }

    fn read_file(&self, location: &str, name: &str) -> Result<Vec<u8>, StorageError> {
        self.backend(location)?.read_file(location, name)
    }

    fn write_metadata(&self, location: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.backend(location)?.write_metadata(location, bytes)
    }

    fn list_checkpoints(&self) -> Result<Vec<(u64, String)>, StorageError> {
        self.primary.list_checkpoints()
    }

    fn discard(&self, location: &str) -> Result<(), StorageError> {
        self.backend(location)?.discard(location)
    }

    fn shared_location(&self) -> Option<String> {
        self.primary.shared_location()
    }

    fn delete_file(&self, location: &str, name: &str) -> Result<(), StorageError> {
        self.backend(location)?.delete_file(location, name)
    }

    fn list_files(&self, location: &str) -> Result<Vec<String>, StorageError> {
        self.backend(location)?.list_files(location)
    }

    fn list_directories(&self, location: &str) -> Result<Vec<String>, StorageError> {
        self.backend(location)?.list_directories(location)
    }

    fn supports_latest_pointer(&self) -> bool {
        self.primary.supports_latest_pointer()
    }

    fn read_latest(&self) -> Result<Option<VersionedPointer>, StorageError> {
        self.primary.read_latest()
    }

    fn write_latest(
        &self,
        expected: Option<&str>,
        pointer: &LatestPointer,
    ) -> Result<String, StorageError> {
        self.primary.write_latest(expected, pointer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_settings_override_the_chain() {
        let s = s3_settings(Some(&S3StorageSpec {
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("eu-west-1".into()),
            path_style: Some(false),
            credentials_secret: Some(weir_api::S3CredentialsSecret::new("creds")),
        }));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.path_style, Some(false));
        assert!(
            s.credentials.is_none(),
            "embedded mode never reads the Secret"
        );
        let note = credentials_secret_note(Some(&S3StorageSpec {
            credentials_secret: Some(weir_api::S3CredentialsSecret::new("creds")),
            ..Default::default()
        }))
        .unwrap_or_default();
        assert!(note.contains("AWS chain"), "{note}");
        assert!(s3_settings(None).endpoint.is_none());
    }

    #[test]
    fn local_roots_route_local_locations_to_the_filesystem() {
        let dir = std::env::temp_dir().join(format!("weir-routed-{}", std::process::id()));
        let root = format!("file://{}", dir.display());
        let st = open(&root, &S3Settings::default()).unwrap();
        let sp = format!("{}/savepoints/savepoint-1-1", dir.display());
        st.write_file(&sp, "a.state", b"x").unwrap();
        assert_eq!(st.read_file(&sp, "a.state").ok(), Some(b"x".to_vec()));
        assert!(st.supports_latest_pointer());
        let _ = std::fs::remove_dir_all(dir);
    }
}
