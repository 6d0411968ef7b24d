//! `orders`: the seed job ported from Flink's exactly-once ETL example — generated orders,
//! keyed by user, summarised per user in tumbling event-time windows.
//!
//! By default event time is synthetic: record `n` happens at a fixed start plus `n × 100 ms`
//! (minus up to 2 s of jitter), so at 1000 orders/s event time runs 100× faster than the wall
//! clock, a 10-minute window closes about every 6 seconds, and every run with the same seed
//! produces the same summaries at any parallelism.

use crate::common::{self, SinkSpec};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::Duration;
use weir_connectors::datagen::{DatagenSource, EventTime, Generator, SplitMix64};
use weir_core::window::{AggregateFunction, ProcessWindowFunction, WindowAssigner, WindowContext};
use weir_core::{DataStream, Program, ProgramArgs, ProgramError, StreamEnv, WatermarkStrategy};

/// Program name.
pub const NAME: &str = "orders";

/// Earliest event time in synthetic mode, 2024-01-01T00:00:00Z: order 0 is due
/// [`JITTER_MS`] later, so that its jitter does not reach into an earlier window.
pub const SYNTHETIC_START_MS: i64 = 1_704_067_200_000;

/// Event time between consecutive orders in synthetic mode.
pub const SYNTHETIC_STEP_MS: i64 = 100;

/// Largest lag of an order behind its nominal time; below the out-of-orderness bound, so no
/// order is ever late.
pub const JITTER_MS: i64 = 2_000;

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Unique id (the generator's sequence number).
    pub order_id: u64,
    /// Who ordered, uniform in `[0, users)`.
    pub user_id: u64,
    /// Amount in cents, uniform in `[100, 100_000)`.
    pub amount_cents: u64,
    /// Event time, ms since the epoch.
    pub ts: i64,
}

/// One user's orders in one window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserSummary {
    /// The user.
    pub user_id: u64,
    /// Window start, ms since the epoch (inclusive).
    pub window_start: i64,
    /// Window end, ms since the epoch (exclusive).
    pub window_end: i64,
    /// Number of orders.
    pub order_count: u64,
    /// Sum of the orders' amounts, in cents.
    pub total_amount_cents: u64,
}

/// Where event time comes from (the `event-time` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrdersTime {
    /// Logical time advancing [`SYNTHETIC_STEP_MS`] per order: fast and reproducible.
    Synthetic,
    /// Processing time minus up to [`JITTER_MS`]: windows close in real time.
    Wallclock,
}

impl FromStr for OrdersTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "synthetic" => Ok(Self::Synthetic),
            "wallclock" => Ok(Self::Wallclock),
            other => Err(format!(
                "unknown event time {other:?}: use synthetic or wallclock"
            )),
        }
    }
}

/// Settings of the `orders` dataflow.
#[derive(Debug, Clone, PartialEq)]
pub struct OrdersConfig {
    /// Generator seed.
    pub seed: u64,
    /// Orders per second over the whole job; `None`: as fast as possible.
    pub rate: Option<u64>,
    /// Number of distinct users.
    pub users: u64,
    /// Total orders; `None`: unbounded.
    pub count: Option<u64>,
    /// Event-time mode.
    pub event_time: OrdersTime,
    /// Window size.
    pub window: Duration,
    /// Watermark delay behind the highest timestamp seen.
    pub out_of_orderness: Duration,
    /// Parallelism of the source alone; `None`: the job's. A source's positions belong to its
    /// subtasks, so a job that is to be rescaled from a snapshot keeps its source's fixed and
    /// rescales the windows after it.
    pub source_parallelism: Option<u32>,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            rate: Some(1_000),
            users: 1_000,
            count: None,
            event_time: OrdersTime::Synthetic,
            window: Duration::from_secs(600),
            out_of_orderness: Duration::from_secs(5),
            source_parallelism: None,
        }
    }
}

const ARGS: &[(&str, &str)] = &[
    (
        "rate",
        "orders per second over the whole job; 0: as fast as possible (default 1000)",
    ),
    ("users", "number of distinct users (default 1000)"),
    ("count", "stop after this many orders (default: unbounded)"),
    ("seed", "generator seed (default 42)"),
    (
        "event-time",
        "synthetic (default: 100 ms of event time per order, reproducible) or wallclock",
    ),
    (
        "source-parallelism",
        "parallelism of the source alone (default: the job's); keep it fixed to rescale the job \
         from a savepoint or checkpoint",
    ),
    ("sink", common::SINK_HELP),
];

impl OrdersConfig {
    /// Reads the program arguments, with [`OrdersConfig::default`] for absent ones.
    pub fn from_args(args: &ProgramArgs) -> Result<Self, ProgramError> {
        let d = Self::default();
        let event_time = match args.get_str("event-time") {
            None => d.event_time,
            Some(s) => s
                .trim()
                .parse()
                .map_err(|message| ProgramError::BadArgument {
                    name: "event-time".into(),
                    message,
                })?,
        };
        Ok(Self {
            seed: args.get_or("seed", d.seed)?,
            rate: common::rate(args, d.rate)?,
            users: common::positive_u64(args, "users", d.users)?,
            count: common::optional_u64(args, "count")?,
            event_time,
            source_parallelism: common::optional_u64(args, "source-parallelism")?
                .map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
            ..d
        })
    }

