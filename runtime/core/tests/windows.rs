//! Window semantics against hand-computed expectations: tumbling, sliding and session windows,
//! watermarks with bounded out-of-orderness, allowed lateness and the late-data side output.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::Duration;
use weir_core::sink::CollectSink;
use weir_core::source::VecSource;
use weir_core::{
    AggregateFunction, EnvConfig, StreamEnv, WatermarkStrategy, WindowAssigner, WindowContext,
};

#[derive(Clone)]
struct CountSum;

impl AggregateFunction<(String, i64), (u64, i64), (u64, i64)> for CountSum {
    fn create_accumulator(&self) -> (u64, i64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (u64, i64), v: (String, i64)) {
        acc.0 += 1;
        acc.1 += v.1;
    }
    fn get_result(&self, acc: &(u64, i64)) -> (u64, i64) {
        *acc
    }
    fn merge(&self, acc: &mut (u64, i64), other: (u64, i64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

type Row = (String, i64, i64, u64, i64); // key, window start, window end, count, sum

fn env(p: u32) -> StreamEnv {
    StreamEnv::new(EnvConfig {
        parallelism: p,
        ..Default::default()
    })
}

fn per_record(bound_ms: u64) -> WatermarkStrategy<(String, i64)> {
    WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(bound_ms))
        .with_interval(Duration::ZERO)
}

fn input(items: &[(i64, &str, i64)]) -> VecSource<(String, i64)> {
    VecSource::new(items.iter().map(|(ts, k, v)| (*ts, (k.to_string(), *v))))
}

fn run_windows(
    items: &[(i64, &str, i64)],
    assigner: WindowAssigner,
    bound_ms: u64,
    lateness_ms: u64,
) -> (Vec<Row>, Vec<(String, i64)>) {
    let env = env(1);
    let out = CollectSink::new();
    let late = CollectSink::new();
    let (main, late_stream) = env
        .source("input", input(items), per_record(bound_ms))
        .key_by(|v: &(String, i64)| v.0.clone())
        .window(assigner)
        .allowed_lateness(Duration::from_millis(lateness_ms))
        .side_output_late_data()
        .aggregate_with(
            CountSum,
            |k: &String, ctx: &WindowContext, r: &[(u64, i64)], out: &mut Vec<Row>| {
                out.push((k.clone(), ctx.window.start, ctx.window.end, r[0].0, r[0].1))
            },
        );
    main.sink("out", out.clone());
    late_stream.sink("late", late.clone());
    env.execute().unwrap();
    (out.values(), late.values())
}

#[test]
fn tumbling_windows_count_and_sum() {
    let items = [
        (1_000, "a", 1),
        (2_000, "b", 10),
        (9_999, "a", 2),
        (10_000, "a", 4),
        (15_000, "b", 20),
    ];
    let (mut rows, late) = run_windows(
        &items,
        WindowAssigner::tumbling(Duration::from_secs(10)),
        0,
        0,
    );
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("a".into(), 0, 10_000, 2, 3),
            ("a".into(), 10_000, 20_000, 1, 4),
            ("b".into(), 0, 10_000, 1, 10),
            ("b".into(), 10_000, 20_000, 1, 20),
        ]
    );
    assert!(late.is_empty());
}

#[test]
fn out_of_order_records_within_the_bound_are_counted() {
    // Bound 5 s: after ts 12 000 the watermark is 6 999, so the record at 3 000 still counts.
    let items = [
        (1_000, "a", 1),
        (12_000, "a", 1),
        (3_000, "a", 1),
        (16_000, "a", 1),
        (4_000, "a", 1),
    ];
    let (mut rows, late) = run_windows(
        &items,
        WindowAssigner::tumbling(Duration::from_secs(10)),
        5_000,
        0,
    );
    rows.sort();
    // After 16 000 the watermark is 10 999 > 9 999: window [0,10 s) fired with 2 records and
    // the record at 4 000 is late.
    assert_eq!(
        rows,
        vec![
            ("a".into(), 0, 10_000, 2, 2),
            ("a".into(), 10_000, 20_000, 2, 2)
        ]
    );
    assert_eq!(late, vec![("a".to_string(), 1)]);
}

