//! Checkpoint storage as the operator reaches it: deleting savepoints it disposes of and, for
//! `deletionPolicy: dispose`, everything under a StreamJob's checkpoint storage — itself, so no
//! JobManager has to run. `file://` storage is the operator's own filesystem (tests, single
//! machines); `s3://` uses the StreamJob's `spec.checkpointing.s3` with the credentials of its
//! `credentialsSecret` (read by the operator), else the operator's AWS chain.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use weir_api::{CheckpointingSpec, S3StorageSpec};
use weir_core::checkpoint::storage::{CheckpointStorage, LocalFsStorage, StorageError};
use weir_s3::{S3Settings, S3Storage, StaticCredentials};

/// Why storage could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The credentials Secret could not be read.
    #[error("reading the S3 credentials Secret {name}: {source}")]
    Secret {
        /// The Secret.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// The credentials Secret lacks a key.
    #[error(
        "the S3 credentials Secret {name} has no key {key} (spec.checkpointing.s3.credentialsSecret)"
    )]
    SecretKey {
        /// The Secret.
        name: String,
        /// The key.
        key: String,
    },
    /// The storage refused.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// S3 refused.
    #[error("{0}")]
    S3(#[from] weir_s3::S3Error),
    /// The blocking task failed.
    #[error("storage task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn is_s3(uri: &str) -> bool {
    uri.get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("s3://"))
}

async fn settings(
    client: &Client,
    namespace: &str,
    s3: Option<&S3StorageSpec>,
) -> Result<S3Settings, Error> {
    let mut settings = S3Settings::default();
    let Some(s) = s3 else {
        return Ok(settings);
    };
    settings.endpoint = s.endpoint.clone();
    settings.region = s.region.clone();
    settings.path_style = s.path_style;
    if let Some(cs) = &s.credentials_secret {
        let secret = Api::<Secret>::namespaced(client.clone(), namespace)
            .get(&cs.name)
            .await
            .map_err(|source| Error::Secret {
                name: cs.name.clone(),
                source,
            })?;
        let key = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|v| String::from_utf8_lossy(&v.0).to_string())
                .ok_or_else(|| Error::SecretKey {
                    name: cs.name.clone(),
                    key: k.to_string(),
                })
        };
        settings.credentials = Some(StaticCredentials {
            access_key_id: key(&cs.access_key_id_key)?,
            secret_access_key: key(&cs.secret_access_key_key)?,
            session_token: None,
        });
    }
    Ok(settings)
}

/// Deletes the snapshots (savepoint or checkpoint directories, or a whole checkpoint root) at
/// `locations`, in the StreamJob's checkpoint storage.
pub async fn discard(
    client: &Client,
    namespace: &str,
    checkpointing: &CheckpointingSpec,
    locations: Vec<String>,
) -> Result<(), Error> {
    let settings = settings(client, namespace, checkpointing.s3.as_ref()).await?;
    let root = checkpointing.storage.clone();
    // The S3 client runs its own runtime, which must be neither used nor dropped on this one.
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let storage: Box<dyn CheckpointStorage> = if is_s3(&root) {
            Box::new(S3Storage::open(&root, settings)?)
        } else {
            Box::new(LocalFsStorage::new(&root)?)
        };
        for l in &locations {
            storage.discard(l)?;
        }
        Ok(())
    })
    .await?
}
