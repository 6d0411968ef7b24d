//! Event-time windows: assigners (tumbling, sliding, session), window functions (incremental
//! aggregates, full-window process functions, or both), allowed lateness and late-data side
//! output.

pub mod operator;

pub use operator::{WindowContents, WindowOperator, WindowOutput};

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A half-open interval of event time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl TimeWindow {
    /// The window `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        Self { start, end }
    }

    /// The last timestamp that belongs to the window; results carry it.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }

    /// Whether the windows overlap or touch (session windows merge then).
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Start of the window of `size` (shifted by `offset`) that holds `ts`.
pub fn window_start(ts: i64, offset: i64, size: i64) -> i64 {
    ts - (ts - offset).rem_euclid(size)
}

/// Assigns records to windows by their event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Fixed-size, non-overlapping windows.
    Tumbling {
        /// Window length in ms.
        size: i64,
        /// Shift of window starts from the epoch, in ms.
        offset: i64,
    },
    /// Fixed-size windows starting every `slide`.
    Sliding {
        /// Window length in ms.
        size: i64,
        /// Distance between window starts in ms.
        slide: i64,
        /// Shift of window starts from the epoch, in ms.
        offset: i64,
    },
    /// Windows of activity separated by gaps of at least `gap`.
    Session {
        /// Inactivity gap in ms.
        gap: i64,
    },
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl WindowAssigner {
    /// Tumbling event-time windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        Self::Tumbling {
            size: ms(size).max(1),
            offset: 0,
        }
    }

    /// Sliding event-time windows of `size` every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Self::Sliding {
            size: ms(size).max(1),
            slide: ms(slide).max(1),
            offset: 0,
        }
    }

    /// Session windows closed by `gap` of inactivity.
    pub fn session(gap: Duration) -> Self {
        Self::Session {
            gap: ms(gap).max(1),
        }
    }

    /// Shifts window starts (e.g. to align daily windows to a time zone).
    pub fn with_offset(self, offset: Duration) -> Self {
        match self {
            Self::Tumbling { size, .. } => Self::Tumbling {
                size,
                offset: ms(offset),
            },
            Self::Sliding { size, slide, .. } => Self::Sliding {
                size,
                slide,
                offset: ms(offset),
            },
            s @ Self::Session { .. } => s,
        }
    }

    /// Whether windows merge (sessions).
    pub fn is_merging(&self) -> bool {
        matches!(self, Self::Session { .. })
    }

    /// Calls `f` with every window `ts` belongs to.
    #[inline]
    pub fn assign(&self, ts: i64, mut f: impl FnMut(TimeWindow)) {
        match *self {
            Self::Tumbling { size, offset } => {
                let start = window_start(ts, offset, size);
                f(TimeWindow::new(start, start + size));
            }
            Self::Sliding {
                size,
                slide,
                offset,
            } => {
                let last = window_start(ts, offset, slide);
                let mut start = last;
                while start > ts - size {
                    f(TimeWindow::new(start, start + size));
                    start -= slide;
                }
            }
            Self::Session { gap } => f(TimeWindow::new(ts, ts + gap)),
        }
    }
}

/// An incremental aggregate: one accumulator per key and window, updated per record.
pub trait AggregateFunction<T, ACC, R>: Clone + Send + 'static {
    /// A fresh accumulator.
    fn create_accumulator(&self) -> ACC;
    /// Adds a value.
    fn add(&self, acc: &mut ACC, value: T);
    /// The result of an accumulator.
    fn get_result(&self, acc: &ACC) -> R;
    /// Merges `other` into `acc` (session windows).
    fn merge(&self, acc: &mut ACC, other: ACC);
}

/// What a window function knows about the window it evaluates.
#[derive(Debug, Clone, Copy)]
pub struct WindowContext {
    /// The window.
    pub window: TimeWindow,
    /// The operator's watermark when the window fired.
    pub current_watermark: i64,
}

/// Evaluates a window's elements (or its aggregate) into output values.
pub trait ProcessWindowFunction<K, E, O>: Clone + Send + 'static {
    /// Called when the window fires; `elements` are the window's contents (a single aggregate
    /// result when combined with an [`AggregateFunction`]).
    fn process(&mut self, key: &K, ctx: &WindowContext, elements: &[E], out: &mut Vec<O>);
}

impl<K, E, O, F> ProcessWindowFunction<K, E, O> for F
where
    F: FnMut(&K, &WindowContext, &[E], &mut Vec<O>) + Clone + Send + 'static,
{
    fn process(&mut self, key: &K, ctx: &WindowContext, elements: &[E], out: &mut Vec<O>) {
        self(key, ctx, elements, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_assignment_including_negative_timestamps() {
        let a = WindowAssigner::tumbling(Duration::from_secs(10));
        let mut w = vec![];
        for ts in [0, 9_999, 10_000, -1] {
            a.assign(ts, |x| w.push(x));
        }
        assert_eq!(
            w,
            vec![
                TimeWindow::new(0, 10_000),
                TimeWindow::new(0, 10_000),
                TimeWindow::new(10_000, 20_000),
                TimeWindow::new(-10_000, 0)
            ]
        );
    }

    #[test]
    fn sliding_assignment() {
        let a = WindowAssigner::sliding(Duration::from_secs(10), Duration::from_secs(5));
        let mut w = vec![];
        a.assign(12_000, |x| w.push(x));
        assert_eq!(
            w,
            vec![
                TimeWindow::new(10_000, 20_000),
                TimeWindow::new(5_000, 15_000)
            ]
        );
    }

    #[test]
    fn offsets_shift_windows() {
        let a =
            WindowAssigner::tumbling(Duration::from_secs(10)).with_offset(Duration::from_secs(3));
        let mut w = vec![];
        a.assign(12_000, |x| w.push(x));
        assert_eq!(w, vec![TimeWindow::new(3_000, 13_000)]);
    }
}
