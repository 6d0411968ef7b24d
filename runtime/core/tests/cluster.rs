//! The distributed runtime in one test process: a JobManager and TaskManagers that talk over
//! real TCP on 127.0.0.1 exactly as separate processes do, each TaskManager with its own copy
//! of the job graph. A TaskManager is "killed" by dropping its connections without a word, as
//! a crashed process's kernel would; the multi-process tests with real `kill -9` are in the
//! `weir` binary's tests. The two-phase-commit test sink is shared by the TaskManagers here
//! because it plays the external system (a broker); its committed output must equal the
//! input's exact result — nothing lost, nothing duplicated.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weir_core::cluster::protocol::{ToJobManager, ToTaskManager};
use weir_core::cluster::wire::{read_json, write_json};
use weir_core::cluster::{ClusterConfig, JobManagerCluster, TaskManagerConfig};
use weir_core::error::OperatorError;
use weir_core::record::Record;
use weir_core::source::SourceContext;
use weir_core::{
    CheckpointConfig, EnvConfig, JobHandle, JobSettings, KeyedContext, KeyedProcessFunction,
    RestartStrategy, Source, SourcePoll, SourceReader, StreamEnv, TransactionalCollectSink,
    ValueState, WatermarkStrategy,
};

const RECORDS: u64 = 40_000;
const KEYS: u64 = 53;

#[derive(Clone)]
struct Trickle;

struct TrickleReader {
    next: u64,
    step: u64,
}

