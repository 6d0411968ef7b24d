//! Datagen source: determinism across seeds and parallelism, exact resume from a position,
//! bounded runs, rate limiting, and a run through the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_connectors::datagen::{DatagenError, DatagenSource, EventTime, SplitMix64};
use weir_core::sink::CollectSink;
use weir_core::{
    EnvConfig, ManualClock, Record, Source, SourceContext, SourcePoll, SourceReader, StreamEnv,
    WatermarkStrategy,
};

type Item = (u64, u64, f64);

fn source(seed: u64) -> DatagenSource<impl weir_connectors::Generator<Item = Item>> {
    DatagenSource::new(|rng: &mut SplitMix64, seq: u64, _ts: i64| {
        (seq, rng.below(1_000), rng.range_f64(0.0, 10.0))
    })
    .seed(seed)
    .event_time(EventTime::Synthetic {
        start_ms: 1_000,
        step_ms_per_record: 7,
        jitter_ms: 50,
    })
}

fn ctx(subtask: u32, parallelism: u32) -> SourceContext {
    SourceContext {
        subtask,
        parallelism,
        clock: Arc::new(ManualClock::new(5_000)),
        metrics: Default::default(),
    }
}

/// Polls until the reader finishes (panics if it never does).
fn drain(reader: &mut dyn SourceReader<Item>) -> Vec<Record<Item>> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        if reader.poll(&mut out).expect("poll") == SourcePoll::Finished {
            return out;
        }
    }
    panic!("reader did not finish");
}

fn all_subtasks<S: Source<Item>>(s: &S, parallelism: u32) -> Vec<Record<Item>> {
    let mut all = Vec::new();
    for i in 0..parallelism {
        let mut r = s.create_reader(&ctx(i, parallelism)).expect("reader");
        all.extend(drain(r.as_mut()));
    }
    all.sort_by_key(|r| r.value.0);
    all
}

