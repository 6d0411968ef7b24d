//! Checkpoint storage on S3 and S3-compatible object stores: the engine's
//! [`CheckpointStorage`] for `s3://bucket/prefix` URIs.
//!
//! Layout, as on a filesystem: `<prefix>/chk-<id>/` holds one object per operator subtask and
//! `_metadata`, written last (a PUT is atomic, so readers see all of it or nothing);
//! savepoints go to `<target>/savepoint-<id>-<timestamp>/`. Next to the checkpoints,
//! `<prefix>/_latest` is the job's latest-checkpoint pointer, advanced with conditional writes
//! (`If-Match` on its ETag, `If-None-Match: *` while absent) and carrying the writer's fencing
//! epoch (see [`weir_core::checkpoint::latest`]).
//!
//! Files of `multipart_threshold` bytes or more are uploaded in parts, several at once; a
//! failed multipart upload is aborted so no parts linger. Every request is retried with
//! exponential backoff while a retry can help, within a deadline per operation. The trait is
//! synchronous, so the storage owns a small tokio runtime and blocks on it.

mod error;
mod multipart;
mod retry;
mod settings;

pub use error::{S3Error, S3ErrorKind};
pub use settings::{DEFAULT_REGION, MIN_PART_SIZE, S3Settings, StaticCredentials};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use error::{Failure, FailureKind, classify};
use retry::{GaveUp, Policy, retry};
use std::future::Future;
use std::time::Instant;
use weir_api::CheckpointStorageUri;
use weir_core::checkpoint::latest::{LatestPointer, VersionedPointer};
use weir_core::checkpoint::storage::{
    CheckpointStorage, LATEST_POINTER, METADATA_FILE, SHARED_DIR, StorageError,
};

/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// A bucket and key, parsed from an `s3://` location.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObjectPath {
    bucket: String,
    /// Key (for a directory: its prefix, without a trailing `/`; empty at the bucket's root).
    key: String,
}

impl ObjectPath {
    fn parse(location: &str) -> Result<Self, S3ErrorKind> {
        match CheckpointStorageUri::parse_for_field(location, "location") {
            Ok(CheckpointStorageUri::S3 { bucket, prefix }) => Ok(Self {
                bucket,
                key: prefix,
            }),
            Ok(CheckpointStorageUri::File { .. }) => Err(S3ErrorKind::Location(format!(
                "{location} is not an s3:// location; the S3 storage writes only to S3"
            ))),
            Err(e) => Err(S3ErrorKind::Location(e.to_string())),
        }
    }

    /// The root of `bucket`.
    fn bucket(bucket: &str) -> Self {
        Self {
            bucket: bucket.to_string(),
            key: String::new(),
        }
    }

    fn child(&self, name: &str) -> Self {
        Self {
            bucket: self.bucket.clone(),
            key: if self.key.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", self.key)
            },
        }
    }

    /// The prefix that lists what is inside this directory.
    fn dir_prefix(&self) -> String {
        if self.key.is_empty() {
            String::new()
        } else {
            format!("{}/", self.key)
        }
    }

    fn uri(&self) -> String {
        if self.key.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.key)
        }
    }
}

/// Checkpoints in an S3 bucket.
pub struct S3Storage {
    inner: Inner,
    root: ObjectPath,
    /// `None` only while dropping: the runtime is shut down in the background, which is
    /// allowed anywhere, even inside another runtime.
    rt: Option<tokio::runtime::Runtime>,
}

/// What requests need: borrowed by the futures of parallel part uploads.
pub(crate) struct Inner {
    pub client: aws_sdk_s3::Client,
    pub settings: S3Settings,
    pub endpoint: String,
    pub custom_endpoint: bool,
    /// Multipart uploads completed, for tests and metrics.
    pub uploads_in_parts: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("root", &self.root.uri())
            .field("endpoint", &self.inner.endpoint)
            .finish()
    }
}

impl Drop for S3Storage {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Inner {
    fn policy(&self) -> Policy {
        Policy {
            max_attempts: self.settings.max_attempts.max(1),
            initial_backoff: self.settings.initial_backoff,
            max_backoff: self.settings.max_backoff,
            deadline: Instant::now() + self.settings.operation_deadline,
        }
    }

