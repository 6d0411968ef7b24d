//! The checkpoint coordinator: triggers checkpoints at the sources, collects every task's
//! acknowledgement, writes `_metadata` last to complete a checkpoint, tells tasks it completed
//! (sinks commit then), enforces timeout, minimum pause, concurrency and the tolerable number of
//! failures, retains `numRetained` checkpoints (and the shared files of incremental checkpoints
//! they reference), and serves savepoint requests. Also the snapshot writer: the thread that
//! serialises and writes task snapshots so tasks keep processing.
//!
//! Where the storage keeps a latest pointer, a checkpoint is complete once `_metadata` is
//! written *and* the pointer names it; the coordinator claims a fencing epoch the first time
//! it records one (see [`super::latest`]).

use super::format::{
    FileMeta, METADATA_VERSION, OperatorMeta, SnapshotMetadata, SubtaskState, encode_subtask,
    file_crc,
};
use super::latest::{Fencing, advance_latest, claim_epoch, new_writer_id};
use super::storage::{CheckpointStorage, METADATA_FILE, StorageError};
use super::{Barrier, CheckpointConfig, KeyedSnapshotWriter, OperatorSnapshot, SnapshotKind};
use crate::channel::Notify;
use crate::sync::lock;
use crate::time::now_ms;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A message to a running task.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    /// Sources: take a snapshot and emit this barrier.
    Trigger(Barrier),
    /// Checkpoint completed.
    Complete(u64),
    /// Checkpoint aborted.
    Abort(u64),
}

/// The mailbox of one subtask; checked between batches.
pub(crate) struct TaskControl {
    queue: Mutex<VecDeque<Control>>,
    flag: AtomicBool,
    notify: Arc<Notify>,
    /// The task processed all its input; it lingers to acknowledge later checkpoints with its
    /// final state until the whole job ends.
    pub finished: AtomicBool,
    /// Whether the task's end was already reported to the supervisor.
    pub reported: AtomicBool,
}

impl TaskControl {
    pub(crate) fn new(notify: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            flag: AtomicBool::new(false),
            notify,
            finished: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        })
    }

    pub(crate) fn push(&self, c: Control) {
        lock(&self.queue).push_back(c);
        self.flag.store(true, Ordering::Release);
        self.notify.notify();
    }

    /// Pending messages, cheap when there are none.
    pub(crate) fn take(&self) -> Vec<Control> {
        if !self.flag.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut q = lock(&self.queue);
        self.flag.store(false, Ordering::Release);
        q.drain(..).collect()
    }
}

/// A task's snapshot on its way to storage.
pub(crate) struct SnapshotRequest {
    pub attempt: u64,
    pub barrier: Barrier,
    pub location: String,
    pub subtask: u32,
    pub ops: Vec<(String, OperatorSnapshot)>,
    /// In-flight records of the task's input (unaligned), stored with the head operator.
    pub channel: Vec<u8>,
    /// How long the task waited between its first barrier and its snapshot.
    pub alignment_ms: i64,
    /// Number of key groups.
    pub max_parallelism: u32,
}

/// Messages to the coordinator.
pub(crate) enum CoordMsg {
    /// A new execution attempt is running.
    Attach(AttemptInfo),
    /// The attempt ended; pending checkpoints are aborted.
    Detach,
    /// A subtask's snapshot is stored.
    Ack {
        attempt: u64,
        id: u64,
        files: Vec<(String, FileMeta)>,
        alignment_ms: i64,
        /// The acknowledging task, as `<head operator uid>#<subtask>`.
        task: String,
    },
    /// A subtask could not snapshot.
    Decline {
        attempt: u64,
        id: u64,
        reason: String,
    },
    /// Trigger a savepoint (`stop`: then stop the job).
    Savepoint {
        target: String,
        stop: bool,
        reply: mpsc::Sender<Result<String, String>>,
    },
    /// Trigger a checkpoint now.
    Checkpoint {
        reply: mpsc::Sender<Result<String, String>>,
    },
    /// A source finished and waits for a final checkpoint.
    Shutdown,
}

