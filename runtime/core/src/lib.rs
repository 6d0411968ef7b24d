//! Weir's stream engine core: the typed DataStream API, the operators it builds, keyed state
//! with TTL, timers, event time and windows, and the parallel executor that runs a dataflow on
//! threads connected by bounded, batched channels.
//!
//! This crate has no heavy dependencies on purpose: connectors, durable state backends and
//! storage live in leaf crates so the engine builds and tests in seconds.
//!
//! The stream model is designed around barrier checkpoints: every channel carries typed
//! [`channel::Event`]s (record batches, watermarks, idleness, end of input) and each input gate
//! reads its channels individually, so a later checkpoint barrier can block one channel
//! (aligned checkpoints) or overtake queued data (unaligned checkpoints) without reshaping the
//! engine.

pub mod channel;
pub mod checkpoint;
pub mod cluster;
pub mod error;
mod exec;
pub mod functions;
pub mod graph;
pub mod job;
pub mod key;
pub mod metrics;
pub mod operator;
pub mod program;
pub mod record;
pub mod restart;
pub mod sink;
pub mod source;
pub mod state;
pub mod stream;
mod sync;
pub mod time;
pub mod watermark;
pub mod window;

pub use checkpoint::{CheckpointConfig, CheckpointingMode};
pub use error::{JobError, OperatorError};
pub use functions::{KeyedContext, KeyedProcessFunction, OnTimerContext, TimeDomain};
pub use job::{JobHandle, JobOutcome, JobSettings, JobStatusView, RunState};
pub use key::{Data, Key, StateValue};
pub use program::{Program, ProgramArgs, ProgramError, Registry};
pub use record::Record;
pub use restart::RestartStrategy;
pub use sink::{CollectSink, Sink, SinkWriter, TransactionalCollectSink};
pub use source::{Source, SourceContext, SourcePoll, SourceReader};
pub use state::{ListState, MapState, TtlConfig, TtlUpdate, ValueState};
pub use stream::{
    DataStream, EnvConfig, KeyedStream, LateDataWindowedStream, StreamEnv, WindowedStream,
};
pub use time::{Clock, ManualClock, SystemClock};
pub use watermark::WatermarkStrategy;
pub use window::{
    AggregateFunction, ProcessWindowFunction, TimeWindow, WindowAssigner, WindowContext,
};