    /// The error for a request on `at` that failed for good.
    pub(crate) fn error(&self, op: &'static str, at: &ObjectPath, g: GaveUp) -> S3Error {
        let endpoint = self.endpoint.clone();
        let kind = match g.last.kind {
            FailureKind::NoSuchBucket => S3ErrorKind::NoSuchBucket {
                bucket: at.bucket.clone(),
                endpoint_flag: if self.custom_endpoint {
                    format!(" --endpoint-url {endpoint}")
                } else {
                    String::new()
                },
                endpoint,
            },
            FailureKind::NotFound => S3ErrorKind::NotFound,
            FailureKind::PreconditionFailed => S3ErrorKind::PreconditionFailed,
            FailureKind::Credentials => S3ErrorKind::Credentials {
                endpoint,
                message: g.last.message,
            },
            FailureKind::Unreachable => S3ErrorKind::Unreachable {
                endpoint,
                message: g.last.message,
                attempts: g.attempts,
                elapsed: g.elapsed,
            },
            FailureKind::Transient | FailureKind::Permanent => S3ErrorKind::Service {
                endpoint,
                message: g.last.message,
                attempts: g.attempts,
                elapsed: g.elapsed,
            },
        };
        S3Error {
            op,
            location: at.uri(),
            kind,
        }
    }

    /// Runs one request with retries under a fresh operation deadline.
    async fn request<T, F, Fut>(
        &self,
        op: &'static str,
        at: &ObjectPath,
        f: F,
    ) -> Result<T, S3Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        retry(&self.policy(), f)
            .await
            .map_err(|g| self.error(op, at, g))
    }

    async fn put(&self, at: &ObjectPath, body: bytes::Bytes) -> Result<(), S3Error> {
        self.request("write", at, || {
            let req = self
                .client
                .put_object()
                .bucket(&at.bucket)
                .key(&at.key)
                .body(ByteStream::from(body.clone()));
            async move { req.send().await.map(|_| ()).map_err(|e| classify(&e)) }
        })
        .await
    }

    async fn get(&self, at: &ObjectPath) -> Result<(Vec<u8>, Option<String>), S3Error> {
        self.request("read", at, || async {
            let out = self
                .client
                .get_object()
                .bucket(&at.bucket)
                .key(&at.key)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            let etag = out.e_tag().map(str::to_string);
            // A body cut off midway is a transient failure: the whole GET is retried.
            let body = out.body.collect().await.map_err(|e| {
                Failure::new(FailureKind::Transient, format!("reading the body: {e}"))
            })?;
            Ok((body.into_bytes().to_vec(), etag))
        })
        .await
    }

    async fn exists(&self, at: &ObjectPath) -> Result<bool, S3Error> {
        let r = self
            .request("look up", at, || async {
                self.client
                    .head_object()
                    .bucket(&at.bucket)
                    .key(&at.key)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(&e))
            })
            .await;
        match r {
            Ok(()) => Ok(true),
            Err(S3Error {
                kind: S3ErrorKind::NotFound,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every key under `prefix`, following continuation tokens.
    async fn list_keys(&self, at: &ObjectPath, prefix: &str) -> Result<Vec<String>, S3Error> {
        self.list(at, prefix, None).await.map(|(keys, _)| keys)
    }

    /// The common prefixes (sub-"directories") directly under `prefix`.
    async fn list_dirs(&self, at: &ObjectPath, prefix: &str) -> Result<Vec<String>, S3Error> {
        self.list(at, prefix, Some("/")).await.map(|(_, dirs)| dirs)
    }

    async fn list(
        &self,
        at: &ObjectPath,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<String>, Vec<String>), S3Error> {
        let mut keys = Vec::new();
        let mut dirs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .request("list", at, || {
                    let req = self
                        .client
                        .list_objects_v2()
                        .bucket(&at.bucket)
                        .prefix(prefix)
                        .set_delimiter(delimiter.map(str::to_string))
                        .set_continuation_token(token.clone());
                    async move { req.send().await.map_err(|e| classify(&e)) }
                })
                .await?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            dirs.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_string)),
            );
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok((keys, dirs)),
            }
        }
    }

    /// Deletes `keys`, a batch per request.
    async fn delete_keys(&self, at: &ObjectPath, keys: &[String]) -> Result<(), S3Error> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects: Vec<ObjectIdentifier> = batch
                .iter()
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| S3Error {
                    op: "delete",
                    location: at.uri(),
                    kind: S3ErrorKind::Config(e.to_string()),
                })?;
            let out = self
                .request("delete", at, || {
                    let req = self
                        .client
                        .delete_objects()
                        .bucket(&at.bucket)
                        .delete(delete.clone());
                    async move { req.send().await.map_err(|e| classify(&e)) }
                })
                .await?;
            if let Some(first) = out.errors().first() {
                return Err(S3Error {
                    op: "delete",
                    location: at.uri(),
                    kind: S3ErrorKind::Service {
                        endpoint: self.endpoint.clone(),
                        message: format!(
                            "{} of {} objects not deleted, e.g. {}: {}",
                            out.errors().len(),
                            batch.len(),
                            first.key().unwrap_or("?"),
                            first
                                .message()
                                .or(first.code())
                                .unwrap_or("no reason given")
                        ),
                        attempts: 1,
                        elapsed: std::time::Duration::ZERO,
                    },
                });
            }
        }
        Ok(())
    }
}

