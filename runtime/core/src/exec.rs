//! Running one execution attempt of a job: the task loops (a source feeding a chain, or input
//! channels feeding a chain), barrier handling — alignment, unaligned checkpoints with
//! in-flight data, the switch from aligned to unaligned after a timeout — and the deployment
//! that turns the job plan into connected threads.

use crate::channel::{Event, Notify, Receiver};
use crate::checkpoint::coordinator::{
    Control, CoordMsg, FaultInjector, FaultPoint, SnapshotRequest, TaskControl,
};
use crate::checkpoint::restore::RestoredJob;
use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::{
    Barrier, CheckpointingMode, OperatorSnapshot, RestoredState, SnapshotKind, decode, encode,
};
use crate::error::{JobError, OperatorError};
use crate::graph::{AnyBox, EdgeWiring, HeadInit, NetWiring, ShipKind, Vertex, VertexKind};
use crate::key::Data;
use crate::metrics::JobMetrics;
use crate::operator::{BATCH_SIZE, ChainSnapshots, OperatorInit, Output};
use crate::record::Record;
use crate::source::{Source, SourceContext, SourcePoll};
use crate::time::Clock;
use crate::watermark::{WatermarkGenerator, WatermarkStrategy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// How often a task checks processing-time timers, flushes partial batches and publishes
/// metrics when records keep flowing (Flink's buffer timeout plays the same role).
const TICK: Duration = Duration::from_millis(10);

/// What one subtask needs from the job around it.
pub(crate) struct TaskRuntime {
    pub attempt: u64,
    pub cancel: Arc<AtomicBool>,
    pub clock: Arc<dyn Clock>,
    pub control: Arc<TaskControl>,
    pub checkpointing: Option<CheckpointRuntime>,
    pub fault: Option<FaultInjector>,
    pub subtask: u32,
    /// Task (chain) index in the plan.
    pub task: usize,
    pub head_uid: String,
    pub done: mpsc::Sender<TaskDone>,
}

/// The checkpointing side of a task.
#[derive(Clone)]
pub(crate) struct CheckpointRuntime {
    pub mode: CheckpointingMode,
    pub max_parallelism: u32,
    pub storage: Arc<dyn CheckpointStorage>,
    pub writer: mpsc::Sender<SnapshotRequest>,
    pub coord: mpsc::Sender<CoordMsg>,
}

impl TaskRuntime {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn before_snapshot(&self, b: &Barrier) -> Result<(), OperatorError> {
        let point = FaultPoint::BeforeSnapshot {
            checkpoint: b.id,
            uid: self.head_uid.clone(),
            subtask: self.subtask,
        };
        if self.fault.as_ref().is_some_and(|f| f(&point)) {
            return Err(OperatorError::User(format!(
                "injected fault before snapshot of checkpoint {}",
                b.id
            )));
        }
        Ok(())
    }

    /// Hands a finished task snapshot to the writer.
    fn submit(&self, b: &Barrier, ops: ChainSnapshots, channel: Vec<u8>, alignment: Duration) {
        let Some(c) = &self.checkpointing else { return };
        let location = match &b.kind {
            SnapshotKind::Checkpoint => c.storage.checkpoint_location(b.id),
            SnapshotKind::Savepoint { target } => target.clone(),
        };
        let req = SnapshotRequest {
            attempt: self.attempt,
            barrier: b.clone(),
            location,
            subtask: self.subtask,
            ops,
            channel,
            alignment_ms: alignment.as_millis() as i64,
            max_parallelism: c.max_parallelism,
        };
        let _ = c.writer.send(req);
    }

    fn decline(&self, id: u64, reason: String) {
        if let Some(c) = &self.checkpointing {
            let _ = c.coord.send(CoordMsg::Decline {
                attempt: self.attempt,
                id,
                reason,
            });
        }
    }

    fn mode(&self) -> CheckpointingMode {
        self.checkpointing
            .as_ref()
            .map_or(CheckpointingMode::ExactlyOnce, |c| c.mode)
    }

    /// Reports the task's end to the supervisor (once).
    pub(crate) fn report(&self, result: Result<(), JobError>) {
        if !self.control.reported.swap(true, Ordering::SeqCst) {
            let _ = self.done.send(TaskDone {
                attempt: self.attempt,
                result,
                late: false,
                task: self.task,
                subtask: self.subtask,
            });
        }
    }

    /// After the input ended: with checkpointing, stay to acknowledge later checkpoints with
    /// the final state (a restore must not replay into a finished task), until the job ends.
    /// `head` is the head operator's own part of every snapshot (a finished source's final
    /// position, so that a restore does not read its input again).
    fn linger<T>(
        &self,
        out: &mut dyn Output<T>,
        mut done_ids: u64,
        head: Option<(String, Vec<u8>)>,
    ) -> Result<(), OperatorError> {
        if self.checkpointing.is_none() {
            return Ok(());
        }
        self.control.finished.store(true, Ordering::SeqCst);
        self.report(Ok(()));
        while !self.cancelled() {
            for c in self.control.take() {
                match c {
                    Control::Trigger(b) if b.id > done_ids => {
                        done_ids = b.id;
                        let mut snaps = ChainSnapshots::new();
                        if let Some((uid, position)) = &head {
                            let operator = vec![position.clone()];
                            snaps.push((
                                uid.clone(),
                                OperatorSnapshot {
                                    keyed: None,
                                    operator,
                                },
                            ));
                        }
                        out.barrier(&b, &mut snaps)?;
                        self.submit(&b, snaps, Vec::new(), Duration::ZERO);
                    }
                    Control::Trigger(_) => {}
                    Control::Complete(id) => out.notify_checkpoint(id, true)?,
                    Control::Abort(id) => out.notify_checkpoint(id, false)?,
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
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
            metrics: self.init.metrics.clone(),
        };
        let mut reader = self.source.create_reader(&ctx)?;
        if let Some(state) = &self.init.restored {
            match state.operator.as_slice() {
                positions if state.all_subtasks => reader.restore_all(positions)?,
                [] => {}
                [position] => reader.restore(position)?,
                _ => {
                    return Err(OperatorError::Source(format!(
                        "source {} got {} positions on restore: its parallelism changed and it cannot \
                         merge positions; restore with the parallelism it had",
                        self.init.uid,
                        state.operator.len()
                    )));
                }
            }
        }
        let mut wmgen = WatermarkGenerator::new(self.watermarks.clone());
        let per_record = wmgen.per_record();
        let interval = wmgen.interval();
        let idleness = wmgen.idleness();
        let uid = self.init.uid.clone();
        let out = &mut self.out;
        let mut buf: Vec<Record<T>> = Vec::with_capacity(BATCH_SIZE);
        let mut emitted: u64 = 0;
        let mut last_tick = Instant::now();
        let mut last_wm = Instant::now();
        let mut last_data = Instant::now();
        let mut idle = false;
        // With checkpointing, a finished source waits for one more checkpoint so that sinks
        // commit everything before the job ends (Flink's final checkpoint).
        let mut finished = false;
        let mut final_id: Option<u64> = None;
        let mut last_snapshot = 0u64;
        let mut reader_wm = i64::MIN;
        // Stop-with-savepoint: nothing is read after its barrier (unless the savepoint fails).
        let mut stopped_at: Option<u64> = None;
        loop {
            if rt.cancelled() {
                self.init
                    .metrics
                    .records_out
                    .store(emitted, Ordering::Relaxed);
                self.out.publish_metrics();
                return Ok(());
            }
            let mut controls = rt.control.take().into_iter();
            while let Some(c) = controls.next() {
                match c {
                    Control::Trigger(b) => {
                        last_snapshot = b.id;
                        rt.before_snapshot(&b)?;
                        let mut snaps: ChainSnapshots = vec![(
                            uid.clone(),
                            OperatorSnapshot {
                                keyed: None,
                                operator: vec![reader.position()],
                            },
                        )];
                        out.barrier(&b, &mut snaps)?;
                        rt.submit(&b, snaps, Vec::new(), Duration::ZERO);
                        if finished && final_id.is_none() {
                            final_id = Some(b.id);
                        }
                        if b.stop {
                            stopped_at = Some(b.id);
                        }
                    }
                    Control::Complete(id) => {
                        reader.notify_checkpoint_complete(id)?;
                        out.notify_checkpoint(id, true)?;
                        if final_id.is_some_and(|f| id >= f) {
                            self.init
                                .metrics
                                .records_out
                                .store(emitted, Ordering::Relaxed);
                            out.end_of_input()?;
                            out.publish_metrics();
                            // Messages taken together with this one (a trigger of the next
                            // checkpoint often is) are the lingering loop's to handle.
                            for rest in controls {
                                rt.control.push(rest);
                            }
                            let head = Some((uid.clone(), reader.position()));
                            return rt.linger(&mut **out, last_snapshot, head);
                        }
                    }
                    Control::Abort(id) => {
                        out.notify_checkpoint(id, false)?;
                        if final_id == Some(id) {
                            final_id = None;
                        }
                        if stopped_at == Some(id) {
                            stopped_at = None;
                        }
                    }
                }
            }
            if finished || stopped_at.is_some() {
                out.flush()?;
                std::thread::sleep(Duration::from_millis(1));
                continue;
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
                    out.flush()?;
                    self.init
                        .metrics
                        .records_out
                        .store(emitted, Ordering::Relaxed);
                    out.publish_metrics();
                    match &rt.checkpointing {
                        Some(c) => {
                            finished = true;
                            let _ = c.coord.send(CoordMsg::Shutdown);
                        }
                        None => {
                            out.end_of_input()?;
                            out.publish_metrics();
                            return Ok(());
                        }
                    }
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
                if let Some(wm) = reader.watermark()
                    && wm > reader_wm
                {
                    reader_wm = wm;
                    out.emit_watermark(wm)?;
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

/// Runs a chain fed by channels from upstream subtasks, merging their watermarks and aligning
/// their barriers.
pub(crate) struct InputHead<I> {
    channels: Vec<Receiver<I>>,
    notify: Arc<Notify>,
    out: Box<dyn Output<I>>,
    replay: Option<Vec<u8>>,
    last_snapshot: u64,
    /// Barriers triggered directly while the inputs were still open; snapshotted on finishing
    /// if they never arrived through the channels.
    direct: Vec<Barrier>,
}

impl<I> InputHead<I> {
    pub(crate) fn new(channels: Vec<Receiver<I>>, h: HeadInit, out: Box<dyn Output<I>>) -> Self {
        Self {
            channels,
            notify: h.notify,
            out,
            replay: h.channel_state,
            last_snapshot: 0,
            direct: Vec::new(),
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

/// The progress of one checkpoint at an input gate.
struct Alignment<I> {
    barrier: Barrier,
    arrived: Vec<bool>,
    waiting: usize,
    started: Instant,
    /// Unaligned: the operators were snapshotted at the first barrier; records that the
    /// barrier overtook are being captured.
    snapshotted: Option<ChainSnapshots>,
    /// Per channel, events still to capture after that channel's barrier (what it overtook).
    overtaken: Vec<usize>,
    inflight: Vec<Record<I>>,
    /// Time from the first barrier to the snapshot.
    aligned_for: Option<Duration>,
}

impl<I: Data> Alignment<I> {
    fn new(barrier: Barrier, ended: &[bool]) -> Self {
        let n = ended.len();
        Self {
            waiting: ended.iter().filter(|e| !**e).count(),
            arrived: ended.to_vec(),
            barrier,
            started: Instant::now(),
            snapshotted: None,
            overtaken: vec![0; n],
            inflight: Vec::new(),
            aligned_for: None,
        }
    }

    /// Whether events of channel `i` are in-flight data of this checkpoint.
    fn captures(&self, i: usize) -> bool {
        self.snapshotted.is_some() && (!self.arrived[i] || self.overtaken[i] > 0)
    }

    /// Whether channel `i` is blocked (aligned exactly-once: its barrier came, others not yet).
    fn blocks(&self, i: usize, mode: CheckpointingMode) -> bool {
        mode == CheckpointingMode::ExactlyOnce && self.snapshotted.is_none() && self.arrived[i]
    }

    fn done(&self) -> bool {
        self.waiting == 0 && self.overtaken.iter().all(|&o| o == 0)
    }
}

impl<I: Data> InputHead<I> {
    /// Snapshots the chain and forwards the barrier (with priority when `unaligned`).
    fn snapshot(
        &mut self,
        rt: &TaskRuntime,
        b: &Barrier,
        unaligned: bool,
    ) -> Result<ChainSnapshots, OperatorError> {
        rt.before_snapshot(b)?;
        let mut snaps = ChainSnapshots::new();
        let fwd = Barrier {
            unaligned,
            overtaken: 0,
            ..b.clone()
        };
        self.out.barrier(&fwd, &mut snaps)?;
        Ok(snaps)
    }

    fn finish_alignment(&mut self, rt: &TaskRuntime, a: Alignment<I>) -> Result<(), OperatorError> {
        self.last_snapshot = self.last_snapshot.max(a.barrier.id);
        let alignment = a.aligned_for.unwrap_or_else(|| a.started.elapsed());
        let (snaps, channel) = match a.snapshotted {
            Some(snaps) => (
                snaps,
                if a.inflight.is_empty() {
                    Vec::new()
                } else {
                    encode(&a.inflight)?
                },
            ),
            None => (self.snapshot(rt, &a.barrier, false)?, Vec::new()),
        };
        rt.submit(&a.barrier, snaps, channel, alignment);
        Ok(())
    }

    /// A barrier arrived on channel `i`.
    fn on_barrier(
        &mut self,
        rt: &TaskRuntime,
        align: &mut Option<Alignment<I>>,
        ended: &[bool],
        i: usize,
        b: Barrier,
    ) -> Result<(), OperatorError> {
        match align {
            Some(a) if b.id < a.barrier.id => return Ok(()),
            Some(a) if b.id > a.barrier.id => {
                // A newer checkpoint overtook an unfinished one: the older one cannot complete.
                rt.decline(
                    a.barrier.id,
                    format!("checkpoint {} was subsumed by {}", a.barrier.id, b.id),
                );
                *align = None;
            }
            _ => {}
        }
        let a = align.get_or_insert_with(|| Alignment::new(b.clone(), ended));
        if !a.arrived[i] {
            a.arrived[i] = true;
            a.waiting -= 1;
        }
        if b.unaligned && a.snapshotted.is_none() {
            let barrier = a.barrier.clone();
            let snaps = self.snapshot(rt, &barrier, true)?;
            if let Some(a) = align.as_mut() {
                a.aligned_for = Some(a.started.elapsed());
                a.snapshotted = Some(snaps);
            }
        }
        if let Some(a) = align.as_mut()
            && a.snapshotted.is_some()
        {
            a.overtaken[i] = b.overtaken;
        }
        self.maybe_finish(rt, align)
    }

    fn maybe_finish(
        &mut self,
        rt: &TaskRuntime,
        align: &mut Option<Alignment<I>>,
    ) -> Result<(), OperatorError> {
        if align.as_ref().is_some_and(Alignment::done)
            && let Some(a) = align.take()
        {
            self.finish_alignment(rt, a)?;
        }
        Ok(())
    }
}

impl<I: Data> TaskHead for InputHead<I> {
    fn run(mut self: Box<Self>, rt: &TaskRuntime) -> Result<(), OperatorError> {
        if let Some(bytes) = self.replay.take() {
            // In-flight records of an unaligned checkpoint come before anything new.
            let records: Vec<Record<I>> = decode("in-flight records", &bytes)?;
            for r in records {
                self.out.emit(r)?;
            }
        }
        let n = self.channels.len();
        let mode = rt.mode();
        let mut valve = WatermarkValve::new(n);
        let mut open = n;
        let mut last_tick = Instant::now();
        let mut align: Option<Alignment<I>> = None;
        while open > 0 {
            if rt.cancelled() {
                self.out.publish_metrics();
                return Ok(());
            }
            for c in rt.control.take() {
                match c {
                    Control::Complete(id) => self.out.notify_checkpoint(id, true)?,
                    Control::Abort(id) => {
                        if align.as_ref().is_some_and(|a| a.barrier.id == id) {
                            align = None;
                        }
                        self.out.notify_checkpoint(id, false)?;
                    }
                    Control::Trigger(b) => {
                        // Only needed if the inputs end before the barrier arrives; forget
                        // the ones already snapshotted so a long run does not pile them up.
                        let done = self.last_snapshot;
                        self.direct.retain(|d| d.id > done);
                        self.direct.push(b);
                    }
                }
            }
            let seen = self.notify.seq();
            let mut got = false;
            for i in 0..n {
                if valve.ended[i] || align.as_ref().is_some_and(|a| a.blocks(i, mode)) {
                    continue;
                }
                let Some(ev) = self.channels[i].try_recv() else {
                    continue;
                };
                got = true;
                if let Some(a) = align.as_mut()
                    && a.captures(i)
                    && !matches!(ev, Event::Barrier(_))
                {
                    if let Event::Batch(batch) = &ev {
                        a.inflight.extend(batch.iter().cloned());
                    }
                    if a.arrived[i] {
                        a.overtaken[i] -= 1;
                    }
                }
                let step = match ev {
                    Event::Batch(batch) => {
                        valve.active(i);
                        for r in batch {
                            self.out.emit(r)?;
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
                        if let Some(a) = align.as_mut()
                            && !a.arrived[i]
                        {
                            a.arrived[i] = true;
                            a.waiting -= 1;
                        }
                        valve.recompute()
                    }
                    Event::Barrier(b) => {
                        let ended = valve.ended.clone();
                        self.on_barrier(rt, &mut align, &ended, i, b)?;
                        ValveOutput::Nothing
                    }
                };
                match step {
                    ValveOutput::Advance(wm) => self.out.emit_watermark(wm)?,
                    ValveOutput::Idle => self.out.mark_idle()?,
                    ValveOutput::AdvanceThenIdle(wm) => {
                        self.out.emit_watermark(wm)?;
                        self.out.mark_idle()?;
                    }
                    ValveOutput::Nothing => {}
                }
                self.maybe_finish(rt, &mut align)?;
            }
            // Aligned for too long: switch this checkpoint to unaligned.
            if let Some(a) = align.as_ref()
                && a.snapshotted.is_none()
                && a.barrier
                    .alignment_timeout
                    .is_some_and(|t| a.started.elapsed() >= t)
            {
                let barrier = a.barrier.clone();
                let snaps = self.snapshot(rt, &barrier, true)?;
                if let Some(a) = align.as_mut() {
                    a.aligned_for = Some(a.started.elapsed());
                    a.snapshotted = Some(snaps);
                }
                self.maybe_finish(rt, &mut align)?;
            }
            let now = Instant::now();
            if !got || now.duration_since(last_tick) >= TICK {
                last_tick = now;
                self.out.processing_time(rt.clock.now_ms())?;
                self.out.flush()?;
                self.out.publish_metrics();
                if !got && open > 0 {
                    self.notify.wait(seen, TICK);
                }
            }
        }
        if let Some(a) = align.take() {
            // The inputs ended mid-alignment: every channel counts as arrived.
            self.finish_alignment(rt, a)?;
        }
        self.out.end_of_input()?;
        self.out.publish_metrics();
        // Checkpoints triggered while the inputs were closing: snapshot the final state.
        for b in std::mem::take(&mut self.direct) {
            if b.id > self.last_snapshot {
                self.last_snapshot = b.id;
                let mut snaps = ChainSnapshots::new();
                self.out.barrier(&b, &mut snaps)?;
                rt.submit(&b, snaps, Vec::new(), Duration::ZERO);
            }
        }
        let last = self.last_snapshot;
        rt.linger(&mut *self.out, last, None)
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

/// The deployable form of a job: vertices with resolved parallelism and uids, grouped into
/// chained tasks. Built once; every execution attempt deploys it anew.
pub(crate) struct JobPlan {
    pub vertices: Arc<Vec<Vertex>>,
    pub settings: ExecSettings,
    pub par: Vec<u32>,
    pub uids: Vec<String>,
    tasks: Vec<Task>,
    task_of: Vec<usize>,
    chained: Vec<bool>,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl JobPlan {
    pub(crate) fn new(vertices: Vec<Vertex>, s: ExecSettings) -> Result<Self, JobError> {
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
        let mut consumers = vec![0usize; vertices.len()];
        for v in &vertices {
            for e in &v.inputs {
                consumers[e.from] += 1;
            }
        }
        // Chain a vertex onto its only producer when records would go subtask i -> i anyway.
        let chained: Vec<bool> = (0..vertices.len())
            .map(|vi| {
                let v = &vertices[vi];
                if !s.chaining || !v.chainable || v.inputs.len() != 1 {
                    return false;
                }
                let e = &v.inputs[0];
                e.kind == ShipKind::Forward && par[e.from] == par[vi] && consumers[e.from] == 1
            })
            .collect();
        let mut tasks: Vec<Task> = Vec::new();
        let mut task_of = vec![usize::MAX; vertices.len()];
        for vi in 0..vertices.len() {
            if chained[vi] {
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
        Ok(Self {
            vertices: Arc::new(vertices),
            settings: s,
            par,
            uids,
            tasks,
            task_of,
            chained,
        })
    }

    /// Zeroed metrics for every vertex and subtask of the plan.
    pub(crate) fn new_metrics(&self) -> Arc<JobMetrics> {
        Arc::new(JobMetrics {
            vertices: self
                .vertices
                .iter()
                .enumerate()
                .map(|(vi, v)| crate::metrics::VertexMetrics {
                    uid: self.uids[vi].clone(),
                    name: v.name.clone(),
                    is_source: v.kind == VertexKind::Source,
                    is_sink: v.kind == VertexKind::Sink,
                    subtasks: (0..self.par[vi])
                        .map(|_| Arc::new(crate::metrics::SubtaskMetrics::default()))
                        .collect(),
                })
                .collect(),
        })
    }

    /// Slots a cluster needs: subtask `i` of every task shares slot `i`.
    pub(crate) fn slots_needed(&self) -> u32 {
        self.tasks.iter().map(|t| t.parallelism).max().unwrap_or(1)
    }

    /// Parallelism of every task (chain), by task index.
    pub(crate) fn task_parallelisms(&self) -> Vec<u32> {
        self.tasks.iter().map(|t| t.parallelism).collect()
    }

    /// Total number of subtasks (threads) of one attempt.
    pub(crate) fn subtask_count(&self) -> usize {
        self.tasks.iter().map(|t| t.parallelism as usize).sum()
    }

    /// (uid, parallelism) of every source.
    pub(crate) fn sources(&self) -> Vec<(String, u32)> {
        self.vertices
            .iter()
            .enumerate()
            .filter(|(_, v)| v.kind == VertexKind::Source && !v.factory.redistributes_positions())
            .map(|(i, _)| (self.uids[i].clone(), self.par[i]))
            .collect()
    }

    /// (uid, name, parallelism) per vertex.
    pub(crate) fn operators(&self) -> Vec<(String, String, u32)> {
        self.vertices
            .iter()
            .enumerate()
            .map(|(i, v)| (self.uids[i].clone(), v.name.clone(), self.par[i]))
            .collect()
    }
}

/// A message from a task thread to the supervisor.
pub(crate) struct TaskDone {
    pub attempt: u64,
    pub result: Result<(), JobError>,
    /// The task had already reported finishing its input; this is a failure while it
    /// lingered, which fails the attempt without counting the task twice.
    pub late: bool,
    /// Task (chain) index in the plan.
    pub task: usize,
    /// Subtask.
    pub subtask: u32,
}

/// A deployed attempt.
pub(crate) struct Attempt {
    pub cancel: Arc<AtomicBool>,
    pub all: Arc<dyn TaskGateway>,
}

/// How the checkpoint coordinator reaches the tasks of an attempt, wherever they run.
pub(crate) trait TaskGateway: Send + Sync {
    /// Delivers `c` to every task.
    fn broadcast(&self, c: Control);
    /// How many subtasks the attempt has (each acknowledges every checkpoint).
    fn task_count(&self) -> usize;
}

impl TaskGateway for Vec<Arc<TaskControl>> {
    fn broadcast(&self, c: Control) {
        for t in self {
            t.push(c.clone());
        }
    }

    fn task_count(&self) -> usize {
        self.len()
    }
}

/// Which subtasks of an attempt run in this process, and how to reach the others.
pub(crate) struct Placement {
    /// Worker per subtask index (every task's subtask `i` shares slot `i`).
    pub slot_worker: Vec<usize>,
    /// Data address per worker.
    pub workers: Vec<String>,
    /// This process's worker index.
    pub me: usize,
    /// This process's data port.
    pub server: Arc<crate::cluster::exchange::DataServer>,
    /// Reports a remote producer that vanished.
    pub broken: crate::cluster::exchange::BrokenFn,
}

impl Placement {
    pub(crate) fn is_local(&self, subtask: u32) -> bool {
        self.slot_worker.get(subtask as usize) == Some(&self.me)
    }

    pub(crate) fn address_of(&self, subtask: u32) -> &str {
        self.slot_worker
            .get(subtask as usize)
            .and_then(|w| self.workers.get(*w))
            .map_or("", String::as_str)
    }
}

/// Everything an attempt's tasks share.
pub(crate) struct AttemptContext {
    pub attempt: u64,
    pub metrics: Arc<JobMetrics>,
    pub restore: Option<Arc<RestoredJob>>,
    pub checkpointing: Option<CheckpointRuntime>,
    pub fault: Option<FaultInjector>,
    pub done: mpsc::Sender<TaskDone>,
    pub state_backend: Option<crate::state::StateBackendContext>,
    /// Run only this process's share of the subtasks; `None` runs them all here.
    pub placement: Option<Placement>,
}

fn restore_error(e: crate::checkpoint::restore::RestoreError) -> OperatorError {
    OperatorError::State {
        name: "restore".into(),
        message: e.to_string(),
    }
}

/// Connects and starts every subtask of the plan.
pub(crate) fn deploy(plan: &JobPlan, ctx: AttemptContext) -> Result<Attempt, JobError> {
    let s = &plan.settings;
    let vertices = &plan.vertices;
    let cancel = Arc::new(AtomicBool::new(false));
    // One notifier per subtask of every task, shared by all its input channels and its mailbox.
    let notifies: Vec<Vec<Arc<Notify>>> = plan
        .tasks
        .iter()
        .map(|t| (0..t.parallelism).map(|_| Notify::new()).collect())
        .collect();
    let mut exits: Vec<Vec<Vec<AnyBox>>> = plan
        .par
        .iter()
        .map(|&p| (0..p).map(|_| Vec::new()).collect())
        .collect();
    let mut entries: Vec<Vec<Vec<AnyBox>>> = plan
        .par
        .iter()
        .map(|&p| (0..p).map(|_| Vec::new()).collect())
        .collect();
    for (vi, v) in vertices.iter().enumerate() {
        if plan.chained[vi] {
            continue;
        }
        for (input, e) in v.inputs.iter().enumerate() {
            let pointwise = e.kind == ShipKind::Forward && plan.par[e.from] == plan.par[vi];
            let wiring = EdgeWiring {
                producers: plan.par[e.from],
                consumers: plan.par[vi],
                pointwise,
                max_parallelism: s.max_parallelism,
                notifies: &notifies[plan.task_of[vi]],
                cancel: &cancel,
                capacity: s.channel_capacity,
                net: ctx.placement.as_ref().map(|placement| NetWiring {
                    placement,
                    attempt: ctx.attempt,
                    edge: ((vi as u64) << 16) | input as u64,
                }),
            };
            let (outs, ins) = e.factory.connect(&wiring).map_err(|source| {
                cancel.store(true, Ordering::SeqCst);
                JobError::TaskFailed {
                    task: v.name.clone(),
                    subtask: 0,
                    source,
                }
            })?;
            for (p, o) in outs.into_iter().enumerate() {
                exits[e.from][p].push(o);
            }
            for (c, i) in ins.into_iter().enumerate() {
                entries[vi][c].push(i);
            }
        }
    }

    let mut all = Vec::new();
    let mut bodies = Vec::new();
    for (ti, task) in plan.tasks.iter().enumerate() {
        for sub in 0..task.parallelism {
            if ctx.placement.as_ref().is_some_and(|p| !p.is_local(sub)) {
                continue;
            }
            let chain = task.chain.clone();
            let head = chain[0];
            let control = TaskControl::new(notifies[ti][sub as usize].clone());
            all.push(control.clone());
            let mut inits = Vec::with_capacity(chain.len());
            for &vi in &chain {
                let restored: Option<RestoredState> = match &ctx.restore {
                    // A source whose readers take their splits from every old subtask's
                    // positions, restored at another parallelism.
                    Some(r)
                        if vertices[vi].factory.redistributes_positions()
                            && r.parallelism_of(&plan.uids[vi])
                                .is_some_and(|old| old != plan.par[vi]) =>
                    {
                        r.state_of_all_subtasks(&plan.uids[vi])
                    }
                    Some(r) => r
                        .state_for(&plan.uids[vi], sub, plan.par[vi])
                        .map_err(|e| JobError::TaskFailed {
                            task: task.name.clone(),
                            subtask: sub,
                            source: restore_error(e),
                        })?,
                    None => None,
                };
                inits.push(OperatorInit {
                    uid: plan.uids[vi].clone(),
                    name: vertices[vi].name.clone(),
                    subtask: sub,
                    parallelism: plan.par[vi],
                    max_parallelism: s.max_parallelism,
                    clock: s.clock.clone(),
                    metrics: ctx.metrics.vertices[vi].subtasks[sub as usize].clone(),
                    restored,
                    state_backend: ctx.state_backend.clone(),
                });
            }
            let channel_state = match &ctx.restore {
                Some(r) => r
                    .channel_state_for(&plan.uids[head], sub, plan.par[head])
                    .map_err(|e| JobError::TaskFailed {
                        task: task.name.clone(),
                        subtask: sub,
                        source: restore_error(e),
                    })?
                    .map(<[u8]>::to_vec),
                None => None,
            };
            let rt = TaskRuntime {
                attempt: ctx.attempt,
                cancel: cancel.clone(),
                clock: s.clock.clone(),
                control,
                checkpointing: ctx.checkpointing.clone(),
                fault: ctx.fault.clone(),
                subtask: sub,
                task: ti,
                head_uid: plan.uids[head].clone(),
                done: ctx.done.clone(),
            };
            let control_for_thread = rt.control.clone();
            let head_inputs = std::mem::take(&mut entries[head][sub as usize]);
            let tail = *chain.last().unwrap_or(&head);
            let tail_exits = std::mem::take(&mut exits[tail][sub as usize]);
            let head_name = vertices[head].name.clone();
            let vertices = vertices.clone();
            let notify = notifies[ti][sub as usize].clone();
            let restoring = ctx.restore.is_some();
            let body = move || -> Result<(), OperatorError> {
                if restoring {
                    let point = FaultPoint::Restore {
                        attempt: rt.attempt,
                        uid: rt.head_uid.clone(),
                        subtask: rt.subtask,
                    };
                    if rt.fault.as_ref().is_some_and(|f| f(&point)) {
                        return Err(OperatorError::User("injected fault during restore".into()));
                    }
                }
                let tail_v = &vertices[tail];
                let mut next = match tail_exits.len() {
                    0 => tail_v.factory.discard(),
                    1 => tail_exits
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| tail_v.factory.discard()),
                    _ => tail_v.factory.tee(tail_exits)?,
                };
                let mut inits = inits;
                let head_init = inits.remove(0);
                for (k, &vi) in chain.iter().enumerate().skip(1).rev() {
                    next = vertices[vi].factory.chain_into(&inits[k - 1], next)?;
                }
                let h = vertices[head].factory.head(
                    HeadInit {
                        init: head_init,
                        notify,
                        channel_state,
                    },
                    head_inputs,
                    next,
                )?;
                h.run(&rt)
            };
            bodies.push((
                ti,
                task.name.clone(),
                head_name,
                sub,
                control_for_thread,
                body,
            ));
        }
    }
    for (task_index, task_name, head_name, sub, control, body) in bodies {
        let done = ctx.done.clone();
        let task_cancel = cancel.clone();
        let attempt = ctx.attempt;
        let spawn = std::thread::Builder::new()
            .name(format!("{head_name}#{sub}"))
            .spawn(move || {
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                let result = match res {
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
                if result.is_err() {
                    // Stop the other tasks right away; they may be blocked on this one.
                    task_cancel.store(true, Ordering::SeqCst);
                }
                let late = control.reported.swap(true, Ordering::SeqCst);
                if !late || result.is_err() {
                    let _ = done.send(TaskDone {
                        attempt,
                        result,
                        late,
                        task: task_index,
                        subtask: sub,
                    });
                }
            });
        if let Err(e) = spawn {
            cancel.store(true, Ordering::SeqCst);
            return Err(JobError::Spawn(e));
        }
    }
    Ok(Attempt {
        cancel,
        all: Arc::new(all),
    })
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
