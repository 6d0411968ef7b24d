//! `sensor-anomaly`: keyed state with a time-to-live and processing-time timers. Each sensor's
//! last reading is kept in a `ValueState<f64>` that expires after an hour; a reading that
//! differs from it by more than a threshold raises an [`Alert`] and (re)arms a processing-time
//! timer that clears the sensor's timer state a while later.
//!
//! Readings are generated without per-sensor state, so any reading can be recomputed from
//! `(seed, seq)`: sensor `seq mod sensors` reports a value near its own base level (±1) and,
//! with a small probability, a spike of 8 to 15 away from it. Ordinary readings therefore never
//! alert at the default threshold, and a spike alerts going up and again coming back.

use crate::common::{self, SinkSpec};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_connectors::datagen::{DatagenSource, EventTime, Generator, SplitMix64};
use weir_core::error::OperatorError;
use weir_core::{
    DataStream, KeyedContext, KeyedProcessFunction, OnTimerContext, Program, ProgramArgs,
    ProgramError, StreamEnv, TtlConfig, ValueState, WatermarkStrategy,
};

/// Program name.
pub const NAME: &str = "sensor-anomaly";

/// Separates the per-sensor base levels from the per-record streams of the same seed.
const BASE_STREAM: u64 = 0x5E45_0B45_E000_0001;

/// A sensor reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The sensor, `seq mod sensors`.
    pub sensor_id: u64,
    /// The measured value.
    pub value: f64,
    /// Event time, ms since the epoch.
    pub ts: i64,
}

/// A jump between two consecutive readings of a sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The sensor.
    pub sensor_id: u64,
    /// The last reading before this one.
    pub previous: f64,
    /// This reading.
    pub current: f64,
    /// `current − previous`.
    pub delta: f64,
    /// Event time of the reading.
    pub ts: i64,
}

/// Settings of the `sensor-anomaly` dataflow.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    /// Generator seed.
    pub seed: u64,
    /// Readings per second over the whole job; `None`: as fast as possible.
    pub rate: Option<u64>,
    /// Number of sensors.
    pub sensors: u64,
    /// Total readings; `None`: unbounded.
    pub count: Option<u64>,
    /// Smallest |change| that is not an anomaly.
    pub threshold: f64,
    /// Processing time after an alert when the timer state is cleared.
    pub clear_after: Duration,
    /// How long a sensor's last reading is remembered (processing time since it was written).
    pub state_ttl: Duration,
    /// Probability that a reading is a spike.
    pub spike_probability: f64,
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            rate: Some(100),
            sensors: 100,
            count: None,
            threshold: 5.0,
            clear_after: Duration::from_secs(60),
            state_ttl: Duration::from_secs(3_600),
            spike_probability: 0.01,
        }
    }
}

const ARGS: &[(&str, &str)] = &[
    (
        "rate",
        "readings per second over the whole job; 0: as fast as possible (default 100)",
    ),
    (
        "sensors",
        "number of sensors, reporting in turn (default 100)",
    ),
    (
        "count",
        "stop after this many readings (default: unbounded)",
    ),
    ("seed", "generator seed (default 42)"),
    (
        "threshold",
        "alert when |reading − last reading| exceeds this (default 5.0)",
    ),
    (
        "clear-after",
        "processing time after an alert when its timer state is cleared (default 60s)",
    ),
    ("sink", common::SINK_HELP),
];

impl SensorConfig {
    /// Reads the program arguments, with [`SensorConfig::default`] for absent ones.
    pub fn from_args(args: &ProgramArgs) -> Result<Self, ProgramError> {
        let d = Self::default();
        Ok(Self {
            seed: args.get_or("seed", d.seed)?,
            rate: common::rate(args, d.rate)?,
            sensors: common::positive_u64(args, "sensors", d.sensors)?,
            count: common::optional_u64(args, "count")?,
            threshold: common::non_negative_f64(args, "threshold", d.threshold)?,
            clear_after: args.get_duration_or("clear-after", d.clear_after)?,
            ..d
        })
    }

    /// The reading source this configuration describes, stamped with processing time.
    pub fn source(&self) -> DatagenSource<ReadingGenerator> {
        DatagenSource::new(ReadingGenerator {
            seed: self.seed,
            sensors: self.sensors,
            spike_probability: self.spike_probability,
        })
        .seed(self.seed)
        .rate(self.rate)
        .count(self.count)
        .event_time(EventTime::ProcessingTime { max_delay_ms: 0 })
    }

    /// The keyed function that detects anomalies.
    pub fn detector(&self) -> AnomalyDetector {
        AnomalyDetector::new(self.threshold, self.clear_after, self.state_ttl)
    }
}

