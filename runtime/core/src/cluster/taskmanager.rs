//! The TaskManager process: registers its slots with the JobManager, runs the subtasks each
//! deployment places on it, forwards their results and checkpoint acknowledgements, and
//! heartbeats. When the JobManager goes silent for the heartbeat timeout (or its connection
//! breaks) the TaskManager cancels what it runs and registers again — with the same
//! JobManager once it is back, or with whichever of the configured addresses accepts it (the
//! leader, when JobManagers run in high availability).

use super::exchange::DataServer;
use super::protocol::{ControlMessage, Deployment, SubtaskReport, ToJobManager, ToTaskManager};
use super::wire::{read_json, write_json};
use crate::checkpoint::coordinator::{Control, CoordMsg, SupervisorNote, run_writer};
use crate::checkpoint::restore::RestoredJob;
use crate::error::JobError;
use crate::exec::{
    Attempt, AttemptContext, CheckpointRuntime, JobPlan, Placement, TaskDone, deploy,
};
use crate::job::JobSettings;
use crate::metrics::JobMetrics;
use crate::sync::lock;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How a TaskManager runs.
#[derive(Debug, Clone)]
pub struct TaskManagerConfig {
    /// Unique id (pod name, or host and pid).
    pub id: String,
    /// JobManager control addresses, tried in turn.
    pub jobmanagers: Vec<String>,
    /// Task slots offered.
    pub slots: u32,
    /// Address to bind the data port to.
    pub data_bind: String,
    /// Address other TaskManagers use for the data port (`None`: the bound address).
    pub data_advertise: Option<String>,
    /// Fingerprint of the manifest this TaskManager's job was built from, sent with its
    /// registration: a JobManager running a different manifest refuses it (`None`: send none,
    /// and be accepted by any JobManager).
    pub manifest_hash: Option<String>,
}

/// How often a TaskManager that keeps being refused for the same reason logs it again.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Why a session with a JobManager ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The connection could not be opened, broke, or went silent.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The JobManager refused the registration (not the leader, another manifest).
    #[error("registration refused: {reason}")]
    Rejected {
        /// The JobManager's reason.
        reason: String,
    },
}

/// The connection to the current JobManager, shared by every thread that reports to it.
#[derive(Clone, Default)]
struct Link(Arc<Mutex<Option<Arc<Mutex<TcpStream>>>>>);

impl Link {
    fn send(&self, msg: &ToJobManager) {
        let conn = lock(&self.0).clone();
        if let Some(c) = conn {
            // A failed send surfaces as the JobManager's heartbeat timeout or a broken read.
            let _ = write_json(&mut *lock(&c), msg);
        }
    }

    fn set(&self, c: Option<Arc<Mutex<TcpStream>>>) {
        *lock(&self.0) = c;
    }
}

struct Running {
    attempt: u64,
    cancel: Arc<AtomicBool>,
    all: Option<Arc<dyn crate::exec::TaskGateway>>,
    /// Subtasks of the attempt still running here.
    remaining: Arc<AtomicUsize>,
    /// (vertex, subtask) of every operator subtask placed here.
    local: Vec<(usize, u32)>,
    /// Messages that arrived while the attempt was still deploying (a checkpoint trigger, say):
    /// delivered once its tasks exist, or a checkpoint would wait for its timeout.
    early: Vec<Control>,
}

/// A TaskManager: its data port, snapshot writer and metrics; [`TaskManager::run`] serves the
/// JobManager.
pub struct TaskManager {
    plan: JobPlan,
    settings: JobSettings,
    config: TaskManagerConfig,
    server: Arc<DataServer>,
    data_address: String,
    link: Link,
    metrics: Arc<JobMetrics>,
    checkpointing: Option<CheckpointRuntime>,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager")
            .field("id", &self.config.id)
            .field("data_address", &self.data_address)
            .finish()
    }
}

