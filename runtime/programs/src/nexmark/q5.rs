//! Nexmark query 5, "hot items": which auctions have seen the most bids in the last period.
//!
//! As in Flink's Nexmark q5: bids are counted per auction in sliding event-time windows
//! (10 s every 2 s by default); the counts are then grouped by window, and once the watermark
//! has passed a window's end, every auction whose count equals that window's maximum is
//! emitted (ties are all reported, as the reference's `num >= max` join does).
//!
//! The dataflow is
//! `source → bids (auction id) → key_by(auction) → sliding window count → key_by(window end) →
//! max per window (keyed state + event-time timer) → sink`.

use super::generator::{DEFAULT_EVENTS_PER_SECOND, GeneratorConfig};
use super::model::Event;
use super::source::NexmarkSource;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_core::error::OperatorError;
use weir_core::functions::{KeyedContext, KeyedProcessFunction, OnTimerContext};
use weir_core::program::{ProgramArgs, ProgramError};
use weir_core::sink::Sink;
use weir_core::state::ValueState;
use weir_core::stream::{DataStream, StreamEnv};
use weir_core::watermark::WatermarkStrategy;
use weir_core::window::{AggregateFunction, ProcessWindowFunction, WindowAssigner, WindowContext};

/// One result of query 5: an auction with the most bids in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HotItem {
    /// The auction.
    pub auction: i64,
    /// First millisecond of the window.
    pub window_start: i64,
    /// First millisecond after the window.
    pub window_end: i64,
    /// Bids on the auction in the window: the window's maximum.
    pub num_bids: u64,
}

/// The bid count of one auction in one window: the intermediate result of query 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuctionCount {
    /// The auction.
    pub auction: i64,
    /// First millisecond of the window.
    pub window_start: i64,
    /// First millisecond after the window.
    pub window_end: i64,
    /// Bids on the auction in the window.
    pub count: u64,
}

/// Settings of query 5.
#[derive(Debug, Clone, PartialEq)]
pub struct Q5Config {
    /// The generated stream.
    pub generator: GeneratorConfig,
    /// Number of events to generate (all kinds); `None` runs forever.
    pub events: Option<u64>,
    /// Wall-clock events per second over all source subtasks; `None` runs flat out.
    pub rate: Option<f64>,
    /// Window size.
    pub window: Duration,
    /// Distance between window starts.
    pub slide: Duration,
    /// How far behind the highest event time the watermark stays. The generator emits each
    /// subtask's events in event-time order, so zero is exact; more only adds latency.
    pub max_out_of_orderness: Duration,
}

impl Default for Q5Config {
    fn default() -> Self {
        Self {
            generator: GeneratorConfig::default(),
            events: None,
            rate: None,
            window: Duration::from_secs(10),
            slide: Duration::from_secs(2),
            max_out_of_orderness: Duration::ZERO,
        }
    }
}

impl Q5Config {
    /// Reads the settings from program arguments (see [`super::program`] for their meaning).
    pub fn from_args(args: &ProgramArgs) -> Result<Self, ProgramError> {
        let defaults = Q5Config::default();
        let events = Some(args.get_or::<u64>("events", 0)?).filter(|&n| n > 0);
        let rate = optional_positive(args, "rate")?;
        let events_per_second = match optional_positive(args, "events-per-second-event-time")? {
            Some(r) => r,
            // As in the reference, event time advances at the emission rate when one is set.
            None => rate.unwrap_or(DEFAULT_EVENTS_PER_SECOND),
        };
        let base_time = match args.get_str("base-time") {
            Some(_) => args.get_or::<i64>("base-time", 0)?,
            // Fixed once here, so that all subtasks share one time line.
            None => weir_core::time::now_ms(),
        };
        let generator = GeneratorConfig {
            seed: args.get_or::<u64>("seed", 0)?,
            base_time,
            events_per_second,
            ..GeneratorConfig::default()
        };
        let config = Q5Config {
            generator,
            events,
            rate,
            window: args.get_duration_or("window", defaults.window)?,
            slide: args.get_duration_or("slide", defaults.slide)?,
            max_out_of_orderness: args
                .get_duration_or("max-out-of-orderness", defaults.max_out_of_orderness)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings; errors name the program argument to fix.
    pub fn validate(&self) -> Result<(), ProgramError> {
        let bad = |name: &str, message: String| ProgramError::BadArgument {
            name: name.to_string(),
            message,
        };
        self.generator
            .validate()
            .map_err(|m| bad("events-per-second-event-time", m))?;
        if self.window.as_millis() == 0 {
            return Err(bad("window", "the window must be at least 1ms".into()));
        }
        if self.slide.as_millis() == 0 {
            return Err(bad("slide", "the slide must be at least 1ms".into()));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(bad(
                "rate",
                format!("must be a positive number, not {rate}"),
            ));
        }
        Ok(())
    }

    /// The source these settings describe.
    pub fn source(&self) -> NexmarkSource {
        NexmarkSource::new(self.generator.clone())
            .with_events(self.events)
            .with_rate(self.rate)
    }
}

/// A positive, finite number argument; `None` when absent or 0.
fn optional_positive(args: &ProgramArgs, name: &str) -> Result<Option<f64>, ProgramError> {
    let v = args.get_or::<f64>(name, 0.0)?;
    if !v.is_finite() || v < 0.0 {
        return Err(ProgramError::BadArgument {
            name: name.into(),
            message: format!("must be a positive number (or 0 for none), not {v}"),
        });
    }
    Ok((v > 0.0).then_some(v))
}

/// Counts records: the window aggregate of query 5.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountBids;

impl AggregateFunction<i64, u64, u64> for CountBids {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _auction: i64) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
}

/// Attaches the auction and the window to a count.
#[derive(Debug, Clone, Copy, Default)]
pub struct WithWindow;

impl ProcessWindowFunction<i64, u64, AuctionCount> for WithWindow {
    fn process(
        &mut self,
        auction: &i64,
        ctx: &WindowContext,
        counts: &[u64],
        out: &mut Vec<AuctionCount>,
    ) {
        out.extend(counts.iter().map(|&count| AuctionCount {
            auction: *auction,
            window_start: ctx.window.start,
            window_end: ctx.window.end,
            count,
        }));
    }
}

/// The largest count of a window seen so far and the auctions that have it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct WindowMax {
    window_start: i64,
    max: u64,
    auctions: Vec<i64>,
}

