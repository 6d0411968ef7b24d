//! Event time at the sources: timestamp assignment, watermark generation (bounded
//! out-of-orderness, monotonous), periodic emission and source idleness.

use crate::record::{NO_TIMESTAMP, Record};
use std::sync::Arc;
use std::time::Duration;

type TimestampFn<T> = Arc<dyn Fn(&T, i64) -> i64 + Send + Sync>;

/// How a source derives timestamps and watermarks.
pub struct WatermarkStrategy<T> {
    pub(crate) max_out_of_orderness: Option<Duration>,
    pub(crate) timestamp_fn: Option<TimestampFn<T>>,
    pub(crate) idleness: Option<Duration>,
    pub(crate) interval: Duration,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        Self {
            max_out_of_orderness: self.max_out_of_orderness,
            timestamp_fn: self.timestamp_fn.clone(),
            idleness: self.idleness,
            interval: self.interval,
        }
    }
}

/// Flink's default watermark interval.
pub const DEFAULT_WATERMARK_INTERVAL: Duration = Duration::from_millis(200);

impl<T> WatermarkStrategy<T> {
    /// No watermarks: for processing-time jobs.
    pub fn none() -> Self {
        Self {
            max_out_of_orderness: None,
            timestamp_fn: None,
            idleness: None,
            interval: DEFAULT_WATERMARK_INTERVAL,
        }
    }

    /// Watermark = highest timestamp seen − `bound` − 1 ms.
    pub fn bounded_out_of_orderness(bound: Duration) -> Self {
        Self {
            max_out_of_orderness: Some(bound),
            ..Self::none()
        }
    }

    /// Timestamps never decrease: watermark = highest timestamp seen − 1 ms.
    pub fn monotonous() -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO)
    }

    /// Takes the event time from the value (the second argument is the record's current
    /// timestamp, as set by the source).
    pub fn with_timestamp_assigner(
        mut self,
        f: impl Fn(&T, i64) -> i64 + Send + Sync + 'static,
    ) -> Self {
        self.timestamp_fn = Some(Arc::new(f));
        self
    }

    /// Marks a source subtask idle when it produced nothing for `timeout`, so it does not hold
    /// back the watermark of downstream operators.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idleness = Some(timeout);
        self
    }

    /// How often watermarks are emitted; zero emits after every record (deterministic tests).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Whether this strategy produces watermarks at all.
    pub fn emits_watermarks(&self) -> bool {
        self.max_out_of_orderness.is_some()
    }
}

/// Tracks the watermark of one source subtask.
pub(crate) struct WatermarkGenerator<T> {
    strategy: WatermarkStrategy<T>,
    delay_ms: i64,
    max_ts: i64,
    emitted: i64,
}

impl<T> WatermarkGenerator<T> {
    pub(crate) fn new(strategy: WatermarkStrategy<T>) -> Self {
        let delay_ms = strategy
            .max_out_of_orderness
            .map_or(0, |d| d.as_millis() as i64);
        Self {
            strategy,
            delay_ms,
            max_ts: NO_TIMESTAMP,
            emitted: i64::MIN,
        }
    }

    pub(crate) fn per_record(&self) -> bool {
        self.strategy.interval.is_zero()
    }

    pub(crate) fn interval(&self) -> Duration {
        self.strategy.interval
    }

    pub(crate) fn idleness(&self) -> Option<Duration> {
        self.strategy.idleness
    }

    /// Assigns the timestamp and remembers it.
    #[inline]
    pub(crate) fn on_record(&mut self, rec: &mut Record<T>) {
        if let Some(f) = &self.strategy.timestamp_fn {
            rec.ts = f(&rec.value, rec.ts);
        }
        if rec.ts > self.max_ts {
            self.max_ts = rec.ts;
        }
    }

    /// The watermark to emit now, if it advanced.
    pub(crate) fn poll(&mut self) -> Option<i64> {
        if !self.strategy.emits_watermarks() || self.max_ts == NO_TIMESTAMP {
            return None;
        }
        let wm = self.max_ts.saturating_sub(self.delay_ms).saturating_sub(1);
        if wm > self.emitted {
            self.emitted = wm;
            Some(wm)
        } else {
            None
        }
    }
}
