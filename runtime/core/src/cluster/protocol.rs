//! Control messages between a JobManager and its TaskManagers (JSON frames over one TCP
//! connection per TaskManager, opened by the TaskManager).

use crate::checkpoint::Barrier;
use crate::checkpoint::format::FileMeta;
use serde::{Deserialize, Serialize};

/// From a TaskManager.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToJobManager {
    /// First message: who the TaskManager is and what it offers.
    Register {
        /// Unique per process (pod name, or host and pid).
        id: String,
        /// Task slots offered.
        slots: u32,
        /// Address of its data port, as other TaskManagers reach it.
        data_address: String,
        /// Fingerprint of the manifest the TaskManager built its job from; the JobManager
        /// refuses a TaskManager whose fingerprint differs from its own (one left over from
        /// before an upgrade). Absent from TaskManagers that predate it, which are accepted.
        #[serde(default)]
        manifest_hash: Option<String>,
    },
    /// Still alive; with the metrics of the subtasks running here.
    Heartbeat {
        /// Totals of every subtask this TaskManager runs, since it started running it.
        #[serde(default)]
        metrics: Vec<SubtaskReport>,
    },
    /// A subtask ended (`error` when it failed).
    TaskDone {
        /// Attempt.
        attempt: u64,
        /// Task (chain) index in the plan.
        task: usize,
        /// Subtask.
        subtask: u32,
        /// The task had already finished its input; this is a failure while it lingered.
        late: bool,
        /// Why it failed.
        error: Option<String>,
    },
    /// Deploying the attempt failed in this TaskManager.
    DeployFailed {
        /// Attempt.
        attempt: u64,
        /// Why.
        error: String,
    },
    /// A subtask's snapshot is stored.
    Ack {
        /// Attempt.
        attempt: u64,
        /// Checkpoint id.
        id: u64,
        /// Files written, per operator uid.
        files: Vec<(String, FileMeta)>,
        /// Alignment time, ms.
        alignment_ms: i64,
        /// `<head uid>#<subtask>`.
        task: String,
    },
    /// A subtask could not snapshot.
    Decline {
        /// Attempt.
        attempt: u64,
        /// Checkpoint id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// A source finished and waits for a final checkpoint.
    Shutdown,
}

/// Metrics of one subtask in a TaskManager.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskReport {
    /// Vertex index in the plan.
    pub vertex: usize,
    /// Subtask.
    pub subtask: u32,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Input watermark.
    pub watermark: i64,
    /// Named counters.
    pub counters: Vec<(String, u64)>,
}

/// To a TaskManager.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToTaskManager {
    /// Registration accepted.
    Registered {
        /// Heartbeat interval, ms.
        heartbeat_interval_ms: u64,
        /// Declare the JobManager lost after this long without a message, ms.
        heartbeat_timeout_ms: u64,
    },
    /// Registration refused (this JobManager is not the leader, say).
    Rejected {
        /// Why.
        reason: String,
    },
    /// Run these subtasks.
    Deploy(Deployment),
    /// Cancel the attempt.
    Cancel {
        /// Attempt.
        attempt: u64,
    },
    /// A message for every task of the attempt in this TaskManager.
    Control {
        /// Attempt.
        attempt: u64,
        /// The message.
        control: ControlMessage,
    },
    /// Still alive.
    Heartbeat,
}

/// An execution attempt's placement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// Attempt.
    pub attempt: u64,
    /// For every slot index (= subtask index), the worker that runs it.
    pub slot_worker: Vec<usize>,
    /// Data address per worker.
    pub workers: Vec<String>,
    /// Which worker the receiver is.
    pub you: usize,
    /// Checkpoint or savepoint to restore.
    pub restore_from: Option<String>,
}

/// [`crate::checkpoint::coordinator::Control`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlMessage {
    /// Sources: take a snapshot and emit this barrier.
    Trigger(Barrier),
    /// Checkpoint completed.
    Complete(u64),
    /// Checkpoint aborted.
    Abort(u64),
}
