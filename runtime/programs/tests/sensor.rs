//! `sensor-anomaly` raises exactly the alerts a direct scan over the generated readings finds.

use std::collections::BTreeMap;
use std::sync::Arc;
use weir_core::sink::CollectSink;
use weir_core::{EnvConfig, ManualClock, StreamEnv};
use weir_programs::sensor::{Alert, SensorConfig, build_dataflow};

const NOW: i64 = 1_700_000_000_000;
const COUNT: u64 = 20_000;

fn config() -> SensorConfig {
    SensorConfig {
        count: Some(COUNT),
        rate: None,
        seed: 3,
        ..Default::default()
    }
}

/// Alerts per sensor, in the order they were raised.
fn run(parallelism: u32, config: &SensorConfig) -> BTreeMap<u64, Vec<Alert>> {
    let clock = ManualClock::new(NOW);
    let env = StreamEnv::new(EnvConfig {
        parallelism,
        clock: Arc::new(clock),
        ..Default::default()
    });
    let sink = CollectSink::new();
    build_dataflow(&env, config).sink("collect", sink.clone());
    env.execute().expect("sensor job");
    let mut by_sensor: BTreeMap<u64, Vec<Alert>> = BTreeMap::new();
    for a in sink.values() {
        by_sensor.entry(a.sensor_id).or_default().push(a);
    }
    by_sensor
}

fn expected(config: &SensorConfig) -> BTreeMap<u64, Vec<Alert>> {
    let source = config.source();
    let mut last: BTreeMap<u64, f64> = BTreeMap::new();
    let mut alerts: BTreeMap<u64, Vec<Alert>> = BTreeMap::new();
    for seq in 0..COUNT {
        let r = source.record(seq, NOW).value;
        if let Some(prev) = last.insert(r.sensor_id, r.value) {
            let delta = r.value - prev;
            if delta.abs() > config.threshold {
                alerts.entry(r.sensor_id).or_default().push(Alert {
                    sensor_id: r.sensor_id,
                    previous: prev,
                    current: r.value,
                    delta,
                    ts: NOW,
                });
            }
        }
    }
    alerts
}

#[test]
fn alerts_match_a_direct_computation() {
    let config = config();
    let want = expected(&config);
    let n: usize = want.values().map(Vec::len).sum();
    // About 1% spikes, each alerting on the way up and down.
    assert!(n > 200 && n < 700, "{n} alerts");
    assert_eq!(run(1, &config), want);
}

#[test]
fn same_alerts_when_each_sensor_is_read_by_one_source_subtask() {
    // 100 sensors reporting in turn over 4 source subtasks: each sensor's readings come from a
    // single subtask, so their order, and hence the alerts, do not depend on scheduling.
    let config = config();
    assert_eq!(run(4, &config), expected(&config));
}

#[test]
fn a_higher_threshold_means_fewer_alerts() {
    let low: usize = expected(&config()).values().map(Vec::len).sum();
    let high: usize = expected(&SensorConfig {
        threshold: 12.0,
        ..config()
    })
    .values()
    .map(Vec::len)
    .sum();
    assert!(high < low, "{high} vs {low}");
}
