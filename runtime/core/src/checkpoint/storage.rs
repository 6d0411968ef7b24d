//! Where checkpoints and savepoints are written: the storage abstraction and its local
//! filesystem implementation (S3 comes as a leaf crate implementing the same trait).
//!
//! Layout under the checkpoint root: `chk-<id>/` per checkpoint, holding one file per operator
//! subtask and `_metadata`, which is written last and atomically (temporary file, fsync,
//! rename, fsync of the directory): a directory without `_metadata` is an incomplete
//! checkpoint and is never restored from. Savepoints use the same layout under
//! `<target>/savepoint-<id>-<timestamp>/`.
//!
//! A storage may also keep the job's latest-checkpoint pointer (see [`super::latest`]): the
//! local one keeps numbered versions under `<root>/_latest/`, each created with a no-clobber
//! hard link, so that of two writers expecting the same version only one can create the next.

use super::latest::{LatestPointer, VersionedPointer};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the file that makes a snapshot directory complete.
pub const METADATA_FILE: &str = "_metadata";

/// Directory under the checkpoint root holding files shared between incremental checkpoints.
pub const SHARED_DIR: &str = "shared";

/// Name of the latest-checkpoint pointer under the checkpoint root (an object on S3, a
/// directory of numbered versions on a local filesystem).
pub const LATEST_POINTER: &str = "_latest";

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
    /// A file or object that does not exist.
    #[error("{location}: not found")]
    NotFound {
        /// What was looked for.
        location: String,
    },
    /// A remote storage (an object store) failed; the message says why and what to do.
    #[error("{op} {location}: {message}")]
    Remote {
        /// What was attempted.
        op: &'static str,
        /// The location.
        location: String,
        /// Why it failed, with the fix where there is one.
        message: String,
    },
    /// A conditional write of the latest pointer lost: the pointer changed since it was read.
    #[error("{location}: changed by another writer since it was read ({message})")]
    Conflict {
        /// The pointer.
        location: String,
        /// Details.
        message: String,
    },
    /// The latest pointer carries a higher fencing epoch than this writer holds: another
    /// instance of the job took over this checkpoint storage.
    #[error(
        "{location}: this job was deposed: the latest pointer carries fencing epoch {pointer_epoch} \
         (writer {pointer_writer}), this writer holds epoch {writer_epoch}; another instance of \
         the job now writes to this checkpoint storage, so this one must not record checkpoints"
    )]
    Fenced {
        /// The pointer.
        location: String,
        /// The epoch this writer holds.
        writer_epoch: u64,
        /// The epoch found in the pointer.
        pointer_epoch: u64,
        /// Who wrote the pointer.
        pointer_writer: String,
    },
    /// The storage cannot do what was asked (an older storage without shared files).
    #[error("{root}: this checkpoint storage does not support {what}")]
    Unsupported {
        /// The storage root.
        root: String,
        /// What it cannot do.
        what: &'static str,
    },
    /// The storage keeps no latest pointer.
    #[error("{root}: this checkpoint storage keeps no latest pointer")]
    NoLatestPointer {
        /// The storage root.
        root: String,
    },
}

impl StorageError {
    /// Whether the file or object does not exist (as opposed to the storage failing).
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::NotFound { .. } => true,
            Self::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
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

    /// The location of files shared between incremental checkpoints (`<root>/shared`);
    /// `None` when this storage keeps none, so backends write full snapshots.
    fn shared_location(&self) -> Option<String> {
        None
    }

    /// Deletes one file; a file that does not exist is not an error.
    fn delete_file(&self, location: &str, name: &str) -> Result<(), StorageError> {
        let _ = (location, name);
        Err(StorageError::Unsupported {
            root: self.root(),
            what: "deleting single files",
        })
    }

    /// The names of the files directly in `location` (none when it does not exist).
    fn list_files(&self, location: &str) -> Result<Vec<String>, StorageError> {
        let _ = location;
        Err(StorageError::Unsupported {
            root: self.root(),
            what: "listing files",
        })
    }

    /// The names of the directories directly in `location` (none when it does not exist), e.g.
    /// the `savepoint-*` directories of a savepoint target, which a restore searches for the
    /// newest savepoint.
    fn list_directories(&self, location: &str) -> Result<Vec<String>, StorageError> {
        let _ = location;
        Err(StorageError::Unsupported {
            root: self.root(),
            what: "listing directories",
        })
    }

    /// Whether this storage keeps the job's latest-checkpoint pointer. Storages that do not
    /// are restored by listing alone, and nothing fences their writers.
    fn supports_latest_pointer(&self) -> bool {
        false
    }

    /// Reads the latest-checkpoint pointer with the version a conditional write must name;
    /// `None` when none was ever written.
    fn read_latest(&self) -> Result<Option<VersionedPointer>, StorageError> {
        Ok(None)
    }

    /// Writes the latest-checkpoint pointer if its current version is `expected` (`None`:
    /// only if there is no pointer yet), returning the new version. Of two writers naming the
    /// same version only one succeeds; the other gets [`StorageError::Conflict`]. Callers go
    /// through [`super::latest::claim_epoch`] and [`super::latest::advance_latest`], which add
    /// the fencing rules.
    fn write_latest(
        &self,
        expected: Option<&str>,
        pointer: &LatestPointer,
    ) -> Result<String, StorageError> {
        let _ = (expected, pointer);
        Err(StorageError::NoLatestPointer { root: self.root() })
    }
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