/// Generates [`Reading`]s.
#[derive(Debug, Clone, Copy)]
pub struct ReadingGenerator {
    /// Seed of the per-sensor base levels.
    pub seed: u64,
    /// Number of sensors.
    pub sensors: u64,
    /// Probability that a reading is a spike.
    pub spike_probability: f64,
}

impl ReadingGenerator {
    /// The level sensor `sensor_id` hovers around, in `[10, 90)`.
    pub fn base(&self, sensor_id: u64) -> f64 {
        SplitMix64::for_record(self.seed ^ BASE_STREAM, sensor_id).range_f64(10.0, 90.0)
    }
}

impl Generator for ReadingGenerator {
    type Item = Reading;

    fn generate(&self, rng: &mut SplitMix64, seq: u64, event_time_ms: i64) -> Reading {
        let sensor_id = seq % self.sensors.max(1);
        let mut value = self.base(sensor_id) + rng.range_f64(-1.0, 1.0);
        if rng.chance(self.spike_probability) {
            let size = rng.range_f64(8.0, 15.0);
            value += if rng.chance(0.5) { size } else { -size };
        }
        Reading {
            sensor_id,
            value,
            ts: event_time_ms,
        }
    }
}

/// Alerts when a reading differs from the sensor's last one by more than the threshold, and
/// then arms a processing-time timer that clears the timer state `clear_after` later.
#[derive(Debug, Clone)]
pub struct AnomalyDetector {
    threshold: f64,
    clear_after_ms: i64,
    last: ValueState<f64>,
    /// When the pending clear timer fires, so a new alert can replace it.
    timer: ValueState<i64>,
}

impl AnomalyDetector {
    /// A detector; the last reading expires `state_ttl` after it was written.
    pub fn new(threshold: f64, clear_after: Duration, state_ttl: Duration) -> Self {
        Self {
            threshold,
            clear_after_ms: i64::try_from(clear_after.as_millis()).unwrap_or(i64::MAX),
            last: ValueState::new("last-reading").with_ttl(TtlConfig::new(state_ttl)),
            timer: ValueState::new("clear-timer"),
        }
    }
}

impl KeyedProcessFunction<u64, Reading, Alert> for AnomalyDetector {
    fn process_element(
        &mut self,
        reading: Reading,
        ctx: &mut KeyedContext<'_, u64, Alert>,
    ) -> Result<(), OperatorError> {
        let previous = self.last.get(ctx)?;
        self.last.set(ctx, reading.value)?;
        let Some(previous) = previous else {
            return Ok(());
        };
        let delta = reading.value - previous;
        if delta.abs() <= self.threshold {
            return Ok(());
        }
        ctx.emit(Alert {
            sensor_id: reading.sensor_id,
            previous,
            current: reading.value,
            delta,
            ts: reading.ts,
        })?;
        // One pending timer per sensor: a new alert pushes the clearing back.
        if let Some(pending) = self.timer.get(ctx)? {
            ctx.delete_processing_time_timer(pending);
        }
        let at = ctx
            .current_processing_time()
            .saturating_add(self.clear_after_ms);
        ctx.register_processing_time_timer(at);
        self.timer.set(ctx, at)
    }

    fn on_timer(
        &mut self,
        _ts: i64,
        ctx: &mut OnTimerContext<'_, u64, Alert>,
    ) -> Result<(), OperatorError> {
        self.timer.clear(ctx)
    }
}

/// Adds the source and the detector to `env` and returns the alerts, for the caller to sink.
pub fn build_dataflow(env: &StreamEnv, config: &SensorConfig) -> DataStream<Alert> {
    env.source("readings", config.source(), WatermarkStrategy::none())
        .uid("sensor-source")
        .key_by(|r: &Reading| r.sensor_id)
        .process(config.detector())
        .name("anomaly-detector")
        .uid("sensor-anomaly-detector")
}

fn build(env: &StreamEnv, args: &ProgramArgs) -> Result<(), ProgramError> {
    let config = SensorConfig::from_args(args)?;
    let sink = SinkSpec::from_args(args, SinkSpec::Stdout)?;
    sink.attach(&build_dataflow(env, &config), "alerts", "sensor-sink");
    Ok(())
}

/// The `sensor-anomaly` program.
pub fn program() -> Program {
    Program {
        name: NAME,
        description: "alerts when a sensor's reading jumps by more than a threshold from its last \
                      one (keyed state with a 1 h TTL, processing-time timers)",
        args: ARGS,
        build,
    }
}