/// What the coordinator needs of a running attempt.
pub(crate) struct AttemptInfo {
    pub attempt: u64,
    pub all: Arc<dyn crate::exec::TaskGateway>,
    /// (uid, name, parallelism) of every vertex.
    pub operators: Vec<(String, String, u32)>,
}

/// Messages from the coordinator and the writer to the job's supervisor.
pub(crate) enum SupervisorNote {
    /// The attempt must fail (checkpoint failures beyond tolerance, injected fault).
    Fail { attempt: u64, reason: String },
    /// A stop-with-savepoint completed.
    Stopped { attempt: u64, path: String },
}

/// One checkpoint in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRecord {
    /// Id.
    pub id: u64,
    /// Savepoint or checkpoint.
    pub is_savepoint: bool,
    /// In progress, completed or failed.
    pub status: CheckpointStatus,
    /// Trigger time.
    pub trigger_ms: i64,
    /// Duration, once ended.
    pub duration_ms: Option<i64>,
    /// Bytes written.
    pub size_bytes: u64,
    /// Where it is.
    pub path: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// Longest time a task spent aligning barriers, ms.
    pub alignment_ms: i64,
    /// Tasks that have acknowledged (`<head uid>#<subtask>`): which ones a stuck checkpoint
    /// still waits for.
    pub acknowledged: Vec<String>,
}

/// Status of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// Being taken.
    InProgress,
    /// Complete and restorable.
    Completed,
    /// Failed.
    Failed,
}

/// The job's checkpointing statistics, for the REST API and metrics.
#[derive(Debug, Clone, Default)]
pub struct CheckpointStats {
    /// Completed checkpoints and savepoints.
    pub completed: u64,
    /// Failed ones.
    pub failed: u64,
    /// Restores performed.
    pub restored: u64,
    /// The most recent checkpoints, newest last (at most 50).
    pub history: Vec<CheckpointRecord>,
    /// The last restore: (checkpoint id, path, time, was a savepoint).
    pub last_restore: Option<(u64, String, i64, bool)>,
    /// Alignment time of the last completed checkpoint's slowest task, ms.
    pub last_alignment_ms: i64,
}

impl CheckpointStats {
    /// Checkpoints in progress.
    pub fn in_progress(&self) -> u64 {
        self.history
            .iter()
            .filter(|r| r.status == CheckpointStatus::InProgress)
            .count() as u64
    }

    /// The newest completed checkpoint or savepoint.
    pub fn latest_completed(&self) -> Option<&CheckpointRecord> {
        self.history
            .iter()
            .rev()
            .find(|r| r.status == CheckpointStatus::Completed)
    }

    fn upsert(&mut self, rec: CheckpointRecord) {
        match self.history.iter_mut().find(|r| r.id == rec.id) {
            Some(r) => *r = rec,
            None => {
                self.history.push(rec);
                if self.history.len() > 50 {
                    self.history.remove(0);
                }
            }
        }
    }
}

/// Where a fault may be injected (tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultPoint {
    /// A task received the barrier(s) and is about to snapshot.
    BeforeSnapshot {
        /// Checkpoint id.
        checkpoint: u64,
        /// Head operator of the task.
        uid: String,
        /// Subtask.
        subtask: u32,
    },
    /// The writer is storing a task's snapshot.
    AsyncWrite {
        /// Checkpoint id.
        checkpoint: u64,
    },
    /// `_metadata` is written; tasks have not been told the checkpoint completed.
    AfterMetadata {
        /// Checkpoint id.
        checkpoint: u64,
    },
    /// A task is restoring its state.
    Restore {
        /// Attempt number (0 = first run).
        attempt: u64,
        /// Head operator of the task.
        uid: String,
        /// Subtask.
        subtask: u32,
    },
}

/// Decides whether to fail at a point (tests inject failures with it).
pub type FaultInjector = Arc<dyn Fn(&FaultPoint) -> bool + Send + Sync>;

