//! The RocksDB store of one operator subtask and the factory that opens (and restores) them
//! with a shared memory budget.
//!
//! Local layout, under the configured directory:
//!
//! ```text
//! <localDir>/<job>/<uid>/kg-<start>-<end>/
//!   db-<unique>/          the working database of a running subtask (removed when it closes)
//!   snapshots/chk-<id>/   hard-linked checkpoint of the latest snapshot (local recovery)
//!   full-<id>-<unique>/   a checkpoint being read into canonical entries (removed after)
//!   restore-<unique>/     a snapshot being split by key group on rescale (removed after)
//! ```
//!
//! Directories are named by key-group range, not subtask index, so that after a restart a
//! subtask finds the local copy of exactly the state it is given back.
//!
//! A process that dies leaves its `db-`, `full-` and `restore-` directories behind; the first
//! store a factory opens for a job removes those of that job (one process runs a job's tasks
//! per local directory, as one TaskManager owns its disk), keeping only `snapshots/`.

use crate::RocksError;
use crate::files::{RestoreTally, Uploaded, materialize, unique_name, upload};
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, DB, DBCompressionType, Options, WriteBatch,
    WriteBufferManager, WriteOptions,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use weir_core::checkpoint::{NativeContent, NativeState};
use weir_core::state::kv::key_group_prefix;
use weir_core::state::{KvError, KvScope, KvSnapshot, KvStore, KvStoreFactory};

/// Settings of the RocksDB backend.
#[derive(Debug, Clone)]
pub struct RocksDbConfig {
    /// Where working databases and local snapshot copies live (local disk).
    pub local_dir: PathBuf,
    /// Bytes for block cache and write buffers together, shared by every database of the job.
    pub memory_budget: usize,
    /// Checkpoints upload only new SST files (savepoints are always canonical).
    pub incremental: bool,
    /// Keep the local copy of the latest snapshot and restore from it when it matches.
    pub local_recovery: bool,
}

impl RocksDbConfig {
    /// Defaults: 256 MiB budget, full checkpoints, no local recovery.
    pub fn new(local_dir: impl Into<PathBuf>) -> Self {
        Self {
            local_dir: local_dir.into(),
            memory_budget: 256 << 20,
            incremental: false,
            local_recovery: false,
        }
    }
}

/// Where restored SST files came from, over the life of a factory (for tests and metrics).
#[derive(Debug, Default)]
pub struct RestoreStats {
    /// Files taken from a local snapshot copy.
    pub local_files: AtomicU64,
    /// Their bytes.
    pub local_bytes: AtomicU64,
    /// Files downloaded from checkpoint storage.
    pub remote_files: AtomicU64,
    /// Their bytes.
    pub remote_bytes: AtomicU64,
    /// Local copies found but not used because their size or checksum did not match.
    pub rejected_local: AtomicU64,
}

