//! The Nexmark source: a [`Source`] of [`Event`]s over the [`NexmarkGenerator`].
//!
//! Subtask `i` of `n` generates the event numbers `i, i + n, i + 2n, ...`, so the union of all
//! subtasks is the same stream at any parallelism, and each subtask's events come in event-time
//! order (a watermark with no out-of-orderness is exact per subtask). A reader's position is
//! the next event number it will generate; with a bound the stream covers event numbers
//! `0..events`. An optional rate limit spreads the events over wall-clock time.

use super::generator::{GeneratorConfig, NexmarkGenerator};
use super::model::Event;
use std::sync::Arc;
use weir_core::error::OperatorError;
use weir_core::record::Record;
use weir_core::source::{Source, SourceContext, SourcePoll, SourceReader};
use weir_core::time::Clock;

/// Events handed out per poll when nothing else is configured: one channel batch.
pub const DEFAULT_BATCH_SIZE: usize = weir_core::operator::BATCH_SIZE;

/// A Nexmark event source.
#[derive(Debug, Clone)]
pub struct NexmarkSource {
    generator: NexmarkGenerator,
    events: Option<u64>,
    rate: Option<f64>,
    batch_size: usize,
}

impl NexmarkSource {
    /// An unbounded, unthrottled source of the events `config` describes.
    pub fn new(config: GeneratorConfig) -> Self {
        Self {
            generator: NexmarkGenerator::new(config),
            events: None,
            rate: None,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    /// Stops after event numbers `0..events` (summed over all subtasks); `None` never stops.
    pub fn with_events(mut self, events: Option<u64>) -> Self {
        self.events = events;
        self
    }

    /// Emits at most `events_per_second` events per second of wall-clock time (summed over all
    /// subtasks); `None` emits as fast as downstream takes them.
    pub fn with_rate(mut self, events_per_second: Option<f64>) -> Self {
        self.rate = events_per_second.filter(|r| r.is_finite() && *r > 0.0);
        self
    }

    /// Events handed out per poll (at least 1).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// The generator.
    pub fn generator(&self) -> &NexmarkGenerator {
        &self.generator
    }
}

impl Source<Event> for NexmarkSource {
    fn create_reader(
        &self,
        ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<Event>>, OperatorError> {
        let parallelism = u64::from(ctx.parallelism.max(1));
        let subtask = u64::from(ctx.subtask);
        if subtask >= parallelism {
            return Err(OperatorError::Source(format!(
                "nexmark: subtask {subtask} of a source with parallelism {parallelism}"
            )));
        }
        Ok(Box::new(NexmarkReader {
            generator: self.generator.clone(),
            subtask,
            step: parallelism,
            next: subtask,
            end: self.events.unwrap_or(u64::MAX),
            rate: self.rate,
            clock: ctx.clock.clone(),
            pace: None,
            batch_size: self.batch_size,
        }))
    }
}

/// Bytes of a stored position: next event number, base time, parallelism, subtask.
const POSITION_LEN: usize = 8 + 8 + 4 + 4;

/// Reads the events of one subtask.
struct NexmarkReader {
    generator: NexmarkGenerator,
    subtask: u64,
    step: u64,
    /// The next event number this reader generates (≡ subtask mod step).
    next: u64,
    /// One past the last event number of the stream.
    end: u64,
    rate: Option<f64>,
    clock: Arc<dyn Clock>,
    /// Wall-clock ms and event number at which pacing started.
    pace: Option<(i64, u64)>,
    batch_size: usize,
}

impl NexmarkReader {
    /// One past the last event number that may be emitted now.
    fn limit(&mut self) -> u64 {
        let Some(rate) = self.rate else {
            return self.end;
        };
        let now = self.clock.now_ms();
        let (start_ms, start_event) = *self.pace.get_or_insert((now, self.next));
        // Pacing is by event number rather than by count, so every subtask's share of the
        // rate follows from the numbering alone: event `e` is due `(e - start) / rate`
        // seconds after the reader started.
        let elapsed_ms = now.saturating_sub(start_ms).max(0) as f64;
        let due = start_event.saturating_add((elapsed_ms * rate / 1000.0) as u64);
        self.end.min(due.saturating_add(1))
    }
}

impl SourceReader<Event> for NexmarkReader {
    fn poll(&mut self, out: &mut Vec<Record<Event>>) -> Result<SourcePoll, OperatorError> {
        if self.next >= self.end {
            return Ok(SourcePoll::Finished);
        }
        let limit = self.limit();
        if self.next >= limit {
            return Ok(SourcePoll::Idle);
        }
        for _ in 0..self.batch_size {
            let ev = self.generator.event(self.next);
            out.push(Record::new(ev.date_time(), ev));
            // Saturating: an unbounded stream that reaches u64::MAX simply ends.
            self.next = self.next.saturating_add(self.step);
            if self.next >= limit {
                break;
            }
        }
        Ok(if self.next >= self.end {
            SourcePoll::Finished
        } else {
            SourcePoll::Emitted
        })
    }

    fn position(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(POSITION_LEN);
        p.extend_from_slice(&self.next.to_le_bytes());
        p.extend_from_slice(&self.generator.config().base_time.to_le_bytes());
        p.extend_from_slice(&(self.step as u32).to_le_bytes());
        p.extend_from_slice(&(self.subtask as u32).to_le_bytes());
        p
    }

    fn restore(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let corrupt = || {
            OperatorError::Source(format!(
                "nexmark: corrupt position of {} bytes (expected {POSITION_LEN})",
                position.len()
            ))
        };
        if position.len() != POSITION_LEN {
            return Err(corrupt());
        }
        let u64_at = |i: usize| -> Result<[u8; 8], OperatorError> {
            position[i..i + 8].try_into().map_err(|_| corrupt())
        };
        let u32_at = |i: usize| -> Result<[u8; 4], OperatorError> {
            position[i..i + 4].try_into().map_err(|_| corrupt())
        };
        let next = u64::from_le_bytes(u64_at(0)?);
        let base_time = i64::from_le_bytes(u64_at(8)?);
        let step = u64::from(u32::from_le_bytes(u32_at(16)?));
        let subtask = u64::from(u32::from_le_bytes(u32_at(20)?));
        // Positions interleave by parallelism, so one taken at another parallelism or subtask
        // would skip or repeat events: refuse it rather than silently change the stream.
        if step != self.step || subtask != self.subtask {
            return Err(OperatorError::Source(format!(
                "nexmark: the position belongs to subtask {subtask} of {step}, not {} of {}; \
                 the Nexmark source cannot change its parallelism on restore",
                self.subtask, self.step
            )));
        }
        if next % step != subtask {
            return Err(corrupt());
        }
        self.next = next;
        // Event time continues the checkpoint's time line even if the job was restarted with
        // another (e.g. wall-clock) base time, so windows and watermarks stay consistent.
        self.generator.set_base_time(base_time);
        // Pacing starts over: the time spent down is not made up in a burst.
        self.pace = None;
        Ok(())
    }
}