#[test]
fn allowed_lateness_refires_then_side_outputs() {
    // Lateness 2 s: window [0,10 s) is kept until the watermark reaches 11 999.
    let items = [
        (1_000, "a", 1),
        (11_000, "a", 1),  // wm 10 999: window [0,10 s) fires (count 1)
        (5_000, "a", 5),   // late but within lateness: re-fires (count 2, sum 6)
        (12_500, "a", 1),  // wm 12 499 ≥ 11 999: window [0,10 s) is cleaned up
        (6_000, "a", 100), // too late: side output
    ];
    let (rows, late) = run_windows(
        &items,
        WindowAssigner::tumbling(Duration::from_secs(10)),
        0,
        2_000,
    );
    assert_eq!(
        rows,
        vec![
            ("a".into(), 0, 10_000, 1, 1),
            ("a".into(), 0, 10_000, 2, 6),
            ("a".into(), 10_000, 20_000, 2, 2),
        ]
    );
    assert_eq!(late, vec![("a".to_string(), 100)]);
}

#[test]
fn sliding_windows_assign_each_record_to_every_overlapping_window() {
    let items = [(1_000, "a", 1), (6_000, "a", 2), (12_000, "a", 4)];
    let (mut rows, _) = run_windows(
        &items,
        WindowAssigner::sliding(Duration::from_secs(10), Duration::from_secs(5)),
        0,
        0,
    );
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("a".into(), -5_000, 5_000, 1, 1),
            ("a".into(), 0, 10_000, 2, 3),
            ("a".into(), 5_000, 15_000, 2, 6),
            ("a".into(), 10_000, 20_000, 1, 4),
        ]
    );
}

#[test]
fn session_windows_merge_on_bridging_records() {
    // Gap 3 s. a: 1 000 and 5 000 are separate sessions until 3 500 bridges them.
    let items = [
        (1_000, "a", 1),
        (5_000, "a", 2),
        (2_000, "b", 16),
        (3_500, "a", 4),
        (20_000, "a", 8),
    ];
    let (mut rows, _) = run_windows(
        &items,
        WindowAssigner::session(Duration::from_secs(3)),
        10_000,
        0,
    );
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("a".into(), 1_000, 8_000, 3, 7),
            ("a".into(), 20_000, 23_000, 1, 8),
            ("b".into(), 2_000, 5_000, 1, 16),
        ]
    );
}

#[test]
fn full_window_process_function_sees_all_elements() {
    let env = env(1);
    let out = CollectSink::new();
    env.source(
        "input",
        input(&[(1_000, "a", 3), (2_000, "a", 1), (3_000, "a", 2)]),
        per_record(0),
    )
    .key_by(|v: &(String, i64)| v.0.clone())
    .window(WindowAssigner::tumbling(Duration::from_secs(10)))
    .process(
        |k: &String,
         ctx: &WindowContext,
         els: &[(String, i64)],
         out: &mut Vec<(String, i64, Vec<i64>)>| {
            let mut vals: Vec<i64> = els.iter().map(|e| e.1).collect();
            vals.sort();
            out.push((k.clone(), ctx.window.end, vals));
        },
    )
    .sink("out", out.clone());
    env.execute().unwrap();
    assert_eq!(out.values(), vec![("a".to_string(), 10_000, vec![1, 2, 3])]);
    // Window results carry the window's last timestamp as event time.
    assert_eq!(out.records()[0].ts, 9_999);
}

#[test]
fn window_results_are_the_same_at_any_parallelism() {
    let items: Vec<(i64, String, i64)> = (0..20_000i64)
        .map(|i| ((i * 37) % 100_000, format!("k{}", i % 97), i % 13))
        .collect();
    let run = |p: u32| {
        let env = env(p);
        let out = CollectSink::new();
        env.source(
            "input",
            VecSource::new(items.iter().map(|(ts, k, v)| (*ts, (k.clone(), *v))))
                .records_per_poll(64),
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(200)),
        )
        .key_by(|v: &(String, i64)| v.0.clone())
        .window(WindowAssigner::tumbling(Duration::from_secs(10)))
        .aggregate(CountSum)
        .sink("out", out.clone());
        env.execute().unwrap();
        let mut v = out.values();
        v.sort();
        v
    };
    let one = run(1);
    assert_eq!(one.iter().map(|r| r.0).sum::<u64>(), 20_000);
    assert_eq!(one, run(4));
}

#[test]
fn records_without_timestamps_fail_with_a_clear_error() {
    let env = env(1);
    env.source(
        "input",
        VecSource::new([(i64::MIN, ("a".to_string(), 1))]),
        WatermarkStrategy::none(),
    )
    .key_by(|v: &(String, i64)| v.0.clone())
    .window(WindowAssigner::tumbling(Duration::from_secs(10)))
    .aggregate(CountSum)
    .sink("out", CollectSink::new());
    let err = env.execute().unwrap_err().to_string();
    assert!(
        err.contains("without a timestamp") && err.contains("WatermarkStrategy"),
        "{err}"
    );
}
