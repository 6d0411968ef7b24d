//! The `weir` command as a library: embedded mode (run a StreamJob manifest in this process with
//! a REST API and Prometheus metrics), savepoints and cancellation of a running job over that
//! API, checkpoint listing, manifest validation, the program list and the benchmark; and the
//! processes of a cluster (`weir jobmanager`, `weir taskmanager`).
//!
//! The whole command line lives here rather than in `main.rs` so that users with their own
//! programs can build their own binary: create a [`weir_core::Registry`] (usually starting from
//! the built-in programs), register theirs, and call [`main_with_registry`].

pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod embedded;
pub mod error;
pub mod metrics;
pub mod monitor;
pub mod progress;
pub mod remote;
pub mod rest;
mod serve;
mod signals;
pub mod snapshots;
pub mod state;
pub mod storage;

pub use cli::main_with_registry;
pub use error::CliError;
pub use monitor::{JobInfo, JobMonitor};
