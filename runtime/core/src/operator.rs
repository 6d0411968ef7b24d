//! Operators and the outputs that link them.
//!
//! An [`Output`] receives records, watermarks and lifecycle calls. Operators chained into one
//! task are linked by [`ChainOutput`], which calls the next operator directly (no queue); the
//! last output of a task is an exchange that batches records into channels, a tee to several
//! consumers, or a discard.

use crate::channel::{Event, SendError, Sender};
use crate::checkpoint::{Barrier, OperatorSnapshot, RestoredState, SnapshotContext};
use crate::error::OperatorError;
use crate::metrics::SubtaskMetrics;
use crate::record::Record;
use crate::time::Clock;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Records per batch sent on a channel.
pub const BATCH_SIZE: usize = 1024;

/// Where an operator sends what it produces.
pub trait Output<T>: Send {
    /// Emits one record.
    fn emit(&mut self, rec: Record<T>) -> Result<(), OperatorError>;
    /// Forwards a watermark.
    fn emit_watermark(&mut self, wm: i64) -> Result<(), OperatorError>;
    /// Tells the rest of the chain that processing time is now `now`.
    fn processing_time(&mut self, now: i64) -> Result<(), OperatorError>;
    /// Marks the output idle (no watermark progress from here until data flows again).
    fn mark_idle(&mut self) -> Result<(), OperatorError>;
    /// Sends buffered records downstream.
    fn flush(&mut self) -> Result<(), OperatorError>;
    /// No more input: operators flush what they hold and pass the end on.
    fn end_of_input(&mut self) -> Result<(), OperatorError>;
    /// Publishes local counters.
    fn publish_metrics(&mut self) {}
    /// A checkpoint barrier: operators snapshot into `snaps` (as `(uid, snapshot)`), and the
    /// barrier is passed on downstream.
    fn barrier(
        &mut self,
        b: &Barrier,
        snaps: &mut Vec<(String, OperatorSnapshot)>,
    ) -> Result<(), OperatorError>;
    /// Checkpoint `id` completed (`true`) or was aborted (`false`).
    fn notify_checkpoint(&mut self, id: u64, completed: bool) -> Result<(), OperatorError>;
}

/// Snapshots collected from a chain at a barrier, as `(operator uid, snapshot)`.
pub type ChainSnapshots = Vec<(String, OperatorSnapshot)>;

/// What an operator knows about where it runs.
#[derive(Debug, Clone)]
pub struct OperatorInit {
    /// Stable id of the operator (maps its state on restore).
    pub uid: String,
    /// Display name.
    pub name: String,
    /// This subtask's index.
    pub subtask: u32,
    /// Number of subtasks of the operator.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Processing-time clock.
    pub clock: Arc<dyn Clock>,
    /// Counters of this subtask.
    pub metrics: Arc<SubtaskMetrics>,
    /// State to restore, when the job starts from a checkpoint or savepoint.
    pub restored: Option<RestoredState>,
    /// The job's keyed state backend; `None` keeps keyed state on the heap.
    pub state_backend: Option<crate::state::StateBackendContext>,
}

