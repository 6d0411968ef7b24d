//! Fault-injection proof of exactly-once: a keyed job and a windowed job, at parallelism 1 and 4,
//! with aligned and unaligned checkpoints, are failed at every phase — while processing, between
//! barrier and snapshot, during the asynchronous write, after `_metadata` is written but before
//! completion is notified, during restore, and repeatedly — and the committed output of a
//! two-phase-commit sink must equal a failure-free run: nothing lost, nothing duplicated. In
//! at-least-once mode duplicates are allowed but nothing is lost. Inputs are fixed, so every run
//! is reproducible.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use weir_core::checkpoint::coordinator::{FaultInjector, FaultPoint, fail_once};
use weir_core::checkpoint::restore::RestoredJob;
use weir_core::checkpoint::storage::{CheckpointStorage, LocalFsStorage};
use weir_core::error::OperatorError;
use weir_core::record::Record;
use weir_core::source::SourceContext;
use weir_core::{
    AggregateFunction, CheckpointConfig, CheckpointingMode, EnvConfig, JobSettings, KeyedContext,
    KeyedProcessFunction, RestartStrategy, Source, SourcePoll, SourceReader, StreamEnv,
    TransactionalCollectSink, ValueState, WatermarkStrategy, WindowAssigner,
};

const RECORDS: u64 = 6_000;
const KEYS: u64 = 37;

/// A bounded source that trickles its records (a few per poll) so that checkpoints happen
/// while it runs; each subtask reads every parallelism-th record and resumes from its position.
#[derive(Clone)]
struct Trickle {
    per_poll: usize,
}

struct TrickleReader {
    next: u64,
    step: u64,
    per_poll: usize,
}

impl Source<(u64, u64)> for Trickle {
    fn create_reader(
        &self,
        ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<(u64, u64)>>, OperatorError> {
        Ok(Box::new(TrickleReader {
            next: u64::from(ctx.subtask),
            step: u64::from(ctx.parallelism),
            per_poll: self.per_poll,
        }))
    }
}

impl SourceReader<(u64, u64)> for TrickleReader {
    fn poll(&mut self, out: &mut Vec<Record<(u64, u64)>>) -> Result<SourcePoll, OperatorError> {
        for _ in 0..self.per_poll {
            if self.next >= RECORDS {
                return Ok(SourcePoll::Finished);
            }
            let i = self.next;
            // (key, value) with event time 10 ms per record, a little out of order.
            out.push(Record::new(
                (i * 10 + (i % 7) * 3) as i64,
                (i * 7919 % KEYS, i),
            ));
            self.next += self.step;
        }
        Ok(SourcePoll::Idle)
    }

    fn position(&self) -> Vec<u8> {
        weir_core::source::counter_position(self.next)
    }

