//! Where checkpoints and savepoints are written: the storage abstraction and its local
//! filesystem implementation (S3 comes as a leaf crate implementing the same trait).
//!
//! Layout under the checkpoint root: `chk-<id>/` per checkpoint, holding one file per operator
//! subtask and `_metadata`, which is written last and atomically (temporary file, fsync,
//! rename, fsync of the directory): a directory without `_metadata` is an incomplete
//! checkpoint and is never restored from. Savepoints use the same layout under
//! `<target>/savepoint-<id>-<timestamp>/`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the file that makes a snapshot directory complete.
pub const METADATA_FILE: &str = "_metadata";

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A URI the storage does not understand.
    #[error(
        "unsupported checkpoint storage {uri:?}: use file:///absolute/path (s3:// needs the S3 storage)"
    )]
    UnsupportedUri {
        /// The URI.
        uri: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Storage for snapshot files.
pub trait CheckpointStorage: Send + Sync + std::fmt::Debug {
    /// The root, for messages.
    fn root(&self) -> String;
    /// The directory of checkpoint `id`.
    fn checkpoint_location(&self, id: u64) -> String;
    /// Writes a file durably.
    fn write_file(&self, location: &str, name: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// Reads a file.
    fn read_file(&self, location: &str, name: &str) -> Result<Vec<u8>, StorageError>;
    /// Writes `_metadata` atomically: readers see all of it or nothing.
    fn write_metadata(&self, location: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// Completed checkpoints under the root (those with `_metadata`), oldest first.
    fn list_checkpoints(&self) -> Result<Vec<(u64, String)>, StorageError>;
    /// Deletes a snapshot directory.
    fn discard(&self, location: &str) -> Result<(), StorageError>;
}

/// Turns `file:///a/b`, `file://rel/dir` or a plain path into a path.
pub fn local_path(uri: &str) -> Result<PathBuf, StorageError> {
    if let Some(rest) = uri.strip_prefix("file://") {
        return Ok(PathBuf::from(rest));
    }
    if uri.contains("://") {
        return Err(StorageError::UnsupportedUri {
            uri: uri.to_string(),
        });
    }
    Ok(PathBuf::from(uri))
}

/// Checkpoints on a local (or mounted) filesystem.
#[derive(Debug, Clone)]
pub struct LocalFsStorage {
    root: PathBuf,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", dir))
}

impl LocalFsStorage {
    /// Storage rooted at `uri` (`file://` or a path).
    pub fn new(uri: &str) -> Result<Self, StorageError> {
        Ok(Self {
            root: local_path(uri)?,
        })
    }

    fn dir(&self, location: &str) -> Result<PathBuf, StorageError> {
        local_path(location)
    }
}

impl CheckpointStorage for LocalFsStorage {
    fn root(&self) -> String {
        self.root.display().to_string()
    }

    fn checkpoint_location(&self, id: u64) -> String {
        self.root.join(format!("chk-{id}")).display().to_string()
    }

    fn write_file(&self, location: &str, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let dir = self.dir(location)?;
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let path = dir.join(name);
        let mut f = fs::File::create(&path).map_err(io("create", &path))?;
        f.write_all(bytes).map_err(io("write", &path))?;
        f.sync_all().map_err(io("fsync", &path))
    }

    fn read_file(&self, location: &str, name: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.dir(location)?.join(name);
        fs::read(&path).map_err(io("read", &path))
    }

    fn write_metadata(&self, location: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let dir = self.dir(location)?;
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let tmp = dir.join(format!("{METADATA_FILE}.inprogress"));
        let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        let dst = dir.join(METADATA_FILE);
        fs::rename(&tmp, &dst).map_err(io("rename", &dst))?;
        fsync_dir(&dir)
    }

    fn list_checkpoints(&self) -> Result<Vec<(u64, String)>, StorageError> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StorageError::Io {
                    op: "list",
                    path: self.root.clone(),
                    source: e,
                });
            }
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(id) = name
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if entry.path().join(METADATA_FILE).is_file() {
                out.push((id, entry.path().display().to_string()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn discard(&self, location: &str) -> Result<(), StorageError> {
        let dir = self.dir(location)?;
        // `_metadata` goes first: a directory interrupted while being deleted must not look
        // like a complete checkpoint.
        match fs::remove_file(dir.join(METADATA_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StorageError::Io {
                    op: "delete",
                    path: dir.join(METADATA_FILE),
                    source: e,
                });
            }
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::Io {
                op: "delete",
                path: dir,
                source: e,
            }),
        }
    }
}

/// Opens the storage for a URI.
pub fn open_storage(uri: &str) -> Result<std::sync::Arc<dyn CheckpointStorage>, StorageError> {
    Ok(std::sync::Arc::new(LocalFsStorage::new(uri)?))
}

/// Opens checkpoint storage for a URI; binaries with more storages (S3) install their own in
/// `JobSettings::storage`, falling back to [`open_storage`] for `file://`.
pub type StorageFactory = std::sync::Arc<
    dyn Fn(&str) -> Result<std::sync::Arc<dyn CheckpointStorage>, StorageError> + Send + Sync,
>;