impl Source<(u64, u64)> for Trickle {
    fn create_reader(
        &self,
        ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<(u64, u64)>>, OperatorError> {
        Ok(Box::new(TrickleReader {
            next: u64::from(ctx.subtask),
            step: u64::from(ctx.parallelism),
        }))
    }
}

impl SourceReader<(u64, u64)> for TrickleReader {
    fn poll(&mut self, out: &mut Vec<Record<(u64, u64)>>) -> Result<SourcePoll, OperatorError> {
        for _ in 0..16 {
            if self.next >= RECORDS {
                return Ok(SourcePoll::Finished);
            }
            let i = self.next;
            out.push(Record::new(i as i64, (i * 7919 % KEYS, i)));
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

/// (key, how many records of this key so far): keyed state across a hash exchange.
#[derive(Clone)]
struct Count {
    n: ValueState<u64>,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for Count {
    fn process_element(
        &mut self,
        v: (u64, u64),
        ctx: &mut KeyedContext<'_, u64, (u64, u64)>,
    ) -> Result<(), OperatorError> {
        let n = self.n.get(ctx)?.unwrap_or(0) + 1;
        self.n.set(ctx, n)?;
        ctx.emit((v.0, n))
    }
}

fn expected() -> Vec<(u64, u64)> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out: Vec<(u64, u64)> = (0..RECORDS)
        .map(|i| {
            let k = i * 7919 % KEYS;
            let c = counts.entry(k).or_default();
            *c += 1;
            (k, *c)
        })
        .collect();
    out.sort();
    out
}

struct Job {
    dir: std::path::PathBuf,
    unaligned: bool,
    sink: TransactionalCollectSink<(u64, u64)>,
}

impl Job {
    fn new(name: &str, unaligned: bool) -> Arc<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weir-cluster-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Arc::new(Self {
            dir,
            unaligned,
            sink: TransactionalCollectSink::new(),
        })
    }

    /// The same graph in every process, as a program built from one manifest would be.
    fn env(&self, cluster: Option<Arc<JobManagerCluster>>) -> StreamEnv {
        let mut cfg = CheckpointConfig::new(self.dir.display().to_string())
            .with_interval(Duration::from_millis(50));
        cfg.unaligned = self.unaligned;
        cfg.num_retained = 2;
        let env = StreamEnv::new(EnvConfig {
            parallelism: 4,
            channel_capacity: 2,
            job: JobSettings {
                checkpoint: Some(cfg),
                restart: Some(RestartStrategy::FixedDelay {
                    attempts: 10,
                    delay: Duration::from_millis(100),
                }),
                cluster,
                ..Default::default()
            },
            ..Default::default()
        });
        env.source(
            "trickle",
            Trickle,
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(50)),
        )
        .uid("trickle")
        .key_by(|v: &(u64, u64)| v.0)
        .process(Count {
            n: ValueState::new("n"),
        })
        .uid("count")
        .sink("txn-sink", self.sink.clone())
        .uid("sink");
        env
    }
}

struct Tm {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

fn task_manager(job: &Arc<Job>, jm: &JobManagerCluster, id: &str) -> Tm {
    task_manager_of(job, jm, id, None)
}

/// A TaskManager that registers with the fingerprint `manifest_hash`.
fn task_manager_of(
    job: &Arc<Job>,
    jm: &JobManagerCluster,
    id: &str,
    manifest_hash: Option<&str>,
) -> Tm {
    let stop = Arc::new(AtomicBool::new(false));
    let config = TaskManagerConfig {
        id: id.into(),
        jobmanagers: vec![jm.address().to_string()],
        slots: 2,
        data_bind: "127.0.0.1:0".into(),
        data_advertise: None,
        manifest_hash: manifest_hash.map(str::to_string),
    };
    let (job, s) = (job.clone(), stop.clone());
    let thread = std::thread::spawn(move || job.env(None).run_task_manager(config, s).unwrap());
    Tm { stop, thread }
}

fn job_manager() -> Arc<JobManagerCluster> {
    JobManagerCluster::bind(
        "127.0.0.1:0",
        ClusterConfig {
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_secs(2),
            slot_timeout: Duration::from_secs(30),
            manifest_hash: None,
        },
    )
    .unwrap()
}

fn finish(job: &Job, handle: &JobHandle) -> Vec<(u64, u64)> {
    handle
        .wait_timeout(Duration::from_secs(120))
        .expect("the job did not finish in time")
        .unwrap();
    let mut out = job.sink.committed();
    out.sort();
    out
}

fn wait_for_checkpoint(handle: &JobHandle) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while handle.checkpoint_stats().completed == 0 {
        assert!(Instant::now() < deadline, "no checkpoint completed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run_on_two(unaligned: bool, name: &str) {
    let job = Job::new(name, unaligned);
    let jm = job_manager();
    let a = task_manager(&job, &jm, "tm-a");
    let b = task_manager(&job, &jm, "tm-b");
    assert!(jm.wait_for_task_managers(2, Duration::from_secs(10)));
    let handle = job.env(Some(jm.clone())).start().unwrap();
    let out = finish(&job, &handle);
    assert!(handle.checkpoint_stats().completed > 0);
    assert_eq!(handle.status().num_restarts, 0);
    // The TaskManagers' counts reach the JobManager's view of the job.
    assert_eq!(handle.metrics().records_in(), RECORDS);
    assert_eq!(out.len(), expected().len());
    assert!(out == expected(), "output differs from the exact result");
    for tm in [a, b] {
        tm.stop.store(true, Ordering::SeqCst);
        tm.thread.join().unwrap();
    }
}

#[test]
fn a_job_spread_over_two_task_managers_is_exactly_once() {
    run_on_two(false, "aligned");
}

#[test]
fn unaligned_barriers_overtake_data_across_task_managers() {
    run_on_two(true, "unaligned");
}

#[test]
fn a_lost_task_manager_is_replaced_and_the_job_restores_exactly_once() {
    let job = Job::new("lost", false);
    let jm = job_manager();
    let a = task_manager(&job, &jm, "tm-a");
    let b = task_manager(&job, &jm, "tm-b");
    assert!(jm.wait_for_task_managers(2, Duration::from_secs(10)));
    let handle = job.env(Some(jm.clone())).start().unwrap();
    wait_for_checkpoint(&handle);
    // tm-a dies; its slots come back with a new TaskManager.
    a.stop.store(true, Ordering::SeqCst);
    a.thread.join().unwrap();
    let c = task_manager(&job, &jm, "tm-c");
    let out = finish(&job, &handle);
    let status = handle.status();
    assert!(status.num_restarts >= 1, "{status:?}");
    assert!(
        status
            .last_failure
            .as_deref()
            .unwrap_or("")
            .contains("tm-a"),
        "{status:?}"
    );
    assert!(handle.checkpoint_stats().last_restore.is_some());
    assert!(out == expected(), "output differs from the exact result");
    let ids: Vec<String> = jm.task_managers().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["tm-b", "tm-c"]);
    for tm in [b, c] {
        tm.stop.store(true, Ordering::SeqCst);
        tm.thread.join().unwrap();
    }
}

#[test]
fn too_few_slots_is_an_error_that_says_what_to_do() {
    let job = Job::new("slots", false);
    let jm = JobManagerCluster::bind(
        "127.0.0.1:0",
        ClusterConfig {
            slot_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .unwrap();
    let a = task_manager(&job, &jm, "tm-a");
    assert!(jm.wait_for_task_managers(1, Duration::from_secs(10)));
    let e = job.env(Some(jm.clone())).start().unwrap_err().to_string();
    assert!(e.contains("needs 4"), "{e}");
    assert!(e.contains("offer 2"), "{e}");
    assert!(e.contains("spec.taskManager.slots"), "{e}");
    a.stop.store(true, Ordering::SeqCst);
    a.thread.join().unwrap();
}

/// During a rolling upgrade an old TaskManager, built from the old manifest, must not run the
/// new job's subtasks: the JobManager refuses a registration whose manifest fingerprint
/// differs from its own, saying why, and the refused TaskManager keeps retrying without ever
/// joining. One with the same fingerprint joins, and so does one that sends none (older
/// TaskManagers). No job runs: registration is all this checks.
#[test]
fn a_task_manager_running_another_manifest_is_refused() {
    let job = Job::new("manifest", false);
    let jm = JobManagerCluster::bind(
        "127.0.0.1:0",
        ClusterConfig {
            manifest_hash: Some("new-hash".into()),
            ..Default::default()
        },
    )
    .unwrap();

    // The refusal on the wire, with its reason.
    let mut conn = std::net::TcpStream::connect(jm.address()).unwrap();
    write_json(
        &mut conn,
        &ToJobManager::Register {
            id: "tm-probe".into(),
            slots: 2,
            data_address: "127.0.0.1:9".into(),
            manifest_hash: Some("old-hash".into()),
        },
    )
    .unwrap();
    match read_json::<ToTaskManager>(&mut conn).unwrap() {
        ToTaskManager::Rejected { reason } => assert_eq!(
            reason,
            "TaskManager tm-probe runs a different manifest (spec hash old-hash) than this \
             JobManager (spec hash new-hash): it is from before an upgrade; it retries until it \
             is replaced"
        ),
        other => panic!("not rejected: {other:?}"),
    }

    // A TaskManager from the old manifest retries (every 200 ms) and never gets in.
    let old = task_manager_of(&job, &jm, "tm-old", Some("old-hash"));
    assert!(!jm.wait_for_task_managers(1, Duration::from_millis(800)));
    let new = task_manager_of(&job, &jm, "tm-new", Some("new-hash"));
    assert!(jm.wait_for_task_managers(1, Duration::from_secs(10)));
    let legacy = task_manager_of(&job, &jm, "tm-legacy", None);
    assert!(jm.wait_for_task_managers(2, Duration::from_secs(10)));
    // Long enough for tm-old to have retried a few more times.
    std::thread::sleep(Duration::from_millis(500));
    let ids: Vec<String> = jm.task_managers().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["tm-new", "tm-legacy"]);
    for tm in [old, new, legacy] {
        tm.stop.store(true, Ordering::SeqCst);
        tm.thread.join().unwrap();
    }
}
