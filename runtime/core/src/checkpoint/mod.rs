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

/// A checkpoint barrier as it travels through the dataflow.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Keyed state of one operator subtask, by key group.
pub type KeyedStateSnapshot = BTreeMap<u32, Vec<StateEntry>>;

/// Serialises keyed state off the task thread.
pub type KeyedSnapshotFn = Box<dyn FnOnce() -> Result<KeyedStateSnapshot, OperatorError> + Send>;

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
