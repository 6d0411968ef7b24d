//! Weir's built-in programs, and the registry a `weir` binary starts with.
//!
//! | program | what it shows |
//! | --- | --- |
//! | `orders` | event-time tumbling windows with an incremental aggregate plus a window function |
//! | `sensor-anomaly` | keyed state with a TTL and processing-time timers |
//! | `window-bench` | the windowed-aggregation benchmark workload |
//! | `nexmark-q5` | Nexmark query 5, hot items over sliding windows |
//!
//! Each program module exposes its configuration and a `build_dataflow` function that returns
//! the result stream, so tests and custom binaries can run the same dataflow into a sink of
//! their choice.

pub mod common;
pub mod nexmark;
pub mod orders;
pub mod sensor;
pub mod window_bench;

use weir_core::Registry;

/// Every built-in program.
pub fn builtin_registry() -> Registry {
    let mut r = Registry::new();
    r.register(orders::program())
        .register(sensor::program())
        .register(window_bench::program())
        .register(nexmark::program());
    r
}