    fn restore(&mut self, p: &[u8]) -> Result<(), OperatorError> {
        self.next = weir_core::source::restored_counter("test source", p)?;
        Ok(())
    }
}

/// Emits (key, how many records of this key so far): order-independent as a multiset.
#[derive(Clone)]
struct Count {
    n: ValueState<u64>,
}

impl KeyedProcessFunction<u64, (u64, u64), Out> for Count {
    fn process_element(
        &mut self,
        v: (u64, u64),
        ctx: &mut KeyedContext<'_, u64, Out>,
    ) -> Result<(), OperatorError> {
        let n = self.n.get(ctx)?.unwrap_or(0) + 1;
        self.n.set(ctx, n)?;
        ctx.emit(Out::Count(v.0, n))
    }
}

#[derive(Clone)]
struct CountSum;

impl AggregateFunction<(u64, u64), (u64, u64), (u64, u64)> for CountSum {
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (u64, u64), v: (u64, u64)) {
        acc.0 += 1;
        acc.1 += v.1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, acc: &mut (u64, u64), o: (u64, u64)) {
        acc.0 += o.0;
        acc.1 += o.1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
enum Out {
    Count(u64, u64),
    Window(u64, u64, u64, u64),
}

struct Setup {
    parallelism: u32,
    restore_from: Option<String>,
    allow_non_restored: bool,
    with_windows: bool,
    stop_with_savepoint_at: Option<u64>,
    source_parallelism: Option<u32>,
    mode: CheckpointingMode,
    unaligned: bool,
    aligned_timeout: Duration,
    fault: Option<FaultInjector>,
    dir: PathBuf,
    processing_fault: Option<Arc<AtomicBool>>,
}

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "weir-test-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(setup: Setup) -> (Vec<Out>, weir_core::JobHandle) {
    let (job, sink) = start(setup).unwrap();
    let outcome = job
        .wait_timeout(Duration::from_secs(120))
        .expect("job did not finish in time");
    outcome.unwrap();
    let mut out = sink.committed();
    out.sort();
    (out, job)
}

fn start(
    setup: Setup,
) -> Result<(weir_core::JobHandle, TransactionalCollectSink<Out>), weir_core::JobError> {
    start_with(setup, TransactionalCollectSink::new())
}

/// Starts the job writing to `sink`, which plays the external system: its record of
/// committed transactions survives the job, as a Kafka broker's would.
fn start_with(
    setup: Setup,
    sink: TransactionalCollectSink<Out>,
) -> Result<(weir_core::JobHandle, TransactionalCollectSink<Out>), weir_core::JobError> {
    let mut cfg = CheckpointConfig::new(setup.dir.display().to_string())
        .with_interval(Duration::from_millis(25));
    cfg.mode = setup.mode;
    cfg.unaligned = setup.unaligned;
    cfg.aligned_timeout = setup.aligned_timeout;
    cfg.num_retained = 2;
    let env = StreamEnv::new(EnvConfig {
        parallelism: setup.parallelism,
        channel_capacity: 2,
        job: JobSettings {
            checkpoint: Some(cfg),
            restart: Some(RestartStrategy::FixedDelay {
                attempts: 20,
                delay: Duration::ZERO,
            }),
            fault: setup.fault,
            restore_from: setup.restore_from,
            allow_non_restored_state: setup.allow_non_restored,
            storage: None,
            state_backend: None,
            cluster: None,
            fencing: None,
        },
        ..Default::default()
    });
    let input = env
        .source(
            "trickle",
            Trickle { per_poll: 8 },
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(50)),
        )
        .uid("trickle")
        // Rescaling keeps the source's parallelism (its positions are per subtask).
        .parallelism(setup.source_parallelism.unwrap_or(setup.parallelism));
    let fail_once = setup.processing_fault;
    let input = input
        .map(move |v: (u64, u64)| {
            if v.1 == RECORDS / 2
                && let Some(f) = &fail_once
                && !f.swap(true, Ordering::SeqCst)
            {
                panic!("injected failure while processing record {}", v.1);
            }
            v
        })
        .uid("maybe-fail");
    let counts = input
        .key_by(|v: &(u64, u64)| v.0)
        .process(Count {
            n: ValueState::new("n"),
        })
        .uid("count");
    if !setup.with_windows {
        counts.sink("txn-sink", sink.clone()).uid("sink");
        return Ok((env.start()?, sink));
    }
    let windows = input
        .key_by(|v: &(u64, u64)| v.0)
        .window(WindowAssigner::tumbling(Duration::from_secs(5)))
        .aggregate_with(
            CountSum,
            |k: &u64, c: &weir_core::WindowContext, r: &[(u64, u64)], out: &mut Vec<Out>| {
                out.push(Out::Window(*k, c.window.start as u64, r[0].0, r[0].1))
            },
        )
        .uid("windows");
    counts
        .union(&windows)
        .sink("txn-sink", sink.clone())
        .uid("sink");
    let job = env.start()?;
    if let Some(after) = setup.stop_with_savepoint_at {
        while job.metrics().records_in() < after {
            std::thread::sleep(Duration::from_millis(2));
        }
        let target = setup.dir.join("savepoints").display().to_string();
        job.stop_with_savepoint(&target).recv().unwrap().unwrap();
    }
    Ok((job, sink))
}

