//! Weir's RocksDB keyed state backend: keyed state of every kind (with TTL) in an embedded
//! RocksDB per operator subtask, so state can be far larger than memory; incremental
//! checkpoints that upload only SST files not uploaded before; and local recovery from the
//! copy of the latest snapshot a task keeps on its own disk.
//!
//! Install [`RocksDbFactory`] as `JobSettings::state_backend`. The engine's
//! [`weir_core::state::KvBackend`] decides the byte layout of keys and values; this crate
//! stores them, snapshots them, and restores them:
//!
//! * **Memory budget.** Every database of the factory shares one LRU block cache whose size is
//!   the budget, and one write buffer manager that charges memtables to that cache, so block
//!   cache, index and filter blocks and write buffers together stay within the budget however
//!   many operator subtasks there are.
//! * **Checkpoints.** A snapshot starts with a RocksDB checkpoint (a flush and hard links, so
//!   the task thread pauses only for the flush). Savepoints and full checkpoints read that copy
//!   into canonical entries off the task thread. Incremental checkpoints upload each SST file
//!   once into the storage's shared area under a fresh name and list it in every checkpoint
//!   that contains it; the small files that change every time (MANIFEST, CURRENT, OPTIONS)
//!   travel inside the subtask's state file. Only files of a *completed* checkpoint are
//!   re-referenced, so a file uploaded by a failed checkpoint is never depended upon.
//! * **Local recovery.** With it on, the hard-linked copy of the latest snapshot stays on local
//!   disk; a restore of that very snapshot uses each local file whose size and CRC-32 match
//!   what the checkpoint recorded and downloads only the rest.
//! * **Rescaling.** When a subtask's key groups are not exactly those of one snapshot, each
//!   overlapping snapshot is opened read-only and the subtask's key-group range is copied out.

mod files;
mod store;

pub use store::{RestoreStats, RocksDbConfig, RocksDbFactory};

/// Operator counters a restore adds to (per subtask; `weir_operator_counter_total` in
/// `/metrics`): SST files and bytes taken from the local copy, downloaded from checkpoint
/// storage, and local files refused because their size or CRC-32 did not match.
pub mod counters {
    /// SST files restored from the task's local snapshot copy.
    pub const FILES_LOCAL: &str = "stateFilesRestoredLocal";
    /// Their bytes.
    pub const BYTES_LOCAL: &str = "stateBytesRestoredLocal";
    /// SST files downloaded from checkpoint storage.
    pub const FILES_REMOTE: &str = "stateFilesRestoredRemote";
    /// Their bytes.
    pub const BYTES_REMOTE: &str = "stateBytesRestoredRemote";
    /// Local copies found but not used (size or checksum mismatch).
    pub const LOCAL_REJECTED: &str = "stateLocalFilesRejected";
}

/// A RocksDB operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RocksError {
    /// RocksDB itself reported an error.
    #[error("rocksdb {op} {path}: {source}")]
    Db {
        /// What was attempted.
        op: &'static str,
        /// The database directory.
        path: String,
        /// The cause.
        #[source]
        source: rocksdb::Error,
    },
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A downloaded file does not match what the checkpoint recorded.
    #[error(
        "{file}: {what} mismatch (checkpoint says {expected}, found {found}); the checkpoint's copy is damaged"
    )]
    Mismatch {
        /// The file.
        file: String,
        /// Size or checksum.
        what: &'static str,
        /// Recorded.
        expected: u64,
        /// Found.
        found: u64,
    },
}

impl From<RocksError> for weir_core::state::KvError {
    fn from(e: RocksError) -> Self {
        weir_core::state::KvError::Backend {
            backend: "rocksdb",
            message: e.to_string(),
        }
    }
}
