//! Checkpoints and savepoints: the barrier that cuts a stream into before and after, the
//! snapshot an operator hands over at the barrier, and the configuration that drives the
//! coordinator.
//!
//! A checkpoint is a consistent distributed snapshot (Chandy–Lamport, as in Flink): sources
//! record their position and emit a barrier; every task snapshots its operators when the
//! barrier has arrived on all its inputs (aligned) or at the first barrier together with the
//! records the barrier overtook (unaligned); sinks pre-commit at the barrier and commit when the
//! checkpoint is complete. Restoring positions, state and pending sink transactions together
//! gives exactly-once results end to end.

pub mod coordinator;
pub mod format;
pub mod latest;
pub mod restore;
pub mod storage;

use crate::error::OperatorError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Whether a snapshot is a periodic checkpoint or a user-triggered savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// Periodic, owned by the runtime, retained per `numRetained`.
    Checkpoint,
    /// Triggered by a user, owned by the user, written to `target`.
    Savepoint {
        /// Directory URI the savepoint is written under.
        target: String,
    },
}

impl SnapshotKind {
    /// Whether this is a savepoint.
    pub fn is_savepoint(&self) -> bool {
        matches!(self, Self::Savepoint { .. })
    }
}

/// A checkpoint barrier as it travels through the dataflow (and between TaskManagers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    /// Checkpoint id, increasing over the life of the job (across restarts).
    pub id: u64,
    /// When the coordinator triggered it (ms since epoch).
    pub timestamp_ms: i64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Whether the barrier overtakes in-flight data (unaligned checkpoint).
    pub unaligned: bool,
    /// For an aligned barrier of a job with unaligned checkpoints enabled: switch to unaligned
    /// when alignment takes longer than this.
    pub alignment_timeout: Option<Duration>,
    /// Stop-with-savepoint: sources emit nothing after this barrier, so nothing after the
    /// savepoint can be committed before the job stops.
    pub stop: bool,
    /// How many queued events of this channel the barrier overtook; set by the channel.
    pub overtaken: usize,
}

/// Exactly-once (aligned barriers) or at-least-once (barriers are tracked, never waited for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointingMode {
    /// Inputs are aligned on barriers: no record is counted twice after a restore.
    ExactlyOnce,
    /// Inputs are never blocked: lower latency, duplicates possible after a restore.
    AtLeastOnce,
}

/// Settings of the checkpoint coordinator (from `spec.checkpointing`).
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Time between checkpoint triggers.
    pub interval: Duration,
    /// Exactly-once or at-least-once.
    pub mode: CheckpointingMode,
    /// A checkpoint not complete after this long is declared failed.
    pub timeout: Duration,
    /// Minimum time between the end of one checkpoint and the start of the next.
    pub min_pause: Duration,
    /// Checkpoints that may be in progress at once.
    pub max_concurrent: usize,
    /// Consecutive failed checkpoints tolerated before the job fails.
    pub tolerable_failures: u32,
    /// Whether barriers overtake in-flight data.
    pub unaligned: bool,
    /// With `unaligned`: start aligned and switch to unaligned after this long (zero: unaligned
    /// from the start).
    pub aligned_timeout: Duration,
    /// Completed checkpoints kept in storage.
    pub num_retained: usize,
    /// Keep checkpoints when the job is cancelled.
    pub retain_on_cancel: bool,
    /// Where checkpoints go (`file://` URI or a path).
    pub storage: String,
}

impl CheckpointConfig {
    /// Defaults as in the StreamJob resource, writing to `storage`.
    pub fn new(storage: impl Into<String>) -> Self {
        Self {
            interval: Duration::from_secs(10),
            mode: CheckpointingMode::ExactlyOnce,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
            unaligned: false,
            aligned_timeout: Duration::ZERO,
            num_retained: 1,
            retain_on_cancel: true,
            storage: storage.into(),
        }
    }

    /// Sets the interval.
    pub fn with_interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }
}

/// One keyed state value in canonical form: independent of state backend and parallelism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// State name (or an operator-internal name such as `window-contents`).
    pub state: String,
    /// The key, bincode-encoded.
    pub key: Vec<u8>,
    /// The value (with its TTL stamp where the state has one), bincode-encoded.
    pub value: Vec<u8>,
}

/// Keyed state of one operator subtask in canonical form: per key group, `(state, key, value)`
/// entries encoded back to back (`u16` state index, `u32` key length, key, `u32` value length,
/// value), so writing a snapshot costs no allocation per entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedStateSnapshot {
    /// State names, referenced by index from the entries.
    pub states: Vec<String>,
    /// Encoded entries per key group.
    pub groups: BTreeMap<u32, serde_bytes::ByteBuf>,
}

