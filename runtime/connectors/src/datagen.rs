//! The deterministic data generator source: a [`Generator`] turns a per-record random number
//! generator into values, and [`DatagenSource`] runs it at a given rate, for a given count,
//! with processing-time or synthetic event time.
//!
//! Every record has a global sequence number `seq`. Subtask `i` of `p` produces the records
//! with `seq ≡ i (mod p)`, and record `seq` draws from its own [`SplitMix64`] seeded from
//! `(seed, seq)` only. The set of records is therefore the same at any parallelism, a reader
//! resumes exactly from its position (the next `seq`) at the same parallelism, and with [`EventTime::Synthetic`] even
//! the timestamps — and so every window result downstream — are independent of the wall clock.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;
use weir_core::error::OperatorError;
use weir_core::time::Clock;
use weir_core::{Data, Record, Source, SourceContext, SourcePoll, SourceReader};

/// The odd constant SplitMix64 steps by (2^64 / φ).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Records per poll unless configured otherwise; matches the engine's channel batches.
pub const DEFAULT_BATCH: usize = 1024;

/// SplitMix64's output function: a bijective 64-bit mixer.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small, fast, seedable random number generator (Steele, Lea and Flood's SplitMix64).
///
/// Not cryptographic. Its whole state is one word, so creating one per record costs nothing,
/// which is what makes every record reproducible on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator of record `seq` of a source seeded with `seed`.
    #[inline]
    pub fn for_record(seed: u64, seq: u64) -> Self {
        // Without the mix, records whose seeds differ by a multiple of the gamma would share
        // overlapping output streams.
        Self {
            state: mix64(seed ^ seq.wrapping_mul(GOLDEN_GAMMA)),
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)`; `0` when `n` is `0`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift: no division, and the bias (< n / 2^64) is irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi)`.
    #[inline]
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.next_f64() * (hi - lo)
    }

    /// True with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// Produces the value of one record.
///
/// Implemented by every `Fn(&mut SplitMix64, seq, event_time_ms) -> T`. A generator must
/// depend only on its arguments (and its own immutable configuration), or runs stop being
/// reproducible.
pub trait Generator: Send + Sync + 'static {
    /// What it generates.
    type Item: Data;

    /// The value of record `seq`, whose event time is `event_time_ms`; `rng` is the record's
    /// own generator.
    fn generate(&self, rng: &mut SplitMix64, seq: u64, event_time_ms: i64) -> Self::Item;
}

impl<T, F> Generator for F
where
    T: Data,
    F: Fn(&mut SplitMix64, u64, i64) -> T + Send + Sync + 'static,
{
    type Item = T;

    #[inline]
    fn generate(&self, rng: &mut SplitMix64, seq: u64, event_time_ms: i64) -> T {
        self(rng, seq, event_time_ms)
    }
}

/// How generated records get their event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTime {
    /// `now − U[0, max_delay_ms)` by the job's processing-time clock: realistic, not
    /// reproducible.
    ProcessingTime {
        /// Largest delay behind processing time (exclusive); `0` stamps records with `now`.
        max_delay_ms: i64,
    },
    /// `start_ms + seq × step_ms_per_record − U[0, jitter_ms)`: logical time, reproducible
    /// and independent of the wall clock and the parallelism.
    Synthetic {
        /// Event time of record 0.
        start_ms: i64,
        /// Event time between consecutive sequence numbers.
        step_ms_per_record: i64,
        /// Largest amount a record lags behind its nominal time (exclusive); keep it below the
        /// watermark's out-of-orderness bound or records become late.
        jitter_ms: i64,
    },
}

impl Default for EventTime {
    fn default() -> Self {
        Self::ProcessingTime { max_delay_ms: 0 }
    }
}

impl EventTime {
    fn reads_clock(&self) -> bool {
        matches!(self, Self::ProcessingTime { .. })
    }

    /// Always draws exactly one number, so generated values do not depend on the mode.
    #[inline]
    fn timestamp(&self, seq: u64, now_ms: i64, rng: &mut SplitMix64) -> i64 {
        let draw = rng.next_u64();
        let below = |n: i64| ((u128::from(draw) * u128::from(n.max(0) as u64)) >> 64) as i64;
        match *self {
            Self::ProcessingTime { max_delay_ms } => now_ms.saturating_sub(below(max_delay_ms)),
            Self::Synthetic {
                start_ms,
                step_ms_per_record,
                jitter_ms,
            } => start_ms
                .wrapping_add((seq as i64).wrapping_mul(step_ms_per_record))
                .saturating_sub(below(jitter_ms)),
        }
    }
}

