//! The view of one running job that the REST API, `/metrics` and the progress line share: static
//! job information, the engine's [`JobHandle`], record rates computed by a sampler from counter
//! deltas (the engine only keeps totals), checkpoint statistics in REST terms, and the
//! checkpoints, savepoints and stops requested over REST, whose results are collected when a
//! client asks for them.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use weir_api::JobState;
use weir_api::rest::{
    CheckpointCounts, CheckpointHistory, CheckpointStatus, CheckpointSummary, JobOverview,
    OperationStatus, RestoredCheckpoint, SavepointInfo, VertexOverview,
};
use weir_core::checkpoint::coordinator::{
    CheckpointRecord, CheckpointStats, CheckpointStatus as EngineStatus,
};
use weir_core::metrics::JobMetrics;
use weir_core::time::now_ms;
use weir_core::{JobHandle, RunState};

/// What is known about a job before it runs.
#[derive(Debug, Clone)]
pub struct JobInfo {
    /// Unique id of this run: the job name plus random hex.
    pub job_id: String,
    /// Job name (`metadata.name`).
    pub name: String,
    /// Program name (`spec.job.program`).
    pub program: String,
    /// `spec.checkpointing.storage`, when the job checkpoints: savepoints go under its
    /// `savepoints` directory unless a request names another one.
    pub checkpoint_storage: Option<String>,
}

impl JobInfo {
    /// Info for a run of `name`, with a fresh job id.
    pub fn new(name: &str, program: &str) -> Self {
        Self {
            job_id: new_job_id(name),
            name: name.to_string(),
            program: program.to_string(),
            checkpoint_storage: None,
        }
    }

    /// The same info for a job that checkpoints to `storage`.
    pub fn with_checkpoint_storage(mut self, storage: impl Into<String>) -> Self {
        self.checkpoint_storage = Some(storage.into());
        self
    }

    /// Where a savepoint goes when its request names no directory: `savepoints` under the
    /// checkpoint storage, so that savepoints sit next to the checkpoints they came from but
    /// outside the `chk-*` directories that retention deletes.
    pub fn default_savepoint_target(&self) -> Option<String> {
        self.checkpoint_storage
            .as_deref()
            .map(default_savepoint_dir)
    }
}

/// The default savepoint directory of a job checkpointing to `storage`: its `savepoints`
/// directory, where `--from-latest-checkpoint` looks for savepoints too.
pub fn default_savepoint_dir(storage: &str) -> String {
    format!("{}/savepoints", storage.trim_end_matches('/'))
}

/// `<name>-<16 hex digits>`: unique per run without a UUID dependency.
fn new_job_id(name: &str) -> String {
    format!("{name}-{}", random_hex())
}

/// 16 random hex digits. The std hasher's random keys plus the clock and process id make
/// collisions between runs practically impossible.
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u32(d.subsec_nanos());
    }
    format!("{:016x}", h.finish())
}

/// Totals and rates at the last sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateSample {
    /// Records read by sources.
    pub records_in: u64,
    /// Records written by sinks.
    pub records_out: u64,
    /// Source records per second since the previous sample.
    pub in_per_second: f64,
    /// Sink records per second since the previous sample.
    pub out_per_second: f64,
}

/// Turns counter totals sampled over time into per-second rates.
#[derive(Debug, Default)]
pub struct RateTracker {
    at: Option<Instant>,
    last: RateSample,
}

impl RateTracker {
    /// Records totals seen at `now` and returns them with the rates since the previous update.
    /// The first update only sets the baseline (rates 0); an update at the same instant keeps
    /// the previous rates rather than dividing by zero.
    pub fn update(&mut self, now: Instant, records_in: u64, records_out: u64) -> RateSample {
        let (in_per_second, out_per_second) = match self.at {
            Some(prev) if now > prev => {
                let dt = now.duration_since(prev).as_secs_f64();
                (
                    records_in.saturating_sub(self.last.records_in) as f64 / dt,
                    records_out.saturating_sub(self.last.records_out) as f64 / dt,
                )
            }
            Some(_) => (self.last.in_per_second, self.last.out_per_second),
            None => (0.0, 0.0),
        };
        self.at = Some(now);
        self.last = RateSample {
            records_in,
            records_out,
            in_per_second,
            out_per_second,
        };
        self.last
    }