/// A fault injector that fails once, at the first point `pick` accepts.
pub fn fail_once(pick: impl Fn(&FaultPoint) -> bool + Send + Sync + 'static) -> FaultInjector {
    let fired = AtomicBool::new(false);
    Arc::new(move |p: &FaultPoint| pick(p) && !fired.swap(true, Ordering::SeqCst))
}

struct Pending {
    barrier: Barrier,
    location: String,
    started: Instant,
    acks: usize,
    acknowledged: Vec<String>,
    alignment_ms: i64,
    files: BTreeMap<String, Vec<FileMeta>>,
    reply: Option<(mpsc::Sender<Result<String, String>>, bool)>,
    /// Keep the files when the checkpoint fails: set once this writer was deposed, because the
    /// directory may then be the new writer's.
    keep_files: bool,
}

/// What a coordinator is built from.
pub(crate) struct CoordinatorSetup {
    pub config: Option<CheckpointConfig>,
    pub storage: Option<Arc<dyn CheckpointStorage>>,
    pub job_name: String,
    pub max_parallelism: u32,
    pub stats: Arc<Mutex<CheckpointStats>>,
    pub supervisor: mpsc::Sender<SupervisorNote>,
    pub fault: Option<FaultInjector>,
    pub next_id: Arc<std::sync::atomic::AtomicU64>,
    /// A fencing token given from outside (a leader's term); `None`: claim one on first use.
    pub fencing: Option<Fencing>,
}

/// The coordinator's state; runs on its own thread.
pub(crate) struct Coordinator {
    setup: CoordinatorSetup,
    pending: BTreeMap<u64, Pending>,
    attempt: Option<AttemptInfo>,
    last_trigger: Option<Instant>,
    last_end: Option<Instant>,
    consecutive_failures: u32,
    final_requested: bool,
    /// A stop-with-savepoint is under way: no more periodic checkpoints.
    stopping: bool,
    /// The fencing epoch this coordinator holds on the latest pointer, once claimed.
    fencing: Option<Fencing>,
    /// Who this coordinator is, in the latest pointer.
    writer: String,
    /// Shared files referenced by each retained checkpoint (from its `_metadata`).
    shared_refs: BTreeMap<u64, Vec<String>>,
}

impl Coordinator {
    pub(crate) fn new(setup: CoordinatorSetup) -> Self {
        let (fencing, writer) = match &setup.fencing {
            Some(f) => (Some(f.clone()), f.writer.clone()),
            None => (None, new_writer_id()),
        };
        Self {
            setup,
            pending: BTreeMap::new(),
            attempt: None,
            last_trigger: None,
            last_end: None,
            consecutive_failures: 0,
            final_requested: false,
            stopping: false,
            fencing,
            writer,
            shared_refs: BTreeMap::new(),
        }
    }

