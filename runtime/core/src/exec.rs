//! The executor: turns the logical graph into tasks (chains of operators with equal
//! parallelism linked by forward edges), connects them with bounded channels, runs every
//! subtask on its own thread, and tracks the job until it finishes, fails or is cancelled.

use crate::channel::{Event, Notify, Receiver};
use crate::error::{JobError, OperatorError};
use crate::graph::{AnyBox, EdgeWiring, HeadInit, ShipKind, Vertex, VertexKind};
use crate::key::Data;
use crate::metrics::{JobMetrics, SubtaskMetrics, VertexMetrics};
use crate::operator::{BATCH_SIZE, OperatorInit, Output};
use crate::record::Record;
use crate::source::{Source, SourceContext, SourcePoll};
use crate::time::{Clock, now_ms};
use crate::watermark::{WatermarkGenerator, WatermarkStrategy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often a task checks processing-time timers, flushes partial batches and publishes
/// metrics when records keep flowing (Flink's buffer timeout plays the same role).
const TICK: Duration = Duration::from_millis(10);

/// Shared by all tasks of a job.
pub(crate) struct TaskRuntime {
    pub cancel: Arc<AtomicBool>,
    pub clock: Arc<dyn Clock>,
}

impl TaskRuntime {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// The loop of one subtask.
pub(crate) trait TaskHead: Send {
    fn run(self: Box<Self>, rt: &TaskRuntime) -> Result<(), OperatorError>;
}

/// Runs a chain fed by a source reader.
pub(crate) struct SourceHead<T> {
    source: Arc<dyn Source<T>>,
    watermarks: WatermarkStrategy<T>,
    init: OperatorInit,
    out: Box<dyn Output<T>>,
}

impl<T> SourceHead<T> {
    pub(crate) fn new(
        source: Arc<dyn Source<T>>,
        watermarks: WatermarkStrategy<T>,
        h: HeadInit,
        out: Box<dyn Output<T>>,
    ) -> Self {
        Self {
            source,
            watermarks,
            init: h.init,
            out,
        }
    }
}

impl<T: Data> TaskHead for SourceHead<T> {
    fn run(mut self: Box<Self>, rt: &TaskRuntime) -> Result<(), OperatorError> {
        let ctx = SourceContext {
            subtask: self.init.subtask,
            parallelism: self.init.parallelism,
            clock: rt.clock.clone(),
        };
        let mut reader = self.source.create_reader(&ctx)?;
        let mut wmgen = WatermarkGenerator::new(self.watermarks.clone());
        let per_record = wmgen.per_record();
        let interval = wmgen.interval();
        let idleness = wmgen.idleness();
        let out = &mut self.out;
        let mut buf: Vec<Record<T>> = Vec::with_capacity(BATCH_SIZE);
        let mut emitted: u64 = 0;
        let mut last_tick = Instant::now();
        let mut last_wm = Instant::now();
        let mut last_data = Instant::now();
        let mut idle = false;
        loop {
            if rt.cancelled() {
                return Ok(());
            }
            let poll = reader.poll(&mut buf)?;
            if !buf.is_empty() {
                last_data = Instant::now();
                idle = false;
                emitted += buf.len() as u64;
                for mut r in buf.drain(..) {
                    wmgen.on_record(&mut r);
                    out.emit(r)?;
                    if per_record && let Some(wm) = wmgen.poll() {
                        out.emit_watermark(wm)?;
                    }
                }
            }
            match poll {
                SourcePoll::Finished => {
                    // A bounded input is complete: every event-time window may fire.
                    out.emit_watermark(i64::MAX)?;
                    self.init
                        .metrics
                        .records_out
                        .store(emitted, Ordering::Relaxed);
                    out.end_of_input()?;
                    out.publish_metrics();
                    return Ok(());
                }
                SourcePoll::Idle => {
                    out.flush()?;
                    std::thread::sleep(Duration::from_millis(1));
                }
                SourcePoll::Emitted => {}
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= TICK {
                last_tick = now;
                if !per_record && now.duration_since(last_wm) >= interval {
                    last_wm = now;
                    if let Some(wm) = wmgen.poll() {
                        out.emit_watermark(wm)?;
                    }
                }
                if let Some(timeout) = idleness
                    && !idle
                    && now.duration_since(last_data) >= timeout
                {
                    idle = true;
                    out.mark_idle()?;
                }
                out.processing_time(rt.clock.now_ms())?;
                out.flush()?;
                self.init
                    .metrics
                    .records_out
                    .store(emitted, Ordering::Relaxed);
                out.publish_metrics();
            }
        }
    }
}

/// Runs a chain fed by channels from upstream subtasks, merging their watermarks.
pub(crate) struct InputHead<I> {
    channels: Vec<Receiver<I>>,
    notify: Arc<Notify>,
    out: Box<dyn Output<I>>,
}

impl<I> InputHead<I> {
    pub(crate) fn new(channels: Vec<Receiver<I>>, h: HeadInit, out: Box<dyn Output<I>>) -> Self {
        Self {
            channels,
            notify: h.notify,
            out,
        }
    }
}

/// Per-channel watermark bookkeeping of an input gate.
struct WatermarkValve {
    wms: Vec<i64>,
    idle: Vec<bool>,
    ended: Vec<bool>,
    current: i64,
    all_idle: bool,
}

enum ValveOutput {
    Nothing,
    Advance(i64),
    Idle,
    /// All inputs went idle: release the highest watermark any of them reached (as Flink's
    /// watermark valve does), then go idle.
    AdvanceThenIdle(i64),
}

impl WatermarkValve {
    fn new(n: usize) -> Self {
        Self {
            wms: vec![i64::MIN; n],
            idle: vec![false; n],
            ended: vec![false; n],
            current: i64::MIN,
            all_idle: false,
        }
    }

    fn active(&mut self, i: usize) {
        self.idle[i] = false;
        self.all_idle = false;
    }

    fn recompute(&mut self) -> ValveOutput {
        let mut min = i64::MAX;
        let mut any_active = false;
        for i in 0..self.wms.len() {
            if self.ended[i] || self.idle[i] {
                continue;
            }
            any_active = true;
            min = min.min(self.wms[i]);
        }
        if !any_active {
            if self.ended.iter().all(|&e| e) {
                return ValveOutput::Nothing;
            }
            if !self.all_idle {
                self.all_idle = true;
                let max = (0..self.wms.len())
                    .filter(|&i| !self.ended[i])
                    .map(|i| self.wms[i])
                    .max();
                if let Some(max) = max
                    && max > self.current
                {
                    self.current = max;
                    return ValveOutput::AdvanceThenIdle(max);
                }
                return ValveOutput::Idle;
            }
            return ValveOutput::Nothing;
        }
        if min > self.current {
            self.current = min;
            return ValveOutput::Advance(min);
        }
        ValveOutput::Nothing
    }
}

impl<I: Data> TaskHead for InputHead<I> {
    fn run(mut self: Box<Self>, rt: &TaskRuntime) -> Result<(), OperatorError> {
        let n = self.channels.len();
        let mut valve = WatermarkValve::new(n);
        let mut open = n;
        let mut last_tick = Instant::now();
        let out = &mut self.out;
        while open > 0 {
            if rt.cancelled() {
                return Ok(());
            }
            let seen = self.notify.seq();
            let mut got = false;
            for i in 0..n {
                if valve.ended[i] {
                    continue;
                }
                let Some(ev) = self.channels[i].try_recv() else {
                    continue;
                };
                got = true;
                let step = match ev {
                    Event::Batch(batch) => {
                        valve.active(i);
                        for r in batch {
                            out.emit(r)?;
                        }
                        ValveOutput::Nothing
                    }
                    Event::Watermark(wm) => {
                        valve.active(i);
                        valve.wms[i] = valve.wms[i].max(wm);
                        valve.recompute()
                    }
                    Event::Idle => {
                        valve.idle[i] = true;
                        valve.recompute()
                    }
                    Event::End => {
                        valve.ended[i] = true;
                        open -= 1;
                        valve.recompute()
                    }
                };
                match step {
                    ValveOutput::Advance(wm) => out.emit_watermark(wm)?,
                    ValveOutput::Idle => out.mark_idle()?,
                    ValveOutput::AdvanceThenIdle(wm) => {
                        out.emit_watermark(wm)?;
                        out.mark_idle()?;
                    }
                    ValveOutput::Nothing => {}
                }
            }
            let now = Instant::now();
            if !got || now.duration_since(last_tick) >= TICK {
                last_tick = now;
                out.processing_time(rt.clock.now_ms())?;
                out.flush()?;
                out.publish_metrics();
                if !got && open > 0 {
                    self.notify.wait(seen, TICK);
                }
            }
        }
        out.end_of_input()?;
        out.publish_metrics();
        Ok(())
    }
}

/// What the job is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Tasks are running.
    Running,
    /// Cancellation was requested; tasks are stopping.
    Cancelling,
    /// Every task ended normally (bounded input).
    Finished,
    /// A task failed; the message says why.
    Failed(String),
    /// The job was cancelled.
    Canceled,
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
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// All input was processed.
    Finished,
    /// Cancelled on request.
    Canceled,
}

struct JobShared {
    status: Mutex<(JobStatusView, Option<JobError>)>,
    done: Condvar,
    cancel: Arc<AtomicBool>,
}

/// A running job.
#[derive(Clone)]
pub struct JobHandle {
    shared: Arc<JobShared>,
    metrics: Arc<JobMetrics>,
    parallelism: u32,
    max_parallelism: u32,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("status", &self.status())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let mut g = lock(&self.shared.status);
        if g.0.state == RunState::Running {
            g.0.state = RunState::Cancelling;
        }
        self.shared.cancel.store(true, Ordering::SeqCst);
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
            _ => Err(g
                .1
                .take()
                .unwrap_or_else(|| JobError::InvalidGraph(format!("{:?}", g.0.state)))),
        }
    }
}

