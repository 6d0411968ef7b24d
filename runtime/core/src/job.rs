//! A running job: its handle (status, metrics, checkpoint statistics, cancel, savepoints) and
//! the supervisor that deploys execution attempts, restores them from the latest completed
//! checkpoint after a failure, and applies the restart strategy.

use crate::checkpoint::CheckpointConfig;
use crate::checkpoint::coordinator::{
    CheckpointStats, CoordMsg, Coordinator, CoordinatorSetup, FaultInjector, SupervisorNote,
};
use crate::checkpoint::restore::RestoredJob;
use crate::checkpoint::storage::{CheckpointStorage, StorageFactory, open_storage};
use crate::error::JobError;
use crate::exec::{Attempt, AttemptContext, CheckpointRuntime, JobPlan, TaskDone, deploy};
use crate::metrics::JobMetrics;
use crate::restart::{RestartDecision, RestartStrategy, RestartTracker};
use crate::sync::lock;
use crate::time::now_ms;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// What the job is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Tasks are running.
    Running,
    /// A task failed; the job is waiting to restart from its latest checkpoint.
    Restarting,
    /// Cancellation was requested; tasks are stopping.
    Cancelling,
    /// Every task ended normally (bounded input).
    Finished,
    /// The job failed for good; the message says why.
    Failed(String),
    /// The job was cancelled.
    Canceled,
    /// The job was stopped with a savepoint.
    Stopped(String),
}

/// A snapshot of the job's status.
#[derive(Debug, Clone)]
pub struct JobStatusView {
    /// Job name.
    pub name: String,
    /// Current state.
    pub state: RunState,
    /// Start time (ms since epoch).
    pub start_ms: i64,
    /// End time, once ended.
    pub end_ms: Option<i64>,
    /// Restarts so far (every restart restores all tasks).
    pub num_restarts: u64,
    /// The last failure that caused a restart.
    pub last_failure: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// All input was processed.
    Finished,
    /// Cancelled on request.
    Canceled,
    /// Stopped after taking the savepoint at this path.
    Stopped(String),
}

/// Settings of the job around the dataflow.
#[derive(Clone, Default)]
pub struct JobSettings {
    /// Checkpointing; `None` disables it.
    pub checkpoint: Option<CheckpointConfig>,
    /// What to do on failures.
    pub restart: Option<RestartStrategy>,
    /// Start from this checkpoint or savepoint directory.
    pub restore_from: Option<String>,
    /// Drop state of operators the job no longer has instead of failing.
    pub allow_non_restored_state: bool,
    /// Test hook that injects failures at chosen points.
    pub fault: Option<FaultInjector>,
    /// Opens checkpoint storage for a URI; `None` knows local paths and `file://` only.
    pub storage: Option<StorageFactory>,
    /// The keyed state backend; `None` keeps keyed state on the heap.
    pub state_backend: Option<crate::state::StateBackendFactory>,
    /// Run the subtasks in the TaskManagers of this cluster instead of in this process.
    pub cluster: Option<Arc<crate::cluster::JobManagerCluster>>,
    /// The fencing token of this job's leader (high availability: the Lease's epoch), used
    /// for the latest-checkpoint pointer instead of an epoch claimed from the pointer itself.
    pub fencing: Option<crate::checkpoint::latest::Fencing>,
}

impl JobSettings {
    /// What the state backend (if any) of this job's tasks is opened with.
    pub(crate) fn state_backend_context(
        &self,
        job: &str,
        storage: Option<Arc<dyn CheckpointStorage>>,
    ) -> Option<crate::state::StateBackendContext> {
        self.state_backend
            .as_ref()
            .map(|f| crate::state::StateBackendContext {
                factory: f.clone(),
                job: job.to_string(),
                storage,
            })
    }

    pub(crate) fn open(&self, uri: &str) -> Result<Arc<dyn CheckpointStorage>, JobError> {
        match &self.storage {
            Some(f) => f(uri),
            None => open_storage(uri),
        }
        .map_err(|e| JobError::Checkpoint(e.to_string()))
    }
}

impl std::fmt::Debug for JobSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSettings")
            .field("checkpoint", &self.checkpoint)
            .field("restart", &self.restart)
            .field("restore_from", &self.restore_from)
            .field("allow_non_restored_state", &self.allow_non_restored_state)
            .field("fault", &self.fault.is_some())
            .field("storage", &self.storage.is_some())
            .field(
                "state_backend",
                &self.state_backend.as_ref().map(|f| f.name()),
            )
            .field("cluster", &self.cluster)
            .field("fencing", &self.fencing)
            .finish()
    }
}