/// Opens a RocksDB store for every keyed operator subtask of a job.
pub struct RocksDbFactory {
    config: RocksDbConfig,
    cache: Cache,
    write_buffers: WriteBufferManager,
    stats: Arc<RestoreStats>,
    /// Jobs whose leftovers of earlier processes were removed.
    swept: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for RocksDbFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbFactory")
            .field("config", &self.config)
            .finish()
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RocksError {
    let path = path.display().to_string();
    move |source| RocksError::Io { op, path, source }
}

fn db_err(op: &'static str, path: &Path) -> impl FnOnce(rocksdb::Error) -> RocksError {
    let path = path.display().to_string();
    move |source| RocksError::Db { op, path, source }
}

/// A path component from a job name or uid (no separators, nothing hidden).
fn component(s: &str) -> String {
    let c: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if c.is_empty() { "_".into() } else { c }
}

impl RocksDbFactory {
    /// A factory with `config`'s budget: an LRU block cache of the whole budget, with half
    /// of it reserved for write buffers (memtables are charged to the cache).
    pub fn new(config: RocksDbConfig) -> Self {
        let budget = config.memory_budget.max(8 << 20);
        let cache = Cache::new_lru_cache(budget);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            budget / 2,
            false,
            cache.clone(),
        );
        Self {
            config,
            cache,
            write_buffers,
            stats: Arc::new(RestoreStats::default()),
            swept: Mutex::new(BTreeSet::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RocksDbConfig {
        &self.config
    }

    /// Where restored files came from so far.
    pub fn restore_stats(&self) -> Arc<RestoreStats> {
        self.stats.clone()
    }

    fn options(&self) -> Options {
        let budget = self.config.memory_budget.max(8 << 20);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        // Index and filter blocks count against the budget too, else they grow with the data.
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Partitioned: a large SST file's whole filter (megabytes) is bigger than one shard of
        // the block cache, so it could never be cached and every lookup would read it from
        // disk again (seen: 10 M keys loading at a few thousand keys/s). In ~4 KiB partitions
        // it caches like data blocks, with only the small top level pinned — Flink's
        // `partitioned-index-filters` for a bounded memory budget.
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        // Most writes of new keys start with a lookup that misses.
        table.set_bloom_filter(10.0, false);
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_block_based_table_factory(&table);
        o.set_write_buffer_manager(&self.write_buffers);
        o.set_write_buffer_size((budget / 8).clamp(1 << 20, 64 << 20));
        o.set_max_write_buffer_number(2);
        o.set_compression_type(DBCompressionType::Lz4);
        o.set_max_background_jobs(2);
        o
    }

    fn base(&self, job: &str, uid: &str, key_groups: (u32, u32)) -> PathBuf {
        self.config
            .local_dir
            .join(component(job))
            .join(component(uid))
            .join(format!("kg-{}-{}", key_groups.0, key_groups.1))
    }

    /// Removes the working directories an earlier process left under `job` (once per job and
    /// factory, before its first store opens: the lock is held while sweeping, so no store of
    /// this process has created its own yet).
    fn sweep_leftovers(&self, job: &str) {
        let mut swept = self
            .swept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !swept.insert(job.to_string()) {
            return;
        }
        let Ok(uids) = fs::read_dir(self.config.local_dir.join(component(job))) else {
            return;
        };
        for ranges in uids.flatten().filter_map(|u| fs::read_dir(u.path()).ok()) {
            for contents in ranges.flatten().filter_map(|r| fs::read_dir(r.path()).ok()) {
                for e in contents.flatten() {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    if ["db-", "full-", "restore-"]
                        .iter()
                        .any(|p| name.starts_with(p))
                    {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
        }
    }

    /// The local copy of `native` if local recovery keeps one.
    fn local_copy(&self, job: &str, uid: &str, native: &NativeState) -> Option<PathBuf> {
        self.config.local_recovery.then(|| {
            self.base(job, uid, native.key_groups)
                .join("snapshots")
                .join(format!("chk-{}", native.checkpoint_id))
        })
    }
}

impl KvStoreFactory for RocksDbFactory {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn open(&self, scope: &KvScope<'_>) -> Result<Box<dyn KvStore>, KvError> {
        self.sweep_leftovers(scope.job);
        let key_groups = (scope.key_groups.start, scope.key_groups.end);
        let base = self.base(scope.job, scope.uid, key_groups);
        let tally = RestoreTally {
            stats: &self.stats,
            metrics: scope.metrics,
        };
        let work = base.join(format!("db-{}", unique_name()));
        let storage = scope.storage.map(|s| s.as_ref());
        let mut uploaded = Uploaded::new();
        let exact = match scope.restore {
            [n] if n.key_groups == key_groups => Some(n),
            _ => None,
        };
        if let Some(n) = exact {
            let local = self.local_copy(scope.job, scope.uid, n);
            materialize(n, &work, local.as_deref(), storage, &tally)?;
            // The restored files are in storage already: the next checkpoint references them.
            for f in &n.files {
                if let NativeContent::Shared(r) = &f.content {
                    uploaded.insert(f.name.clone(), (r.clone(), f.crc32));
                }
            }
        } else {
            fs::create_dir_all(&work).map_err(io("create directory", &work))?;
        }
        let opts = self.options();
        let db = DB::open(&opts, &work).map_err(db_err("open", &work))?;
        let mut wo = WriteOptions::default();
        // Checkpoints are the durability of keyed state, as in Flink: no write-ahead log.
        wo.disable_wal(true);
        if exact.is_none() {
            for n in scope.restore {
                let tmp = base.join(format!("restore-{}", unique_name()));
                let local = self.local_copy(scope.job, scope.uid, n);
                let copied = materialize(n, &tmp, local.as_deref(), storage, &tally)
                    .and_then(|()| copy_range(&tmp, &db, &wo, &scope.key_groups));
                let _ = fs::remove_dir_all(&tmp);
                copied?;
            }
        }
        Ok(Box::new(RocksStore {
            db,
            _work: WorkDir(work),
            base,
            wo,
            incremental: self.config.incremental,
            local_recovery: self.config.local_recovery,
            key_groups,
            uploads: Arc::new(Mutex::new(Uploads {
                confirmed: uploaded,
                pending: BTreeMap::new(),
            })),
        }))
    }
}

/// Copies the entries of `key_groups` from the database in `dir` into `db` (rescaling).
fn copy_range(
    dir: &Path,
    db: &DB,
    wo: &WriteOptions,
    key_groups: &std::ops::Range<u32>,
) -> Result<(), KvError> {
    let src = DB::open_for_read_only(&Options::default(), dir, false)
        .map_err(db_err("open read-only", dir))?;
    let mut it = src.raw_iterator();
    it.seek(key_group_prefix(key_groups.start));
    let mut batch = WriteBatch::default();
    while it.valid() {
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            break;
        };
        let kg = k
            .get(0..2)
            .map_or(u32::MAX, |b| u32::from(u16::from_be_bytes([b[0], b[1]])));
        if kg >= key_groups.end {
            break;
        }
        batch.put(k, v);
        if batch.len() >= 16 * 1024 {
            db.write_opt(std::mem::take(&mut batch), wo)
                .map_err(db_err("write", dir))?;
        }
        it.next();
    }
    it.status().map_err(db_err("read", dir))?;
    db.write_opt(batch, wo).map_err(db_err("write", dir))?;
    Ok(())
}

/// Removes the working database's directory once the database is closed (it is declared
/// after the database in [`RocksStore`], so it drops after it).
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// SST files uploaded, shared between the task thread and the snapshot writer.
struct Uploads {
    /// Files of the latest completed checkpoint: the only ones later checkpoints reference
    /// again, because only completed checkpoints keep their shared files.
    confirmed: Uploaded,
    /// Files of checkpoints not yet known to be complete.
    pending: BTreeMap<u64, Uploaded>,
}

fn lock(m: &Mutex<Uploads>) -> std::sync::MutexGuard<'_, Uploads> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The RocksDB store of one operator subtask.
struct RocksStore {
    db: DB,
    _work: WorkDir,
    base: PathBuf,
    wo: WriteOptions,
    incremental: bool,
    local_recovery: bool,
    key_groups: (u32, u32),
    uploads: Arc<Mutex<Uploads>>,
}

impl RocksStore {
    fn err(&self, op: &'static str) -> impl FnOnce(rocksdb::Error) -> KvError + '_ {
        move |e| db_err(op, &self.base)(e).into()
    }

    /// A RocksDB checkpoint of the database in `dir` (a flush plus hard links).
    fn checkpoint(&self, dir: &Path) -> Result<(), KvError> {
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(io("create directory", parent))?;
        }
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(io("remove", dir))?;
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(|e| db_err("checkpoint", dir)(e).into())
    }

    fn snapshots(&self) -> PathBuf {
        self.base.join("snapshots")
    }
}

impl KvStore for RocksStore {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self
            .db
            .get_pinned(key)
            .map_err(self.err("get"))?
            .map(|v| v.to_vec()))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.db
            .put_opt(key, value, &self.wo)
            .map_err(self.err("put"))
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.db
            .delete_opt(key, &self.wo)
            .map_err(self.err("delete"))
    }

    fn scan(
        &mut self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), KvError> {
        let mut it = self.db.raw_iterator();
        it.seek(prefix);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(prefix) || !visit(k, v) {
                break;
            }
            it.next();
        }
        it.status().map_err(self.err("scan"))
    }

    fn snapshot(&mut self, checkpoint_id: u64, canonical: bool) -> Result<KvSnapshot, KvError> {
        if canonical || !self.incremental {
            let dir = self
                .base
                .join(format!("full-{checkpoint_id}-{}", unique_name()));
            self.checkpoint(&dir)?;
            return Ok(KvSnapshot::Entries(Box::new(move |visit| {
                let read = read_all(&dir, visit);
                let _ = fs::remove_dir_all(&dir);
                read
            })));
        }
        let dir = self.snapshots().join(format!("chk-{checkpoint_id}"));
        self.checkpoint(&dir)?;
        let reuse = lock(&self.uploads).confirmed.clone();
        let uploads = self.uploads.clone();
        let (key_groups, keep) = (self.key_groups, self.local_recovery);
        Ok(KvSnapshot::Native(Box::new(move |storage| {
            let native = upload(&dir, storage, &reuse, checkpoint_id, key_groups);
            if !keep {
                let _ = fs::remove_dir_all(&dir);
            }
            let native = native?;
            let files = native
                .files
                .iter()
                .filter_map(|f| match &f.content {
                    NativeContent::Shared(r) => Some((f.name.clone(), (r.clone(), f.crc32))),
                    NativeContent::Inline(_) => None,
                })
                .collect();
            lock(&uploads).pending.insert(checkpoint_id, files);
            Ok(native)
        })))
    }

    fn checkpoint_complete(&mut self, id: u64) {
        {
            let mut u = lock(&self.uploads);
            if let Some(files) = u.pending.remove(&id) {
                u.confirmed = files;
            }
            u.pending.retain(|k, _| *k > id);
        }
        if self.local_recovery {
            // Only the latest completed snapshot is kept locally; newer ones are in flight.
            let Ok(rd) = fs::read_dir(self.snapshots()) else {
                return;
            };
            for e in rd.flatten() {
                let older = e
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("chk-"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n < id);
                if older {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// Visits every entry of the RocksDB checkpoint in `dir`, in key order.
fn read_all(dir: &Path, visit: &mut weir_core::state::kv::EntryVisitor<'_>) -> Result<(), KvError> {
    let db = DB::open_for_read_only(&Options::default(), dir, false)
        .map_err(db_err("open read-only", dir))?;
    let mut it = db.raw_iterator();
    it.seek_to_first();
    while it.valid() {
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            break;
        };
        visit(k, v)?;
        it.next();
    }
    it.status().map_err(|e| db_err("read", dir)(e).into())
}
