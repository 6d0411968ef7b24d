//! Keyed state with TTL, event-time and processing-time timers, union and watermark merging,
//! checked against hand-computed expectations.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_core::error::OperatorError;
use weir_core::record::Record;
use weir_core::sink::CollectSink;
use weir_core::source::{SourceContext, VecSource};
use weir_core::state::{KeyedStateBackend, StateAccess};
use weir_core::{
    EnvConfig, KeyedContext, KeyedProcessFunction, ListState, ManualClock, MapState,
    OnTimerContext, Source, SourcePoll, SourceReader, StreamEnv, TimeDomain, TtlConfig, ValueState,
    WatermarkStrategy,
};

/// Direct access to a backend for one key at a chosen processing time.
struct At<'a> {
    backend: &'a mut KeyedStateBackend<String>,
    key: String,
    now: i64,
}

impl StateAccess<String> for At<'_> {
    fn state_parts(&mut self) -> (&mut KeyedStateBackend<String>, &String, i64) {
        (self.backend, &self.key, self.now)
    }
}

fn at<'a>(backend: &'a mut KeyedStateBackend<String>, key: &str, now: i64) -> At<'a> {
    At {
        backend,
        key: key.into(),
        now,
    }
}

#[test]
fn value_state_ttl_on_create_and_write() {
    let mut b = KeyedStateBackend::new();
    let s = ValueState::<f64>::new("last").with_ttl(TtlConfig::new(Duration::from_secs(3600)));
    s.set(&mut at(&mut b, "k", 0), 1.0).unwrap();
    assert_eq!(s.get(&mut at(&mut b, "k", 3_599_999)).unwrap(), Some(1.0));
    // Reading does not extend the life under OnCreateAndWrite.
    assert_eq!(s.get(&mut at(&mut b, "k", 3_600_000)).unwrap(), None);
    s.set(&mut at(&mut b, "k", 4_000_000), 2.0).unwrap();
    assert_eq!(s.get(&mut at(&mut b, "k", 7_599_999)).unwrap(), Some(2.0));
    assert_eq!(s.get(&mut at(&mut b, "other", 0)).unwrap(), None);
}

#[test]
fn value_state_ttl_on_read_and_write() {
    let mut b = KeyedStateBackend::new();
    let s = ValueState::<u32>::new("v")
        .with_ttl(TtlConfig::new(Duration::from_millis(100)).refresh_on_read());
    s.set(&mut at(&mut b, "k", 0), 7).unwrap();
    assert_eq!(s.get(&mut at(&mut b, "k", 99)).unwrap(), Some(7));
    assert_eq!(s.get(&mut at(&mut b, "k", 198)).unwrap(), Some(7));
    assert_eq!(s.get(&mut at(&mut b, "k", 298)).unwrap(), None);
}

#[test]
fn list_and_map_state_expire_per_element() {
    let mut b = KeyedStateBackend::new();
    let l = ListState::<u32>::new("l").with_ttl(TtlConfig::new(Duration::from_millis(100)));
    l.add(&mut at(&mut b, "k", 0), 1).unwrap();
    l.add(&mut at(&mut b, "k", 50), 2).unwrap();
    assert_eq!(l.get(&mut at(&mut b, "k", 99)).unwrap(), vec![1, 2]);
    assert_eq!(l.get(&mut at(&mut b, "k", 120)).unwrap(), vec![2]);
    assert!(l.get(&mut at(&mut b, "k", 150)).unwrap().is_empty());

    let m = MapState::<String, u32>::new("m").with_ttl(TtlConfig::new(Duration::from_millis(100)));
    m.put(&mut at(&mut b, "k", 0), "x".into(), 1).unwrap();
    m.put(&mut at(&mut b, "k", 60), "y".into(), 2).unwrap();
    assert_eq!(
        m.get(&mut at(&mut b, "k", 99), &"x".to_string()).unwrap(),
        Some(1)
    );
    assert_eq!(
        m.entries(&mut at(&mut b, "k", 130)).unwrap(),
        vec![("y".to_string(), 2)]
    );
    assert!(
        !m.contains(&mut at(&mut b, "k", 100), &"x".to_string())
            .unwrap()
    );
    m.remove(&mut at(&mut b, "k", 130), &"y".to_string())
        .unwrap();
    assert!(m.entries(&mut at(&mut b, "k", 130)).unwrap().is_empty());
}