/// Sets up a TaskManager for `plan`: binds its data port and starts its snapshot writer.
pub(crate) fn start(
    plan: JobPlan,
    settings: JobSettings,
    config: TaskManagerConfig,
) -> Result<Arc<TaskManager>, JobError> {
    let server = DataServer::bind(config.data_bind.as_str()).map_err(|e| {
        JobError::Failed(format!(
            "cannot bind the data port {}: {e}",
            config.data_bind
        ))
    })?;
    let data_address = config
        .data_advertise
        .clone()
        .unwrap_or_else(|| server.address().to_string());
    let link = Link::default();
    let metrics = plan.new_metrics();
    let checkpointing = match &settings.checkpoint {
        Some(c) => {
            let storage = settings.open(&c.storage)?;
            let (w_tx, w_rx) = mpsc::channel();
            let (coord_tx, coord_rx) = mpsc::channel::<CoordMsg>();
            let (note_tx, note_rx) = mpsc::channel::<SupervisorNote>();
            let (st, fault) = (storage.clone(), settings.fault.clone());
            let coord2 = coord_tx.clone();
            spawn("snapshot-writer", move || {
                run_writer(w_rx, st, coord2, note_tx, fault)
            })?;
            let l = link.clone();
            spawn("tm-coord", move || {
                for m in coord_rx {
                    let msg = match m {
                        CoordMsg::Ack {
                            attempt,
                            id,
                            files,
                            alignment_ms,
                            task,
                        } => ToJobManager::Ack {
                            attempt,
                            id,
                            files,
                            alignment_ms,
                            task,
                        },
                        CoordMsg::Decline {
                            attempt,
                            id,
                            reason,
                        } => ToJobManager::Decline {
                            attempt,
                            id,
                            reason,
                        },
                        CoordMsg::Shutdown => ToJobManager::Shutdown,
                        _ => continue,
                    };
                    l.send(&msg);
                }
            })?;
            let l = link.clone();
            spawn("tm-notes", move || {
                for n in note_rx {
                    if let SupervisorNote::Fail { attempt, reason } = n {
                        l.send(&ToJobManager::TaskDone {
                            attempt,
                            task: usize::MAX,
                            subtask: 0,
                            late: true,
                            error: Some(reason),
                        });
                    }
                }
            })?;
            Some(CheckpointRuntime {
                mode: c.mode,
                max_parallelism: plan.settings.max_parallelism,
                storage,
                writer: w_tx,
                coord: coord_tx,
            })
        }
        None => None,
    };
    Ok(Arc::new(TaskManager {
        plan,
        settings,
        config,
        server,
        data_address,
        link,
        metrics,
        checkpointing,
        running: Mutex::new(None),
    }))
}

/// Cancels an attempt and waits (bounded) for its tasks to end.
fn wind_down(r: Option<Running>, wait: Duration) {
    let Some(r) = r else { return };
    r.cancel.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + wait;
    while r.remaining.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), JobError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(JobError::Spawn)
}

