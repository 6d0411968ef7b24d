//! The JobManager's side of the cluster: TaskManagers register over a control connection and
//! offer slots; a TaskManager that sends nothing for the heartbeat timeout, or whose
//! connection breaks, is lost, and every subtask it ran fails the attempt (the restart
//! strategy then restores the job on the TaskManagers that are there, waiting for slots).
//!
//! Scheduling follows Flink's default slot sharing: slot `i` runs subtask `i` of every task,
//! so a job needs as many slots as its highest parallelism, and slots are taken in the order
//! TaskManagers registered.

use super::protocol::{ControlMessage, Deployment, SubtaskReport, ToJobManager, ToTaskManager};
use super::wire::{read_json, write_json};
use crate::checkpoint::coordinator::{Control, CoordMsg};
use crate::error::JobError;
use crate::exec::{Attempt, AttemptContext, JobPlan, TaskDone, TaskGateway};
use crate::sync::lock;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Timing of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often TaskManagers send a heartbeat.
    pub heartbeat_interval: Duration,
    /// A TaskManager (or, from its side, the JobManager) that sends nothing for this long is
    /// lost. Flink's default is 50 s; a lost TaskManager is noticed at once when its
    /// connection breaks (a killed process), so this only bounds hung ones.
    pub heartbeat_timeout: Duration,
    /// How long a deployment waits for enough slots before it fails.
    pub slot_timeout: Duration,
    /// Fingerprint of the manifest this JobManager runs. A TaskManager registering with a
    /// different one was built from another manifest (an old pod during a rolling upgrade) and
    /// is refused, so it never runs subtasks of a job it does not match. `None`, on either
    /// side, accepts every TaskManager.
    pub manifest_hash: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(10),
            slot_timeout: Duration::from_secs(120),
            manifest_hash: None,
        }
    }
}

struct Tm {
    seq: u64,
    id: String,
    slots: u32,
    data_address: String,
    conn: Arc<Mutex<TcpStream>>,
    /// The last metrics it reported per (vertex, subtask): the job's totals grow by the
    /// difference, so counters never go backwards when a subtask moves.
    reported: HashMap<(usize, u32), SubtaskReport>,
}

impl Tm {
    fn send(&self, msg: &ToTaskManager) -> io::Result<()> {
        write_json(&mut *lock(&self.conn), msg)
    }
}

struct Current {
    attempt: u64,
    done: mpsc::Sender<TaskDone>,
    coord: Option<mpsc::Sender<CoordMsg>>,
    metrics: Arc<crate::metrics::JobMetrics>,
    /// Subtasks (task, subtask) not yet reported, per TaskManager (`seq`).
    pending: HashMap<u64, BTreeSet<(usize, u32)>>,
}

#[derive(Default)]
struct State {
    tms: Vec<Tm>,
    next_seq: u64,
    current: Option<Current>,
}

struct Inner {
    config: ClusterConfig,
    state: Mutex<State>,
    changed: Condvar,
    /// Whether registrations are accepted (a standby JobManager refuses them).
    accepting: AtomicBool,
    /// The JobManager is stopping: a deployment waiting for slots gives up.
    aborted: AtomicBool,
}

/// The JobManager's view of its TaskManagers; deploys attempts into their slots.
pub struct JobManagerCluster {
    address: SocketAddr,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobManagerCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManagerCluster")
            .field("address", &self.address)
            .finish()
    }
}

/// A registered TaskManager, for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskManagerInfo {
    /// Its id.
    pub id: String,
    /// Slots offered.
    pub slots: u32,
    /// Data port.
    pub data_address: String,
}