fn expected() -> Vec<Out> {
    static EXPECTED: std::sync::OnceLock<Vec<Out>> = std::sync::OnceLock::new();
    EXPECTED
        .get_or_init(|| {
            // Computed directly from the input, independent of the engine.
            let mut out = Vec::new();
            let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
            let mut windows: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
            for i in 0..RECORDS {
                let (k, ts) = (i * 7919 % KEYS, i * 10 + (i % 7) * 3);
                let c = counts.entry(k).or_default();
                *c += 1;
                out.push(Out::Count(k, *c));
                let w = windows.entry((k, ts - ts % 5_000)).or_default();
                w.0 += 1;
                w.1 += i;
            }
            for ((k, start), (c, s)) in windows {
                out.push(Out::Window(k, start, c, s));
            }
            out.sort();
            out
        })
        .clone()
}

fn setup(parallelism: u32, unaligned: bool, name: &str) -> Setup {
    Setup {
        parallelism,
        mode: CheckpointingMode::ExactlyOnce,
        unaligned,
        aligned_timeout: Duration::ZERO,
        fault: None,
        dir: temp_dir(name),
        processing_fault: None,
        restore_from: None,
        allow_non_restored: false,
        with_windows: true,
        stop_with_savepoint_at: None,
        source_parallelism: None,
    }
}

fn check_exactly_once(s: Setup, what: &str) {
    let dir = s.dir.clone();
    let (out, job) = run(s);
    let _ = std::fs::remove_dir_all(&dir);
    let restarts = job.status().num_restarts;
    if out != expected() {
        let mut want: BTreeMap<Out, i64> = BTreeMap::new();
        for o in expected() {
            *want.entry(o).or_default() += 1;
        }
        for o in &out {
            *want.entry(o.clone()).or_default() -= 1;
        }
        let diff: Vec<_> = want.into_iter().filter(|(_, n)| *n != 0).take(12).collect();
        eprintln!(
            "{what}: (record, missing count; negative = duplicated) {diff:?}; status {:?}",
            job.status()
        );
    }
    assert!(
        out == expected(),
        "{what}: output differs from the failure-free result ({} vs {} records)",
        out.len(),
        expected().len()
    );
    assert!(
        restarts >= 1 || what == "no failure",
        "{what}: the fault never fired"
    );
}