#[test]
fn state_without_ttl_and_type_mismatch() {
    let mut b = KeyedStateBackend::new();
    let s = ValueState::<u64>::new("count");
    s.set(&mut at(&mut b, "k", 0), 5).unwrap();
    assert_eq!(s.get(&mut at(&mut b, "k", i64::MAX - 1)).unwrap(), Some(5));
    s.clear(&mut at(&mut b, "k", 0)).unwrap();
    assert_eq!(s.get(&mut at(&mut b, "k", 0)).unwrap(), None);
    let wrong = ValueState::<String>::new("count");
    let err = wrong.get(&mut at(&mut b, "k", 0)).unwrap_err().to_string();
    assert!(
        err.contains("count") && err.contains("another value type"),
        "{err}"
    );
}

/// Emits, per key, a running count, and one "done" line from an event-time timer 1 s after
/// each record.
#[derive(Clone)]
struct CountAndRemind {
    count: ValueState<u64>,
}

impl KeyedProcessFunction<String, (String, u32), String> for CountAndRemind {
    fn process_element(
        &mut self,
        v: (String, u32),
        ctx: &mut KeyedContext<'_, String, String>,
    ) -> Result<(), OperatorError> {
        let n = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, n)?;
        let ts = ctx.timestamp();
        ctx.register_event_time_timer(ts + 1_000);
        ctx.emit(format!("{}:{}:{}", v.0, n, v.1))
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut OnTimerContext<'_, String, String>,
    ) -> Result<(), OperatorError> {
        assert_eq!(ctx.time_domain(), Some(TimeDomain::EventTime));
        let n = self.count.get(ctx)?.unwrap_or(0);
        let key = ctx.key().clone();
        ctx.emit(format!("timer {key}@{ts} count={n}"))
    }
}

#[test]
fn event_time_timers_fire_in_order_when_the_watermark_passes() {
    let env = StreamEnv::new(EnvConfig::default());
    let out = CollectSink::new();
    let src = VecSource::new([
        (1_000, ("a".to_string(), 1)),
        (1_500, ("b".to_string(), 2)),
        (1_500, ("a".to_string(), 3)), // same key, later timer 2 500
        (2_200, ("a".to_string(), 4)), // watermark 2 199: fires a@2 000
        (9_000, ("b".to_string(), 5)), // watermark 8 999: fires b@2 500, a@2 500, a@3 200
    ]);
    env.source(
        "input",
        src,
        WatermarkStrategy::monotonous().with_interval(Duration::ZERO),
    )
    .key_by(|v: &(String, u32)| v.0.clone())
    .process(CountAndRemind {
        count: ValueState::new("count"),
    })
    .uid("count")
    .sink("out", out.clone());
    env.execute().unwrap();
    assert_eq!(
        out.values(),
        vec![
            "a:1:1",
            "b:1:2",
            "a:2:3",
            "a:3:4",
            "timer a@2000 count=3",
            "b:2:5",
            "timer a@2500 count=3",
            "timer b@2500 count=2",
            "timer a@3200 count=3",
            "timer b@10000 count=2",
        ]
    );
}

type Queue = Arc<Mutex<VecDeque<Record<(String, f64)>>>>;

/// A source fed by the test, idle when empty, finished when closed.
#[derive(Clone, Default)]
struct Feed {
    q: Queue,
    closed: Arc<AtomicBool>,
}

