//! The Nexmark benchmark: an online auction event generator (people, auctions, bids) faithful
//! to the benchmark's reference generator, and its queries as Weir dataflows.
//!
//! Implemented so far: query 5, "hot items" ([`program`], named `nexmark-q5`). The generator
//! and source are public so that other programs and benchmarks can use the same stream.

mod generator;
mod model;
mod q5;
mod source;

#[cfg(test)]
mod tests;

pub use generator::{
    AUCTION_ID_LEAD, AUCTION_PROPORTION, BID_PROPORTION, DEFAULT_EVENTS_PER_SECOND, EventKind,
    FIRST_AUCTION_ID, FIRST_CATEGORY_ID, FIRST_PERSON_ID, GeneratorConfig, NexmarkGenerator,
    PERSON_ID_LEAD, PERSON_PROPORTION, PROPORTION_DENOMINATOR, SplitMix64, last_base0_auction_id,
    last_base0_person_id,
};
pub use model::{Auction, Bid, Event, Person};
pub use q5::{
    AuctionCount, CountBids, HotItem, HotItems, Q5Config, WithWindow, build_dataflow, build_q5,
};
pub use source::{DEFAULT_BATCH_SIZE, NexmarkSource};

use crate::common::{SINK_HELP, SinkSpec};
use weir_core::program::{Program, ProgramArgs, ProgramError};
use weir_core::stream::StreamEnv;

/// The arguments of `nexmark-q5`.
const Q5_ARGS: &[(&str, &str)] = &[
    (
        "events",
        "number of events to generate (all kinds), then stop; 0 or absent: unbounded",
    ),
    (
        "rate",
        "wall-clock events per second over all source subtasks; 0 or absent: unthrottled",
    ),
    (
        "events-per-second-event-time",
        "events per second of event time (spacing of event timestamps); default: rate, else 10000",
    ),
    (
        "base-time",
        "event time of the first event, in ms since the epoch; default: now",
    ),
    (
        "seed",
        "seed of the generated values (ids, kinds and times do not depend on it); default 0",
    ),
    ("window", "window size; default 10s"),
    ("slide", "window slide; default 2s"),
    (
        "max-out-of-orderness",
        "watermark delay behind the highest event time; default 0ms (events are in order)",
    ),
    ("sink", SINK_HELP),
];

/// `nexmark-q5`: Nexmark query 5 (hot items) over the built-in generator.
pub fn program() -> Program {
    Program {
        name: "nexmark-q5",
        description: "Nexmark q5 (hot items): auctions with the most bids per sliding window",
        args: Q5_ARGS,
        build: build_q5_program,
    }
}

fn build_q5_program(env: &StreamEnv, args: &ProgramArgs) -> Result<(), ProgramError> {
    let config = Q5Config::from_args(args)?;
    let sink = SinkSpec::from_args(args, SinkSpec::Stdout)?;
    sink.attach(&build_dataflow(env, &config)?, "sink", "q5-sink");
    Ok(())
}
