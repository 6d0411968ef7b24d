//! Tests of the Nexmark generator, source and query 5, the latter against a direct computation
//! over the generated events.

use super::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use weir_core::program::ProgramArgs;
use weir_core::record::Record;
use weir_core::sink::CollectSink;
use weir_core::source::{Source, SourceContext, SourcePoll, SourceReader, VecSource};
use weir_core::stream::{EnvConfig, StreamEnv};
use weir_core::time::{Clock, ManualClock, SystemClock};
use weir_core::watermark::WatermarkStrategy;

/// The benchmark's customary base time (2015-07-15T00:00:00Z), on a whole second.
const BASE_TIME: i64 = 1_436_918_400_000;

fn config() -> GeneratorConfig {
    GeneratorConfig {
        base_time: BASE_TIME,
        ..GeneratorConfig::default()
    }
}

fn ctx(subtask: u32, parallelism: u32) -> SourceContext {
    SourceContext {
        subtask,
        parallelism,
        clock: Arc::new(SystemClock),
        metrics: Default::default(),
    }
}

/// Polls a reader until it finishes.
fn drain(reader: &mut dyn SourceReader<Event>) -> Vec<Record<Event>> {
    let mut out = Vec::new();
    loop {
        match reader.poll(&mut out).unwrap() {
            SourcePoll::Finished => return out,
            SourcePoll::Emitted => {}
            SourcePoll::Idle => panic!("an unthrottled source went idle"),
        }
    }
}

#[test]
fn events_are_a_pure_function_of_their_number() {
    let a = NexmarkGenerator::new(config());
    let b = NexmarkGenerator::new(config());
    let forward: Vec<Event> = (0..2_000).map(|n| a.event(n)).collect();
    let backward: Vec<Event> = (0..2_000).rev().map(|n| b.event(n)).collect();
    assert!(forward.iter().eq(backward.iter().rev()));
    // Random-looking values do vary between events.
    let prices: std::collections::HashSet<i64> = forward
        .iter()
        .filter_map(|e| e.as_bid().map(|b| b.price))
        .collect();
    assert!(prices.len() > 1_500, "{}", prices.len());
}

#[test]
fn the_seed_changes_values_but_not_kinds_ids_or_times() {
    let a = NexmarkGenerator::new(config());
    let b = NexmarkGenerator::new(GeneratorConfig {
        seed: 7,
        ..config()
    });
    let mut differing = 0;
    for n in 0..1_000 {
        let (x, y) = (a.event(n), b.event(n));
        assert_eq!(x.date_time(), y.date_time());
        match (&x, &y) {
            (Event::Person(p), Event::Person(q)) => assert_eq!(p.id, q.id),
            (Event::Auction(p), Event::Auction(q)) => assert_eq!(p.id, q.id),
            (Event::Bid(_), Event::Bid(_)) => {}
            _ => panic!("event {n} changed kind with the seed"),
        }
        differing += usize::from(x != y);
    }
    assert!(differing > 990, "{differing}");
}

#[test]
fn every_block_of_50_has_1_person_3_auctions_46_bids_in_that_order() {
    let g = NexmarkGenerator::new(config());
    for block in 0..200u64 {
        let kinds: Vec<EventKind> = (0..50)
            .map(|i| {
                let n = block * 50 + i;
                let kind = match g.event(n) {
                    Event::Person(_) => EventKind::Person,
                    Event::Auction(_) => EventKind::Auction,
                    Event::Bid(_) => EventKind::Bid,
                };
                assert_eq!(kind, EventKind::of(n));
                kind
            })
            .collect();
        assert_eq!(kinds[0], EventKind::Person);
        assert!(kinds[1..4].iter().all(|k| *k == EventKind::Auction));
        assert!(kinds[4..].iter().all(|k| *k == EventKind::Bid));
        assert_eq!(PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION, 50);
    }
}