fn corrupt(msg: &str) -> OperatorError {
    OperatorError::State {
        name: "snapshot".into(),
        message: format!("corrupt keyed state: {msg}"),
    }
}

impl KeyedStateSnapshot {
    /// Whether no key group holds an entry.
    pub fn is_empty(&self) -> bool {
        self.groups.values().all(|g| g.is_empty())
    }

    /// The entries of the key groups in `range`.
    pub fn entries(&self, range: std::ops::Range<u32>) -> Result<Vec<StateEntry>, OperatorError> {
        let mut out = Vec::new();
        for buf in self.groups.range(range).map(|(_, b)| b.as_slice()) {
            let mut at = 0usize;
            let take = |at: &mut usize, n: usize| -> Result<&[u8], OperatorError> {
                let s = buf
                    .get(*at..*at + n)
                    .ok_or_else(|| corrupt("truncated entry"))?;
                *at += n;
                Ok(s)
            };
            while at < buf.len() {
                let idx =
                    u16::from_le_bytes(take(&mut at, 2)?.try_into().map_err(|_| corrupt("index"))?);
                let state = self
                    .states
                    .get(idx as usize)
                    .ok_or_else(|| corrupt("state index"))?
                    .clone();
                let klen = u32::from_le_bytes(
                    take(&mut at, 4)?
                        .try_into()
                        .map_err(|_| corrupt("length"))?,
                );
                let key = take(&mut at, klen as usize)?.to_vec();
                let vlen = u32::from_le_bytes(
                    take(&mut at, 4)?
                        .try_into()
                        .map_err(|_| corrupt("length"))?,
                );
                let value = take(&mut at, vlen as usize)?.to_vec();
                out.push(StateEntry { state, key, value });
            }
        }
        Ok(out)
    }
}

/// Builds a [`KeyedStateSnapshot`] by encoding entries straight into their key group's buffer.
pub struct KeyedSnapshotWriter {
    max_parallelism: u32,
    states: Vec<String>,
    groups: Vec<Vec<u8>>,
    /// Where a backend with native snapshots uploads its files (the checkpoint's storage).
    storage: Option<std::sync::Arc<dyn storage::CheckpointStorage>>,
    native: Option<NativeState>,
}

impl KeyedSnapshotWriter {
    /// A writer for `max_parallelism` key groups.
    pub fn new(max_parallelism: u32) -> Self {
        Self {
            max_parallelism,
            states: Vec::new(),
            groups: vec![Vec::new(); max_parallelism.max(1) as usize],
            storage: None,
            native: None,
        }
    }

    /// Lets backends with native snapshots upload their files to `storage`.
    pub fn with_storage(mut self, storage: std::sync::Arc<dyn storage::CheckpointStorage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The checkpoint's storage, for backends that upload native files.
    pub fn storage(&self) -> Option<&std::sync::Arc<dyn storage::CheckpointStorage>> {
        self.storage.as_ref()
    }

    /// Records the backend's native snapshot (files uploaded by the backend itself).
    pub fn set_native(&mut self, native: NativeState) {
        self.native = Some(native);
    }

    fn state_index(&mut self, state: &str) -> Result<u16, OperatorError> {
        let i = match self.states.iter().rposition(|s| s == state) {
            Some(i) => i,
            None => {
                self.states.push(state.to_string());
                self.states.len() - 1
            }
        };
        u16::try_from(i).map_err(|_| corrupt("more than 65535 states in one operator"))
    }

    fn append<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), OperatorError> {
        let at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        bincode::serialize_into(&mut *buf, v).map_err(|e| OperatorError::State {
            name: "snapshot".into(),
            message: e.to_string(),
        })?;
        let len =
            u32::try_from(buf.len() - at - 4).map_err(|_| corrupt("entry larger than 4 GiB"))?;
        buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// Adds an entry of `state` under `key` (placed in the key's key group).
    pub fn put<K: std::hash::Hash + Serialize, V: Serialize>(
        &mut self,
        state: &str,
        key: &K,
        value: &V,
    ) -> Result<(), OperatorError> {
        let kg = crate::key::key_group(key, self.max_parallelism);
        let idx = self.state_index(state)?;
        let buf = &mut self.groups[kg as usize];
        buf.extend_from_slice(&idx.to_le_bytes());
        Self::append(buf, key)?;
        Self::append(buf, value)
    }

    /// Adds an already encoded entry to key group `kg`.
    pub fn put_entry(&mut self, kg: u32, e: &StateEntry) -> Result<(), OperatorError> {
        let idx = self.state_index(&e.state)?;
        let buf = self
            .groups
            .get_mut(kg as usize)
            .ok_or_else(|| corrupt("key group out of range"))?;
        buf.extend_from_slice(&idx.to_le_bytes());
        for part in [&e.key, &e.value] {
            let len = u32::try_from(part.len()).map_err(|_| corrupt("entry larger than 4 GiB"))?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(part);
        }
        Ok(())
    }

    /// The finished snapshot.
    pub fn finish(self) -> KeyedStateSnapshot {
        self.finish_with_native().0
    }

    /// The finished snapshot and the backend's native snapshot, if it took one.
    pub fn finish_with_native(self) -> (KeyedStateSnapshot, Option<NativeState>) {
        let groups = self
            .groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(kg, g)| (kg as u32, serde_bytes::ByteBuf::from(g)))
            .collect();
        (
            KeyedStateSnapshot {
                states: self.states,
                groups,
            },
            self.native,
        )
    }
}