    /// Runs until the channel closes.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<CoordMsg>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(msg) => self.handle(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            self.tick();
        }
    }

    fn handle(&mut self, msg: CoordMsg) {
        match msg {
            CoordMsg::Attach(info) => {
                self.attempt = Some(info);
                self.final_requested = false;
                self.stopping = false;
                // A restarted job waits a full interval before its first checkpoint, as on start.
                self.last_trigger = Some(Instant::now());
            }
            CoordMsg::Detach => {
                let ids: Vec<u64> = self.pending.keys().copied().collect();
                for id in ids {
                    self.fail(
                        id,
                        "the job attempt ended before the checkpoint completed".into(),
                        false,
                    );
                }
                self.attempt = None;
            }
            CoordMsg::Ack {
                attempt,
                id,
                files,
                alignment_ms,
                task,
            } => {
                if self.attempt.as_ref().map(|a| a.attempt) != Some(attempt) {
                    return;
                }
                let Some(p) = self.pending.get_mut(&id) else {
                    return;
                };
                p.acks += 1;
                p.acknowledged.push(task);
                let acknowledged = p.acknowledged.clone();
                if let Some(r) = lock(&self.setup.stats)
                    .history
                    .iter_mut()
                    .find(|r| r.id == id)
                {
                    r.acknowledged = acknowledged;
                }
                p.alignment_ms = p.alignment_ms.max(alignment_ms);
                for (uid, f) in files {
                    p.files.entry(uid).or_default().push(f);
                }
                let expected = self
                    .attempt
                    .as_ref()
                    .map_or(usize::MAX, |a| a.all.task_count());
                if p.acks >= expected {
                    self.complete(id);
                }
            }
            CoordMsg::Decline {
                attempt,
                id,
                reason,
            } => {
                if self.attempt.as_ref().map(|a| a.attempt) == Some(attempt) {
                    self.fail(id, reason, true);
                }
            }
            CoordMsg::Savepoint {
                target,
                stop,
                reply,
            } => {
                let dir = format!(
                    "{}/savepoint-{}-{}",
                    target.trim_end_matches('/'),
                    self.peek_id(),
                    now_ms()
                );
                let kind = SnapshotKind::Savepoint { target: dir };
                if let Err(e) = self.trigger(kind, Some((reply.clone(), stop))) {
                    let _ = reply.send(Err(e));
                }
            }
            CoordMsg::Checkpoint { reply } => {
                if let Err(e) = self.trigger(SnapshotKind::Checkpoint, Some((reply.clone(), false)))
                {
                    let _ = reply.send(Err(e));
                }
            }
            CoordMsg::Shutdown => {
                // A finished source waits for a final checkpoint so that sinks commit their
                // last records; take it now rather than after a full interval.
                self.final_requested = true;
            }
        }
    }

    fn peek_id(&self) -> u64 {
        self.setup.next_id.load(Ordering::SeqCst)
    }

    fn tick(&mut self) {
        let Some(cfg) = self.setup.config.clone() else {
            return;
        };
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) >= cfg.timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.fail(
                id,
                format!(
                    "checkpoint expired before completing (timeout {:?})",
                    cfg.timeout
                ),
                true,
            );
        }
        if self.attempt.is_none()
            || self.stopping
            || self.pending.len() >= cfg.max_concurrent.max(1)
        {
            return;
        }
        let due = self.final_requested
            || self
                .last_trigger
                .is_none_or(|t| now.duration_since(t) >= cfg.interval);
        let paused = self
            .last_end
            .is_some_and(|t| now.duration_since(t) < cfg.min_pause);
        if due && !paused {
            self.final_requested = false;
            let _ = self.trigger(SnapshotKind::Checkpoint, None);
        }
    }

    fn trigger(
        &mut self,
        kind: SnapshotKind,
        reply: Option<(mpsc::Sender<Result<String, String>>, bool)>,
    ) -> Result<(), String> {
        let (Some(cfg_storage), Some(attempt)) =
            (self.setup.storage.as_ref(), self.attempt.as_ref())
        else {
            return Err(if self.setup.storage.is_none() {
                "checkpointing is not configured for this job (spec.checkpointing)".into()
            } else {
                "the job is not running".into()
            });
        };
        let id = self.setup.next_id.fetch_add(1, Ordering::SeqCst);
        let (unaligned, alignment_timeout) = match (&kind, &self.setup.config) {
            (SnapshotKind::Checkpoint, Some(c)) if c.unaligned => {
                if c.aligned_timeout.is_zero() {
                    (true, None)
                } else {
                    (false, Some(c.aligned_timeout))
                }
            }
            _ => (false, None),
        };
        let location = match &kind {
            SnapshotKind::Checkpoint => cfg_storage.checkpoint_location(id),
            SnapshotKind::Savepoint { target } => target.clone(),
        };
        let barrier = Barrier {
            id,
            timestamp_ms: now_ms(),
            kind: kind.clone(),
            unaligned,
            alignment_timeout,
            overtaken: 0,
            stop: reply.as_ref().is_some_and(|(_, stop)| *stop),
        };
        if barrier.stop {
            self.stopping = true;
        }
        // Sources inject the barrier. Every other task gets it through its channels, or — if
        // its inputs have ended (or are about to) — directly, and snapshots its final state.
        attempt.all.broadcast(Control::Trigger(barrier.clone()));
        lock(&self.setup.stats).upsert(CheckpointRecord {
            id,
            is_savepoint: kind.is_savepoint(),
            status: CheckpointStatus::InProgress,
            trigger_ms: barrier.timestamp_ms,
            duration_ms: None,
            size_bytes: 0,
            path: None,
            failure: None,
            alignment_ms: 0,
            acknowledged: Vec::new(),
        });
        self.pending.insert(
            id,
            Pending {
                barrier,
                location,
                started: Instant::now(),
                acks: 0,
                acknowledged: Vec::new(),
                alignment_ms: 0,
                files: BTreeMap::new(),
                reply,
                keep_files: false,
            },
        );
        self.last_trigger = Some(Instant::now());
        Ok(())
    }

    fn complete(&mut self, id: u64) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let (Some(storage), Some(attempt)) = (self.setup.storage.clone(), self.attempt.as_ref())
        else {
            return;
        };
        let operators = attempt
            .operators
            .iter()
            .map(|(uid, name, par)| {
                let mut files = p.files.get(uid).cloned().unwrap_or_default();
                files.sort_by_key(|f| f.subtask);
                OperatorMeta {
                    uid: uid.clone(),
                    name: name.clone(),
                    parallelism: *par,
                    files,
                }
            })
            .collect();
        let meta = SnapshotMetadata {
            version: METADATA_VERSION,
            id,
            kind: p.barrier.kind.clone(),
            job_name: self.setup.job_name.clone(),
            timestamp_ms: p.barrier.timestamp_ms,
            completed_ms: now_ms(),
            max_parallelism: self.setup.max_parallelism,
            operators,
        };
        let bytes = match serde_json::to_vec_pretty(&meta) {
            Ok(b) => b,
            Err(e) => return self.fail_pending(id, p, format!("encoding metadata: {e}")),
        };
        if let Err(e) = storage.write_metadata(&p.location, &bytes) {
            return self.fail_pending(id, p, format!("writing metadata: {e}"));
        }
        if !p.barrier.kind.is_savepoint()
            && storage.supports_latest_pointer()
            && let Err(e) = record_latest(
                &mut self.fencing,
                &self.writer,
                &self.setup.next_id,
                storage.as_ref(),
                id,
                &p.location,
            )
        {
            let mut p = p;
            p.keep_files = matches!(e, StorageError::Fenced { .. });
            return self.fail_pending(id, p, format!("recording the latest checkpoint: {e}"));
        }
        if self
            .setup
            .fault
            .as_ref()
            .is_some_and(|f| f(&FaultPoint::AfterMetadata { checkpoint: id }))
        {
            let _ = self.setup.supervisor.send(SupervisorNote::Fail {
                attempt: attempt.attempt,
                reason: format!("injected fault after checkpoint {id} metadata was written"),
            });
            return;
        }
        attempt.all.broadcast(Control::Complete(id));
        self.consecutive_failures = 0;
        self.last_end = Some(Instant::now());
        {
            let mut st = lock(&self.setup.stats);
            st.completed += 1;
            st.upsert(CheckpointRecord {
                id,
                is_savepoint: p.barrier.kind.is_savepoint(),
                status: CheckpointStatus::Completed,
                trigger_ms: p.barrier.timestamp_ms,
                duration_ms: Some(meta.completed_ms - p.barrier.timestamp_ms),
                size_bytes: meta.size(),
                path: Some(p.location.clone()),
                failure: None,
                alignment_ms: p.alignment_ms,
                acknowledged: p.acknowledged.clone(),
            });
            st.last_alignment_ms = p.alignment_ms;
        }
        let attempt_no = attempt.attempt;
        if !p.barrier.kind.is_savepoint() {
            if let Some(shared) = storage.shared_location() {
                self.shared_refs.insert(id, shared_names(&meta, &shared));
            }
            self.retain(storage.as_ref());
        }
        if let Some((reply, stop)) = p.reply {
            let _ = reply.send(Ok(p.location.clone()));
            if stop {
                let _ = self.setup.supervisor.send(SupervisorNote::Stopped {
                    attempt: attempt_no,
                    path: p.location,
                });
            }
        }
    }

    fn retain(&mut self, storage: &dyn CheckpointStorage) {
        let keep = self
            .setup
            .config
            .as_ref()
            .map_or(1, |c| c.num_retained.max(1));
        if let Ok(list) = storage.list_checkpoints() {
            let n = list.len();
            for (_, loc) in list.iter().take(n.saturating_sub(keep)) {
                let _ = storage.discard(loc);
            }
            // Another checkpoint in flight may have uploaded shared files that nothing
            // references yet; they are collected after a later completion.
            if self.pending.is_empty() {
                self.collect_shared(storage, &list[n.saturating_sub(keep)..]);
            }
        }
    }

    /// Deletes the shared files (incremental checkpoints) that no retained checkpoint
    /// references: each file counts the retained checkpoints whose `_metadata` lists it, and
    /// goes when that count is zero. Files uploaded by checkpoints that failed are never
    /// referenced and go too. When a retained checkpoint's references cannot be read, nothing
    /// is deleted: a file wrongly kept costs space, a file wrongly deleted loses a checkpoint.
    fn collect_shared(&mut self, storage: &dyn CheckpointStorage, retained: &[(u64, String)]) {
        let Some(shared) = storage.shared_location() else {
            return;
        };
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (id, loc) in retained {
            if !self.shared_refs.contains_key(id) {
                let Ok(meta) = storage
                    .read_file(loc, METADATA_FILE)
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        serde_json::from_slice::<SnapshotMetadata>(&b).map_err(|e| e.to_string())
                    })
                else {
                    return;
                };
                self.shared_refs.insert(*id, shared_names(&meta, &shared));
            }
            for name in self.shared_refs.get(id).into_iter().flatten() {
                *counts.entry(name.clone()).or_default() += 1;
            }
        }
        self.shared_refs
            .retain(|id, _| retained.iter().any(|(r, _)| r == id));
        let Ok(files) = storage.list_files(&shared) else {
            return;
        };
        for f in files.iter().filter(|f| !counts.contains_key(*f)) {
            let _ = storage.delete_file(&shared, f);
        }
    }

    fn fail_pending(&mut self, id: u64, p: Pending, reason: String) {
        self.pending.insert(id, p);
        self.fail(id, reason, true);
    }

    fn fail(&mut self, id: u64, reason: String, counts: bool) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(a) = &self.attempt {
            a.all.broadcast(Control::Abort(id));
        }
        if let Some(s) = &self.setup.storage
            && !p.keep_files
        {
            let _ = s.discard(&p.location);
        }
        self.last_end = Some(Instant::now());
        {
            let mut st = lock(&self.setup.stats);
            st.failed += 1;
            st.upsert(CheckpointRecord {
                id,
                is_savepoint: p.barrier.kind.is_savepoint(),
                status: CheckpointStatus::Failed,
                trigger_ms: p.barrier.timestamp_ms,
                duration_ms: Some(now_ms() - p.barrier.timestamp_ms),
                size_bytes: 0,
                path: None,
                failure: Some(reason.clone()),
                alignment_ms: 0,
                acknowledged: Vec::new(),
            });
        }
        if p.barrier.stop {
            self.stopping = false;
        }
        if let Some((reply, _)) = p.reply {
            let _ = reply.send(Err(reason.clone()));
        }
        if !counts || p.barrier.kind.is_savepoint() {
            return;
        }
        self.consecutive_failures += 1;
        let tolerable = self
            .setup
            .config
            .as_ref()
            .map_or(0, |c| c.tolerable_failures);
        if self.consecutive_failures > tolerable
            && let Some(a) = &self.attempt
        {
            let _ = self.setup.supervisor.send(SupervisorNote::Fail {
                attempt: a.attempt,
                reason: format!(
                    "{} consecutive checkpoint failures exceed spec.checkpointing.tolerableFailures ({tolerable}); last: {reason}",
                    self.consecutive_failures
                ),
            });
            self.consecutive_failures = 0;
        }
    }
}