/// A one-input operator.
pub trait Operator<I, O>: Send {
    /// Called once in the task thread before any record.
    fn open(&mut self, _init: &OperatorInit) -> Result<(), OperatorError> {
        Ok(())
    }
    /// Processes one record.
    fn process(&mut self, rec: Record<I>, out: &mut dyn Output<O>) -> Result<(), OperatorError>;
    /// Reacts to a watermark; the default forwards it.
    fn on_watermark(&mut self, wm: i64, out: &mut dyn Output<O>) -> Result<(), OperatorError> {
        out.emit_watermark(wm)
    }
    /// Fires processing-time work due at `now`; forwarding is done by the chain.
    fn on_processing_time(
        &mut self,
        _now: i64,
        _out: &mut dyn Output<O>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }
    /// End of input: emit what is still held.
    fn finish(&mut self, _out: &mut dyn Output<O>) -> Result<(), OperatorError> {
        Ok(())
    }
    /// Makes what the operator wrote durable (sinks flush here).
    fn flush(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    /// Takes a snapshot of the operator's state at a barrier. The keyed part is a copy that is
    /// serialised off the task thread.
    fn snapshot_state(
        &mut self,
        _ctx: &SnapshotContext,
    ) -> Result<OperatorSnapshot, OperatorError> {
        Ok(OperatorSnapshot::default())
    }
    /// Restores state from a checkpoint or savepoint; called after `open`.
    fn restore_state(&mut self, _state: RestoredState) -> Result<(), OperatorError> {
        Ok(())
    }
    /// Checkpoint `id` is complete everywhere (sinks commit here).
    fn notify_checkpoint_complete(&mut self, _id: u64) -> Result<(), OperatorError> {
        Ok(())
    }
    /// Checkpoint `id` was aborted.
    fn notify_checkpoint_aborted(&mut self, _id: u64) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// Counts records passing to the next output.
struct Counting<'a, O> {
    inner: &'a mut dyn Output<O>,
    count: &'a mut u64,
}

impl<O> Output<O> for Counting<'_, O> {
    #[inline]
    fn emit(&mut self, rec: Record<O>) -> Result<(), OperatorError> {
        *self.count += 1;
        self.inner.emit(rec)
    }
    fn emit_watermark(&mut self, wm: i64) -> Result<(), OperatorError> {
        self.inner.emit_watermark(wm)
    }
    fn processing_time(&mut self, now: i64) -> Result<(), OperatorError> {
        self.inner.processing_time(now)
    }
    fn mark_idle(&mut self) -> Result<(), OperatorError> {
        self.inner.mark_idle()
    }
    fn flush(&mut self) -> Result<(), OperatorError> {
        self.inner.flush()
    }
    fn end_of_input(&mut self) -> Result<(), OperatorError> {
        self.inner.end_of_input()
    }
    fn barrier(&mut self, b: &Barrier, snaps: &mut ChainSnapshots) -> Result<(), OperatorError> {
        self.inner.barrier(b, snaps)
    }
    fn notify_checkpoint(&mut self, id: u64, completed: bool) -> Result<(), OperatorError> {
        self.inner.notify_checkpoint(id, completed)
    }
}

/// Feeds an operator and passes its output on to the next link of the chain.
pub struct ChainOutput<I, O> {
    op: Box<dyn Operator<I, O>>,
    next: Box<dyn Output<O>>,
    uid: String,
    max_parallelism: u32,
    metrics: Arc<SubtaskMetrics>,
    records_in: u64,
    records_out: u64,
}

impl<I, O> ChainOutput<I, O> {
    /// Links `op` in front of `next`, opening it.
    pub fn new(
        mut op: Box<dyn Operator<I, O>>,
        next: Box<dyn Output<O>>,
        init: &OperatorInit,
    ) -> Result<Self, OperatorError> {
        op.open(init)?;
        if let Some(state) = init.restored.clone() {
            op.restore_state(state)?;
        }
        Ok(Self {
            op,
            next,
            uid: init.uid.clone(),
            max_parallelism: init.max_parallelism,
            metrics: init.metrics.clone(),
            records_in: 0,
            records_out: 0,
        })
    }

    fn counting(&mut self) -> (&mut Box<dyn Operator<I, O>>, Counting<'_, O>) {
        (
            &mut self.op,
            Counting {
                inner: &mut *self.next,
                count: &mut self.records_out,
            },
        )
    }
}

impl<I: Send, O: Send> Output<I> for ChainOutput<I, O> {
    #[inline]
    fn emit(&mut self, rec: Record<I>) -> Result<(), OperatorError> {
        self.records_in += 1;
        let (op, mut out) = self.counting();
        op.process(rec, &mut out)
    }

    fn emit_watermark(&mut self, wm: i64) -> Result<(), OperatorError> {
        self.metrics.watermark.store(wm, Ordering::Relaxed);
        let (op, mut out) = self.counting();
        op.on_watermark(wm, &mut out)
    }

    fn processing_time(&mut self, now: i64) -> Result<(), OperatorError> {
        let (op, mut out) = self.counting();
        op.on_processing_time(now, &mut out)?;
        self.next.processing_time(now)
    }

    fn mark_idle(&mut self) -> Result<(), OperatorError> {
        self.next.mark_idle()
    }

    fn flush(&mut self) -> Result<(), OperatorError> {
        self.op.flush()?;
        self.next.flush()
    }

    fn end_of_input(&mut self) -> Result<(), OperatorError> {
        let (op, mut out) = self.counting();
        op.finish(&mut out)?;
        self.op.flush()?;
        self.publish_metrics();
        self.next.end_of_input()
    }

    fn publish_metrics(&mut self) {
        self.metrics
            .records_in
            .store(self.records_in, Ordering::Relaxed);
        self.metrics
            .records_out
            .store(self.records_out, Ordering::Relaxed);
        self.next.publish_metrics();
    }