enum SupMsg {
    Task(TaskDone),
    Note(SupervisorNote),
    Cancel,
}

struct JobShared {
    status: Mutex<(JobStatusView, Option<JobError>)>,
    done: Condvar,
}

/// A running job.
#[derive(Clone)]
pub struct JobHandle {
    shared: Arc<JobShared>,
    metrics: Arc<JobMetrics>,
    stats: Arc<Mutex<CheckpointStats>>,
    sup: mpsc::Sender<SupMsg>,
    coord: mpsc::Sender<CoordMsg>,
    parallelism: u32,
    max_parallelism: u32,
    checkpointing: bool,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("status", &self.status())
            .finish()
    }
}

impl JobHandle {
    /// The job's status now.
    pub fn status(&self) -> JobStatusView {
        lock(&self.shared.status).0.clone()
    }

    /// Live counters.
    pub fn metrics(&self) -> &Arc<JobMetrics> {
        &self.metrics
    }

    /// Checkpoint statistics.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        lock(&self.stats).clone()
    }

    /// Whether the job checkpoints.
    pub fn checkpointing_enabled(&self) -> bool {
        self.checkpointing
    }

    /// Default parallelism of the job.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// Number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Asks every task to stop.
    pub fn cancel(&self) {
        {
            let mut g = lock(&self.shared.status);
            if g.0.end_ms.is_none() {
                g.0.state = RunState::Cancelling;
            }
        }
        let _ = self.sup.send(SupMsg::Cancel);
    }

    /// Triggers a savepoint under `target` (a directory URI); the receiver gets its path.
    pub fn trigger_savepoint(&self, target: &str) -> mpsc::Receiver<Result<String, String>> {
        let (tx, rx) = mpsc::channel();
        let _ = self.coord.send(CoordMsg::Savepoint {
            target: target.to_string(),
            stop: false,
            reply: tx,
        });
        rx
    }

    /// Takes a savepoint under `target`, then stops the job; the receiver gets its path.
    pub fn stop_with_savepoint(&self, target: &str) -> mpsc::Receiver<Result<String, String>> {
        let (tx, rx) = mpsc::channel();
        let _ = self.coord.send(CoordMsg::Savepoint {
            target: target.to_string(),
            stop: true,
            reply: tx,
        });
        rx
    }

    /// Triggers a checkpoint now; the receiver gets its path.
    pub fn trigger_checkpoint(&self) -> mpsc::Receiver<Result<String, String>> {
        let (tx, rx) = mpsc::channel();
        let _ = self.coord.send(CoordMsg::Checkpoint { reply: tx });
        rx
    }

    /// Whether the job has ended.
    pub fn is_done(&self) -> bool {
        lock(&self.shared.status).0.end_ms.is_some()
    }

    /// Waits for the job to end.
    pub fn wait(&self) -> Result<JobOutcome, JobError> {
        let mut g = lock(&self.shared.status);
        while g.0.end_ms.is_none() {
            g = self
                .shared
                .done
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Self::outcome(&mut g)
    }

    /// Waits at most `timeout`; `None` if the job is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<JobOutcome, JobError>> {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.shared.status);
        while g.0.end_ms.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            g = self
                .shared
                .done
                .wait_timeout(g, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Some(Self::outcome(&mut g))
    }

    fn outcome(g: &mut (JobStatusView, Option<JobError>)) -> Result<JobOutcome, JobError> {
        match &g.0.state {
            RunState::Finished => Ok(JobOutcome::Finished),
            RunState::Canceled => Ok(JobOutcome::Canceled),
            RunState::Stopped(p) => Ok(JobOutcome::Stopped(p.clone())),
            other => Err(g.1.take().unwrap_or_else(|| {
                JobError::Failed(match other {
                    RunState::Failed(m) => m.clone(),
                    s => format!("{s:?}"),
                })
            })),
        }
    }
}