/// A failure scenario: its name and how it changes the setup.
type Phase = (&'static str, Box<dyn Fn(&mut Setup)>);

fn phases() -> Vec<Phase> {
    // Checkpoint faults fire from the first checkpoint on: how many checkpoints a run takes
    // depends on the machine's speed, and a later one may never come ("the fault never fired").
    vec![
        ("no failure", Box::new(|_: &mut Setup| {})),
        (
            "while processing",
            Box::new(|s: &mut Setup| s.processing_fault = Some(Arc::new(AtomicBool::new(false)))),
        ),
        (
            "between barrier and snapshot",
            Box::new(|s: &mut Setup| {
                s.fault = Some(fail_once(
                    |p| matches!(p, FaultPoint::BeforeSnapshot { checkpoint, uid, .. } if *checkpoint >= 1 && uid == "count"),
                ))
            }),
        ),
        (
            "during the asynchronous write",
            Box::new(|s: &mut Setup| {
                s.fault = Some(fail_once(
                    |p| matches!(p, FaultPoint::AsyncWrite { checkpoint } if *checkpoint >= 1),
                ))
            }),
        ),
        (
            "after metadata, before completion is notified",
            Box::new(|s: &mut Setup| {
                s.fault = Some(fail_once(
                    |p| matches!(p, FaultPoint::AfterMetadata { checkpoint } if *checkpoint >= 1),
                ))
            }),
        ),
        (
            "during restore",
            Box::new(|s: &mut Setup| {
                // Fail while processing, then fail again while restoring from the checkpoint.
                s.processing_fault = Some(Arc::new(AtomicBool::new(false)));
                s.fault = Some(fail_once(|p| {
                    matches!(p, FaultPoint::Restore { attempt: 1, .. })
                }));
            }),
        ),
        (
            "repeatedly",
            Box::new(|s: &mut Setup| {
                let n = AtomicU64::new(0);
                s.fault = Some(Arc::new(move |p: &FaultPoint| {
                    matches!(p, FaultPoint::BeforeSnapshot { checkpoint, uid, subtask: 0 } if checkpoint % 3 == 0 && uid == "count")
                        && n.fetch_add(1, Ordering::SeqCst) < 3
                }));
            }),
        ),
    ]
}

fn matrix(parallelism: u32, unaligned: bool) {
    for (name, apply) in phases() {
        let mut s = setup(parallelism, unaligned, "eo");
        apply(&mut s);
        check_exactly_once(s, name);
    }
}

#[test]
fn exactly_once_parallelism_1_aligned() {
    matrix(1, false);
}

#[test]
fn exactly_once_parallelism_4_aligned() {
    matrix(4, false);
}

#[test]
fn exactly_once_parallelism_1_unaligned() {
    matrix(1, true);
}

#[test]
fn exactly_once_parallelism_4_unaligned() {
    matrix(4, true);
}

#[test]
fn exactly_once_with_aligned_timeout_switching_to_unaligned() {
    let mut s = setup(4, true, "timeout");
    s.aligned_timeout = Duration::from_millis(1);
    s.processing_fault = Some(Arc::new(AtomicBool::new(false)));
    check_exactly_once(s, "while processing, aligned timeout 1 ms");
}

#[test]
fn at_least_once_loses_nothing() {
    let mut s = setup(4, false, "alo");
    s.mode = CheckpointingMode::AtLeastOnce;
    s.processing_fault = Some(Arc::new(AtomicBool::new(false)));
    let (out, job) = run(s);
    assert!(job.status().num_restarts >= 1);
    // Replayed records may be counted twice, so counts may run higher and windows may hold
    // more, but every expected count is reached and no window has less than it should.
    let mut windows: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for o in &out {
        if let Out::Window(k, start, c, _) = o {
            let w = windows.entry((*k, *start)).or_default();
            *w = (*w).max(*c);
        }
    }
    for o in expected() {
        match o {
            Out::Count(..) => assert!(out.binary_search(&o).is_ok(), "lost {o:?}"),
            Out::Window(k, start, c, _) => {
                assert!(
                    windows.get(&(k, start)).is_some_and(|&got| got >= c),
                    "lost records of window {k}/{start}"
                )
            }
        }
    }
}

#[test]
fn checkpoints_are_retained_and_a_corrupt_one_is_skipped() {
    let s = setup(2, false, "retain");
    let dir = s.dir.clone();
    let (_, job) = run(s);
    assert!(
        job.checkpoint_stats().completed >= 2,
        "{:?}",
        job.checkpoint_stats()
    );
    let storage = LocalFsStorage::new(&dir.display().to_string()).unwrap();
    let list = storage.list_checkpoints().unwrap();
    assert_eq!(list.len(), 2, "numRetained is 2: {list:?}");
    // Half-written checkpoints (no _metadata) are never listed.
    std::fs::create_dir_all(dir.join("chk-999999")).unwrap();
    assert_eq!(storage.list_checkpoints().unwrap().len(), 2);
    // Corrupt a file of the newest: restore falls back to the previous one and says so.
    let (newest_id, newest) = list.last().unwrap().clone();
    let file = std::fs::read_dir(&newest)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("count-"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let (restored, warnings) = RestoredJob::latest(&storage).unwrap();
    let restored = restored.unwrap();
    assert!(restored.metadata.id < newest_id);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("checksum mismatch") && warnings[0].contains("falling back"),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains(&format!("checkpoint {newest_id} ")),
        "{warnings:?}"
    );

    // A missing file in the previous one too: nothing is left to restore, and both are named.
    let (older_id, older) = list[0].clone();
    let file = std::fs::read_dir(&older)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("trickle-"))
        .unwrap()
        .path();
    std::fs::remove_file(&file).unwrap();
    let (restored, warnings) = RestoredJob::latest(&storage).unwrap();
    assert!(restored.is_none());
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[1].contains(&format!("checkpoint {older_id} is not restorable"))
            && warnings[1].contains("is missing"),
        "{warnings:?}"
    );
}