    /// The latest sample.
    pub fn last(&self) -> RateSample {
        self.last
    }
}

/// What a REST client asked the job to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    /// Take a checkpoint now.
    Checkpoint,
    /// Take a savepoint.
    Savepoint,
    /// Take a savepoint, then stop the job.
    Stop,
}

impl OperationKind {
    /// Whether the savepoint routes report this operation (a stop is a savepoint too).
    pub fn is_savepoint(self) -> bool {
        matches!(self, OperationKind::Savepoint | OperationKind::Stop)
    }
}

/// One requested operation: the engine's reply channel until the reply arrived, then the reply.
#[derive(Debug)]
struct Operation {
    id: String,
    kind: OperationKind,
    reply: Option<Receiver<Result<String, String>>>,
    result: Option<Result<String, String>>,
    /// A client was told the final status.
    reported: bool,
}

impl Operation {
    /// Collects the engine's reply if it arrived; the status as of now.
    fn poll(&mut self) -> SavepointInfo {
        if self.result.is_none()
            && let Some(rx) = &self.reply
        {
            match rx.try_recv() {
                Ok(r) => self.result = Some(r),
                Err(TryRecvError::Empty) => {}
                // The coordinator drops its end only when the job ends without completing it.
                Err(TryRecvError::Disconnected) => {
                    self.result = Some(Err(
                        "the job ended before the operation completed".to_string()
                    ));
                }
            }
            if self.result.is_some() {
                self.reply = None;
            }
        }
        let (status, location, failure) = match &self.result {
            None => (OperationStatus::InProgress, None, None),
            Some(Ok(path)) => (OperationStatus::Completed, Some(path.clone()), None),
            Some(Err(e)) => (OperationStatus::Failed, None, Some(e.clone())),
        };
        SavepointInfo {
            request_id: self.id.clone(),
            status,
            location,
            failure,
        }
    }
}

/// Requested operations, newest last; old ones are forgotten so a long-running job does not
/// accumulate them.
#[derive(Debug, Default)]
struct Operations {
    list: VecDeque<Operation>,
}

/// Operations remembered for status queries.
const KEPT_OPERATIONS: usize = 100;

/// A running job as seen by the REST API, the metrics exporter and the progress line.
#[derive(Debug)]
pub struct JobMonitor {
    info: JobInfo,
    handle: JobHandle,
    rates: Mutex<RateTracker>,
    operations: Mutex<Operations>,
    reported: Condvar,
    /// The job ended and the process stays up to serve its final state (`--supervised`).
    lingering: std::sync::atomic::AtomicBool,
}