/// The names of the files in `shared` that `meta` references.
fn shared_names(meta: &SnapshotMetadata, shared: &str) -> Vec<String> {
    meta.shared_files()
        .into_iter()
        .filter(|r| r.location == shared)
        .map(|r| r.name)
        .collect()
}

/// Advances the latest pointer to checkpoint `id`, claiming an epoch for `writer` first if
/// none is held yet (`fencing`).
fn record_latest(
    fencing: &mut Option<Fencing>,
    writer: &str,
    next_id: &std::sync::atomic::AtomicU64,
    storage: &dyn CheckpointStorage,
    id: u64,
    location: &str,
) -> Result<(), StorageError> {
    let held = match fencing {
        Some(f) => f.clone(),
        None => {
            let f = claim_epoch(storage, writer)?;
            // Ids continue after the checkpoint the pointer names, even where listing the
            // checkpoints at start found none.
            if let Some(latest) = storage
                .read_latest()?
                .and_then(|v| v.pointer.checkpoint_id())
            {
                next_id.fetch_max(latest + 1, Ordering::SeqCst);
            }
            *fencing = Some(f.clone());
            f
        }
    };
    advance_latest(storage, &held, id, location)
}

/// Writes task snapshots: runs the keyed-state serialisers and stores one file per operator
/// subtask, then acknowledges to the coordinator.
pub(crate) fn run_writer(
    rx: mpsc::Receiver<SnapshotRequest>,
    storage: Arc<dyn CheckpointStorage>,
    coord: mpsc::Sender<CoordMsg>,
    supervisor: mpsc::Sender<SupervisorNote>,
    fault: Option<FaultInjector>,
) {
    for req in rx {
        let id = req.barrier.id;
        if fault
            .as_ref()
            .is_some_and(|f| f(&FaultPoint::AsyncWrite { checkpoint: id }))
        {
            let _ = supervisor.send(SupervisorNote::Fail {
                attempt: req.attempt,
                reason: format!("injected fault while writing checkpoint {id}"),
            });
            continue;
        }
        let attempt = req.attempt;
        let alignment_ms = req.alignment_ms;
        let task = format!(
            "{}#{}",
            req.ops.first().map_or("?", |(uid, _)| uid.as_str()),
            req.subtask
        );
        match write_request(req, &storage) {
            Ok(files) => {
                let _ = coord.send(CoordMsg::Ack {
                    attempt,
                    id,
                    files,
                    alignment_ms,
                    task,
                });
            }
            Err(reason) => {
                let _ = coord.send(CoordMsg::Decline {
                    attempt,
                    id,
                    reason,
                });
            }
        }
    }
}