    fn barrier(&mut self, b: &Barrier, snaps: &mut ChainSnapshots) -> Result<(), OperatorError> {
        let ctx = SnapshotContext {
            checkpoint_id: b.id,
            kind: b.kind.clone(),
            max_parallelism: self.max_parallelism,
        };
        let snap = self.op.snapshot_state(&ctx)?;
        snaps.push((self.uid.clone(), snap));
        self.next.barrier(b, snaps)
    }

    fn notify_checkpoint(&mut self, id: u64, completed: bool) -> Result<(), OperatorError> {
        if completed {
            self.op.notify_checkpoint_complete(id)?;
        } else {
            self.op.notify_checkpoint_aborted(id)?;
        }
        self.next.notify_checkpoint(id, completed)
    }
}

/// Drops everything: the output of a stream nobody consumes, and of sinks.
pub struct Discard;

impl<T> Output<T> for Discard {
    fn emit(&mut self, _rec: Record<T>) -> Result<(), OperatorError> {
        Ok(())
    }
    fn emit_watermark(&mut self, _wm: i64) -> Result<(), OperatorError> {
        Ok(())
    }
    fn processing_time(&mut self, _now: i64) -> Result<(), OperatorError> {
        Ok(())
    }
    fn mark_idle(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    fn end_of_input(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    fn barrier(&mut self, _b: &Barrier, _snaps: &mut ChainSnapshots) -> Result<(), OperatorError> {
        Ok(())
    }
    fn notify_checkpoint(&mut self, _id: u64, _completed: bool) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// Sends every record to several outputs (a stream consumed more than once).
pub struct Tee<T> {
    /// The consumers.
    pub outs: Vec<Box<dyn Output<T>>>,
}

impl<T: Clone + Send> Output<T> for Tee<T> {
    fn emit(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        let (last, rest) = match self.outs.split_last_mut() {
            Some(x) => x,
            None => return Ok(()),
        };
        for o in rest {
            o.emit(rec.clone())?;
        }
        last.emit(rec)
    }
    fn emit_watermark(&mut self, wm: i64) -> Result<(), OperatorError> {
        self.outs.iter_mut().try_for_each(|o| o.emit_watermark(wm))
    }
    fn processing_time(&mut self, now: i64) -> Result<(), OperatorError> {
        self.outs
            .iter_mut()
            .try_for_each(|o| o.processing_time(now))
    }
    fn mark_idle(&mut self) -> Result<(), OperatorError> {
        self.outs.iter_mut().try_for_each(|o| o.mark_idle())
    }
    fn flush(&mut self) -> Result<(), OperatorError> {
        self.outs.iter_mut().try_for_each(|o| o.flush())
    }
    fn end_of_input(&mut self) -> Result<(), OperatorError> {
        self.outs.iter_mut().try_for_each(|o| o.end_of_input())
    }
    fn publish_metrics(&mut self) {
        self.outs.iter_mut().for_each(|o| o.publish_metrics());
    }
    fn barrier(&mut self, b: &Barrier, snaps: &mut ChainSnapshots) -> Result<(), OperatorError> {
        self.outs.iter_mut().try_for_each(|o| o.barrier(b, snaps))
    }
    fn notify_checkpoint(&mut self, id: u64, completed: bool) -> Result<(), OperatorError> {
        self.outs
            .iter_mut()
            .try_for_each(|o| o.notify_checkpoint(id, completed))
    }
}

/// Chooses the channel a record goes to.
pub enum Partitioner<T> {
    /// Everything to the single channel.
    Forward,
    /// Round robin over channels.
    Rebalance(usize),
    /// Every record to every channel.
    Broadcast,
    /// By key group of the record's key: `f(value)` returns the channel.
    Hash(Arc<dyn Fn(&T) -> usize + Send + Sync>),
}

/// The end of a task's chain that writes batches into channels of downstream subtasks.
pub struct ExchangeOutput<T> {
    senders: Vec<Sender<T>>,
    buffers: Vec<Vec<Record<T>>>,
    partitioner: Partitioner<T>,
    cancelled: bool,
}

fn send_failed(e: SendError) -> OperatorError {
    match e {
        SendError::Cancelled => OperatorError::User("job cancelled".into()),
        SendError::Disconnected => OperatorError::User("downstream task stopped".into()),
    }
}

impl<T: Clone + Send> ExchangeOutput<T> {
    /// An exchange over `senders` (one per downstream subtask this producer feeds).
    pub fn new(senders: Vec<Sender<T>>, partitioner: Partitioner<T>) -> Self {
        let buffers = senders
            .iter()
            .map(|_| Vec::with_capacity(BATCH_SIZE))
            .collect();
        Self {
            senders,
            buffers,
            partitioner,
            cancelled: false,
        }
    }

    fn send_buffer(&mut self, i: usize) -> Result<(), OperatorError> {
        if self.buffers[i].is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.buffers[i], Vec::with_capacity(BATCH_SIZE));
        self.senders[i]
            .send(Event::Batch(batch))
            .map_err(send_failed)
    }

    fn broadcast(&mut self, ev: impl Fn() -> Event<T>) -> Result<(), OperatorError> {
        self.flush()?;
        for s in &self.senders {
            s.send(ev()).map_err(send_failed)?;
        }
        Ok(())
    }
}

impl<T: Clone + Send> Output<T> for ExchangeOutput<T> {
    #[inline]
    fn emit(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        let i = match &mut self.partitioner {
            Partitioner::Forward => 0,
            Partitioner::Rebalance(next) => {
                *next = (*next + 1) % self.senders.len();
                *next
            }
            Partitioner::Hash(f) => f(&rec.value),
            Partitioner::Broadcast => {
                for i in 0..self.buffers.len() {
                    self.buffers[i].push(rec.clone());
                    if self.buffers[i].len() >= BATCH_SIZE {
                        self.send_buffer(i)?;
                    }
                }
                return Ok(());
            }
        };
        self.buffers[i].push(rec);
        if self.buffers[i].len() >= BATCH_SIZE {
            self.send_buffer(i)?;
        }
        Ok(())
    }

    fn emit_watermark(&mut self, wm: i64) -> Result<(), OperatorError> {
        self.broadcast(|| Event::Watermark(wm))
    }

    fn processing_time(&mut self, _now: i64) -> Result<(), OperatorError> {
        Ok(())
    }

    fn mark_idle(&mut self) -> Result<(), OperatorError> {
        self.broadcast(|| Event::Idle)
    }

    fn flush(&mut self) -> Result<(), OperatorError> {
        for i in 0..self.buffers.len() {
            self.send_buffer(i)?;
        }
        Ok(())
    }

    fn end_of_input(&mut self) -> Result<(), OperatorError> {
        if self.cancelled {
            return Ok(());
        }
        self.cancelled = true;
        self.broadcast(|| Event::End)
    }

    fn barrier(&mut self, b: &Barrier, _snaps: &mut ChainSnapshots) -> Result<(), OperatorError> {
        if self.cancelled {
            // Ended: consumers count this channel as having delivered every later barrier.
            return Ok(());
        }
        if b.unaligned {
            // Everything emitted before the barrier goes into the queues first; the barrier
            // then jumps ahead of it and tells the consumer how much it overtook, so the
            // consumer persists exactly those records as in-flight data.
            self.flush()?;
            for s in &self.senders {
                s.send_barrier_priority(b.clone());
            }
            Ok(())
        } else {
            self.broadcast(|| Event::Barrier(b.clone()))
        }
    }

    fn notify_checkpoint(&mut self, _id: u64, _completed: bool) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// A stateless operator from a closure over one record.
pub struct FnOperator<F> {
    f: F,
}

impl<F> FnOperator<F> {
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

/// `map`.
impl<I, O, F> Operator<I, O> for FnOperator<MapFn<F>>
where
    F: FnMut(I) -> O + Send,
{
    #[inline]
    fn process(&mut self, rec: Record<I>, out: &mut dyn Output<O>) -> Result<(), OperatorError> {
        let v = (self.f.0)(rec.value);
        out.emit(Record {
            ts: rec.ts,
            value: v,
        })
    }
}

/// `filter`.
impl<I, F> Operator<I, I> for FnOperator<FilterFn<F>>
where
    F: FnMut(&I) -> bool + Send,
{
    #[inline]
    fn process(&mut self, rec: Record<I>, out: &mut dyn Output<I>) -> Result<(), OperatorError> {
        if (self.f.0)(&rec.value) {
            out.emit(rec)
        } else {
            Ok(())
        }
    }
}

/// `flat_map`.
impl<I, O, F, It> Operator<I, O> for FnOperator<FlatMapFn<F>>
where
    F: FnMut(I) -> It + Send,
    It: IntoIterator<Item = O>,
{
    #[inline]
    fn process(&mut self, rec: Record<I>, out: &mut dyn Output<O>) -> Result<(), OperatorError> {
        let ts = rec.ts;
        for v in (self.f.0)(rec.value) {
            out.emit(Record { ts, value: v })?;
        }
        Ok(())
    }
}

/// Marker for a map closure.
pub struct MapFn<F>(pub F);
/// Marker for a filter closure.
pub struct FilterFn<F>(pub F);
/// Marker for a flat-map closure.
pub struct FlatMapFn<F>(pub F);