#[test]
fn checkpoints_newer_than_the_latest_pointer_are_not_restored() {
    let s = setup(1, false, "pointer");
    let dir = s.dir.clone();
    let (_, job) = run(s);
    let newest = job.checkpoint_stats().latest_completed().unwrap().id;
    let storage = LocalFsStorage::new(&dir.display().to_string()).unwrap();
    let pointer = storage.read_latest().unwrap().unwrap().pointer;
    assert_eq!(pointer.checkpoint_id(), Some(newest));
    // A checkpoint whose `_metadata` was written but whose completion was never recorded
    // (its writer died or was deposed in between).
    let newest_dir = dir.join(format!("chk-{newest}"));
    let orphan = dir.join(format!("chk-{}", newest + 1));
    std::fs::create_dir_all(&orphan).unwrap();
    for e in std::fs::read_dir(&newest_dir).unwrap().flatten() {
        std::fs::copy(e.path(), orphan.join(e.file_name())).unwrap();
    }
    let (restored, warnings) = RestoredJob::latest(&storage).unwrap();
    assert_eq!(restored.unwrap().metadata.id, newest);
    assert!(
        warnings.len() == 1 && warnings[0].contains("never completed"),
        "{warnings:?}"
    );
}

#[test]
fn a_deposed_job_records_no_more_checkpoints() {
    use weir_core::checkpoint::latest::claim_epoch;
    let mut s = setup(2, false, "deposed");
    s.with_windows = false;
    let dir = s.dir.clone();
    // Another instance of the job takes over the storage once this one has checkpointed.
    let storage = LocalFsStorage::new(&dir.display().to_string()).unwrap();
    let (job, sink) = start(s).unwrap();
    while job.checkpoint_stats().completed < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let taken_over = claim_epoch(&storage, "other-instance").unwrap();
    let outcome = job.wait_timeout(Duration::from_secs(120)).unwrap();
    // Every later checkpoint fails, so the job fails once its restarts run out; the pointer
    // stays the other instance's.
    let stats = job.checkpoint_stats();
    let deposed = stats
        .history
        .iter()
        .filter_map(|r| r.failure.as_deref())
        .find(|f| f.contains("deposed"));
    assert!(deposed.is_some(), "{outcome:?} {stats:?}");
    let pointer = storage.read_latest().unwrap().unwrap().pointer;
    assert_eq!(
        (pointer.epoch, pointer.writer.as_str()),
        (taken_over.epoch, "other-instance")
    );
    // Nothing after the takeover was committed: the output is short of one count per record.
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(sink.committed().len() < RECORDS as usize);
}