/// Starts a job: builds the plan, restores if asked, and runs the supervisor.
pub(crate) fn start(plan: JobPlan, settings: JobSettings) -> Result<JobHandle, JobError> {
    let s = plan.settings.clone();
    let metrics = plan.new_metrics();
    let storage: Option<Arc<dyn CheckpointStorage>> = match &settings.checkpoint {
        Some(c) => Some(settings.open(&c.storage)?),
        None => None,
    };
    // The first restore is checked before anything starts, so a bad path fails fast.
    let initial: Option<Arc<RestoredJob>> = match &settings.restore_from {
        Some(path) => {
            let st = settings.open(path)?;
            let job = RestoredJob::load(st.as_ref(), path)
                .map_err(|e| JobError::Checkpoint(e.to_string()))?;
            job.check(
                &plan.uids,
                s.max_parallelism,
                settings.allow_non_restored_state,
                &plan.sources(),
            )
            .map_err(|e| JobError::Checkpoint(e.to_string()))?;
            Some(Arc::new(job))
        }
        None => None,
    };
    let stats = Arc::new(Mutex::new(CheckpointStats::default()));
    let shared = Arc::new(JobShared {
        status: Mutex::new((
            JobStatusView {
                name: s.name.clone(),
                state: RunState::Running,
                start_ms: now_ms(),
                end_ms: None,
                num_restarts: 0,
                last_failure: None,
            },
            None,
        )),
        done: Condvar::new(),
    });
    let (sup_tx, sup_rx) = mpsc::channel::<SupMsg>();
    let (note_tx, note_rx) = mpsc::channel::<SupervisorNote>();
    {
        let sup_tx = sup_tx.clone();
        spawn("job-notes", move || {
            for n in note_rx {
                if sup_tx.send(SupMsg::Note(n)).is_err() {
                    return;
                }
            }
        })?;
    }
    // Checkpoint ids keep increasing across restores of the same checkpoint directory.
    // The latest pointer counts too: it outlives checkpoints deleted on cancel.
    let first_id = storage
        .as_ref()
        .and_then(|st| st.list_checkpoints().ok())
        .and_then(|l| l.last().map(|(id, _)| id + 1))
        .unwrap_or(1)
        .max(
            storage
                .as_ref()
                .filter(|st| st.supports_latest_pointer())
                .and_then(|st| st.read_latest().ok().flatten())
                .and_then(|v| v.pointer.checkpoint_id())
                .map_or(1, |id| id + 1),
        )
        .max(initial.as_ref().map_or(1, |r| r.metadata.id + 1));
    let next_id = Arc::new(AtomicU64::new(first_id));
    let (coord_tx, coord_rx) = mpsc::channel::<CoordMsg>();
    let coordinator = Coordinator::new(CoordinatorSetup {
        config: settings.checkpoint.clone(),
        storage: storage.clone(),
        job_name: s.name.clone(),
        max_parallelism: s.max_parallelism,
        stats: stats.clone(),
        supervisor: note_tx.clone(),
        fault: settings.fault.clone(),
        next_id,
        fencing: settings.fencing.clone(),
    });
    spawn("checkpoint-coordinator", move || coordinator.run(coord_rx))?;
    let checkpointing = match (&settings.checkpoint, &storage) {
        (Some(c), Some(st)) => {
            let (w_tx, w_rx) = mpsc::channel();
            let (st2, coord2, note2, fault2) = (
                st.clone(),
                coord_tx.clone(),
                note_tx.clone(),
                settings.fault.clone(),
            );
            spawn("snapshot-writer", move || {
                crate::checkpoint::coordinator::run_writer(w_rx, st2, coord2, note2, fault2)
            })?;
            Some(CheckpointRuntime {
                mode: c.mode,
                max_parallelism: s.max_parallelism,
                storage: st.clone(),
                writer: w_tx,
                coord: coord_tx.clone(),
            })
        }
        _ => None,
    };
    drop(note_tx);
    let handle = JobHandle {
        shared: shared.clone(),
        metrics: metrics.clone(),
        stats: stats.clone(),
        sup: sup_tx.clone(),
        coord: coord_tx.clone(),
        parallelism: s.parallelism,
        max_parallelism: s.max_parallelism,
        checkpointing: checkpointing.is_some(),
    };
    let sup = Supervisor {
        plan,
        settings,
        storage,
        metrics,
        stats,
        shared,
        coord: coord_tx,
        checkpointing,
        sup_tx,
        first_checkpoint_id: first_id,
    };
    // Deploy the first attempt here so that deployment errors reach the caller directly.
    let first = sup.deploy_attempt(0, initial.clone())?;
    spawn("job-supervisor", move || sup.run(sup_rx, first, initial))?;
    Ok(handle)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), JobError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(JobError::Spawn)
}