impl JobMonitor {
    /// Monitors `handle`.
    pub fn new(info: JobInfo, handle: JobHandle) -> Arc<Self> {
        Arc::new(Self {
            info,
            handle,
            rates: Mutex::new(RateTracker::default()),
            operations: Mutex::new(Operations::default()),
            reported: Condvar::new(),
            lingering: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Marks the job as ended with the process staying up to serve its final state.
    pub fn set_lingering(&self) {
        self.lingering
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the process serves an ended job's final state (see [`Self::set_lingering`]).
    pub fn lingering(&self) -> bool {
        self.lingering.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Static job information.
    pub fn info(&self) -> &JobInfo {
        &self.info
    }

    /// The engine's handle.
    pub fn handle(&self) -> &JobHandle {
        &self.handle
    }

    /// The engine's live counters.
    pub fn metrics(&self) -> &Arc<JobMetrics> {
        self.handle.metrics()
    }

    /// The job's state in REST terms.
    pub fn state(&self) -> JobState {
        job_state(&self.handle.status().state)
    }

    /// Asks the job to stop; false if it had already ended.
    pub fn cancel(&self) -> bool {
        if self.handle.is_done() {
            return false;
        }
        self.handle.cancel();
        true
    }

    /// Reads the counters now and updates the rates (call about once a second).
    pub fn sample(&self) -> RateSample {
        self.sample_at(Instant::now())
    }

    /// [`JobMonitor::sample`] at a given instant, for tests.
    pub fn sample_at(&self, now: Instant) -> RateSample {
        let m = self.metrics();
        let (records_in, records_out) = (m.records_in(), m.records_out());
        self.rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(now, records_in, records_out)
    }

    /// The latest sample (totals as of that sample).
    pub fn last_sample(&self) -> RateSample {
        self.rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
    }

    /// The job overview served by `GET /v1/job`.
    pub fn overview(&self) -> JobOverview {
        let status = self.handle.status();
        let m = self.metrics();
        let rates = self.last_sample();
        let end = status.end_ms.unwrap_or_else(now_ms);
        // A failed job reports why it failed; a running one the last failure it restarted from.
        let failure = match &status.state {
            RunState::Failed(msg) => Some(msg.clone()),
            _ => status.last_failure.clone(),
        };
        JobOverview {
            job_id: self.info.job_id.clone(),
            name: self.info.name.clone(),
            program: self.info.program.clone(),
            state: job_state(&status.state),
            start_time_ms: status.start_ms,
            duration_ms: (end - status.start_ms).max(0),
            parallelism: self.handle.parallelism(),
            max_parallelism: self.handle.max_parallelism(),
            num_restarts: status.num_restarts,
            records_in: m.records_in(),
            records_out: m.records_out(),
            records_in_per_second: rates.in_per_second,
            records_out_per_second: rates.out_per_second,
            current_watermark_ms: m.watermark(),
            last_checkpoint: self
                .handle
                .checkpoint_stats()
                .latest_completed()
                .map(checkpoint_summary),
            failure,
            vertices: m
                .vertices
                .iter()
                .map(|v| VertexOverview {
                    id: v.uid.clone(),
                    name: v.name.clone(),
                    parallelism: u32::try_from(v.subtasks.len()).unwrap_or(u32::MAX),
                    records_in: v.records_in(),
                    records_out: v.records_out(),
                    current_input_watermark_ms: v.watermark(),
                    counters: v.counters(),
                })
                .collect(),
        }
    }
}

impl JobMonitor {
    /// The engine's checkpoint statistics.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.handle.checkpoint_stats()
    }

    /// The checkpoint statistics served by `GET /v1/job/checkpoints`.
    pub fn checkpoint_history(&self) -> CheckpointHistory {
        checkpoint_history(&self.handle.checkpoint_stats())
    }

    /// Asks the engine for a checkpoint, savepoint or stop-with-savepoint (`target` is the
    /// savepoint directory) and returns the request id to poll with [`JobMonitor::operation`].
    pub fn request(&self, kind: OperationKind, target: &str) -> String {
        let reply = match kind {
            OperationKind::Checkpoint => self.handle.trigger_checkpoint(),
            OperationKind::Savepoint => self.handle.trigger_savepoint(target),
            OperationKind::Stop => self.handle.stop_with_savepoint(target),
        };
        let id = random_hex();
        let mut ops = self.lock_operations();
        ops.list.push_back(Operation {
            id: id.clone(),
            kind,
            reply: Some(reply),
            result: None,
            reported: false,
        });
        while ops.list.len() > KEPT_OPERATIONS {
            ops.list.pop_front();
        }
        id
    }

    /// The status of request `id`, if it is a savepoint request (`savepoint` true: savepoints and
    /// stops) or a checkpoint request (`savepoint` false). Reporting a completed stop lets
    /// [`JobMonitor::wait_stop_reported`] return.
    pub fn operation(&self, id: &str, savepoint: bool) -> Option<SavepointInfo> {
        let mut ops = self.lock_operations();
        let op = ops
            .list
            .iter_mut()
            .find(|o| o.id == id && o.kind.is_savepoint() == savepoint)?;
        let info = op.poll();
        if info.status != OperationStatus::InProgress {
            op.reported = true;
            if op.kind == OperationKind::Stop {
                self.reported.notify_all();
            }
        }
        Some(info)
    }

    /// After the job stopped with a savepoint: waits until the client that asked for the stop has
    /// been told the savepoint's path, at most `timeout`, so that the process does not exit
    /// between the savepoint and the client's next poll. Returns at once when no stop was
    /// requested over REST; false if the timeout passed.
    pub fn wait_stop_reported(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut ops = self.lock_operations();
        let waiting = |o: &Operations| {
            o.list
                .iter()
                .any(|op| op.kind == OperationKind::Stop && !op.reported)
        };
        while waiting(&ops) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            ops = self
                .reported
                .wait_timeout(ops, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    fn lock_operations(&self) -> std::sync::MutexGuard<'_, Operations> {
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The REST form of the engine's checkpoint statistics.
pub fn checkpoint_history(st: &CheckpointStats) -> CheckpointHistory {
    let in_progress = st.in_progress();
    let newest = |f: &dyn Fn(&CheckpointRecord) -> bool| {
        st.history
            .iter()
            .rev()
            .find(|r| f(r))
            .map(checkpoint_summary)
    };
    CheckpointHistory {
        counts: CheckpointCounts {
            completed: st.completed,
            failed: st.failed,
            in_progress,
            restored: st.restored,
            total: st.completed + st.failed + in_progress,
        },
        latest_completed: st.latest_completed().map(checkpoint_summary),
        latest_failed: newest(&|r| r.status == EngineStatus::Failed),
        latest_savepoint: newest(&|r| r.is_savepoint && r.status == EngineStatus::Completed),
        latest_restored: st
            .last_restore
            .as_ref()
            .map(|(id, path, time, is_savepoint)| RestoredCheckpoint {
                id: *id,
                path: path.clone(),
                restore_time_ms: *time,
                is_savepoint: *is_savepoint,
            }),
        history: st.history.iter().rev().map(checkpoint_summary).collect(),
    }
}

/// The REST form of one checkpoint record.
pub fn checkpoint_summary(r: &CheckpointRecord) -> CheckpointSummary {
    let status = match r.status {
        EngineStatus::InProgress => CheckpointStatus::InProgress,
        EngineStatus::Completed => CheckpointStatus::Completed,
        EngineStatus::Failed => CheckpointStatus::Failed,
    };
    CheckpointSummary {
        id: r.id,
        status,
        is_savepoint: r.is_savepoint,
        trigger_time_ms: r.trigger_ms,
        duration_ms: r.duration_ms,
        state_size_bytes: r.size_bytes,
        external_path: r.path.clone(),
        failure: r.failure.clone(),
        // The engine records alignment only for completed checkpoints; 0 elsewhere means
        // "not measured", not "no alignment".
        alignment_ms: (r.status == EngineStatus::Completed).then_some(r.alignment_ms),
    }
}

/// The REST state of an engine state.
pub fn job_state(s: &RunState) -> JobState {
    match s {
        RunState::Running => JobState::Running,
        RunState::Restarting => JobState::Restarting,
        RunState::Cancelling => JobState::Cancelling,
        RunState::Finished => JobState::Finished,
        RunState::Failed(_) => JobState::Failed,
        RunState::Canceled => JobState::Canceled,
        // Stopped with a savepoint: resumable from it, which is what SUSPENDED means.
        RunState::Stopped(_) => JobState::Suspended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_flink_names() {
        assert_eq!(job_state(&RunState::Running), JobState::Running);
        assert_eq!(job_state(&RunState::Cancelling), JobState::Cancelling);
        assert_eq!(job_state(&RunState::Finished), JobState::Finished);
        assert_eq!(job_state(&RunState::Failed("x".into())), JobState::Failed);
        assert_eq!(job_state(&RunState::Canceled), JobState::Canceled);
        assert_eq!(job_state(&RunState::Restarting), JobState::Restarting);
        assert_eq!(
            job_state(&RunState::Stopped("file:///sp".into())),
            JobState::Suspended
        );
    }

    #[test]
    fn rates_come_from_deltas() {
        let t0 = Instant::now();
        let mut r = RateTracker::default();
        let s = r.update(t0, 100, 50);
        assert_eq!(
            (s.in_per_second, s.out_per_second),
            (0.0, 0.0),
            "first sample is a baseline"
        );
        let s = r.update(t0 + std::time::Duration::from_secs(2), 300, 90);
        assert_eq!((s.records_in, s.records_out), (300, 90));
        assert_eq!((s.in_per_second, s.out_per_second), (100.0, 20.0));
        let s = r.update(t0 + std::time::Duration::from_secs(2), 400, 90);
        assert_eq!(
            s.in_per_second, 100.0,
            "no time passed: keep the previous rate"
        );
        let s = r.update(t0 + std::time::Duration::from_millis(2500), 450, 90);
        assert_eq!(s.in_per_second, 100.0);
        assert_eq!(s.out_per_second, 0.0);
        assert_eq!(r.last(), s);
    }

    fn record(id: u64, is_savepoint: bool, status: EngineStatus) -> CheckpointRecord {
        CheckpointRecord {
            id,
            is_savepoint,
            status,
            trigger_ms: 1_000 * id as i64,
            duration_ms: (status != EngineStatus::InProgress).then_some(5),
            size_bytes: 100,
            path: (status == EngineStatus::Completed).then(|| format!("/c/chk-{id}")),
            failure: (status == EngineStatus::Failed).then(|| "timeout".to_string()),
            alignment_ms: 3,
            acknowledged: Vec::new(),
        }
    }

    #[test]
    fn checkpoint_stats_in_rest_terms() {
        let stats = CheckpointStats {
            completed: 3,
            failed: 1,
            restored: 1,
            history: vec![
                record(4, false, EngineStatus::Completed),
                record(5, true, EngineStatus::Completed),
                record(6, false, EngineStatus::Failed),
                record(7, false, EngineStatus::Completed),
                record(8, false, EngineStatus::InProgress),
            ],
            last_restore: Some((3, "/c/chk-3".into(), 42, false)),
            last_alignment_ms: 3,
        };
        let h = checkpoint_history(&stats);
        assert_eq!(
            h.counts,
            CheckpointCounts {
                completed: 3,
                failed: 1,
                in_progress: 1,
                restored: 1,
                total: 5
            }
        );
        let ids: Vec<u64> = h.history.iter().map(|c| c.id).collect();
        assert_eq!(ids, [8, 7, 6, 5, 4], "newest first");
        assert_eq!(h.latest_completed.as_ref().map(|c| c.id), Some(7));
        assert_eq!(h.latest_failed.as_ref().map(|c| c.id), Some(6));
        assert_eq!(h.latest_savepoint.as_ref().map(|c| c.id), Some(5));
        let restored = h.latest_restored.unwrap();
        assert_eq!((restored.id, restored.restore_time_ms), (3, 42));
        let c = h.latest_completed.unwrap();
        assert_eq!(c.status, CheckpointStatus::Completed);
        assert_eq!(c.external_path.as_deref(), Some("/c/chk-7"));
        assert_eq!((c.duration_ms, c.alignment_ms), (Some(5), Some(3)));
        assert_eq!(h.history[0].alignment_ms, None, "not measured in progress");
        assert_eq!(h.history[2].failure.as_deref(), Some("timeout"));
        assert_eq!(
            checkpoint_history(&CheckpointStats::default()),
            CheckpointHistory::default()
        );
    }

    #[test]
    fn job_ids_are_unique_and_named() {
        let a = JobInfo::new("orders", "orders");
        let b = JobInfo::new("orders", "orders");
        assert!(a.job_id.starts_with("orders-"), "{}", a.job_id);
        assert_eq!(a.job_id.len(), "orders-".len() + 16);
        assert_ne!(a.job_id, b.job_id);
    }
}