/// A keyed state backend's own snapshot (RocksDB files), used by incremental checkpoints
/// instead of canonical entries. Savepoints never hold one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeState {
    /// The backend that wrote it (`rocksdb`).
    pub backend: String,
    /// The checkpoint it belongs to (local recovery looks its local copy up by this id).
    pub checkpoint_id: u64,
    /// Key groups the backend held: `start..end`.
    pub key_groups: (u32, u32),
    /// The kind of every state, so a restored backend can convert entries without the handles.
    pub states: Vec<(String, crate::state::StateKind)>,
    /// The backend's files.
    pub files: Vec<NativeFile>,
}

/// One file of a [`NativeState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeFile {
    /// Name in the backend's directory (`000042.sst`, `MANIFEST-000005`, ...).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 of the content, checked before a downloaded or local copy is used.
    pub crc32: u32,
    /// Where the content is.
    pub content: NativeContent,
}

/// Where the content of a [`NativeFile`] is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NativeContent {
    /// In the shared area of the checkpoint storage, referenced by every checkpoint that
    /// contains the file (immutable SST files uploaded once).
    Shared(SharedFileRef),
    /// In the subtask's state file itself (small files that change every checkpoint).
    Inline(serde_bytes::ByteBuf),
}

/// A file in the shared area of the checkpoint storage; `_metadata` lists those its
/// checkpoint references, and retention deletes a file once no retained checkpoint does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedFileRef {
    /// The shared directory (a storage location, e.g. `<root>/shared`).
    pub location: String,
    /// File name in it (`<uuid>.sst`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

impl NativeState {
    /// The shared files this snapshot references.
    pub fn shared_files(&self) -> impl Iterator<Item = &SharedFileRef> {
        self.files.iter().filter_map(|f| match &f.content {
            NativeContent::Shared(r) => Some(r),
            NativeContent::Inline(_) => None,
        })
    }
}

/// Writes an operator's keyed state off the task thread.
pub type KeyedSnapshotFn =
    Box<dyn FnOnce(&mut KeyedSnapshotWriter) -> Result<(), OperatorError> + Send>;

/// What an operator hands over at a barrier.
#[derive(Default)]
pub struct OperatorSnapshot {
    /// Keyed state: a copy taken at the barrier, serialised later so the task keeps
    /// processing while the snapshot is written.
    pub keyed: Option<KeyedSnapshotFn>,
    /// Operator state: opaque items redistributed round robin on rescale (source positions,
    /// pending sink transactions).
    pub operator: Vec<Vec<u8>>,
}

impl std::fmt::Debug for OperatorSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSnapshot")
            .field("keyed", &self.keyed.is_some())
            .field("operator_items", &self.operator.len())
            .finish()
    }
}

/// What an operator gets back on restore: the keyed entries of its key groups and its share of
/// operator state.
#[derive(Debug, Clone, Default)]
pub struct RestoredState {
    /// Keyed entries of the key groups this subtask owns.
    pub keyed: Vec<StateEntry>,
    /// Operator state items for this subtask.
    pub operator: Vec<Vec<u8>>,
    /// `operator` holds the items of every subtask the operator had, not a share of them: a
    /// source that redistributes its positions, restored at another parallelism.
    pub all_subtasks: bool,
    /// Native backend snapshots whose key groups overlap this subtask's (one when the
    /// parallelism is unchanged); the backend restores from them.
    pub native: Vec<NativeState>,
}

/// Context of a snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotContext {
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Number of key groups.
    pub max_parallelism: u32,
}

/// Encodes a value for snapshots.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, OperatorError> {
    bincode::serialize(v).map_err(|e| OperatorError::State {
        name: "snapshot".into(),
        message: e.to_string(),
    })
}

/// Decodes a value from a snapshot.
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, OperatorError> {
    bincode::deserialize(bytes).map_err(|e| OperatorError::State {
        name: what.to_string(),
        message: format!(
            "cannot decode restored state ({e}); was it written by an incompatible program?"
        ),
    })
}