impl S3Storage {
    /// Storage rooted at `uri` (`s3://bucket/prefix`). Makes no request: a missing bucket or
    /// an unreachable endpoint shows in the first operation (see [`S3Storage::check`]).
    pub fn open(uri: &str, settings: S3Settings) -> Result<Self, S3Error> {
        let config_error = |kind| S3Error {
            op: "open",
            location: uri.to_string(),
            kind,
        };
        let root = ObjectPath::parse(uri).map_err(config_error)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-s3")
            .enable_all()
            .build()
            .map_err(|e| config_error(S3ErrorKind::Config(format!("starting a runtime: {e}"))))?;
        let built = rt
            .block_on(settings::build_client(&settings))
            .map_err(config_error)?;
        Ok(Self {
            inner: Inner {
                client: built.client,
                settings,
                endpoint: built.endpoint,
                custom_endpoint: built.custom_endpoint,
                uploads_in_parts: std::sync::atomic::AtomicU64::new(0),
            },
            root,
            rt: Some(rt),
        })
    }

    /// The endpoint requests go to, for messages.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// How many files were uploaded in parts so far.
    pub fn multipart_uploads(&self) -> u64 {
        self.inner
            .uploads_in_parts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks on `f` on the storage's runtime; from inside another runtime (an async caller)
    /// on a helper thread, since a runtime cannot block inside another.
    fn block<T: Send>(&self, f: impl Future<Output = T> + Send) -> T {
        let Some(rt) = &self.rt else {
            unreachable!("the runtime is only taken while dropping")
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(f))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            rt.block_on(f)
        }
    }

    fn path(&self, location: &str) -> Result<ObjectPath, S3Error> {
        ObjectPath::parse(location).map_err(|kind| S3Error {
            op: "locate",
            location: location.to_string(),
            kind,
        })
    }