impl JobManagerCluster {
    /// Listens for TaskManagers on `address`.
    pub fn bind(address: impl ToSocketAddrs, config: ClusterConfig) -> io::Result<Arc<Self>> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let inner = Arc::new(Inner {
            config,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            accepting: AtomicBool::new(true),
            aborted: AtomicBool::new(false),
        });
        let i2 = inner.clone();
        std::thread::Builder::new()
            .name("jm-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let inner = i2.clone();
                    let _ = std::thread::Builder::new()
                        .name("jm-tm".into())
                        .spawn(move || serve_task_manager(&inner, stream));
                }
            })?;
        Ok(Arc::new(Self { address, inner }))
    }

    /// The address TaskManagers connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The registered TaskManagers, in registration order.
    pub fn task_managers(&self) -> Vec<TaskManagerInfo> {
        lock(&self.inner.state)
            .tms
            .iter()
            .map(|t| TaskManagerInfo {
                id: t.id.clone(),
                slots: t.slots,
                data_address: t.data_address.clone(),
            })
            .collect()
    }

    /// Waits until `n` TaskManagers are registered; false on timeout.
    pub fn wait_for_task_managers(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.inner.state);
        while g.tms.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self
                .inner
                .changed
                .wait_timeout(g, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    /// Makes a deployment that waits for slots give up at once (the JobManager is stopping).
    pub fn abort_waiting(&self) {
        self.inner.aborted.store(true, Ordering::SeqCst);
        self.inner.changed.notify_all();
    }

    /// Accept registrations (leader) or refuse them and drop every TaskManager (standby).
    pub fn set_accepting(&self, accepting: bool) {
        self.inner.accepting.store(accepting, Ordering::SeqCst);
        if !accepting {
            let tms: Vec<u64> = lock(&self.inner.state).tms.iter().map(|t| t.seq).collect();
            for seq in tms {
                lose(&self.inner, seq, "this JobManager is no longer the leader");
            }
        }
    }

    /// Deploys one attempt of `plan` into the registered slots.
    pub(crate) fn deploy(&self, plan: &JobPlan, ctx: AttemptContext) -> Result<Attempt, JobError> {
        let needed = plan.slots_needed();
        let deadline = Instant::now() + self.inner.config.slot_timeout;
        let mut g = lock(&self.inner.state);
        loop {
            let offered: u32 = g.tms.iter().map(|t| t.slots).sum();
            if offered >= needed {
                break;
            }
            if self.inner.aborted.load(Ordering::SeqCst) {
                return Err(JobError::Failed(format!(
                    "stopped while waiting for task slots ({offered} of {needed} offered)"
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(JobError::Failed(format!(
                    "not enough task slots: the job needs {needed} (its highest parallelism), \
                     {} TaskManager(s) offer {offered}; start more TaskManagers, give them more \
                     slots (spec.taskManager.slots) or lower spec.job.parallelism",
                    g.tms.len()
                )));
            }
            g = self
                .inner
                .changed
                .wait_timeout(g, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        // Slot i -> the TaskManager offering it, in registration order.
        let mut slot_tm: Vec<usize> = Vec::with_capacity(needed as usize);
        for (i, t) in g.tms.iter().enumerate() {
            for _ in 0..t.slots {
                if slot_tm.len() < needed as usize {
                    slot_tm.push(i);
                }
            }
        }
        let mut involved: Vec<usize> = slot_tm.clone();
        involved.dedup();
        let slot_worker: Vec<usize> = slot_tm
            .iter()
            .map(|tm| involved.iter().position(|i| i == tm).unwrap_or(0))
            .collect();
        let workers: Vec<String> = involved
            .iter()
            .map(|&i| g.tms[i].data_address.clone())
            .collect();
        let seqs: Vec<u64> = involved.iter().map(|&i| g.tms[i].seq).collect();
        let mut pending: HashMap<u64, BTreeSet<(usize, u32)>> = HashMap::new();
        for (task, par) in plan.task_parallelisms().into_iter().enumerate() {
            for sub in 0..par {
                let seq = seqs[slot_worker[sub as usize]];
                pending.entry(seq).or_default().insert((task, sub));
            }
        }
        g.current = Some(Current {
            attempt: ctx.attempt,
            done: ctx.done.clone(),
            coord: ctx.checkpointing.as_ref().map(|c| c.coord.clone()),
            metrics: ctx.metrics.clone(),
            pending,
        });
        let restore_from = ctx.restore.as_ref().map(|r| r.location.clone());
        let mut failed = Vec::new();
        for (w, &i) in involved.iter().enumerate() {
            let tm = &g.tms[i];
            let msg = ToTaskManager::Deploy(Deployment {
                attempt: ctx.attempt,
                slot_worker: slot_worker.clone(),
                workers: workers.clone(),
                you: w,
                restore_from: restore_from.clone(),
            });
            if let Err(e) = tm.send(&msg) {
                failed.push((tm.seq, format!("sending the deployment failed: {e}")));
            }
        }
        drop(g);
        for (seq, why) in failed {
            lose(&self.inner, seq, &why);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let gateway = Arc::new(RemoteGateway {
            inner: self.inner.clone(),
            attempt: ctx.attempt,
            tms: seqs,
            count: plan.subtask_count(),
        });
        // The supervisor cancels an attempt by setting its flag; pass that on.
        let (inner, flag, attempt, gw) = (
            self.inner.clone(),
            cancel.clone(),
            ctx.attempt,
            gateway.clone(),
        );
        std::thread::Builder::new()
            .name("jm-attempt".into())
            .spawn(move || {
                loop {
                    if flag.load(Ordering::SeqCst) {
                        gw.send_all(&ToTaskManager::Cancel { attempt });
                        return;
                    }
                    let running = lock(&inner.state)
                        .current
                        .as_ref()
                        .is_some_and(|c| c.attempt == attempt);
                    if !running {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .map_err(JobError::Spawn)?;
        Ok(Attempt {
            cancel,
            all: gateway,
        })
    }
}

impl Drop for JobManagerCluster {
    fn drop(&mut self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
    }
}

/// The tasks of one attempt, in the TaskManagers that run them.
struct RemoteGateway {
    inner: Arc<Inner>,
    attempt: u64,
    tms: Vec<u64>,
    count: usize,
}

impl RemoteGateway {
    fn send_all(&self, msg: &ToTaskManager) {
        let failed: Vec<(u64, String)> = {
            let g = lock(&self.inner.state);
            g.tms
                .iter()
                .filter(|t| self.tms.contains(&t.seq))
                .filter_map(|t| t.send(msg).err().map(|e| (t.seq, e.to_string())))
                .collect()
        };
        for (seq, e) in failed {
            lose(&self.inner, seq, &format!("sending to it failed: {e}"));
        }
    }
}

impl TaskGateway for RemoteGateway {
    fn broadcast(&self, c: Control) {
        let control = match c {
            Control::Trigger(b) => ControlMessage::Trigger(b),
            Control::Complete(id) => ControlMessage::Complete(id),
            Control::Abort(id) => ControlMessage::Abort(id),
        };
        self.send_all(&ToTaskManager::Control {
            attempt: self.attempt,
            control,
        });
    }

    fn task_count(&self) -> usize {
        self.count
    }
}

/// Removes a TaskManager; the subtasks it had not finished fail the attempt.
fn lose(inner: &Inner, seq: u64, why: &str) {
    let mut g = lock(&inner.state);
    let Some(pos) = g.tms.iter().position(|t| t.seq == seq) else {
        return;
    };
    let tm = g.tms.remove(pos);
    let _ = lock(&tm.conn).shutdown(Shutdown::Both);
    tracing::warn!("TaskManager {} ({}) lost: {why}", tm.id, tm.data_address);
    if let Some(cur) = &mut g.current
        && let Some(subtasks) = cur.pending.remove(&seq)
    {
        for (task, subtask) in subtasks {
            let _ = cur.done.send(TaskDone {
                attempt: cur.attempt,
                result: Err(JobError::Failed(format!(
                    "TaskManager {} ({}) was lost: {why}",
                    tm.id, tm.data_address
                ))),
                late: false,
                task,
                subtask,
            });
        }
    }
    inner.changed.notify_all();
}

fn serve_task_manager(inner: &Arc<Inner>, mut stream: TcpStream) {
    let timeout = inner.config.heartbeat_timeout;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(timeout));
    let Ok(ToJobManager::Register {
        id,
        slots,
        data_address,
        manifest_hash,
    }) = read_json::<ToJobManager>(&mut stream)
    else {
        return;
    };
    if !inner.accepting.load(Ordering::SeqCst) {
        let _ = write_json(
            &mut stream,
            &ToTaskManager::Rejected {
                reason: "this JobManager is not the leader".into(),
            },
        );
        return;
    }
    if let Some(reason) = manifest_mismatch(&id, manifest_hash.as_deref(), &inner.config) {
        // Logged at debug only: the refused TaskManager retries several times a second until
        // its pod is replaced, and it logs the reason itself.
        tracing::debug!("{reason}");
        let _ = write_json(&mut stream, &ToTaskManager::Rejected { reason });
        return;
    }
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let conn = Arc::new(Mutex::new(writer));
    let seq = {
        let mut g = lock(&inner.state);
        let seq = g.next_seq;
        g.next_seq += 1;
        let tm = Tm {
            seq,
            id: id.clone(),
            slots,
            data_address: data_address.clone(),
            conn: conn.clone(),
            reported: HashMap::new(),
        };
        if tm
            .send(&ToTaskManager::Registered {
                heartbeat_interval_ms: inner.config.heartbeat_interval.as_millis() as u64,
                heartbeat_timeout_ms: timeout.as_millis() as u64,
            })
            .is_err()
        {
            return;
        }
        g.tms.push(tm);
        seq
    };
    tracing::info!("TaskManager {id} registered with {slots} slot(s), data port {data_address}");
    inner.changed.notify_all();
    let mut reader = io::BufReader::new(stream);
    let why = loop {
        let msg = match read_json::<ToJobManager>(&mut reader) {
            Ok(m) => m,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break format!("no heartbeat for {timeout:?}");
            }
            Err(e) => break format!("its connection closed ({e})"),
        };
        if let Err(e) = handle(inner, seq, &conn, msg) {
            break e;
        }
    };
    lose(inner, seq, &why);
}

/// Why a TaskManager registering with `theirs` may not join a JobManager configured with
/// `config`, or `None` when it may: the fingerprints are equal, or either side has none.
fn manifest_mismatch(id: &str, theirs: Option<&str>, config: &ClusterConfig) -> Option<String> {
    match (theirs, config.manifest_hash.as_deref()) {
        (Some(theirs), Some(ours)) if theirs != ours => Some(format!(
            "TaskManager {id} runs a different manifest (spec hash {theirs}) than this \
             JobManager (spec hash {ours}): it is from before an upgrade; it retries until it \
             is replaced"
        )),
        _ => None,
    }
}

fn handle(
    inner: &Inner,
    seq: u64,
    conn: &Mutex<TcpStream>,
    msg: ToJobManager,
) -> Result<(), String> {
    match msg {
        ToJobManager::Heartbeat { metrics } => {
            write_json(&mut *lock(conn), &ToTaskManager::Heartbeat).map_err(|e| e.to_string())?;
            let mut g = lock(&inner.state);
            let State { tms, current, .. } = &mut *g;
            if let (Some(tm), Some(cur)) = (tms.iter_mut().find(|t| t.seq == seq), current) {
                for r in metrics {
                    let prev = tm.reported.insert((r.vertex, r.subtask), r.clone());
                    apply(&cur.metrics, &r, prev.as_ref());
                }
            }
        }
        ToJobManager::Register { .. } => return Err("registered twice".into()),
        ToJobManager::TaskDone {
            attempt,
            task,
            subtask,
            late,
            error,
        } => {
            let mut g = lock(&inner.state);
            let id = g
                .tms
                .iter()
                .find(|t| t.seq == seq)
                .map(|t| t.id.clone())
                .unwrap_or_default();
            if let Some(cur) = &mut g.current
                && cur.attempt == attempt
            {
                let counted = cur
                    .pending
                    .get_mut(&seq)
                    .is_some_and(|p| p.remove(&(task, subtask)));
                if counted || late {
                    let _ = cur.done.send(TaskDone {
                        attempt,
                        result: match error {
                            None => Ok(()),
                            Some(e) => Err(JobError::Failed(format!("{e} (in TaskManager {id})"))),
                        },
                        late: !counted,
                        task,
                        subtask,
                    });
                }
            }
        }
        ToJobManager::DeployFailed { attempt, error } => {
            let mut g = lock(&inner.state);
            if let Some(cur) = &mut g.current
                && cur.attempt == attempt
                && let Some(subtasks) = cur.pending.remove(&seq)
            {
                for (task, subtask) in subtasks {
                    let _ = cur.done.send(TaskDone {
                        attempt,
                        result: Err(JobError::Failed(format!("deployment failed: {error}"))),
                        late: false,
                        task,
                        subtask,
                    });
                }
            }
        }
        ToJobManager::Ack {
            attempt,
            id,
            files,
            alignment_ms,
            task,
        } => forward(
            inner,
            CoordMsg::Ack {
                attempt,
                id,
                files,
                alignment_ms,
                task,
            },
        ),
        ToJobManager::Decline {
            attempt,
            id,
            reason,
        } => forward(
            inner,
            CoordMsg::Decline {
                attempt,
                id,
                reason,
            },
        ),
        ToJobManager::Shutdown => forward(inner, CoordMsg::Shutdown),
    }
    Ok(())
}

/// Adds what a subtask did since its previous report to the job's totals.
fn apply(job: &crate::metrics::JobMetrics, r: &SubtaskReport, prev: Option<&SubtaskReport>) {
    let Some(m) = job
        .vertices
        .get(r.vertex)
        .and_then(|v| v.subtasks.get(r.subtask as usize))
    else {
        return;
    };
    let before = |f: fn(&SubtaskReport) -> u64| prev.map_or(0, f);
    m.records_in.fetch_add(
        r.records_in.saturating_sub(before(|p| p.records_in)),
        Ordering::Relaxed,
    );
    m.records_out.fetch_add(
        r.records_out.saturating_sub(before(|p| p.records_out)),
        Ordering::Relaxed,
    );
    m.watermark.store(r.watermark, Ordering::Relaxed);
    for (name, total) in &r.counters {
        let was = prev
            .and_then(|p| p.counters.iter().find(|(n, _)| n == name))
            .map_or(0, |(_, v)| *v);
        m.counter(name)
            .fetch_add(total.saturating_sub(was), Ordering::Relaxed);
    }
}

fn forward(inner: &Inner, msg: CoordMsg) {
    if let Some(c) = lock(&inner.state)
        .current
        .as_ref()
        .and_then(|c| c.coord.as_ref())
    {
        let _ = c.send(msg);
    }
}