    /// The order source this configuration describes.
    pub fn source(&self) -> DatagenSource<OrderGenerator> {
        let event_time = match self.event_time {
            OrdersTime::Synthetic => EventTime::Synthetic {
                start_ms: SYNTHETIC_START_MS + JITTER_MS,
                step_ms_per_record: SYNTHETIC_STEP_MS,
                jitter_ms: JITTER_MS,
            },
            OrdersTime::Wallclock => EventTime::ProcessingTime {
                max_delay_ms: JITTER_MS,
            },
        };
        DatagenSource::new(OrderGenerator { users: self.users })
            .seed(self.seed)
            .rate(self.rate)
            .count(self.count)
            .event_time(event_time)
    }
}

/// Generates [`Order`]s.
#[derive(Debug, Clone, Copy)]
pub struct OrderGenerator {
    /// Number of distinct users.
    pub users: u64,
}

impl Generator for OrderGenerator {
    type Item = Order;

    #[inline]
    fn generate(&self, rng: &mut SplitMix64, seq: u64, event_time_ms: i64) -> Order {
        Order {
            order_id: seq,
            user_id: rng.below(self.users),
            amount_cents: 100 + rng.below(99_900),
            ts: event_time_ms,
        }
    }
}

/// Counts orders and sums their amounts: `(count, total cents)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountAndTotal;

impl AggregateFunction<Order, (u64, u64), (u64, u64)> for CountAndTotal {
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }

    #[inline]
    fn add(&self, acc: &mut (u64, u64), order: Order) {
        acc.0 += 1;
        acc.1 += order.amount_cents;
    }

    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }

    fn merge(&self, acc: &mut (u64, u64), other: (u64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

/// Adds the user and the window to a `(count, total)` aggregate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summarize;

impl ProcessWindowFunction<u64, (u64, u64), UserSummary> for Summarize {
    fn process(
        &mut self,
        user_id: &u64,
        ctx: &WindowContext,
        elements: &[(u64, u64)],
        out: &mut Vec<UserSummary>,
    ) {
        out.extend(
            elements
                .iter()
                .map(|&(order_count, total_amount_cents)| UserSummary {
                    user_id: *user_id,
                    window_start: ctx.window.start,
                    window_end: ctx.window.end,
                    order_count,
                    total_amount_cents,
                }),
        );
    }
}

/// The summaries the `orders` dataflow must produce for a bounded configuration
/// (`count` set), computed straight from the generator without the engine: the oracle of the
/// exactly-once tests. Sorted; empty for an unbounded configuration.
pub fn expected_summaries(config: &OrdersConfig) -> Vec<UserSummary> {
    let size = config.window.as_millis() as i64;
    let source = config.source();
    let mut windows: std::collections::BTreeMap<(u64, i64), (u64, u64)> = Default::default();
    for seq in 0..config.count.unwrap_or(0) {
        let order = source.record(seq, 0).value;
        let w = windows
            .entry((
                order.user_id,
                weir_core::window::window_start(order.ts, 0, size),
            ))
            .or_default();
        w.0 += 1;
        w.1 += order.amount_cents;
    }
    let mut v: Vec<UserSummary> = windows
        .into_iter()
        .map(
            |((user_id, start), (order_count, total_amount_cents))| UserSummary {
                user_id,
                window_start: start,
                window_end: start + size,
                order_count,
                total_amount_cents,
            },
        )
        .collect();
    v.sort();
    v
}

/// Adds the source and the windowed aggregation to `env` and returns the summaries, for the
/// caller to sink.
pub fn build_dataflow(env: &StreamEnv, config: &OrdersConfig) -> DataStream<UserSummary> {
    let source = env
        .source(
            "orders",
            config.source(),
            WatermarkStrategy::bounded_out_of_orderness(config.out_of_orderness),
        )
        .uid("orders-source");
    let source = match config.source_parallelism {
        Some(p) => source.parallelism(p),
        None => source,
    };
    source
        .key_by(|o: &Order| o.user_id)
        .window(WindowAssigner::tumbling(config.window))
        .aggregate_with(CountAndTotal, Summarize)
        .uid("orders-per-user-window")
}

fn build(env: &StreamEnv, args: &ProgramArgs) -> Result<(), ProgramError> {
    let config = OrdersConfig::from_args(args)?;
    let sink = SinkSpec::from_args(args, SinkSpec::Stdout)?;
    sink.attach(&build_dataflow(env, &config), "summaries", "orders-sink");
    Ok(())
}

/// The `orders` program.
pub fn program() -> Program {
    Program {
        name: NAME,
        description: "orders per user in 10-minute event-time windows; synthetic event time runs \
                      100 s per wall second at the default 1000 orders/s, so windows close every \
                      ~6 s",
        args: ARGS,
        build,
    }
}