fn write_request(
    req: SnapshotRequest,
    storage: &Arc<dyn CheckpointStorage>,
) -> Result<Vec<(String, FileMeta)>, String> {
    let mut files = Vec::with_capacity(req.ops.len());
    let mut channel = Some(req.channel);
    for (uid, snap) in req.ops {
        let (keyed, native) = match snap.keyed {
            Some(f) => {
                let mut w =
                    KeyedSnapshotWriter::new(req.max_parallelism).with_storage(storage.clone());
                f(&mut w).map_err(|e| format!("snapshot of {uid}: {e}"))?;
                w.finish_with_native()
            }
            None => Default::default(),
        };
        let shared = native
            .as_ref()
            .map(|n| n.shared_files().cloned().collect())
            .unwrap_or_default();
        let state = SubtaskState {
            uid: uid.clone(),
            subtask: req.subtask,
            keyed,
            operator: snap.operator,
            channel: channel.take().unwrap_or_default(),
            native,
        };
        let bytes = encode_subtask(&state).map_err(|e| e.to_string())?;
        let name = format!("{uid}-{}.state", req.subtask);
        storage
            .write_file(&req.location, &name, &bytes)
            .map_err(|e| e.to_string())?;
        files.push((
            uid,
            FileMeta {
                subtask: req.subtask,
                file: name,
                size: bytes.len() as u64,
                crc32: file_crc(&bytes),
                shared,
            },
        ));
    }
    Ok(files)
}