/// Why a datagen reader cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagenError {
    /// A position that is not 8 bytes.
    #[error("corrupt datagen position: expected 8 bytes, got {0}")]
    CorruptPosition(usize),
}

impl From<DatagenError> for OperatorError {
    fn from(e: DatagenError) -> Self {
        OperatorError::Source(e.to_string())
    }
}

/// A deterministic data generator source.
///
/// ```
/// use weir_connectors::datagen::{DatagenSource, EventTime, SplitMix64};
///
/// let source = DatagenSource::new(|rng: &mut SplitMix64, _seq: u64, _ts: i64| rng.below(100))
///     .seed(7)
///     .rate(Some(1_000))
///     .count(Some(10_000))
///     .event_time(EventTime::Synthetic { start_ms: 0, step_ms_per_record: 10, jitter_ms: 0 });
/// assert_eq!(source.record(3, 0).ts, 30);
/// ```
pub struct DatagenSource<G> {
    generator: Arc<G>,
    seed: u64,
    rate: Option<u64>,
    count: Option<u64>,
    batch: usize,
    event_time: EventTime,
}

impl<G> Clone for DatagenSource<G> {
    fn clone(&self) -> Self {
        Self {
            generator: self.generator.clone(),
            seed: self.seed,
            rate: self.rate,
            count: self.count,
            batch: self.batch,
            event_time: self.event_time,
        }
    }
}

impl<G> fmt::Debug for DatagenSource<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagenSource")
            .field("seed", &self.seed)
            .field("rate", &self.rate)
            .field("count", &self.count)
            .field("batch", &self.batch)
            .field("event_time", &self.event_time)
            .finish_non_exhaustive()
    }
}

impl<G: Generator> DatagenSource<G> {
    /// An unbounded, unthrottled source of `generator`'s values with seed 0, stamped with
    /// processing time.
    pub fn new(generator: G) -> Self {
        Self {
            generator: Arc::new(generator),
            seed: 0,
            rate: None,
            count: None,
            batch: DEFAULT_BATCH,
            event_time: EventTime::default(),
        }
    }

    /// The seed every record's generator derives from.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Records per second for the whole job, split evenly across subtasks; `None` or `0`
    /// generates as fast as downstream takes them.
    pub fn rate(mut self, per_second: Option<u64>) -> Self {
        self.rate = per_second.filter(|&r| r > 0);
        self
    }

    /// Total number of records (sequence numbers `0..count`); `None` never finishes.
    pub fn count(mut self, count: Option<u64>) -> Self {
        self.count = count;
        self
    }

    /// Largest number of records handed out per poll (at least 1).
    pub fn batch(mut self, records: usize) -> Self {
        self.batch = records.max(1);
        self
    }

    /// How records get their event time.
    pub fn event_time(mut self, event_time: EventTime) -> Self {
        self.event_time = event_time;
        self
    }

    /// Record `seq` exactly as a reader produces it when processing time is `now_ms` (which
    /// only [`EventTime::ProcessingTime`] reads): lets tests compute expected results directly.
    pub fn record(&self, seq: u64, now_ms: i64) -> Record<G::Item> {
        record_at(&*self.generator, self.seed, &self.event_time, seq, now_ms)
    }

    /// The configured total number of records.
    pub fn total(&self) -> Option<u64> {
        self.count
    }
}

#[inline]
fn record_at<G: Generator>(
    generator: &G,
    seed: u64,
    event_time: &EventTime,
    seq: u64,
    now_ms: i64,
) -> Record<G::Item> {
    let mut rng = SplitMix64::for_record(seed, seq);
    let ts = event_time.timestamp(seq, now_ms, &mut rng);
    Record::new(ts, generator.generate(&mut rng, seq, ts))
}

