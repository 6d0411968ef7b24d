//! Moving a snapshot's files: uploading a RocksDB checkpoint directory (SST files not uploaded
//! before go to the storage's shared area, the small files inline), and materialising a native
//! snapshot into a directory from a local copy or from checkpoint storage, verifying the size
//! and CRC-32 of every file before it is used.

use crate::RocksError;
use crate::counters;
use crate::store::RestoreStats;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use weir_core::checkpoint::storage::{CheckpointStorage, StorageError};
use weir_core::checkpoint::{NativeContent, NativeFile, NativeState, SharedFileRef};
use weir_core::metrics::SubtaskMetrics;
use weir_core::state::KvError;

/// SST files uploaded by earlier checkpoints, by local file name: (shared file, CRC-32).
pub(crate) type Uploaded = HashMap<String, (SharedFileRef, u32)>;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RocksError {
    let path = path.display().to_string();
    move |source| RocksError::Io { op, path, source }
}

/// A name no other upload uses: 128 bits from the process's random hasher keys, the time and
/// a counter (no UUID dependency for this).
pub(crate) fn unique_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", word(1), word(2))
}

/// Uploads the RocksDB checkpoint in `dir`: SST files found in `reuse` (same name and size)
/// are referenced again, other SST files are uploaded to the shared area under fresh names,
/// everything else is carried inline.
pub(crate) fn upload(
    dir: &Path,
    storage: &dyn CheckpointStorage,
    reuse: &Uploaded,
    checkpoint_id: u64,
    key_groups: (u32, u32),
) -> Result<NativeState, KvError> {
    let shared = storage
        .shared_location()
        .ok_or_else(|| StorageError::Unsupported {
            root: storage.root(),
            what: "shared files (needed by incremental checkpoints)",
        })?;
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io("list", dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let size = fs::metadata(&path).map_err(io("stat", &path))?.len();
        if name.ends_with(".sst")
            && let Some((r, crc)) = reuse.get(&name).filter(|(r, _)| r.size == size)
        {
            files.push(NativeFile {
                name,
                size,
                crc32: *crc,
                content: NativeContent::Shared(r.clone()),
            });
            continue;
        }
        let bytes = fs::read(&path).map_err(io("read", &path))?;
        let crc32 = crc32fast::hash(&bytes);
        let content = if name.ends_with(".sst") {
            let object = format!("{}.sst", unique_name());
            storage.write_file(&shared, &object, &bytes)?;
            NativeContent::Shared(SharedFileRef {
                location: shared.clone(),
                name: object,
                size,
            })
        } else {
            NativeContent::Inline(bytes.into())
        };
        files.push(NativeFile {
            name,
            size,
            crc32,
            content,
        });
    }
    Ok(NativeState {
        backend: "rocksdb".into(),
        checkpoint_id,
        key_groups,
        states: Vec::new(),
        files,
    })
}

fn check(f: &NativeFile, bytes: &[u8]) -> Result<(), RocksError> {
    if bytes.len() as u64 != f.size {
        return Err(RocksError::Mismatch {
            file: f.name.clone(),
            what: "size",
            expected: f.size,
            found: bytes.len() as u64,
        });
    }
    let crc = crc32fast::hash(bytes);
    if crc != f.crc32 {
        return Err(RocksError::Mismatch {
            file: f.name.clone(),
            what: "CRC-32",
            expected: u64::from(f.crc32),
            found: u64::from(crc),
        });
    }
    Ok(())
}

/// Whether the local copy of `f` in `local` can be used: same size and CRC-32.
fn local_copy_ok(f: &NativeFile, local: &Path) -> bool {
    let path = local.join(&f.name);
    match fs::metadata(&path) {
        Ok(m) if m.len() == f.size => fs::read(&path).is_ok_and(|b| check(f, &b).is_ok()),
        _ => false,
    }
}

/// Where a restore's files came from, counted in the factory's totals (for tests and
/// benchmarks) and in the subtask's operator counters (for `/metrics`).
pub(crate) struct RestoreTally<'a> {
    pub stats: &'a RestoreStats,
    pub metrics: &'a SubtaskMetrics,
}

impl RestoreTally<'_> {
    fn add(&self, name: &str, n: u64) {
        self.metrics.counter(name).fetch_add(n, Ordering::Relaxed);
    }

    fn local(&self, bytes: u64) {
        self.stats.local_files.fetch_add(1, Ordering::Relaxed);
        self.stats.local_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.add(counters::FILES_LOCAL, 1);
        self.add(counters::BYTES_LOCAL, bytes);
    }

    fn remote(&self, bytes: u64) {
        self.stats.remote_files.fetch_add(1, Ordering::Relaxed);
        self.stats.remote_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.add(counters::FILES_REMOTE, 1);
        self.add(counters::BYTES_REMOTE, bytes);
    }

    fn rejected(&self) {
        self.stats.rejected_local.fetch_add(1, Ordering::Relaxed);
        self.add(counters::LOCAL_REJECTED, 1);
    }
}

/// Writes the files of `native` into `dir` (created): SST files from the local copy in
/// `local` where it matches, else from `storage`; inline files from the snapshot itself.
pub(crate) fn materialize(
    native: &NativeState,
    dir: &Path,
    local: Option<&Path>,
    storage: Option<&dyn CheckpointStorage>,
    tally: &RestoreTally<'_>,
) -> Result<(), KvError> {
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    for f in &native.files {
        let dst = dir.join(&f.name);
        match &f.content {
            NativeContent::Inline(bytes) => {
                check(f, bytes)?;
                fs::write(&dst, bytes).map_err(io("write", &dst))?;
            }
            NativeContent::Shared(r) => {
                if let Some(local) = local {
                    if local_copy_ok(f, local) {
                        let src = local.join(&f.name);
                        // SST files are immutable, so the working copy may share the inode.
                        if fs::hard_link(&src, &dst).is_err() {
                            fs::copy(&src, &dst).map_err(io("copy", &src))?;
                        }
                        tally.local(f.size);
                        continue;
                    }
                    if local.join(&f.name).exists() {
                        tally.rejected();
                    }
                }
                let storage = storage.ok_or_else(|| StorageError::NotFound {
                    location: format!(
                        "{}/{} (no checkpoint storage to read it from)",
                        r.location, r.name
                    ),
                })?;
                let bytes = storage.read_file(&r.location, &r.name)?;
                check(f, &bytes)?;
                fs::write(&dst, &bytes).map_err(io("write", &dst))?;
                tally.remote(f.size);
            }
        }
    }
    Ok(())
}
