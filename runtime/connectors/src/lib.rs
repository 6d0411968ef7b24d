//! Weir's built-in connectors: the deterministic data generator source ([`datagen`]) that
//! examples, tests and benchmarks run on, and the line-oriented sinks ([`file`]) that print
//! results or write them to files, exactly once with [`committed_file`].
//!
//! Connectors with heavy client libraries (Kafka, object stores) live in their own crates so
//! that this one builds in seconds.

pub mod committed_file;
pub mod datagen;
pub mod file;

pub use committed_file::{CommittedFileSink, read_committed};
pub use datagen::{DatagenError, DatagenSource, EventTime, Generator, SplitMix64};
pub use file::{FileSink, LineFormat, LineSinkError, StdoutSink};