#[test]
fn ids_are_dense_and_references_stay_within_the_reference_ranges() {
    let cfg = config();
    let g = NexmarkGenerator::new(cfg.clone());
    let active = cfg.num_active_people;
    let in_flight = cfg.num_in_flight_auctions;
    // Ids of the last person and auction generated so far (base 0), -1 for none.
    let (mut last_person, mut last_auction) = (-1i64, -1i64);
    let mut prev_ts = i64::MIN;
    let (mut hot_auction_bids, mut bids) = (0u64, 0u64);
    for n in 0..50_000u64 {
        let e = g.event(n);
        assert!(e.date_time() >= prev_ts, "event time went back at {n}");
        prev_ts = e.date_time();
        // 10,000 events per second of event time: 0.1 ms apart.
        assert_eq!(e.date_time(), BASE_TIME + n as i64 / 10);
        match e {
            Event::Person(p) => {
                last_person += 1;
                assert_eq!(p.id, FIRST_PERSON_ID + last_person, "person ids are dense");
                assert_eq!(p.id, FIRST_PERSON_ID + last_base0_person_id(n));
                assert_eq!(p.credit_card.len(), 19);
            }
            Event::Auction(a) => {
                last_auction += 1;
                assert_eq!(
                    a.id,
                    FIRST_AUCTION_ID + last_auction,
                    "auction ids are dense"
                );
                let seller = a.seller - FIRST_PERSON_ID;
                assert!(
                    seller >= (last_person + 1 - active).max(0),
                    "seller {seller} at {n}"
                );
                assert!(
                    seller <= last_person + PERSON_ID_LEAD,
                    "seller {seller} at {n}"
                );
                assert!((FIRST_CATEGORY_ID..FIRST_CATEGORY_ID + 5).contains(&a.category));
                assert!(a.reserve >= a.initial_bid);
                assert!(a.expires > a.date_time);
                assert!((100..=100_000_000).contains(&a.initial_bid));
            }
            Event::Bid(b) => {
                bids += 1;
                let auction = b.auction - FIRST_AUCTION_ID;
                assert!(
                    auction >= (last_auction - in_flight).max(0),
                    "auction {auction} at {n}"
                );
                assert!(
                    auction <= last_auction + AUCTION_ID_LEAD,
                    "auction {auction} at {n}"
                );
                hot_auction_bids += u64::from(auction == (last_auction / 100) * 100);
                let bidder = b.bidder - FIRST_PERSON_ID;
                assert!(
                    bidder >= (last_person + 1 - active).max(0),
                    "bidder {bidder} at {n}"
                );
                assert!(
                    bidder <= last_person + PERSON_ID_LEAD,
                    "bidder {bidder} at {n}"
                );
                assert!((100..=100_000_000).contains(&b.price));
                assert!(b.url.starts_with("https://www.nexmark.com/"));
            }
        }
    }
    // With hot_auction_ratio 2, about half of the bids go to the hot auction.
    let share = hot_auction_bids as f64 / bids as f64;
    assert!((0.48..0.56).contains(&share), "{share}");
}

#[test]
fn event_sizes_average_to_the_configured_sizes() {
    let g = NexmarkGenerator::new(config());
    let (mut total, mut count) = (0usize, 0usize);
    for n in 0..20_000 {
        if let Event::Bid(b) = g.event(n) {
            total += 32 + b.extra.len();
            count += 1;
        }
    }
    let avg = total as f64 / count as f64;
    assert!((95.0..105.0).contains(&avg), "{avg}");
}

#[test]
fn event_time_follows_the_configured_rate() {
    let g = NexmarkGenerator::new(GeneratorConfig {
        events_per_second: 1_000.0,
        ..config()
    });
    for n in [0u64, 1, 2, 999, 1_000, 123_456] {
        assert_eq!(g.event(n).date_time(), BASE_TIME + n as i64);
    }
}