struct Supervisor {
    plan: JobPlan,
    settings: JobSettings,
    storage: Option<Arc<dyn CheckpointStorage>>,
    metrics: Arc<JobMetrics>,
    stats: Arc<Mutex<CheckpointStats>>,
    shared: Arc<JobShared>,
    coord: mpsc::Sender<CoordMsg>,
    checkpointing: Option<CheckpointRuntime>,
    sup_tx: mpsc::Sender<SupMsg>,
    /// The id of this run's first checkpoint: every checkpoint in the storage with a lower id
    /// was there before the run started.
    first_checkpoint_id: u64,
}

enum AttemptEnd {
    Finished,
    Cancelled,
    Stopped(String),
    Failed(JobError),
}

impl Supervisor {
    fn deploy_attempt(
        &self,
        attempt: u64,
        restore: Option<Arc<RestoredJob>>,
    ) -> Result<Attempt, JobError> {
        let (done_tx, done_rx) = mpsc::channel::<TaskDone>();
        let sup_tx = self.sup_tx.clone();
        spawn("task-results", move || {
            for d in done_rx {
                if sup_tx.send(SupMsg::Task(d)).is_err() {
                    return;
                }
            }
        })?;
        if let Some(r) = &restore {
            let mut st = lock(&self.stats);
            st.restored += 1;
            st.last_restore = Some((
                r.metadata.id,
                r.location.clone(),
                now_ms(),
                r.metadata.kind.is_savepoint(),
            ));
        }
        let ctx = AttemptContext {
            attempt,
            metrics: self.metrics.clone(),
            restore,
            checkpointing: self.checkpointing.clone(),
            fault: self.settings.fault.clone(),
            done: done_tx,
            state_backend: self
                .settings
                .state_backend_context(&self.plan.settings.name, self.storage.clone()),
            placement: None,
        };
        let a = match &self.settings.cluster {
            Some(c) => c.deploy(&self.plan, ctx)?,
            None => deploy(&self.plan, ctx)?,
        };
        let _ = self.coord.send(CoordMsg::Attach(
            crate::checkpoint::coordinator::AttemptInfo {
                attempt,
                all: a.all.clone(),
                operators: self.plan.operators(),
            },
        ));
        Ok(a)
    }

    /// Waits for every task of the attempt to end and says how it ended.
    fn wait_attempt(
        &self,
        rx: &mpsc::Receiver<SupMsg>,
        attempt: u64,
        a: &Attempt,
        user_cancel: &mut bool,
    ) -> AttemptEnd {
        let mut remaining = self.plan.subtask_count();
        let mut failure: Option<JobError> = None;
        let mut stopped: Option<String> = None;
        while remaining > 0 {
            let Ok(msg) = rx.recv() else { break };
            match msg {
                SupMsg::Task(d) if d.attempt == attempt => {
                    if !d.late {
                        remaining -= 1;
                    }
                    if let Err(e) = d.result
                        && failure.is_none()
                        && !*user_cancel
                        && stopped.is_none()
                    {
                        failure = Some(e);
                        a.cancel.store(true, Ordering::SeqCst);
                    }
                }
                SupMsg::Task(_) => {}
                SupMsg::Note(SupervisorNote::Fail { attempt: n, reason }) if n == attempt => {
                    if failure.is_none() {
                        failure = Some(JobError::Failed(reason));
                    }
                    a.cancel.store(true, Ordering::SeqCst);
                }
                SupMsg::Note(SupervisorNote::Stopped { attempt: n, path }) if n == attempt => {
                    stopped = Some(path);
                    a.cancel.store(true, Ordering::SeqCst);
                }
                SupMsg::Note(_) => {}
                SupMsg::Cancel => {
                    *user_cancel = true;
                    a.cancel.store(true, Ordering::SeqCst);
                }
            }
        }
        // Finished tasks linger for checkpoints until every task is done.
        a.cancel.store(true, Ordering::SeqCst);
        let _ = self.coord.send(CoordMsg::Detach);
        if let Some(p) = stopped {
            AttemptEnd::Stopped(p)
        } else if *user_cancel {
            AttemptEnd::Cancelled
        } else if let Some(e) = failure {
            AttemptEnd::Failed(e)
        } else {
            AttemptEnd::Finished
        }
    }

