//! `window-bench`: the windowed-aggregation benchmark, the same workload as the Flink job it is
//! compared with. Unthrottled generated events (user uniform in `[0, keys)`, amount uniform in
//! `[0, 1000)`, event time = now − U[0, 5 s)), a 5 s bounded out-of-orderness watermark,
//! 10-second tumbling event-time windows per user computing count and sum, and a blackhole
//! sink.
//!
//! Flink's `aggregate(AggregateFunction, ProcessWindowFunction)` is
//! [`WindowedStream::aggregate_with`](weir_core::WindowedStream::aggregate_with) here: the
//! per-record work is the incremental aggregate, and the key and window are added once per
//! window.

use crate::common::{self, SinkSpec};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_connectors::datagen::{DatagenSource, EventTime, Generator, SplitMix64};
use weir_core::window::{AggregateFunction, ProcessWindowFunction, WindowAssigner, WindowContext};
use weir_core::{DataStream, Program, ProgramArgs, ProgramError, StreamEnv, WatermarkStrategy};

/// Program name.
pub const NAME: &str = "window-bench";

/// An event of the benchmark (its event time is the record's timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BenchEvent {
    /// The key, uniform in `[0, keys)`.
    pub user_id: u64,
    /// Uniform in `[0, 1000)`.
    pub amount: f64,
}

/// The result of one user's window: `(user_id, window_end, count, sum)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// The key.
    pub user_id: u64,
    /// Window end, ms since the epoch (exclusive).
    pub window_end: i64,
    /// Number of events.
    pub count: u64,
    /// Sum of their amounts.
    pub sum: f64,
}

/// Settings of the benchmark dataflow.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// Generator seed.
    pub seed: u64,
    /// Events per second over the whole job; `None`: as fast as possible.
    pub rate: Option<u64>,
    /// Number of distinct keys.
    pub keys: u64,
    /// Total events; `None`: unbounded.
    pub count: Option<u64>,
    /// Window size.
    pub window: Duration,
    /// Largest lag of event time behind processing time (exclusive).
    pub max_delay: Duration,
    /// Watermark delay behind the highest timestamp seen.
    pub out_of_orderness: Duration,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            rate: None,
            keys: 100_000,
            count: None,
            window: Duration::from_secs(10),
            max_delay: Duration::from_secs(5),
            out_of_orderness: Duration::from_secs(5),
        }
    }
}

const ARGS: &[(&str, &str)] = &[
    (
        "rate",
        "events per second over the whole job (default: as fast as possible)",
    ),
    ("keys", "number of distinct users (default 100000)"),
    ("count", "stop after this many events (default: unbounded)"),
    ("seed", "generator seed (default 42)"),
    ("sink", "blackhole (default), stdout, or file:<dir>"),
];

impl BenchConfig {
    /// Reads the program arguments, with [`BenchConfig::default`] for absent ones.
    pub fn from_args(args: &ProgramArgs) -> Result<Self, ProgramError> {
        let d = Self::default();
        Ok(Self {
            seed: args.get_or("seed", d.seed)?,
            rate: common::rate(args, d.rate)?,
            keys: common::positive_u64(args, "keys", d.keys)?,
            count: common::optional_u64(args, "count")?,
            ..d
        })
    }

    /// The event source this configuration describes.
    pub fn source(&self) -> DatagenSource<BenchEventGenerator> {
        let max_delay_ms = i64::try_from(self.max_delay.as_millis()).unwrap_or(i64::MAX);
        DatagenSource::new(BenchEventGenerator { keys: self.keys })
            .seed(self.seed)
            .rate(self.rate)
            .count(self.count)
            .event_time(EventTime::ProcessingTime { max_delay_ms })
    }
}

/// Generates [`BenchEvent`]s.
#[derive(Debug, Clone, Copy)]
pub struct BenchEventGenerator {
    /// Number of distinct keys.
    pub keys: u64,
}

impl Generator for BenchEventGenerator {
    type Item = BenchEvent;

    #[inline]
    fn generate(&self, rng: &mut SplitMix64, _seq: u64, _event_time_ms: i64) -> BenchEvent {
        BenchEvent {
            user_id: rng.below(self.keys),
            amount: rng.range_f64(0.0, 1_000.0),
        }
    }
}

/// `count(*)` and `sum(amount)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountSum;

impl AggregateFunction<BenchEvent, (u64, f64), (u64, f64)> for CountSum {
    fn create_accumulator(&self) -> (u64, f64) {
        (0, 0.0)
    }

    #[inline]
    fn add(&self, acc: &mut (u64, f64), e: BenchEvent) {
        acc.0 += 1;
        acc.1 += e.amount;
    }

    fn get_result(&self, acc: &(u64, f64)) -> (u64, f64) {
        *acc
    }

    fn merge(&self, acc: &mut (u64, f64), other: (u64, f64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

/// Adds the key and the window end to a `(count, sum)` aggregate.
#[derive(Debug, Clone, Copy, Default)]
pub struct WithKeyAndWindowEnd;

impl ProcessWindowFunction<u64, (u64, f64), WindowStats> for WithKeyAndWindowEnd {
    fn process(
        &mut self,
        user_id: &u64,
        ctx: &WindowContext,
        elements: &[(u64, f64)],
        out: &mut Vec<WindowStats>,
    ) {
        out.extend(elements.iter().map(|&(count, sum)| WindowStats {
            user_id: *user_id,
            window_end: ctx.window.end,
            count,
            sum,
        }));
    }
}

/// Adds the source and the windowed aggregation to `env` and returns the window results, for
/// the caller to sink.
pub fn build_dataflow(env: &StreamEnv, config: &BenchConfig) -> DataStream<WindowStats> {
    env.source(
        "events",
        config.source(),
        WatermarkStrategy::bounded_out_of_orderness(config.out_of_orderness),
    )
    .uid("bench-source")
    .key_by(|e: &BenchEvent| e.user_id)
    .window(WindowAssigner::tumbling(config.window))
    .aggregate_with(CountSum, WithKeyAndWindowEnd)
    .uid("bench-window")
}

fn build(env: &StreamEnv, args: &ProgramArgs) -> Result<(), ProgramError> {
    let config = BenchConfig::from_args(args)?;
    let sink = SinkSpec::from_args(args, SinkSpec::Blackhole)?;
    sink.attach(&build_dataflow(env, &config), "results", "bench-sink");
    Ok(())
}

/// The `window-bench` program.
pub fn program() -> Program {
    Program {
        name: NAME,
        description: "benchmark: count and sum per user in 10 s tumbling event-time windows over \
                      unthrottled generated events (100k keys, 5 s out-of-orderness), blackhole sink",
        args: ARGS,
        build,
    }
}