#[test]
fn same_seed_same_records_other_seed_other_records() {
    let a = all_subtasks(&source(1).count(Some(2_000)), 1);
    let b = all_subtasks(&source(1).count(Some(2_000)), 1);
    let c = all_subtasks(&source(2).count(Some(2_000)), 1);
    assert_eq!(a.len(), 2_000);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn parallelism_does_not_change_the_records() {
    let s = source(11).count(Some(10_001)).batch(64);
    let one = all_subtasks(&s, 1);
    let three = all_subtasks(&s, 3);
    assert_eq!(one, three);
    let seqs: Vec<u64> = one.iter().map(|r| r.value.0).collect();
    assert_eq!(seqs, (0..10_001).collect::<Vec<_>>());
    // `record` reproduces what readers produce.
    for r in one.iter().step_by(97) {
        assert_eq!(&s.record(r.value.0, 0), r);
    }
}

#[test]
fn subtask_gets_its_residue_class() {
    let s = source(3).count(Some(100)).batch(7);
    let mut r = s.create_reader(&ctx(2, 4)).unwrap();
    let got: Vec<u64> = drain(r.as_mut()).iter().map(|r| r.value.0).collect();
    assert_eq!(got, (2..100).step_by(4).collect::<Vec<_>>());
}

#[test]
fn position_and_restore_resume_exactly() {
    let s = source(5).count(Some(5_000)).batch(100);
    let mut straight = s.create_reader(&ctx(1, 2)).unwrap();
    let expected = drain(straight.as_mut());

    let mut first = s.create_reader(&ctx(1, 2)).unwrap();
    let mut got = Vec::new();
    for _ in 0..7 {
        assert_eq!(first.poll(&mut got).unwrap(), SourcePoll::Emitted);
    }
    let pos = first.position();
    drop(first);
    let mut resumed = s.create_reader(&ctx(1, 2)).unwrap();
    resumed.restore(&pos).unwrap();
    got.extend(drain(resumed.as_mut()));
    assert_eq!(got, expected);
}

#[test]
fn restore_rejects_corrupt_positions() {
    let s = source(5).count(Some(5_000));
    let mut r = s.create_reader(&ctx(1, 2)).unwrap();
    let e = r.restore(&[1, 2, 3]).unwrap_err().to_string();
    assert!(
        e.contains(&DatagenError::CorruptPosition(3).to_string()),
        "{e}"
    );
}

#[test]
fn restore_of_another_subtasks_position_moves_to_the_next_own_record() {
    let s = source(5).count(Some(20));
    let mut r = s.create_reader(&ctx(1, 3)).unwrap();
    r.restore(&9u64.to_le_bytes()).unwrap();
    let got: Vec<u64> = drain(r.as_mut()).iter().map(|r| r.value.0).collect();
    assert_eq!(got, vec![10, 13, 16, 19]);
}

#[test]
fn bounded_source_finishes_with_exactly_count_records() {
    let s = source(8).count(Some(10));
    let all = all_subtasks(&s, 3);
    assert_eq!(all.len(), 10);
    // A subtask without any record of its own finishes at once.
    let mut r = s.create_reader(&ctx(11, 12)).unwrap();
    let mut out = Vec::new();
    assert_eq!(r.poll(&mut out).unwrap(), SourcePoll::Finished);
    assert!(out.is_empty());
}

#[test]
fn processing_time_stamps_with_the_clock() {
    let s = source(4)
        .event_time(EventTime::ProcessingTime { max_delay_ms: 100 })
        .count(Some(1_000));
    let mut r = s.create_reader(&ctx(0, 1)).unwrap();
    for rec in drain(r.as_mut()) {
        assert!(rec.ts <= 5_000 && rec.ts > 4_900, "{}", rec.ts);
    }
}

#[test]
fn rate_limit_is_respected() {
    let s = source(1).rate(Some(1_000));
    let mut r = s.create_reader(&ctx(0, 1)).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut idle = 0;
    while start.elapsed() < Duration::from_millis(300) {
        if r.poll(&mut out).unwrap() == SourcePoll::Idle {
            idle += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(
        out.len() <= 600,
        "{} records in 300 ms at 1000/s",
        out.len()
    );
    assert!(!out.is_empty());
    assert!(idle > 0);
}

#[test]
fn rate_is_split_across_subtasks() {
    // 1000/s over 4 subtasks: one subtask gets 250/s.
    let s = source(1).rate(Some(1_000));
    let mut r = s.create_reader(&ctx(0, 4)).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < Duration::from_millis(200) {
        if r.poll(&mut out).unwrap() == SourcePoll::Idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(out.len() <= 100, "{}", out.len());
}

#[test]
fn runs_in_a_job_at_parallelism_three() {
    let env = StreamEnv::new(EnvConfig {
        parallelism: 3,
        ..Default::default()
    });
    let sink = CollectSink::new();
    env.source(
        "gen",
        source(9).count(Some(3_000)),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100)),
    )
    .sink("collect", sink.clone());
    env.execute().unwrap();
    let mut got = sink.records();
    got.sort_by_key(|r| r.value.0);
    assert_eq!(got, all_subtasks(&source(9).count(Some(3_000)), 1));
}

/// Generation speed of one reader on one core; run with
/// `cargo test --release -p weir-connectors --test datagen -- --ignored --nocapture`.
#[test]
#[ignore = "throughput check, meaningful in release builds only"]
fn unbounded_generation_is_fast() {
    let s = DatagenSource::new(|rng: &mut SplitMix64, _seq: u64, _ts: i64| {
        (rng.below(100_000), rng.next_f64() * 1_000.0)
    })
    .event_time(EventTime::ProcessingTime {
        max_delay_ms: 5_000,
    });
    let mut r = s.create_reader(&ctx(0, 1)).unwrap();
    let mut out = Vec::with_capacity(1024);
    let n = 50_000_000u64;
    let start = Instant::now();
    let mut total = 0u64;
    let mut checksum = 0u64;
    while total < n {
        out.clear();
        r.poll(&mut out).unwrap();
        total += out.len() as u64;
        checksum = checksum.wrapping_add(out.last().map_or(0, |r| r.value.0));
    }
    let per_sec = total as f64 / start.elapsed().as_secs_f64();
    println!("{per_sec:.0} records/s (checksum {checksum})");
    assert!(per_sec > 20e6, "{per_sec:.0} records/s");
}