#[test]
fn stop_with_savepoint_then_restore_at_another_parallelism() {
    // Run at parallelism 2 and stop with a savepoint halfway.
    let mut first = setup(2, false, "rescale");
    first.stop_with_savepoint_at = Some(RECORDS / 2);
    first.source_parallelism = Some(1);
    let dir = first.dir.clone();
    let (job, sink) = start(first).unwrap();
    let outcome = job.wait_timeout(Duration::from_secs(60)).unwrap().unwrap();
    let weir_core::JobOutcome::Stopped(path) = outcome else {
        panic!("not stopped: {outcome:?}")
    };
    assert!(
        path.starts_with(&dir.join("savepoints").display().to_string()),
        "{path}"
    );
    let before = sink.committed();
    assert!(!before.is_empty() && before.len() < expected().len());

    // Resume at parallelism 4: keyed state is redistributed by key group.
    let mut second = setup(4, false, "rescale-2");
    second.restore_from = Some(path.clone());
    second.source_parallelism = Some(1);
    let (job2, sink) = start_with(second, sink).unwrap();
    job2.wait_timeout(Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!(
        job2.checkpoint_stats().last_restore.map(|r| r.1),
        Some(path.clone())
    );
    let mut after = sink.committed();
    after.sort();
    if after != expected() {
        let mut want: BTreeMap<Out, i64> = BTreeMap::new();
        for o in expected() {
            *want.entry(o).or_default() += 1;
        }
        for o in &after {
            *want.entry(o.clone()).or_default() -= 1;
        }
        let diff: Vec<_> = want.into_iter().filter(|(_, n)| *n != 0).collect();
        eprintln!("diff ({}): {:?}", diff.len(), &diff[..diff.len().min(20)]);
    }
    assert!(
        after == expected(),
        "savepoint + restore at parallelism 4 lost or duplicated records"
    );

    // A job without the window operator cannot take that state unless told to drop it.
    let mut narrower = setup(4, false, "rescale-3");
    narrower.with_windows = false;
    narrower.source_parallelism = Some(1);
    narrower.restore_from = Some(path.clone());
    let err = start(narrower)
        .expect_err("restoring into a job without the window operator must fail")
        .to_string();
    assert!(
        err.contains("allowNonRestoredState") && err.contains("windows"),
        "{err}"
    );
    // A source cannot change parallelism: its positions belong to its subtasks.
    let mut wider_source = setup(4, false, "rescale-5");
    wider_source.restore_from = Some(path.clone());
    let err = start(wider_source)
        .expect_err("rescaling the source must fail")
        .to_string();
    assert!(
        err.contains("trickle") && err.contains("parallelism"),
        "{err}"
    );
    let mut narrower = setup(4, false, "rescale-4");
    narrower.with_windows = false;
    narrower.source_parallelism = Some(1);
    narrower.allow_non_restored = true;
    narrower.restore_from = Some(path);
    let (job3, _) = start(narrower).unwrap();
    job3.wait_timeout(Duration::from_secs(60)).unwrap().unwrap();
}

#[test]
fn restoring_from_a_missing_or_incomplete_snapshot_fails_clearly() {
    let mut s = setup(1, false, "missing");
    let missing = s.dir.join("nope").display().to_string();
    s.restore_from = Some(missing.clone());
    let err = start(s).err().unwrap().to_string();
    assert!(
        err.contains(&missing)
            && err.contains("_metadata")
            && err.contains("not a complete checkpoint"),
        "{err}"
    );
}

/// Subtask 0 has a few records and finishes early; subtask 1 trickles for a while.
#[derive(Clone)]
struct Uneven;

struct UnevenReader {
    next: u64,
    end: u64,
}

impl Source<(u64, u64)> for Uneven {
    fn create_reader(
        &self,
        ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<(u64, u64)>>, OperatorError> {
        let (next, end) = if ctx.subtask == 0 {
            (0, 50)
        } else {
            (1_000, 3_000)
        };
        Ok(Box::new(UnevenReader { next, end }))
    }
}

impl SourceReader<(u64, u64)> for UnevenReader {
    fn poll(&mut self, out: &mut Vec<Record<(u64, u64)>>) -> Result<SourcePoll, OperatorError> {
        for _ in 0..4 {
            if self.next >= self.end {
                return Ok(SourcePoll::Finished);
            }
            out.push(Record::new(self.next as i64, (self.next % 7, self.next)));
            self.next += 1;
        }
        Ok(SourcePoll::Idle)
    }

    fn position(&self) -> Vec<u8> {
        weir_core::source::counter_position(self.next)
    }

    fn restore(&mut self, p: &[u8]) -> Result<(), OperatorError> {
        self.next = weir_core::source::restored_counter("test source", p)?;
        Ok(())
    }
}

#[test]
fn a_source_that_finished_early_is_not_replayed_after_a_later_failure() {
    let dir = temp_dir("uneven");
    let mut cfg =
        CheckpointConfig::new(dir.display().to_string()).with_interval(Duration::from_millis(20));
    cfg.num_retained = 2;
    // Fail once, late: subtask 0 of the source finishes within a few milliseconds, so by
    // checkpoint 6 (120 ms at the earliest) it has long finished.
    let fault = fail_once(
        |p| matches!(p, FaultPoint::BeforeSnapshot { checkpoint, uid, .. } if *checkpoint >= 6 && uid == "count"),
    );
    let env = StreamEnv::new(EnvConfig {
        parallelism: 2,
        job: JobSettings {
            checkpoint: Some(cfg),
            restart: Some(RestartStrategy::FixedDelay {
                attempts: 5,
                delay: Duration::ZERO,
            }),
            fault: Some(fault),
            ..Default::default()
        },
        ..Default::default()
    });
    let sink = TransactionalCollectSink::new();
    env.source("uneven", Uneven, WatermarkStrategy::none())
        .uid("uneven")
        .key_by(|v: &(u64, u64)| v.0)
        .process(Count {
            n: ValueState::new("n"),
        })
        .uid("count")
        .sink("txn-sink", sink.clone())
        .uid("sink");
    let job = env.start().unwrap();
    job.wait_timeout(Duration::from_secs(60))
        .expect("job did not finish")
        .unwrap();
    assert!(job.status().num_restarts >= 1, "the fault never fired");
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    let mut want = Vec::new();
    for i in (0..50).chain(1_000..3_000) {
        let c = counts.entry(i % 7).or_default();
        *c += 1;
        want.push(Out::Count(i % 7, *c));
    }
    want.sort();
    let mut got = sink.committed();
    got.sort();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        got == want,
        "{} results, expected {}",
        got.len(),
        want.len()
    );
}

/// A restart restores the run's own checkpoints only. A run started without state (a
/// stateless upgrade, or a rollback to an older savepoint) that fails before its first
/// checkpoint starts over from what it started from, not from the checkpoints an earlier run
/// left in the same storage: that would undo the choice. Here the earlier run had finished, so
/// its state says every record was read, and the new run would commit nothing at all.
#[test]
fn a_restart_never_restores_a_checkpoint_of_an_earlier_run() {
    let counts: Vec<Out> = expected()
        .into_iter()
        .filter(|o| matches!(o, Out::Count(..)))
        .collect();
    let mut earlier = setup(1, false, "own-checkpoints");
    earlier.with_windows = false;
    let dir = earlier.dir.clone();
    let (out, _) = run(earlier);
    assert!(out == counts, "the earlier run's output differs");
    let storage = LocalFsStorage::new(&dir.display().to_string()).unwrap();
    assert!(RestoredJob::latest(&storage).unwrap().0.is_some());

    let mut fresh = setup(1, false, "own-checkpoints");
    fresh.dir = dir;
    fresh.with_windows = false;
    // The new run's first checkpoint fails its task, so no checkpoint of its own exists yet.
    fresh.fault = Some(fail_once(|p| {
        matches!(p, FaultPoint::BeforeSnapshot { .. })
    }));
    let (out, job) = run(fresh);
    assert!(job.status().num_restarts >= 1, "{:?}", job.status());
    assert_eq!(job.checkpoint_stats().last_restore, None);
    assert!(out == counts, "the restarted run's output differs");
}
