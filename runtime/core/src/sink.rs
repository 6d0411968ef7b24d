//! Sinks: the connector interface that takes records out of a dataflow, the sink operator that
//! drives it, and the sinks every job and test needs (blackhole, collect).

use crate::checkpoint::{OperatorSnapshot, RestoredState, SnapshotContext, decode, encode};
use crate::error::OperatorError;
use crate::key::Data;
use crate::operator::{Operator, OperatorInit, Output};
use crate::record::Record;
use std::sync::{Arc, Mutex};

/// Where a sink writer runs.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// This subtask's index.
    pub subtask: u32,
    /// Number of sink subtasks.
    pub parallelism: u32,
    /// This subtask's metrics, where a writer registers its own counters.
    pub metrics: Arc<crate::metrics::SubtaskMetrics>,
}

/// Writes the records of one sink subtask.
pub trait SinkWriter<T>: Send {
    /// Writes (or buffers) one record.
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError>;
    /// Makes buffered writes visible/durable.
    fn flush(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    /// End of input.
    fn finish(&mut self) -> Result<(), OperatorError> {
        self.flush()
    }
    /// At a checkpoint barrier: make everything written so far durable or pending, and return
    /// what must be in the checkpoint to finish the job after a failure (e.g. pending
    /// transactions). At-least-once sinks just flush.
    fn pre_commit(&mut self, _checkpoint_id: u64) -> Result<Vec<Vec<u8>>, OperatorError> {
        self.flush()?;
        Ok(Vec::new())
    }
    /// Checkpoint `checkpoint_id` completed: commit what was pre-committed up to it.
    fn commit(&mut self, _checkpoint_id: u64) -> Result<(), OperatorError> {
        Ok(())
    }
    /// Restores from the items `pre_commit` returned in the restored checkpoint; a
    /// transactional sink commits them here (idempotently: they may have been committed
    /// before the failure).
    fn restore(&mut self, _state: Vec<Vec<u8>>) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// A connector that consumes records.
pub trait Sink<T>: Send + Sync + 'static {
    /// Creates the writer for one subtask.
    fn create_writer(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError>;
}

/// Runs a sink writer as the last operator of a chain.
pub struct SinkOperator<T> {
    sink: Arc<dyn Sink<T>>,
    writer: Option<Box<dyn SinkWriter<T>>>,
}

impl<T> SinkOperator<T> {
    /// The operator for one subtask of `sink`.
    pub fn new(sink: Arc<dyn Sink<T>>) -> Self {
        Self { sink, writer: None }
    }

    fn writer(&mut self) -> Result<&mut Box<dyn SinkWriter<T>>, OperatorError> {
        self.writer
            .as_mut()
            .ok_or_else(|| OperatorError::User("sink used before open".into()))
    }
}

impl<T: Send + 'static> Operator<T, ()> for SinkOperator<T> {
    fn open(&mut self, init: &OperatorInit) -> Result<(), OperatorError> {
        let ctx = SinkContext {
            subtask: init.subtask,
            parallelism: init.parallelism,
            metrics: init.metrics.clone(),
        };
        self.writer = Some(self.sink.create_writer(&ctx)?);
        Ok(())
    }

    #[inline]
    fn process(&mut self, rec: Record<T>, _out: &mut dyn Output<()>) -> Result<(), OperatorError> {
        self.writer()?.write(rec)
    }

    fn on_watermark(&mut self, _wm: i64, _out: &mut dyn Output<()>) -> Result<(), OperatorError> {
        Ok(())
    }

    fn finish(&mut self, _out: &mut dyn Output<()>) -> Result<(), OperatorError> {
        self.writer()?.finish()
    }

    fn flush(&mut self) -> Result<(), OperatorError> {
        self.writer()?.flush()
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorSnapshot, OperatorError> {
        let operator = self.writer()?.pre_commit(ctx.checkpoint_id)?;
        Ok(OperatorSnapshot {
            keyed: None,
            operator,
        })
    }

    fn restore_state(&mut self, state: RestoredState) -> Result<(), OperatorError> {
        self.writer()?.restore(state.operator)
    }

    fn notify_checkpoint_complete(&mut self, id: u64) -> Result<(), OperatorError> {
        self.writer()?.commit(id)
    }
}

/// Discards every record (benchmarks, and jobs run for their side effects).
#[derive(Debug, Default, Clone, Copy)]
pub struct BlackholeSink;

struct Blackhole;

impl<T> SinkWriter<T> for Blackhole {
    #[inline]
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        std::hint::black_box(rec);
        Ok(())
    }
}

impl<T: Send + 'static> Sink<T> for BlackholeSink {
    fn create_writer(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        Ok(Box::new(Blackhole))
    }
}

/// Collects every record into a shared vector, for tests.
#[derive(Debug)]
pub struct CollectSink<T> {
    items: Arc<Mutex<Vec<Record<T>>>>,
}

impl<T> Clone for CollectSink<T> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
        }
    }
}