impl<G: Generator> Source<G::Item> for DatagenSource<G> {
    fn create_reader(
        &self,
        ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<G::Item>>, OperatorError> {
        let parallelism = ctx.parallelism.max(1);
        let pacer = self
            .rate
            .map(|rate| Pacer::new(rate as f64 / f64::from(parallelism), self.batch));
        Ok(Box::new(DatagenReader {
            generator: self.generator.clone(),
            seed: self.seed,
            event_time: self.event_time,
            clock: ctx.clock.clone(),
            subtask: ctx.subtask,
            parallelism,
            next: u64::from(ctx.subtask),
            end: self.count.unwrap_or(u64::MAX),
            batch: self.batch as u64,
            pacer,
        }))
    }
}

/// Token bucket refilled by the monotonic clock. Processing time (the job's clock) is not
/// used because a manual clock in tests would stop the source.
struct Pacer {
    per_second: f64,
    tokens: f64,
    capacity: f64,
    last: Instant,
}

impl Pacer {
    fn new(per_second: f64, batch: usize) -> Self {
        // Enough headroom to catch up after a short stall without bursting far past the rate.
        let capacity = (per_second / 10.0).max(batch as f64).max(1.0);
        Self {
            per_second,
            tokens: 0.0,
            capacity,
            last: Instant::now(),
        }
    }

    fn available(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.tokens.max(0.0) as u64
    }

    fn consume(&mut self, n: u64) {
        self.tokens -= n as f64;
    }
}

struct DatagenReader<G> {
    generator: Arc<G>,
    seed: u64,
    event_time: EventTime,
    clock: Arc<dyn Clock>,
    subtask: u32,
    parallelism: u32,
    /// The next sequence number this subtask produces.
    next: u64,
    /// First sequence number not produced (the count), or `u64::MAX`.
    end: u64,
    batch: u64,
    pacer: Option<Pacer>,
}

impl<G: Generator> SourceReader<G::Item> for DatagenReader<G> {
    fn poll(&mut self, out: &mut Vec<Record<G::Item>>) -> Result<SourcePoll, OperatorError> {
        if self.next >= self.end {
            return Ok(SourcePoll::Finished);
        }
        let stride = u64::from(self.parallelism);
        let mut n = self.batch.min((self.end - self.next).div_ceil(stride));
        if let Some(pacer) = &mut self.pacer {
            n = n.min(pacer.available(Instant::now()));
            if n == 0 {
                return Ok(SourcePoll::Idle);
            }
            pacer.consume(n);
        }
        let now = if self.event_time.reads_clock() {
            self.clock.now_ms()
        } else {
            0
        };
        out.reserve(n as usize);
        let generator = &*self.generator;
        let mut seq = self.next;
        for _ in 0..n {
            out.push(record_at(generator, self.seed, &self.event_time, seq, now));
            seq = seq.saturating_add(stride);
        }
        self.next = seq;
        Ok(if self.next >= self.end {
            SourcePoll::Finished
        } else {
            SourcePoll::Emitted
        })
    }

    fn position(&self) -> Vec<u8> {
        self.next.to_le_bytes().to_vec()
    }

    /// Resumes at the restored sequence number. A position taken by another subtask (after a
    /// rescale) is moved up to this subtask's next own sequence number, so the job restores;
    /// resuming is exact only at the parallelism the position was taken at.
    fn restore(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let bytes: [u8; 8] = position
            .try_into()
            .map_err(|_| DatagenError::CorruptPosition(position.len()))?;
        let seq = u64::from_le_bytes(bytes);
        let stride = u64::from(self.parallelism);
        let offset = (u64::from(self.subtask) + stride - seq % stride) % stride;
        self.next = seq.saturating_add(offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_values() {
        // First outputs of the reference implementation seeded with 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = SplitMix64::new(1);
        for _ in 0..10_000 {
            assert!(r.below(7) < 7);
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            let g = r.range_f64(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&g));
        }
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn synthetic_time_is_nominal_minus_jitter() {
        let et = EventTime::Synthetic {
            start_ms: 1_000,
            step_ms_per_record: 10,
            jitter_ms: 5,
        };
        for seq in 0..1_000u64 {
            let ts = et.timestamp(seq, 0, &mut SplitMix64::for_record(9, seq));
            let nominal = 1_000 + 10 * seq as i64;
            assert!(ts <= nominal && ts > nominal - 5, "{seq}: {ts}");
        }
    }
}
