//! Sources: the connector interface that puts records into a dataflow, and an in-memory
//! bounded source for tests and examples.
//!
//! A source is split across subtasks by the source itself ([`Source::create_reader`] is told
//! its subtask and the parallelism). Readers report their position as bytes so that a
//! checkpoint can store it and a restore can resume from it.

use crate::error::OperatorError;
use crate::record::Record;
use crate::time::Clock;
use std::sync::Arc;

/// Where a source reader runs.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// This subtask's index.
    pub subtask: u32,
    /// Number of source subtasks.
    pub parallelism: u32,
    /// Processing-time clock.
    pub clock: Arc<dyn Clock>,
    /// This subtask's metrics, where a reader registers its own counters.
    pub metrics: Arc<crate::metrics::SubtaskMetrics>,
}

/// What a poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePoll {
    /// Records were appended (possibly none); poll again right away.
    Emitted,
    /// Nothing available now; poll again shortly.
    Idle,
    /// The source is exhausted.
    Finished,
}

/// Reads the part of a source that belongs to one subtask.
pub trait SourceReader<T>: Send {
    /// Appends available records (ideally up to a batch) to `out`.
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> Result<SourcePoll, OperatorError>;

    /// The position after the last record handed out, to resume from after a restore.
    fn position(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Continues from a position returned by [`SourceReader::position`].
    fn restore(&mut self, _position: &[u8]) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Continues from a snapshot taken at another parallelism: `positions` are those of every
    /// subtask it had, and the reader keeps its own part of them. Called instead of
    /// [`SourceReader::restore`] for sources whose [`Source::redistributes_positions`] is true.
    fn restore_all(&mut self, positions: &[Vec<u8>]) -> Result<(), OperatorError> {
        Err(OperatorError::Source(format!(
            "this source cannot take the positions of {} subtasks of another parallelism; \
             restore with the parallelism it had",
            positions.len()
        )))
    }

    /// A watermark the reader computes itself (e.g. per partition, merged), emitted whenever
    /// it advances; `None` leaves watermarks to the source's `WatermarkStrategy`.
    fn watermark(&mut self) -> Option<i64> {
        None
    }

    /// Checkpoint `checkpoint_id` completed: the position the reader reported for it is now
    /// durable (a Kafka source commits its offsets to the consumer group here, for lag tools).
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// A connector that produces records.
pub trait Source<T>: Send + Sync + 'static {
    /// Creates the reader for one subtask.
    fn create_reader(&self, ctx: &SourceContext)
    -> Result<Box<dyn SourceReader<T>>, OperatorError>;

    /// Whether the source can be restored at another parallelism: its positions are per split
    /// (a Kafka partition) and its readers pick their splits by a rule of the parallelism, so
    /// each new reader takes every old subtask's position ([`SourceReader::restore_all`]) and
    /// keeps its own splits' — Flink's union list state of split positions. A source whose
    /// position belongs to its subtask as a whole (a generator's sequence) keeps `false` and
    /// restores only at the parallelism it had.
    fn redistributes_positions(&self) -> bool {
        false
    }
}

/// A bounded source over a vector of timestamped records, dealt round robin to subtasks, one
/// record per poll so that per-record watermarks are exact in tests.
#[derive(Debug, Clone)]
pub struct VecSource<T> {
    records: Arc<Vec<Record<T>>>,
    per_poll: usize,
}

impl<T: Clone + Send + Sync + 'static> VecSource<T> {
    /// A source of `(timestamp, value)` pairs.
    pub fn new(items: impl IntoIterator<Item = (i64, T)>) -> Self {
        Self {
            records: Arc::new(
                items
                    .into_iter()
                    .map(|(ts, v)| Record::new(ts, v))
                    .collect(),
            ),
            per_poll: 1,
        }
    }

    /// Hands out up to `n` records per poll.
    pub fn records_per_poll(mut self, n: usize) -> Self {
        self.per_poll = n.max(1);
        self
    }
}

struct VecReader<T> {
    records: Arc<Vec<Record<T>>>,
    next: usize,
    step: usize,
    per_poll: usize,
}

impl<T: Clone + Send + Sync + 'static> Source<T> for VecSource<T> {
    fn create_reader(
        &self,
        ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<T>>, OperatorError> {
        Ok(Box::new(VecReader {
            records: self.records.clone(),
            next: ctx.subtask as usize,
            step: ctx.parallelism.max(1) as usize,
            per_poll: self.per_poll,
        }))
    }
}

impl<T: Clone + Send + Sync> SourceReader<T> for VecReader<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> Result<SourcePoll, OperatorError> {
        for _ in 0..self.per_poll {
            match self.records.get(self.next) {
                Some(r) => {
                    out.push(r.clone());
                    self.next += self.step;
                }
                None => return Ok(SourcePoll::Finished),
            }
        }
        Ok(SourcePoll::Emitted)
    }

    fn position(&self) -> Vec<u8> {
        counter_position(self.next as u64)
    }

    fn restore(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        self.next = restored_counter("VecSource", position)? as usize;
        Ok(())
    }
}

/// The position of a reader whose progress is one counter (the next index or sequence number),
/// in the layout [`restored_counter`] reads back.
pub fn counter_position(next: u64) -> Vec<u8> {
    next.to_le_bytes().to_vec()
}

/// Reads a [`counter_position`] back; anything else is a corrupt position of `source`.
pub fn restored_counter(source: &str, position: &[u8]) -> Result<u64, OperatorError> {
    let b: [u8; 8] = position
        .try_into()
        .map_err(|_| OperatorError::Source(format!("corrupt {source} position")))?;
    Ok(u64::from_le_bytes(b))
}