impl TaskManager {
    /// Serves the JobManager(s) until `stop` is set: registers, runs what is deployed here,
    /// and registers again (trying each configured address in turn) when the JobManager is
    /// lost.
    pub fn run(self: &Arc<Self>, stop: Arc<AtomicBool>) {
        let mut next = 0usize;
        // The last refusal logged, and when: a refused TaskManager retries several times a
        // second (until the leader takes it, or until its pod from before an upgrade is
        // replaced), so the same reason is logged again only now and then.
        let mut refused: Option<(String, Instant)> = None;
        while !stop.load(Ordering::SeqCst) {
            let n = self.config.jobmanagers.len().max(1);
            let address = self
                .config
                .jobmanagers
                .get(next % n)
                .cloned()
                .unwrap_or_default();
            next += 1;
            match self.session(&address, &stop) {
                Ok(()) => refused = None,
                Err(SessionError::Rejected { reason }) => {
                    let repeated = refused.as_ref().is_some_and(|(r, at)| {
                        *r == reason && at.elapsed() < REJECTION_LOG_INTERVAL
                    });
                    if !repeated {
                        tracing::warn!(
                            "JobManager {address} refused TaskManager {}: {reason}",
                            self.config.id
                        );
                        refused = Some((reason, Instant::now()));
                    }
                }
                Err(e) => {
                    refused = None;
                    tracing::debug!("JobManager {address}: {e}");
                }
            }
            self.cancel_running(Duration::from_secs(30));
            if !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        self.cancel_running(Duration::from_secs(30));
    }

    /// The address other TaskManagers send data to.
    pub fn data_address(&self) -> &str {
        &self.data_address
    }

    /// One registration with one JobManager, until it is lost or `stop` is set.
    fn session(
        self: &Arc<Self>,
        address: &str,
        stop: &Arc<AtomicBool>,
    ) -> Result<(), SessionError> {
        let mut stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write_json(
            &mut stream,
            &ToJobManager::Register {
                id: self.config.id.clone(),
                slots: self.config.slots,
                data_address: self.data_address.clone(),
                manifest_hash: self.config.manifest_hash.clone(),
            },
        )?;
        let (interval, timeout) = match read_json::<ToTaskManager>(&mut stream)? {
            ToTaskManager::Registered {
                heartbeat_interval_ms,
                heartbeat_timeout_ms,
            } => (
                Duration::from_millis(heartbeat_interval_ms.max(1)),
                Duration::from_millis(heartbeat_timeout_ms.max(1)),
            ),
            ToTaskManager::Rejected { reason } => return Err(SessionError::Rejected { reason }),
            other => return Err(io::Error::other(format!("unexpected {other:?}")).into()),
        };
        tracing::info!("registered with JobManager {address}");
        stream.set_read_timeout(Some(timeout))?;
        let conn = Arc::new(Mutex::new(stream.try_clone()?));
        self.link.set(Some(conn.clone()));
        let alive = Arc::new(AtomicBool::new(true));
        {
            let (alive, conn, stop, me) = (alive.clone(), conn.clone(), stop.clone(), self.clone());
            std::thread::Builder::new()
                .name("tm-heartbeat".into())
                .spawn(move || {
                    while alive.load(Ordering::SeqCst) {
                        if stop.load(Ordering::SeqCst) {
                            // Stopping looks like a crash to the JobManager: the connection
                            // closes and whatever ran here fails the attempt.
                            let _ = lock(&conn).shutdown(Shutdown::Both);
                            return;
                        }
                        let beat = ToJobManager::Heartbeat {
                            metrics: me.reports(),
                        };
                        if write_json(&mut *lock(&conn), &beat).is_err() {
                            return;
                        }
                        let deadline = Instant::now() + interval;
                        while Instant::now() < deadline && alive.load(Ordering::SeqCst) {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                })?;
        }
        let mut reader = io::BufReader::new(stream);
        let result = loop {
            let msg = match read_json::<ToTaskManager>(&mut reader) {
                Ok(m) => m,
                Err(e) => break Err(e),
            };
            match msg {
                ToTaskManager::Heartbeat
                | ToTaskManager::Registered { .. }
                | ToTaskManager::Rejected { .. } => {}
                ToTaskManager::Deploy(d) => {
                    // The new attempt is current from now on, so that what arrives for it
                    // while the previous one winds down is kept, not dropped.
                    let previous = lock(&self.running).replace(Running {
                        attempt: d.attempt,
                        cancel: Arc::new(AtomicBool::new(false)),
                        all: None,
                        remaining: Arc::new(AtomicUsize::new(0)),
                        local: Vec::new(),
                        early: Vec::new(),
                    });
                    let me = self.clone();
                    std::thread::Builder::new()
                        .name("tm-deploy".into())
                        .spawn(move || me.deploy(d, previous))?;
                }
                ToTaskManager::Cancel { attempt } => {
                    if let Some(r) = lock(&self.running).as_ref()
                        && r.attempt == attempt
                    {
                        r.cancel.store(true, Ordering::SeqCst);
                    }
                }
                ToTaskManager::Control { attempt, control } => {
                    let control = match control {
                        ControlMessage::Trigger(b) => Control::Trigger(b),
                        ControlMessage::Complete(id) => Control::Complete(id),
                        ControlMessage::Abort(id) => Control::Abort(id),
                    };
                    let mut g = lock(&self.running);
                    if let Some(r) = g.as_mut().filter(|r| r.attempt == attempt) {
                        match &r.all {
                            Some(all) => all.broadcast(control),
                            None => r.early.push(control),
                        }
                    }
                }
            }
        };
        alive.store(false, Ordering::SeqCst);
        self.link.set(None);
        let _ = lock(&conn).shutdown(Shutdown::Both);
        result.map_err(SessionError::Io)
    }

    /// Totals of the operator subtasks the current attempt runs here.
    fn reports(&self) -> Vec<SubtaskReport> {
        let local = lock(&self.running)
            .as_ref()
            .map(|r| r.local.clone())
            .unwrap_or_default();
        local
            .into_iter()
            .filter_map(|(vertex, subtask)| {
                let m = self
                    .metrics
                    .vertices
                    .get(vertex)?
                    .subtasks
                    .get(subtask as usize)?;
                Some(SubtaskReport {
                    vertex,
                    subtask,
                    records_in: m.records_in.load(Ordering::Relaxed),
                    records_out: m.records_out.load(Ordering::Relaxed),
                    watermark: m.watermark.load(Ordering::Relaxed),
                    counters: m.counters(),
                })
            })
            .collect()
    }

    /// This TaskManager's operator metrics (every subtask it ever ran, cumulative).
    pub fn metrics(&self) -> &Arc<JobMetrics> {
        &self.metrics
    }

    /// Cancels the running attempt and waits (bounded) for its tasks to end, so that the next
    /// one does not meet their state or ports.
    fn cancel_running(&self, wait: Duration) {
        let r = lock(&self.running).take();
        wind_down(r, wait);
    }

    fn deploy(self: Arc<Self>, d: Deployment, previous: Option<Running>) {
        let attempt = d.attempt;
        wind_down(previous, Duration::from_secs(30));
        self.server.forget_before(attempt);
        if let Err(e) = self.try_deploy(d) {
            self.link.send(&ToJobManager::DeployFailed {
                attempt,
                error: e.to_string(),
            });
        }
    }

    fn try_deploy(self: &Arc<Self>, d: Deployment) -> Result<(), JobError> {
        let attempt = d.attempt;
        let restore = match &d.restore_from {
            Some(path) => {
                let st = self.settings.open(path)?;
                let job = RestoredJob::load(st.as_ref(), path)
                    .map_err(|e| JobError::Checkpoint(e.to_string()))?;
                Some(Arc::new(job))
            }
            None => None,
        };
        let local = self
            .plan
            .task_parallelisms()
            .iter()
            .map(|&p| {
                (0..p)
                    .filter(|s| d.slot_worker.get(*s as usize) == Some(&d.you))
                    .count()
            })
            .sum::<usize>();
        let remaining = Arc::new(AtomicUsize::new(local));
        let local_subtasks: Vec<(usize, u32)> = self
            .plan
            .par
            .iter()
            .enumerate()
            .flat_map(|(v, &p)| (0..p).map(move |s| (v, s)))
            .filter(|(_, s)| d.slot_worker.get(*s as usize) == Some(&d.you))
            .collect();
        let (done_tx, done_rx) = mpsc::channel::<TaskDone>();
        {
            let mut g = lock(&self.running);
            match g.as_mut() {
                Some(r) if r.attempt == attempt && !r.cancel.load(Ordering::SeqCst) => {
                    r.remaining = remaining.clone();
                    r.local = local_subtasks;
                }
                // Cancelled or superseded before it started: nothing to run.
                _ => return Ok(()),
            }
        }
        {
            let (link, remaining, me) = (self.link.clone(), remaining.clone(), self.clone());
            spawn("tm-results", move || {
                for t in done_rx {
                    if !t.late {
                        remaining.fetch_sub(1, Ordering::SeqCst);
                    }
                    // The final counts go first, so the job's totals are complete at its end.
                    link.send(&ToJobManager::Heartbeat {
                        metrics: me.reports(),
                    });
                    link.send(&ToJobManager::TaskDone {
                        attempt: t.attempt,
                        task: t.task,
                        subtask: t.subtask,
                        late: t.late,
                        error: t.result.err().map(|e| e.to_string()),
                    });
                }
            })?;
        }
        let broken_link = self.link.clone();
        let placement = Placement {
            slot_worker: d.slot_worker,
            workers: d.workers,
            me: d.you,
            server: self.server.clone(),
            broken: Arc::new(move |why: String| {
                broken_link.send(&ToJobManager::TaskDone {
                    attempt,
                    task: usize::MAX,
                    subtask: 0,
                    late: true,
                    error: Some(why),
                });
            }),
        };
        let a: Attempt = deploy(
            &self.plan,
            AttemptContext {
                attempt,
                metrics: self.metrics.clone(),
                restore,
                checkpointing: self.checkpointing.clone(),
                fault: self.settings.fault.clone(),
                done: done_tx,
                state_backend: self.settings.state_backend_context(
                    &self.plan.settings.name,
                    self.checkpointing.as_ref().map(|c| c.storage.clone()),
                ),
                placement: Some(placement),
            },
        )?;
        let mut g = lock(&self.running);
        match g.as_mut() {
            Some(r) if r.attempt == attempt => {
                // The attempt may have been cancelled while it deployed.
                if r.cancel.load(Ordering::SeqCst) {
                    a.cancel.store(true, Ordering::SeqCst);
                }
                r.cancel = a.cancel.clone();
                r.all = Some(a.all.clone());
                for c in r.early.drain(..) {
                    a.all.broadcast(c);
                }
            }
            _ => a.cancel.store(true, Ordering::SeqCst),
        }
        Ok(())
    }
}