    /// Checks that the bucket exists and the credentials may use it: fails fast at start with
    /// the same clear errors a checkpoint would meet later.
    pub fn check(&self) -> Result<(), S3Error> {
        let root = self.root.clone();
        let inner = &self.inner;
        self.block(async move {
            inner
                .request("open", &root, || async {
                    inner
                        .client
                        .head_bucket()
                        .bucket(&root.bucket)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            let mut f = classify(&e);
                            // HEAD answers have no body, so a missing bucket is a bare 404.
                            if f.kind == FailureKind::NotFound {
                                f.kind = FailureKind::NoSuchBucket;
                            }
                            f
                        })
                })
                .await
        })
    }

    /// Creates `bucket` if it does not exist (for tools and tests).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), S3Error> {
        let at = ObjectPath::bucket(bucket);
        let inner = &self.inner;
        self.block(async move {
            inner
                .request("create bucket", &at, || async {
                    match inner.client.create_bucket().bucket(&at.bucket).send().await {
                        Ok(_) => Ok(()),
                        Err(e)
                            if matches!(
                                e.as_service_error().and_then(|s| {
                                    aws_sdk_s3::error::ProvideErrorMetadata::code(s)
                                }),
                                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                            ) =>
                        {
                            Ok(())
                        }
                        Err(e) => Err(classify(&e)),
                    }
                })
                .await
        })
    }

    /// Deletes every object of `bucket` and the bucket (for tools and tests).
    pub fn delete_bucket(&self, bucket: &str) -> Result<(), S3Error> {
        let at = ObjectPath::bucket(bucket);
        let inner = &self.inner;
        self.block(async move {
            let keys = inner.list_keys(&at, "").await?;
            inner.delete_keys(&at, &keys).await?;
            inner
                .request("delete bucket", &at, || async {
                    inner
                        .client
                        .delete_bucket()
                        .bucket(&at.bucket)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| classify(&e))
                })
                .await
        })
    }

    /// Every object under `location`, as `s3://` URIs, sorted (for tools and tests).
    pub fn list_objects(&self, location: &str) -> Result<Vec<String>, S3Error> {
        let at = self.path(location)?;
        let inner = &self.inner;
        let mut keys = self.block(async move { inner.list_keys(&at, &at.dir_prefix()).await })?;
        keys.sort();
        let bucket = self.path(location)?.bucket;
        Ok(keys
            .into_iter()
            .map(|k| format!("s3://{bucket}/{k}"))
            .collect())
    }

    /// Deletes one object (for tools and tests).
    pub fn delete_object(&self, location: &str) -> Result<(), S3Error> {
        let at = self.path(location)?;
        let inner = &self.inner;
        self.block(async move { inner.delete_keys(&at, std::slice::from_ref(&at.key)).await })
    }

    /// Writes an object as checkpoint files are written: in parts from the multipart
    /// threshold on.
    pub fn put_object(&self, location: &str, bytes: &[u8]) -> Result<(), S3Error> {
        let at = self.path(location)?;
        let inner = &self.inner;
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.block(async move {
            if body.len() >= inner.settings.multipart_threshold {
                multipart::upload(inner, &at, body).await
            } else {
                inner.put(&at, body).await
            }
        })
    }

    /// Reads an object.
    pub fn get_object(&self, location: &str) -> Result<Vec<u8>, S3Error> {
        let at = self.path(location)?;
        let inner = &self.inner;
        self.block(async move { inner.get(&at).await.map(|(b, _)| b) })
    }

    /// Objects of `bucket` whose multipart uploads were started and neither completed nor
    /// aborted (for tests: a failed upload must leave none).
    pub fn pending_uploads(&self, bucket: &str) -> Result<Vec<String>, S3Error> {
        let at = ObjectPath::bucket(bucket);
        let inner = &self.inner;
        self.block(async move {
            inner
                .request("list uploads", &at, || async {
                    inner
                        .client
                        .list_multipart_uploads()
                        .bucket(&at.bucket)
                        .send()
                        .await
                        .map(|o| {
                            o.uploads()
                                .iter()
                                .filter_map(|u| u.key().map(str::to_string))
                                .collect()
                        })
                        .map_err(|e| classify(&e))
                })
                .await
        })
    }

    /// The names of the "directories" directly under an `s3://` location (`chk-3`,
    /// `savepoint-…`, `savepoints`), for listings.
    pub fn list_dirs(&self, location: &str) -> Result<Vec<String>, S3Error> {
        let at = self.path(location)?;
        let inner = &self.inner;
        let dirs = self.block(async move { inner.list_dirs(&at, &at.dir_prefix()).await })?;
        Ok(dirs
            .iter()
            .filter_map(|d| d.trim_end_matches('/').rsplit('/').next())
            .map(str::to_string)
            .collect())
    }

    fn pointer_path(&self) -> ObjectPath {
        self.root.child(LATEST_POINTER)
    }
}

impl CheckpointStorage for S3Storage {
    fn root(&self) -> String {
        self.root.uri()
    }

    fn checkpoint_location(&self, id: u64) -> String {
        self.root.child(&format!("chk-{id}")).uri()
    }

    fn write_file(&self, location: &str, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let at = self.path(location)?.child(name);
        Ok(self.put_object(&at.uri(), bytes)?)
    }

    fn read_file(&self, location: &str, name: &str) -> Result<Vec<u8>, StorageError> {
        let at = self.path(location)?.child(name);
        Ok(self.get_object(&at.uri())?)
    }

    fn write_metadata(&self, location: &str, bytes: &[u8]) -> Result<(), StorageError> {
        // A PUT is atomic: the object appears whole or not at all. Metadata is small, so it is
        // never uploaded in parts (where a completed upload would be atomic too).
        let at = self.path(location)?.child(METADATA_FILE);
        let inner = &self.inner;
        let body = bytes::Bytes::copy_from_slice(bytes);
        Ok(self.block(async move { inner.put(&at, body).await })?)
    }

    fn list_checkpoints(&self) -> Result<Vec<(u64, String)>, StorageError> {
        let root = self.root.clone();
        let inner = &self.inner;
        let out = self.block(async move {
            let mut out = Vec::new();
            for dir in inner.list_dirs(&root, &root.dir_prefix()).await? {
                let name = dir
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                let Some(id) = name
                    .strip_prefix("chk-")
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                let chk = root.child(name);
                if inner.exists(&chk.child(METADATA_FILE)).await? {
                    out.push((id, chk.uri()));
                }
            }
            out.sort();
            Ok::<_, S3Error>(out)
        })?;
        Ok(out)
    }