impl Source<(String, f64)> for Feed {
    fn create_reader(
        &self,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<(String, f64)>>, OperatorError> {
        Ok(Box::new(self.clone()))
    }
}

impl SourceReader<(String, f64)> for Feed {
    fn poll(&mut self, out: &mut Vec<Record<(String, f64)>>) -> Result<SourcePoll, OperatorError> {
        let mut q = self.q.lock().unwrap();
        if q.is_empty() {
            return Ok(if self.closed.load(Ordering::SeqCst) {
                SourcePoll::Finished
            } else {
                SourcePoll::Idle
            });
        }
        out.extend(q.drain(..));
        Ok(SourcePoll::Emitted)
    }
}

/// The sensor-anomaly pattern: last value with a TTL, an alert on a jump, and a
/// processing-time timer that clears the "alerted" marker.
#[derive(Clone)]
struct Jump {
    last: ValueState<f64>,
    alerted: ValueState<i64>,
}

impl KeyedProcessFunction<String, (String, f64), String> for Jump {
    fn process_element(
        &mut self,
        v: (String, f64),
        ctx: &mut KeyedContext<'_, String, String>,
    ) -> Result<(), OperatorError> {
        if let Some(prev) = self.last.get(ctx)?
            && (v.1 - prev).abs() > 5.0
            && self.alerted.get(ctx)?.is_none()
        {
            let now = ctx.current_processing_time();
            self.alerted.set(ctx, now + 60_000)?;
            ctx.register_processing_time_timer(now + 60_000);
            ctx.emit(format!("alert {} {prev}->{}", v.0, v.1))?;
        }
        self.last.set(ctx, v.1)
    }