/// Keeps, per window (the key is the window end), the auctions with the most bids, and emits
/// them when the watermark reaches the window's last millisecond.
///
/// Every window operator subtask emits a window's counts before it forwards the watermark that
/// fired the window, and this operator's watermark is the minimum over those subtasks, so when
/// the timer fires all counts of the window are in.
#[derive(Debug, Clone)]
pub struct HotItems {
    max: ValueState<WindowMax>,
}

impl Default for HotItems {
    fn default() -> Self {
        Self {
            max: ValueState::new("max-bids"),
        }
    }
}

impl KeyedProcessFunction<i64, AuctionCount, HotItem> for HotItems {
    fn process_element(
        &mut self,
        c: AuctionCount,
        ctx: &mut KeyedContext<'_, i64, HotItem>,
    ) -> Result<(), OperatorError> {
        let mut m = match self.max.get(ctx)? {
            Some(m) => m,
            None => {
                // First count of this window: fire after every count of it has arrived.
                ctx.register_event_time_timer(c.window_end - 1);
                WindowMax {
                    window_start: c.window_start,
                    max: 0,
                    auctions: Vec::new(),
                }
            }
        };
        if c.count > m.max {
            m.max = c.count;
            m.auctions.clear();
            m.auctions.push(c.auction);
        } else if c.count == m.max {
            m.auctions.push(c.auction);
        } else {
            return Ok(());
        }
        self.max.set(ctx, m)
    }

    fn on_timer(
        &mut self,
        _ts: i64,
        ctx: &mut OnTimerContext<'_, i64, HotItem>,
    ) -> Result<(), OperatorError> {
        let Some(mut m) = self.max.get(ctx)? else {
            return Ok(());
        };
        self.max.clear(ctx)?;
        let window_end = *ctx.key();
        // Counts arrive in no particular order across upstream subtasks: sort so the output
        // does not depend on the parallelism.
        m.auctions.sort_unstable();
        for auction in m.auctions {
            ctx.emit(HotItem {
                auction,
                window_start: m.window_start,
                window_end,
                num_bids: m.max,
            })?;
        }
        Ok(())
    }
}

/// The auction of a bid; other events are dropped. Only the id travels through the keyed
/// exchange, as the reference query projects it too.
fn bid_auction(e: Event) -> Option<i64> {
    match e {
        Event::Bid(b) => Some(b.auction),
        _ => None,
    }
}

/// Adds query 5 to `env` and returns its results, for the caller to write to a sink.
pub fn build_dataflow(
    env: &StreamEnv,
    config: &Q5Config,
) -> Result<DataStream<HotItem>, ProgramError> {
    config.validate()?;
    let watermarks = WatermarkStrategy::bounded_out_of_orderness(config.max_out_of_orderness)
        .with_timestamp_assigner(|e: &Event, _| e.date_time());
    let bids = env
        .source("nexmark-source", config.source(), watermarks)
        .uid("nexmark-source")
        .flat_map(bid_auction)
        .name("bids");
    let counts = bids
        .key_by(|auction: &i64| *auction)
        .window(WindowAssigner::sliding(config.window, config.slide))
        .aggregate_with(CountBids, WithWindow)
        .name("bid-counts")
        .uid("q5-bid-counts");
    Ok(counts
        .key_by(|c: &AuctionCount| c.window_end)
        .process(HotItems::default())
        .name("hot-items")
        .uid("q5-hot-items"))
}

/// Adds query 5 to `env`, writing its results to `sink`. Returns the sink's stream, on which
/// callers can still set the sink's name or parallelism.
pub fn build_q5<S: Sink<HotItem>>(
    env: &StreamEnv,
    config: &Q5Config,
    sink: S,
) -> Result<DataStream<()>, ProgramError> {
    Ok(build_dataflow(env, config)?
        .sink("sink", sink)
        .uid("q5-sink"))
}