impl<T> Default for CollectSink<T> {
    fn default() -> Self {
        Self {
            items: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Clone> CollectSink<T> {
    /// A new, empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The collected values, in arrival order.
    pub fn values(&self) -> Vec<T> {
        self.records().into_iter().map(|r| r.value).collect()
    }

    /// The collected records with their timestamps.
    pub fn records(&self) -> Vec<Record<T>> {
        self.items
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

struct CollectWriter<T> {
    items: Arc<Mutex<Vec<Record<T>>>>,
    local: Vec<Record<T>>,
}

impl<T: Send> SinkWriter<T> for CollectWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        self.local.push(rec);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OperatorError> {
        let mut g = self.items.lock().unwrap_or_else(|e| e.into_inner());
        g.append(&mut self.local);
        Ok(())
    }
}

impl<T: Send + 'static> Sink<T> for CollectSink<T> {
    fn create_writer(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        Ok(Box::new(CollectWriter {
            items: self.items.clone(),
            local: Vec::new(),
        }))
    }
}

/// What a [`TransactionalCollectSink`] has committed.
#[derive(Debug)]
struct Committed<T> {
    records: Vec<T>,
    transactions: std::collections::HashSet<(u32, u64)>,
    commits: u64,
}

/// A two-phase-commit sink for tests: records are invisible until the checkpoint that covers
/// them completes (or the input ends), and a restore re-commits pending transactions
/// idempotently. Its committed output is what an exactly-once test compares.
#[derive(Debug)]
pub struct TransactionalCollectSink<T> {
    committed: Arc<Mutex<Committed<T>>>,
}

impl<T> Clone for TransactionalCollectSink<T> {
    fn clone(&self) -> Self {
        Self {
            committed: self.committed.clone(),
        }
    }
}

impl<T> Default for TransactionalCollectSink<T> {
    fn default() -> Self {
        Self {
            committed: Arc::new(Mutex::new(Committed {
                records: Vec::new(),
                transactions: Default::default(),
                commits: 0,
            })),
        }
    }
}

impl<T: Clone> TransactionalCollectSink<T> {
    /// A new, empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything committed so far.
    pub fn committed(&self) -> Vec<T> {
        self.committed
            .lock()
            .map(|c| c.records.clone())
            .unwrap_or_else(|e| e.into_inner().records.clone())
    }

    /// How many transactions were committed.
    pub fn commit_count(&self) -> u64 {
        self.committed
            .lock()
            .map(|c| c.commits)
            .unwrap_or_else(|e| e.into_inner().commits)
    }
}

/// A pending transaction as stored in checkpoints: (writer subtask, checkpoint id, records).
type Txn<T> = (u32, u64, Vec<T>);

struct TxnWriter<T> {
    subtask: u32,
    committed: Arc<Mutex<Committed<T>>>,
    open: Vec<T>,
    pending: std::collections::BTreeMap<u64, Vec<T>>,
}

impl<T: Data> TxnWriter<T> {
    fn commit_txn(&self, subtask: u32, id: u64, records: &[T]) {
        let mut c = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        // The guard against committing twice: a restore replays transactions that may have
        // been committed just before the failure.
        if c.transactions.insert((subtask, id)) {
            c.records.extend(records.iter().cloned());
            c.commits += 1;
        }
    }
}

impl<T: Data> SinkWriter<T> for TxnWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        self.open.push(rec.value);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), OperatorError> {
        // End of input: everything is final.
        let pending = std::mem::take(&mut self.pending);
        for (id, recs) in &pending {
            self.commit_txn(self.subtask, *id, recs);
        }
        let open = std::mem::take(&mut self.open);
        self.commit_txn(self.subtask, u64::MAX, &open);
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Vec<Vec<u8>>, OperatorError> {
        let open = std::mem::take(&mut self.open);
        self.pending.insert(checkpoint_id, open);
        self.pending
            .iter()
            .map(|(id, recs)| encode(&(self.subtask, *id, recs)))
            .collect()
    }

    fn commit(&mut self, checkpoint_id: u64) -> Result<(), OperatorError> {
        let later = self.pending.split_off(&(checkpoint_id + 1));
        let due = std::mem::replace(&mut self.pending, later);
        for (id, recs) in &due {
            self.commit_txn(self.subtask, *id, recs);
        }
        Ok(())
    }

    fn restore(&mut self, state: Vec<Vec<u8>>) -> Result<(), OperatorError> {
        for item in state {
            let (subtask, id, recs): Txn<T> = decode("transactional sink", &item)?;
            self.commit_txn(subtask, id, &recs);
        }
        Ok(())
    }
}

impl<T: Data> Sink<T> for TransactionalCollectSink<T> {
    fn create_writer(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        Ok(Box::new(TxnWriter {
            subtask: ctx.subtask,
            committed: self.committed.clone(),
            open: Vec::new(),
            pending: Default::default(),
        }))
    }
}