    /// The state to restart from: the latest checkpoint this run completed, else what the run
    /// started from.
    ///
    /// Checkpoints from before this run are passed over: the run started from a snapshot
    /// chosen on purpose — the newest checkpoint, a savepoint newer than every checkpoint, an
    /// older savepoint to roll back to, or no state for a stateless upgrade — and restarting
    /// from an older run's checkpoint after the first failure would undo that choice (and,
    /// after a savepoint, emit again what the savepoint's transactions committed).
    fn restart_point(
        &self,
        initial: &Option<Arc<RestoredJob>>,
    ) -> Result<Option<Arc<RestoredJob>>, JobError> {
        if let Some(st) = &self.storage {
            let (latest, warnings) = RestoredJob::latest(st.as_ref())
                .map_err(|e| JobError::Checkpoint(e.to_string()))?;
            if !warnings.is_empty() {
                let mut g = lock(&self.shared.status);
                let cause = g.0.last_failure.take().unwrap_or_default();
                g.0.last_failure = Some(format!("{cause}; {}", warnings.join("; ")));
            }
            if let Some(j) = latest
                && j.metadata.id >= self.first_checkpoint_id
            {
                return Ok(Some(Arc::new(j)));
            }
        }
        Ok(initial.clone())
    }

    fn finish(&self, state: RunState, error: Option<JobError>) {
        let mut g = lock(&self.shared.status);
        g.0.state = state;
        g.0.end_ms = Some(now_ms());
        g.1 = error;
        self.shared.done.notify_all();
    }

    fn run(self, rx: mpsc::Receiver<SupMsg>, first: Attempt, initial: Option<Arc<RestoredJob>>) {
        let mut tracker = RestartTracker::default();
        let mut attempt = 0u64;
        let mut current = first;
        let mut user_cancel = false;
        loop {
            match self.wait_attempt(&rx, attempt, &current, &mut user_cancel) {
                AttemptEnd::Finished => return self.finish(RunState::Finished, None),
                AttemptEnd::Stopped(p) => return self.finish(RunState::Stopped(p), None),
                AttemptEnd::Cancelled => {
                    if let (Some(c), Some(st)) = (&self.settings.checkpoint, &self.storage)
                        && !c.retain_on_cancel
                        && let Ok(list) = st.list_checkpoints()
                    {
                        for (_, loc) in list {
                            let _ = st.discard(&loc);
                        }
                    }
                    return self.finish(RunState::Canceled, None);
                }
                AttemptEnd::Failed(mut e) => {
                    let strategy = self
                        .settings
                        .restart
                        .clone()
                        .unwrap_or(RestartStrategy::None);
                    // A restore that cannot read the storage (unreachable, say) is one more
                    // failure for the restart strategy, as a task failure is.
                    let restore = loop {
                        let random = (now_ms() as u64 % 1000) as f64 / 1000.0;
                        let delay = match tracker.on_failure(&strategy, now_ms(), random) {
                            RestartDecision::Fail(why) => {
                                let msg = format!("{e} (not restarted: {why})");
                                return self.finish(RunState::Failed(msg), Some(e));
                            }
                            RestartDecision::Restart(delay) => delay,
                        };
                        {
                            let mut g = lock(&self.shared.status);
                            g.0.state = RunState::Restarting;
                            g.0.num_restarts += 1;
                            g.0.last_failure = Some(e.to_string());
                        }
                        if self.wait_delay(&rx, delay) {
                            return self.finish(RunState::Canceled, None);
                        }
                        match self.restart_point(&initial) {
                            Ok(r) => break r,
                            Err(restore_error) => e = restore_error,
                        }
                    };
                    attempt += 1;
                    match self.deploy_attempt(attempt, restore) {
                        Ok(a) => {
                            current = a;
                            lock(&self.shared.status).0.state = RunState::Running;
                        }
                        Err(e) => {
                            return self.finish(RunState::Failed(e.to_string()), Some(e));
                        }
                    }
                }
            }
        }
    }

    /// Sleeps for the restart delay; true if the job was cancelled meanwhile.
    fn wait_delay(&self, rx: &mpsc::Receiver<SupMsg>, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(SupMsg::Cancel) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}