#[test]
fn events_round_trip_through_json() {
    let g = NexmarkGenerator::new(config());
    for n in 0..60 {
        let e = g.event(n);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }
    let json = serde_json::to_string(&g.event(0)).unwrap();
    assert!(json.starts_with(r#"{"person":{"id":1000,"#), "{json}");
}

#[test]
fn subtasks_partition_the_stream_at_any_parallelism() {
    let g = NexmarkGenerator::new(config());
    let expected: Vec<Event> = (0..5_000).map(|n| g.event(n)).collect();
    for parallelism in [1u32, 2, 3, 7] {
        let source = NexmarkSource::new(config())
            .with_events(Some(5_000))
            .with_batch_size(64);
        let mut all: Vec<Option<Event>> = vec![None; 5_000];
        for s in 0..parallelism {
            let mut reader = source.create_reader(&ctx(s, parallelism)).unwrap();
            for (k, rec) in drain(reader.as_mut()).into_iter().enumerate() {
                let n = s as usize + k * parallelism as usize;
                assert_eq!(rec.ts, rec.value.date_time());
                assert!(all[n].replace(rec.value).is_none());
            }
        }
        let all: Vec<Event> = all
            .into_iter()
            .map(|e| e.expect("every event number"))
            .collect();
        assert_eq!(all, expected, "parallelism {parallelism}");
    }
}

#[test]
fn bounded_sources_finish_even_without_events() {
    let source = NexmarkSource::new(config()).with_events(Some(2));
    let mut idle = source.create_reader(&ctx(3, 4)).unwrap();
    let mut out = Vec::new();
    assert_eq!(idle.poll(&mut out).unwrap(), SourcePoll::Finished);
    assert!(out.is_empty());
    let mut busy = source.create_reader(&ctx(1, 4)).unwrap();
    assert_eq!(busy.poll(&mut out).unwrap(), SourcePoll::Finished);
    assert_eq!(out.len(), 1);
}

#[test]
fn restore_resumes_exactly_where_the_position_was_taken() {
    let source = NexmarkSource::new(config())
        .with_events(Some(10_000))
        .with_batch_size(100);
    let whole = drain(source.create_reader(&ctx(1, 3)).unwrap().as_mut());
    assert_eq!(whole.len(), 3_333);

    let mut first = source.create_reader(&ctx(1, 3)).unwrap();
    let mut head = Vec::new();
    for _ in 0..5 {
        assert_eq!(first.poll(&mut head).unwrap(), SourcePoll::Emitted);
    }
    let position = first.position();
    let mut second = source.create_reader(&ctx(1, 3)).unwrap();
    second.restore(&position).unwrap();
    head.extend(drain(second.as_mut()));
    assert_eq!(head, whole);
}

#[test]
fn restore_keeps_the_checkpointed_time_line() {
    let before = NexmarkSource::new(config()).with_events(Some(5_000));
    let mut reader = before.create_reader(&ctx(0, 1)).unwrap();
    reader.poll(&mut Vec::new()).unwrap();
    let position = reader.position();
    // A restart with another base time, e.g. the wall clock of the new run.
    let after = NexmarkSource::new(GeneratorConfig {
        base_time: 5,
        ..config()
    })
    .with_events(Some(5_000))
    .with_batch_size(10);
    let mut restored = after.create_reader(&ctx(0, 1)).unwrap();
    restored.restore(&position).unwrap();
    let mut out = Vec::new();
    restored.poll(&mut out).unwrap();
    let g = NexmarkGenerator::new(config());
    let n0 = DEFAULT_BATCH_SIZE as u64;
    assert_eq!(out[0].value, g.event(n0));
    assert_eq!(out[0].ts, g.timestamp(n0));
}

#[test]
fn restore_rejects_positions_of_other_subtasks_and_garbage() {
    let source = NexmarkSource::new(config());
    let position = source.create_reader(&ctx(0, 2)).unwrap().position();
    let mut other = source.create_reader(&ctx(1, 2)).unwrap();
    let e = other.restore(&position).unwrap_err().to_string();
    assert!(e.contains("subtask 0 of 2"), "{e}");
    let mut rescaled = source.create_reader(&ctx(0, 3)).unwrap();
    assert!(rescaled.restore(&position).is_err());
    assert!(other.restore(&[1, 2, 3]).is_err());
}

#[test]
fn the_rate_limit_paces_events_by_the_clock() {
    let clock = ManualClock::new(1_000_000);
    let source = NexmarkSource::new(config()).with_rate(Some(1_000.0));
    let ctx_of = |s| SourceContext {
        subtask: s,
        parallelism: 2,
        clock: Arc::new(clock.clone()) as Arc<dyn Clock>,
        metrics: Default::default(),
    };
    let mut r0 = source.create_reader(&ctx_of(0)).unwrap();
    let mut r1 = source.create_reader(&ctx_of(1)).unwrap();
    let mut out0 = Vec::new();
    let mut out1 = Vec::new();
    // At the start only event 0 is due.
    assert_eq!(r0.poll(&mut out0).unwrap(), SourcePoll::Emitted);
    assert_eq!(r0.poll(&mut out0).unwrap(), SourcePoll::Idle);
    assert_eq!(out0.len(), 1);
    // Subtask 1 starts at event 1, due at once from its own start.
    assert_eq!(r1.poll(&mut out1).unwrap(), SourcePoll::Emitted);
    assert_eq!(r1.poll(&mut out1).unwrap(), SourcePoll::Idle);
    // 10 ms at 1,000 events/s: events up to number 10 (subtask 0) and 11 (subtask 1).
    clock.advance(10);
    while r0.poll(&mut out0).unwrap() == SourcePoll::Emitted {}
    while r1.poll(&mut out1).unwrap() == SourcePoll::Emitted {}
    assert_eq!(out0.len(), 6);
    assert_eq!(out1.len(), 6);
    // Together: 12 events in 10 ms, i.e. the rate plus the first event of each subtask.
    let g = NexmarkGenerator::new(config());
    assert_eq!(out0[5].value, g.event(10));
    assert_eq!(out1[5].value, g.event(11));
}

/// Query 5 computed directly: count bids per auction per sliding window, keep the maximum.
fn expected_q5(cfg: &Q5Config) -> Vec<HotItem> {
    let g = NexmarkGenerator::new(cfg.generator.clone());
    let size = cfg.window.as_millis() as i64;
    let slide = cfg.slide.as_millis() as i64;
    let mut counts: BTreeMap<(i64, i64), HashMap<i64, u64>> = BTreeMap::new();
    for n in 0..cfg.events.unwrap() {
        let Event::Bid(b) = g.event(n) else { continue };
        // Every window [k·slide, k·slide + size) that holds the bid's time.
        let mut start = b.date_time.div_euclid(slide) * slide;
        while start + size > b.date_time {
            *counts
                .entry((start, start + size))
                .or_default()
                .entry(b.auction)
                .or_default() += 1;
            start -= slide;
        }
    }
    let mut out = Vec::new();
    for ((window_start, window_end), per_auction) in counts {
        let max = per_auction.values().copied().max().unwrap();
        for (&auction, &num_bids) in &per_auction {
            if num_bids == max {
                out.push(HotItem {
                    auction,
                    window_start,
                    window_end,
                    num_bids,
                });
            }
        }
    }
    out.sort();
    out
}

fn run_q5(cfg: &Q5Config, parallelism: u32) -> Vec<HotItem> {
    let env = StreamEnv::new(EnvConfig {
        parallelism,
        ..EnvConfig::default()
    });
    let sink = CollectSink::new();
    build_q5(&env, cfg, sink.clone()).unwrap();
    env.execute().unwrap();
    let mut v = sink.values();
    v.sort();
    v
}

#[test]
fn q5_equals_the_direct_computation_at_parallelism_1_and_3() {
    let cfg = Q5Config {
        generator: config(),
        events: Some(60_000),
        window: std::time::Duration::from_secs(2),
        slide: std::time::Duration::from_millis(500),
        ..Q5Config::default()
    };
    let expected = expected_q5(&cfg);
    // 6 s of event time: windows from [-1.5 s, 0.5 s) to [5.5 s, 7.5 s) around the base.
    let windows: std::collections::BTreeSet<i64> = expected.iter().map(|h| h.window_end).collect();
    assert_eq!(windows.len(), 15);
    let p1 = run_q5(&cfg, 1);
    assert_eq!(p1, expected);
    let p3 = run_q5(&cfg, 3);
    assert_eq!(p3, expected);
}

#[test]
fn q5_with_the_default_windows_and_a_tie_prone_stream() {
    // Few events per window and no hot auction: many windows end in ties.
    let cfg = Q5Config {
        generator: GeneratorConfig {
            events_per_second: 200.0,
            hot_auction_ratio: 1,
            ..config()
        },
        events: Some(8_000),
        ..Q5Config::default()
    };
    let expected = expected_q5(&cfg);
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    for h in &expected {
        *per_window.entry(h.window_end).or_default() += 1;
    }
    assert!(
        per_window.values().any(|&n| n > 1),
        "no tie to test: {per_window:?}"
    );
    assert_eq!(run_q5(&cfg, 2), expected);
}

#[test]
fn hot_items_emits_every_auction_tied_at_the_maximum_once_the_window_is_complete() {
    let count = |auction, window_end, count| AuctionCount {
        auction,
        window_start: window_end - 10,
        window_end,
        count,
    };
    // In event-time order, as a window operator emits them.
    let input = vec![
        (9, count(3, 10, 4)),
        (9, count(2, 10, 5)),
        (9, count(1, 10, 5)),
        (9, count(4, 10, 1)),
        (19, count(7, 20, 1)),
    ];
    let env = StreamEnv::new(EnvConfig::default());
    let sink = CollectSink::new();
    env.source(
        "counts",
        VecSource::new(input),
        WatermarkStrategy::monotonous(),
    )
    .key_by(|c: &AuctionCount| c.window_end)
    .process(HotItems::default())
    .sink("collect", sink.clone());
    env.execute().unwrap();
    let hot = |auction, window_end, num_bids| HotItem {
        auction,
        window_start: window_end - 10,
        window_end,
        num_bids,
    };
    let records = sink.records();
    let values: Vec<HotItem> = records.iter().map(|r| r.value).collect();
    assert_eq!(values, vec![hot(1, 10, 5), hot(2, 10, 5), hot(7, 20, 1)]);
    // Results carry the window's last millisecond as their event time.
    assert_eq!(records[0].ts, 9);
}

fn args(pairs: &[(&str, &str)]) -> ProgramArgs {
    ProgramArgs::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn the_program_reads_its_arguments() {
    let cfg = Q5Config::from_args(&args(&[
        ("events", "5000"),
        ("rate", "2000"),
        ("seed", "3"),
        ("base-time", "42"),
        ("window", "4s"),
        ("slide", "1s"),
    ]))
    .unwrap();
    assert_eq!(cfg.events, Some(5_000));
    assert_eq!(cfg.rate, Some(2_000.0));
    // Event time follows the wall-clock rate unless told otherwise.
    assert_eq!(cfg.generator.events_per_second, 2_000.0);
    assert_eq!(cfg.generator.seed, 3);
    assert_eq!(cfg.generator.base_time, 42);
    assert_eq!(cfg.window, std::time::Duration::from_secs(4));

    let cfg = Q5Config::from_args(&args(&[("events-per-second-event-time", "500")])).unwrap();
    assert_eq!((cfg.events, cfg.rate), (None, None));
    assert_eq!(cfg.generator.events_per_second, 500.0);
    assert_eq!(cfg.slide, std::time::Duration::from_secs(2));
}

#[test]
fn the_program_rejects_bad_arguments_naming_them() {
    let env = StreamEnv::new(EnvConfig::default());
    let p = program();
    assert_eq!(p.name, "nexmark-q5");
    for (bad, name) in [
        (("sink", "kafka"), "sink"),
        (("slide", "0s"), "slide"),
        (("rate", "-5"), "rate"),
        (("events", "many"), "events"),
        (("windw", "5s"), "windw"),
    ] {
        let e = p.build(&env, &args(&[bad])).unwrap_err().to_string();
        assert!(e.starts_with(&format!("spec.job.args.{name}:")), "{e}");
    }
}

#[test]
fn the_program_runs_to_completion_on_a_bounded_stream() {
    let env = StreamEnv::new(EnvConfig {
        parallelism: 2,
        ..EnvConfig::default()
    });
    program()
        .build(
            &env,
            &args(&[
                ("events", "20000"),
                ("sink", "blackhole"),
                ("base-time", "0"),
            ]),
        )
        .unwrap();
    let described = env.describe().join("\n");
    assert!(described.contains("nexmark-source"), "{described}");
    assert!(described.contains("hot-items"), "{described}");
    env.execute().unwrap();
}

#[test]
fn q5_is_exactly_once_across_a_failure_and_restore_from_a_checkpoint() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use weir_core::checkpoint::coordinator::FaultPoint;
    use weir_core::{CheckpointConfig, JobSettings, RestartStrategy, TransactionalCollectSink};

    let dir = std::env::temp_dir().join(format!("weir-nexmark-q5-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = Q5Config {
        generator: config(),
        events: Some(60_000),
        // About 0.6 s of wall-clock time, so that several checkpoints complete mid-stream.
        rate: Some(100_000.0),
        window: Duration::from_secs(2),
        slide: Duration::from_millis(500),
        ..Q5Config::default()
    };
    let fired = Arc::new(AtomicBool::new(false));
    let fault_fired = fired.clone();
    let env = StreamEnv::new(EnvConfig {
        parallelism: 2,
        job: JobSettings {
            checkpoint: Some(
                CheckpointConfig::new(dir.display().to_string())
                    .with_interval(Duration::from_millis(25)),
            ),
            restart: Some(RestartStrategy::FixedDelay {
                attempts: 5,
                delay: Duration::ZERO,
            }),
            fault: Some(Arc::new(move |p: &FaultPoint| {
                matches!(p, FaultPoint::BeforeSnapshot { checkpoint, uid, .. }
                    if *checkpoint >= 3 && uid == "q5-hot-items")
                    && !fault_fired.swap(true, Ordering::SeqCst)
            })),
            ..JobSettings::default()
        },
        ..EnvConfig::default()
    });
    let sink = TransactionalCollectSink::new();
    build_q5(&env, &cfg, sink.clone()).unwrap();
    let job = env.start().unwrap();
    job.wait_timeout(Duration::from_secs(120))
        .expect("q5 did not finish in time")
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        fired.load(Ordering::SeqCst),
        "the injected failure never happened"
    );
    assert!(job.status().num_restarts >= 1);
    let mut out = sink.committed();
    out.sort();
    assert_eq!(out, expected_q5(&cfg));
}