    fn on_timer(
        &mut self,
        ts: i64,
        ctx: &mut OnTimerContext<'_, String, String>,
    ) -> Result<(), OperatorError> {
        assert_eq!(ctx.time_domain(), Some(TimeDomain::ProcessingTime));
        self.alerted.clear(ctx)?;
        ctx.emit(format!("cleared {}@{ts}", ctx.key()))
    }
}

fn wait_for(sink: &CollectSink<String>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = sink.values();
        if v.len() >= n || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn processing_time_timers_and_ttl_follow_the_clock() {
    let clock = ManualClock::new(0);
    let env = StreamEnv::new(EnvConfig {
        clock: Arc::new(clock.clone()),
        ..Default::default()
    });
    let feed = Feed::default();
    let out = CollectSink::new();
    env.source("feed", feed.clone(), WatermarkStrategy::none())
        .key_by(|v: &(String, f64)| v.0.clone())
        .process(Jump {
            last: ValueState::new("last").with_ttl(TtlConfig::new(Duration::from_secs(3600))),
            alerted: ValueState::new("alerted"),
        })
        .sink("out", out.clone());
    let job = env.start().unwrap();
    let push = |k: &str, v: f64| {
        feed.q
            .lock()
            .unwrap()
            .push_back(Record::untimed((k.to_string(), v)))
    };

    push("s1", 1.0);
    push("s1", 10.0);
    assert_eq!(wait_for(&out, 1), vec!["alert s1 1->10"]);
    push("s1", 20.0); // suppressed: alerted until the timer clears it
    clock.set(59_999);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(out.values().len(), 1);
    clock.set(60_000);
    assert_eq!(wait_for(&out, 2)[1], "cleared s1@60000");
    push("s1", 30.0);
    assert_eq!(wait_for(&out, 3)[2], "alert s1 20->30");
    // One hour after the last write the last value has expired: no alert for a jump.
    clock.set(60_000 + 3_600_000);
    push("s1", 100.0);
    push("s1", 100.5);
    std::thread::sleep(Duration::from_millis(100));
    let v = out.values();
    assert!(v.iter().all(|l| !l.contains("30->100")), "{v:?}");
    feed.closed.store(true, Ordering::SeqCst);
    job.wait().unwrap();
}

#[test]
fn union_merges_streams_and_takes_the_minimum_watermark() {
    let env = StreamEnv::new(EnvConfig::default());
    let out = CollectSink::new();
    let wm = || WatermarkStrategy::<(String, i64)>::monotonous().with_interval(Duration::ZERO);
    let a = env.source(
        "a",
        VecSource::new([
            (1_000, ("a".to_string(), 1)),
            (30_000, ("a".to_string(), 2)),
        ]),
        wm(),
    );
    let b = env.source("b", VecSource::new([(2_000, ("b".to_string(), 3))]), wm());
    a.union(&b)
        .map(|v: (String, i64)| v.1)
        .key_by(|_: &i64| 0u8)
        .window(weir_core::WindowAssigner::tumbling(Duration::from_secs(10)))
        .process(
            |_: &u8, c: &weir_core::WindowContext, els: &[i64], o: &mut Vec<(i64, i64)>| {
                o.push((c.window.start, els.iter().sum()))
            },
        )
        .sink("out", out.clone());
    env.execute().unwrap();
    assert_eq!(out.values(), vec![(0, 4), (30_000, 2)]);
}

#[test]
fn failures_fail_the_job_with_the_cause_and_cancel_stops_it() {
    let env = StreamEnv::new(EnvConfig {
        parallelism: 2,
        ..Default::default()
    });
    env.source(
        "n",
        VecSource::new((0..1000).map(|i| (i, i))),
        WatermarkStrategy::none(),
    )
    .map(|i: i64| if i == 500 { panic!("boom at {i}") } else { i })
    .sink("out", CollectSink::new());
    let err = env.execute().unwrap_err().to_string();
    assert!(err.contains("boom at 500"), "{err}");

    let env = StreamEnv::new(EnvConfig::default());
    let feed = Feed::default();
    env.source("feed", feed, WatermarkStrategy::none())
        .sink("out", CollectSink::new());
    let job = env.start().unwrap();
    job.cancel();
    assert_eq!(job.wait().unwrap(), weir_core::JobOutcome::Canceled);
}

#[test]
fn a_dataflow_without_sink_is_rejected() {
    let env = StreamEnv::new(EnvConfig::default());
    env.source("n", VecSource::new([(0, 1)]), WatermarkStrategy::none())
        .map(|i: i32| i + 1);
    let err = env.execute().unwrap_err().to_string();
    assert!(err.contains("no sink"), "{err}");
}

/// A source that emits its records and then stays open without data.
#[derive(Clone)]
struct ThenSilent {
    items: Vec<(i64, i64)>,
}

struct ThenSilentReader {
    items: Vec<(i64, i64)>,
    next: usize,
}

impl Source<i64> for ThenSilent {
    fn create_reader(
        &self,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<i64>>, OperatorError> {
        Ok(Box::new(ThenSilentReader {
            items: self.items.clone(),
            next: 0,
        }))
    }
}

impl SourceReader<i64> for ThenSilentReader {
    fn poll(&mut self, out: &mut Vec<Record<i64>>) -> Result<SourcePoll, OperatorError> {
        match self.items.get(self.next) {
            Some(&(ts, v)) => {
                self.next += 1;
                out.push(Record::new(ts, v));
                Ok(SourcePoll::Emitted)
            }
            None => Ok(SourcePoll::Idle),
        }
    }
}

fn windows_with_silent_partner(
    idleness: Option<Duration>,
) -> (weir_core::JobHandle, CollectSink<i64>) {
    let env = StreamEnv::new(EnvConfig::default());
    let out = CollectSink::new();
    let mut wm = WatermarkStrategy::<i64>::monotonous().with_interval(Duration::from_millis(10));
    if let Some(d) = idleness {
        wm = wm.with_idleness(d);
    }
    let busy = env.source(
        "busy",
        ThenSilent {
            items: vec![(1_000, 1), (25_000, 2)],
        },
        wm.clone(),
    );
    let silent = env.source("silent", ThenSilent { items: vec![] }, wm);
    busy.union(&silent)
        .key_by(|_: &i64| 0u8)
        .window(weir_core::WindowAssigner::tumbling(Duration::from_secs(10)))
        .process(
            |_: &u8, _: &weir_core::WindowContext, els: &[i64], o: &mut Vec<i64>| {
                o.push(els.iter().sum())
            },
        )
        .sink("out", out.clone());
    (env.start().unwrap(), out)
}

#[test]
fn an_idle_source_does_not_hold_back_the_watermark() {
    // Without idleness the silent source pins the watermark and nothing fires.
    let (job, out) = windows_with_silent_partner(None);
    std::thread::sleep(Duration::from_millis(300));
    assert!(out.values().is_empty());
    job.cancel();
    job.wait().unwrap();

    let (job, out) = windows_with_silent_partner(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.values().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(out.values(), vec![1]);
    job.cancel();
    job.wait().unwrap();
}

#[test]
fn chaining_does_not_change_results() {
    let run = |chaining: bool| {
        let env = StreamEnv::new(EnvConfig {
            chaining,
            parallelism: 3,
            ..Default::default()
        });
        let out = CollectSink::new();
        env.source(
            "n",
            VecSource::new((0..50_000).map(|i| (i, i))).records_per_poll(500),
            WatermarkStrategy::none(),
        )
        .filter(|i: &i64| i % 3 != 0)
        .flat_map(|i: i64| [i, -i])
        .map(|i: i64| i * 2)
        .sink("out", out.clone());
        env.execute().unwrap();
        let mut v = out.values();
        v.sort();
        v
    };
    let chained = run(true);
    assert_eq!(chained.len(), 2 * 33_333);
    assert_eq!(chained, run(false));
}

#[test]
fn processing_time_windows_follow_the_clock() {
    let clock = ManualClock::new(1_000);
    let env = StreamEnv::new(EnvConfig {
        clock: Arc::new(clock.clone()),
        ..Default::default()
    });
    let feed = Feed::default();
    let out = CollectSink::new();
    env.source("feed", feed.clone(), WatermarkStrategy::none())
        .key_by(|v: &(String, f64)| v.0.clone())
        .window_processing_time(weir_core::WindowAssigner::tumbling(Duration::from_secs(10)))
        .process(
            |k: &String,
             c: &weir_core::WindowContext,
             els: &[(String, f64)],
             o: &mut Vec<String>| {
                o.push(format!(
                    "{k} [{},{}) n={}",
                    c.window.start,
                    c.window.end,
                    els.len()
                ))
            },
        )
        .sink("out", out.clone());
    let job = env.start().unwrap();
    let push = |k: &str| {
        feed.q
            .lock()
            .unwrap()
            .push_back(Record::untimed((k.to_string(), 1.0)))
    };
    // Records without event time are fine: they are windowed by arrival.
    // Waits until the window operator has taken `n` records, so the clock moves only after.
    let arrived = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let m = job.metrics();
            if m.vertices
                .iter()
                .filter(|v| v.name == "tumbling-window")
                .map(|v| v.records_in())
                .sum::<u64>()
                >= n
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("records did not reach the window operator");
    };
    push("a");
    push("a");
    push("b");
    arrived(3);
    assert!(
        out.values().is_empty(),
        "nothing fires before the clock passes the window end"
    );
    clock.set(10_000);
    let mut got = wait_for(&out, 2);
    got.sort();
    assert_eq!(got, vec!["a [0,10000) n=2", "b [0,10000) n=1"]);
    push("a");
    // It must arrive before the clock moves on, or it would belong to the next window.
    arrived(4);
    clock.set(20_000);
    assert_eq!(wait_for(&out, 3)[2], "a [10000,20000) n=1");
    feed.closed.store(true, Ordering::SeqCst);
    job.wait().unwrap();
}