/// Execution settings.
#[derive(Debug, Clone)]
pub(crate) struct ExecSettings {
    pub name: String,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub clock: Arc<dyn Clock>,
    pub channel_capacity: usize,
    pub chaining: bool,
}

struct Task {
    name: String,
    chain: Vec<usize>,
    parallelism: u32,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Deploys `vertices` and starts every subtask.
pub(crate) fn deploy(vertices: Vec<Vertex>, s: ExecSettings) -> Result<JobHandle, JobError> {
    if !vertices.iter().any(|v| v.kind == VertexKind::Sink) {
        return Err(JobError::InvalidGraph(
            "the dataflow has no sink: add one with `.sink(...)`".into(),
        ));
    }
    if s.parallelism == 0 || s.max_parallelism < s.parallelism {
        return Err(JobError::InvalidGraph(format!(
            "parallelism {} must be at least 1 and at most maxParallelism {}",
            s.parallelism, s.max_parallelism
        )));
    }
    let par: Vec<u32> = vertices
        .iter()
        .map(|v| v.parallelism.unwrap_or(s.parallelism))
        .collect();
    for (v, &p) in vertices.iter().zip(&par) {
        if p == 0 || p > s.max_parallelism {
            return Err(JobError::InvalidGraph(format!(
                "operator {:?} has parallelism {p}; it must be between 1 and maxParallelism {}",
                v.name, s.max_parallelism
            )));
        }
    }
    let uids = assign_uids(&vertices)?;
    let mut consumers: Vec<Vec<(usize, usize)>> = vec![Vec::new(); vertices.len()];
    for (vi, v) in vertices.iter().enumerate() {
        for (ei, e) in v.inputs.iter().enumerate() {
            consumers[e.from].push((vi, ei));
        }
    }

    // Chain a vertex onto its only producer when records would go subtask i -> subtask i anyway.
    let chained_into_prev = |vi: usize| -> bool {
        let v = &vertices[vi];
        if !s.chaining || !v.chainable || v.inputs.len() != 1 {
            return false;
        }
        let e = &v.inputs[0];
        e.kind == ShipKind::Forward && par[e.from] == par[vi] && consumers[e.from].len() == 1
    };
    let mut tasks: Vec<Task> = Vec::new();
    let mut task_of = vec![usize::MAX; vertices.len()];
    for vi in 0..vertices.len() {
        if chained_into_prev(vi) {
            let t = task_of[vertices[vi].inputs[0].from];
            tasks[t].chain.push(vi);
            tasks[t].name.push_str(" -> ");
            tasks[t].name.push_str(&vertices[vi].name);
            task_of[vi] = t;
        } else {
            task_of[vi] = tasks.len();
            tasks.push(Task {
                name: vertices[vi].name.clone(),
                chain: vec![vi],
                parallelism: par[vi],
            });
        }
    }

    let metrics = Arc::new(JobMetrics {
        vertices: vertices
            .iter()
            .enumerate()
            .map(|(vi, v)| VertexMetrics {
                uid: uids[vi].clone(),
                name: v.name.clone(),
                is_source: v.kind == VertexKind::Source,
                is_sink: v.kind == VertexKind::Sink,
                subtasks: (0..par[vi])
                    .map(|_| Arc::new(SubtaskMetrics::default()))
                    .collect(),
            })
            .collect(),
    });

    let cancel = Arc::new(AtomicBool::new(false));
    // One notifier per subtask of every task head, shared by all its input channels.
    let notifies: Vec<Vec<Arc<Notify>>> = tasks
        .iter()
        .map(|t| (0..t.parallelism).map(|_| Notify::new()).collect())
        .collect();
    // Outputs leaving a vertex across tasks, per (vertex, subtask); inputs per (vertex, subtask).
    let mut exits: Vec<Vec<Vec<AnyBox>>> = vertices
        .iter()
        .enumerate()
        .map(|(vi, _)| (0..par[vi]).map(|_| Vec::new()).collect())
        .collect();
    let mut entries: Vec<Vec<Vec<AnyBox>>> = vertices
        .iter()
        .enumerate()
        .map(|(vi, _)| (0..par[vi]).map(|_| Vec::new()).collect())
        .collect();
    for (vi, v) in vertices.iter().enumerate() {
        if chained_into_prev(vi) {
            continue;
        }
        for e in &v.inputs {
            let pointwise = e.kind == ShipKind::Forward && par[e.from] == par[vi];
            let wiring = EdgeWiring {
                producers: par[e.from],
                consumers: par[vi],
                pointwise,
                max_parallelism: s.max_parallelism,
                notifies: &notifies[task_of[vi]],
                cancel: &cancel,
                capacity: s.channel_capacity,
            };
            let (outs, ins) = e.factory.connect(&wiring);
            for (p, o) in outs.into_iter().enumerate() {
                exits[e.from][p].push(o);
            }
            for (c, i) in ins.into_iter().enumerate() {
                entries[vi][c].push(i);
            }
        }
    }

    let rt = Arc::new(TaskRuntime {
        cancel: cancel.clone(),
        clock: s.clock.clone(),
    });
    let shared = Arc::new(JobShared {
        status: Mutex::new((
            JobStatusView {
                name: s.name.clone(),
                state: RunState::Running,
                start_ms: now_ms(),
                end_ms: None,
            },
            None,
        )),
        done: Condvar::new(),
        cancel: cancel.clone(),
    });
    let (done_tx, done_rx) = mpsc::channel::<(String, u32, Result<(), JobError>)>();
    let vertices = Arc::new(vertices);
    let mut spawned = 0usize;
    for (ti, task) in tasks.iter().enumerate() {
        for sub in 0..task.parallelism {
            let chain = task.chain.clone();
            let head_inputs = std::mem::take(&mut entries[chain[0]][sub as usize]);
            let tail = *chain.last().unwrap_or(&chain[0]);
            let tail_exits = std::mem::take(&mut exits[tail][sub as usize]);
            let vertices = vertices.clone();
            let init_of = {
                let metrics = metrics.clone();
                let uids = uids.clone();
                let par = par.clone();
                let clock = s.clock.clone();
                let maxp = s.max_parallelism;
                move |vi: usize| OperatorInit {
                    uid: uids[vi].clone(),
                    name: vertices_name(&metrics, vi),
                    subtask: sub,
                    parallelism: par[vi],
                    max_parallelism: maxp,
                    clock: clock.clone(),
                    metrics: metrics.vertices[vi].subtasks[sub as usize].clone(),
                }
            };
            let notify = notifies[ti][sub as usize].clone();
            let rt = rt.clone();
            let done_tx = done_tx.clone();
            let task_name = task.name.clone();
            let thread_name = format!("{}#{sub}", vertices[chain[0]].name);
            let task_cancel = cancel.clone();
            let body = move || -> Result<(), OperatorError> {
                let tail_v = &vertices[tail];
                let mut next = match tail_exits.len() {
                    0 => tail_v.factory.discard(),
                    1 => tail_exits
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| tail_v.factory.discard()),
                    _ => tail_v.factory.tee(tail_exits)?,
                };
                for &vi in chain.iter().skip(1).rev() {
                    next = vertices[vi].factory.chain_into(&init_of(vi), next)?;
                }
                let head = vertices[chain[0]].factory.head(
                    HeadInit {
                        init: init_of(chain[0]),
                        notify,
                    },
                    head_inputs,
                    next,
                )?;
                head.run(&rt)
            };
            let spawn = std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || {
                    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                    let res = match res {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(JobError::TaskFailed {
                            task: task_name.clone(),
                            subtask: sub,
                            source: e,
                        }),
                        Err(p) => Err(JobError::TaskPanicked {
                            task: task_name.clone(),
                            subtask: sub,
                            message: panic_message(p.as_ref()),
                        }),
                    };
                    if res.is_err() {
                        // Stop the other tasks right away; they may be blocked on this one.
                        task_cancel.store(true, Ordering::SeqCst);
                    }
                    let _ = done_tx.send((task_name, sub, res));
                });
            match spawn {
                Ok(_) => spawned += 1,
                Err(e) => {
                    cancel.store(true, Ordering::SeqCst);
                    return Err(JobError::Spawn(e));
                }
            }
        }
    }
    drop(done_tx);

    let sup_shared = shared.clone();
    std::thread::Builder::new()
        .name("job-supervisor".into())
        .spawn(move || {
            let mut first_error: Option<JobError> = None;
            for _ in 0..spawned {
                let Ok((_, _, res)) = done_rx.recv() else {
                    break;
                };
                if let Err(e) = res {
                    // Tasks stopped by the cancellation report secondary errors; keep the cause.
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
            let mut g = lock(&sup_shared.status);
            g.0.end_ms = Some(now_ms());
            let cancelled_by_user = g.0.state == RunState::Cancelling;
            g.0.state = if cancelled_by_user {
                RunState::Canceled
            } else if let Some(e) = &first_error {
                RunState::Failed(e.to_string())
            } else {
                RunState::Finished
            };
            if !cancelled_by_user {
                g.1 = first_error;
            }
            sup_shared.done.notify_all();
        })
        .map_err(JobError::Spawn)?;

    Ok(JobHandle {
        shared,
        metrics,
        parallelism: s.parallelism,
        max_parallelism: s.max_parallelism,
    })
}

fn vertices_name(m: &JobMetrics, vi: usize) -> String {
    m.vertices
        .get(vi)
        .map(|v| v.name.clone())
        .unwrap_or_default()
}

/// Gives every vertex a stable id: the user's `uid`, or one derived from its position and name
/// (stable as long as the program builds the same graph).
fn assign_uids(vertices: &[Vertex]) -> Result<Vec<String>, JobError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(vertices.len());
    for (i, v) in vertices.iter().enumerate() {
        let uid = match &v.uid {
            Some(u) => u.clone(),
            None => {
                let slug: String = v
                    .name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '-'
                        }
                    })
                    .collect();
                format!("{i}-{}", slug.trim_matches('-'))
            }
        };
        if !seen.insert(uid.clone()) {
            return Err(JobError::InvalidGraph(format!(
                "operator uid {uid:?} is used twice; uids must be unique"
            )));
        }
        out.push(uid);
    }
    Ok(out)
}