    fn discard(&self, location: &str) -> Result<(), StorageError> {
        let dir = self.path(location)?;
        let inner = &self.inner;
        Ok(self.block(async move {
            let mut keys = inner.list_keys(&dir, &dir.dir_prefix()).await?;
            // `_metadata` goes first: a checkpoint interrupted while being deleted must not
            // look complete.
            let metadata = dir.child(METADATA_FILE).key;
            if let Some(i) = keys.iter().position(|k| *k == metadata) {
                let k = keys.remove(i);
                inner.delete_keys(&dir, &[k]).await?;
            }
            // Stores with real directories (SeaweedFS) keep an emptied one listed until its
            // marker `<dir>/` is deleted too; on S3 that key does not exist, which is fine.
            if !dir.key.is_empty() {
                keys.push(dir.dir_prefix());
            }
            inner.delete_keys(&dir, &keys).await
        })?)
    }

    fn shared_location(&self) -> Option<String> {
        Some(self.root.child(SHARED_DIR).uri())
    }

    fn delete_file(&self, location: &str, name: &str) -> Result<(), StorageError> {
        let at = self.path(location)?.child(name);
        Ok(self.delete_object(&at.uri())?)
    }

    fn list_files(&self, location: &str) -> Result<Vec<String>, StorageError> {
        let prefix = format!("{}/", location.trim_end_matches('/'));
        Ok(self
            .list_objects(location)?
            .into_iter()
            .filter_map(|uri| {
                uri.strip_prefix(&prefix)
                    .filter(|n| !n.is_empty() && !n.contains('/'))
                    .map(str::to_string)
            })
            .collect())
    }

    fn list_directories(&self, location: &str) -> Result<Vec<String>, StorageError> {
        // The inherent listing: common prefixes under `location/`, which is empty when nothing
        // is stored there (S3 has no directories to be missing).
        let mut dirs = S3Storage::list_dirs(self, location)?;
        dirs.sort();
        Ok(dirs)
    }

    fn supports_latest_pointer(&self) -> bool {
        true
    }

    fn read_latest(&self) -> Result<Option<VersionedPointer>, StorageError> {
        let at = self.pointer_path();
        let inner = &self.inner;
        let read = self.block(async move { inner.get(&at).await });
        let (bytes, etag) = match read {
            Ok(r) => r,
            Err(S3Error {
                kind: S3ErrorKind::NotFound,
                ..
            }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let location = self.pointer_path().uri();
        let pointer = LatestPointer::decode(&bytes).map_err(|message| StorageError::Remote {
            op: "read",
            location: location.clone(),
            message,
        })?;
        let version = etag.ok_or_else(|| StorageError::Remote {
            op: "read",
            location,
            message: "the store returned no ETag, which conditional writes need".into(),
        })?;
        Ok(Some(VersionedPointer { pointer, version }))
    }

    fn write_latest(
        &self,
        expected: Option<&str>,
        pointer: &LatestPointer,
    ) -> Result<String, StorageError> {
        let at = self.pointer_path();
        let inner = &self.inner;
        let body = bytes::Bytes::from(pointer.encode());
        let expected = expected.map(str::to_string);
        let etag = self.block(async move {
            inner
                .request("write", &at, || {
                    let req = inner
                        .client
                        .put_object()
                        .bucket(&at.bucket)
                        .key(&at.key)
                        .body(ByteStream::from(body.clone()));
                    // The compare-and-set: only over the version read, or only if absent.
                    let req = match &expected {
                        Some(etag) => req.if_match(etag),
                        None => req.if_none_match("*"),
                    };
                    async move {
                        let out = req.send().await.map_err(|e| classify(&e))?;
                        Ok(out.e_tag().map(str::to_string))
                    }
                })
                .await
        })?;
        match etag {
            Some(e) => Ok(e),
            // Without an ETag in the answer, the next read supplies it.
            None => self
                .read_latest()?
                .map(|v| v.version)
                .ok_or_else(|| StorageError::NotFound {
                    location: self.pointer_path().uri(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_into_bucket_and_key() {
        let p = ObjectPath::parse("s3://bkt/jobs/orders/").unwrap();
        assert_eq!(p.key, "jobs/orders");
        assert_eq!(
            p.child("chk-3").child("_metadata").uri(),
            "s3://bkt/jobs/orders/chk-3/_metadata"
        );
        assert_eq!(p.dir_prefix(), "jobs/orders/");
        let root = ObjectPath::parse("s3://bkt").unwrap();
        assert_eq!((root.key.as_str(), root.dir_prefix()), ("", String::new()));
        assert_eq!(root.child("chk-1").uri(), "s3://bkt/chk-1");
        assert!(ObjectPath::parse("file:///tmp/x").is_err());
        assert!(ObjectPath::parse("s3://Bad_Bucket/x").is_err());
    }
}