    fn pointer_dir(&self) -> PathBuf {
        self.root.join(LATEST_POINTER)
    }

    /// The names of the entries directly in `location` of a type `keep` accepts, sorted; none
    /// when it does not exist.
    fn entries(
        &self,
        location: &str,
        keep: fn(&fs::FileType) -> bool,
    ) -> Result<Vec<String>, StorageError> {
        let dir = self.dir(location)?;
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &dir)(e)),
        };
        let mut out: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| keep(&t)))
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        out.sort();
        Ok(out)
    }

    /// The pointer versions present, unordered (`v-<n>` files; anything else is ignored).
    fn pointer_versions(&self) -> Result<Vec<u64>, StorageError> {
        let dir = self.pointer_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &dir)(e)),
        };
        Ok(rd
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("v-"))
                    .and_then(|n| n.parse().ok())
            })
            .collect())
    }
}

fn version_file(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("v-{version:020}"))
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

    fn shared_location(&self) -> Option<String> {
        Some(self.root.join(SHARED_DIR).display().to_string())
    }

    fn delete_file(&self, location: &str, name: &str) -> Result<(), StorageError> {
        let path = self.dir(location)?.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete", &path)(e)),
        }
    }

    fn list_files(&self, location: &str) -> Result<Vec<String>, StorageError> {
        self.entries(location, fs::FileType::is_file)
    }

    fn list_directories(&self, location: &str) -> Result<Vec<String>, StorageError> {
        self.entries(location, fs::FileType::is_dir)
    }

    fn supports_latest_pointer(&self) -> bool {
        true
    }

    fn read_latest(&self) -> Result<Option<VersionedPointer>, StorageError> {
        // A version can be deleted between listing and reading once a newer one exists; the
        // newer one is then listed on the next try.
        for _ in 0..8 {
            let Some(newest) = self.pointer_versions()?.into_iter().max() else {
                return Ok(None);
            };
            let path = version_file(&self.pointer_dir(), newest);
            match fs::read(&path) {
                Ok(bytes) => {
                    let pointer =
                        LatestPointer::decode(&bytes).map_err(|message| StorageError::Io {
                            op: "decode",
                            path: path.clone(),
                            source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
                        })?;
                    return Ok(Some(VersionedPointer {
                        pointer,
                        version: newest.to_string(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &path)(e)),
            }
        }
        Err(StorageError::Conflict {
            location: self.pointer_dir().display().to_string(),
            message: "the pointer kept changing while it was read".into(),
        })
    }

    fn write_latest(
        &self,
        expected: Option<&str>,
        pointer: &LatestPointer,
    ) -> Result<String, StorageError> {
        let dir = self.pointer_dir();
        let conflict = |message: String| StorageError::Conflict {
            location: dir.display().to_string(),
            message,
        };
        let expected = match expected {
            None => 0,
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| conflict(format!("{v:?} is not a version of this pointer")))?,
        };
        let next = expected + 1;
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        // The content is complete before the version appears: written to a private file, then
        // hard-linked under the version's name, which fails if the name exists — the
        // compare-and-set. Rename would silently replace a concurrent writer's version.
        static TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = dir.join(format!(
            "tmp-{}-{}",
            std::process::id(),
            TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&pointer.encode()).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        let target = version_file(&dir, next);
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(conflict(format!("version {next} exists already")));
            }
            Err(e) => return Err(io("link", &target)(e)),
        }
        fsync_dir(&dir)?;
        // Old versions are deleted once a newer one exists, so a writer holding a stale
        // version can re-create a deleted name; it then is not the newest, and it lost.
        let versions = self.pointer_versions()?;
        if versions.iter().any(|&v| v > next) {
            let _ = fs::remove_file(&target);
            return Err(conflict(format!(
                "version {expected} is no longer the newest"
            )));
        }
        for v in versions.into_iter().filter(|&v| v + 1 < next) {
            let _ = fs::remove_file(version_file(&dir, v));
        }
        Ok(next.to_string())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail loudly on purpose

    use super::*;

    #[test]
    fn local_storage_lists_directories_but_not_files() {
        let dir = std::env::temp_dir().join(format!("weir-list-dirs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let st = LocalFsStorage::new(&format!("file://{}", dir.display())).unwrap();
        let savepoints = dir.join("savepoints").display().to_string();
        assert!(
            st.list_directories(&savepoints).unwrap().is_empty(),
            "a missing directory has no sub-directories"
        );
        st.write_metadata(&format!("{savepoints}/savepoint-2-20"), b"{}")
            .unwrap();
        st.write_file(&format!("{savepoints}/savepoint-1-10"), "a.state", b"x")
            .unwrap();
        st.write_file(&savepoints, "stray-file", b"x").unwrap();
        assert_eq!(
            st.list_directories(&savepoints).unwrap(),
            ["savepoint-1-10", "savepoint-2-20"]
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
