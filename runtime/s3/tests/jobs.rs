//! Jobs checkpointing to a real S3-compatible server (SeaweedFS, started by `.ci/s3.sh`): the
//! `orders` program, failed by the fault injector and restored from S3, must commit exactly the
//! window results its oracle computes; retention leaves exactly the retained checkpoints'
//! objects in the bucket; a damaged latest checkpoint makes a restore fall back and say so;
//! and a job whose checkpoints cannot be written for a while keeps running.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod test_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::{Bucket, Proxy, settings};
use weir_core::checkpoint::coordinator::{CheckpointStatus, FaultInjector, FaultPoint, fail_once};
use weir_core::checkpoint::format::SnapshotMetadata;
use weir_core::checkpoint::restore::RestoredJob;
use weir_core::checkpoint::storage::{CheckpointStorage, StorageFactory};
use weir_core::{
    CheckpointConfig, EnvConfig, JobHandle, JobSettings, RestartStrategy, StreamEnv,
    TransactionalCollectSink,
};
use weir_programs::orders::{OrdersConfig, UserSummary, build_dataflow, expected_summaries};
use weir_s3::{S3Settings, S3Storage};

fn orders(count: u64, rate: u64) -> OrdersConfig {
    OrdersConfig {
        count: Some(count),
        rate: Some(rate),
        users: 200,
        seed: 5,
        ..Default::default()
    }
}

fn factory(settings: S3Settings) -> StorageFactory {
    Arc::new(move |uri: &str| {
        Ok(Arc::new(S3Storage::open(uri, settings.clone())?) as Arc<dyn CheckpointStorage>)
    })
}

struct Run {
    storage: String,
    settings: S3Settings,
    config: OrdersConfig,
    parallelism: u32,
    interval: Duration,
    num_retained: usize,
    tolerable_failures: u32,
    restart: RestartStrategy,
    fault: Option<FaultInjector>,
}

impl Run {
    fn new(storage: String, config: OrdersConfig) -> Self {
        Self {
            storage,
            settings: settings(),
            config,
            parallelism: 2,
            interval: Duration::from_millis(100),
            num_retained: 1,
            tolerable_failures: 0,
            restart: RestartStrategy::FixedDelay {
                attempts: 10,
                delay: Duration::ZERO,
            },
            fault: None,
        }
    }

    fn start(self) -> (JobHandle, TransactionalCollectSink<UserSummary>) {
        let mut ckpt = CheckpointConfig::new(self.storage).with_interval(self.interval);
        ckpt.num_retained = self.num_retained;
        ckpt.tolerable_failures = self.tolerable_failures;
        let env = StreamEnv::new(EnvConfig {
            parallelism: self.parallelism,
            channel_capacity: 2,
            job: JobSettings {
                checkpoint: Some(ckpt),
                restart: Some(self.restart),
                fault: self.fault,
                storage: Some(factory(self.settings)),
                ..Default::default()
            },
            ..Default::default()
        });
        let sink = TransactionalCollectSink::new();
        build_dataflow(&env, &self.config).sink("txn", sink.clone());
        (env.start().unwrap(), sink)
    }
}

fn finish(job: &JobHandle, sink: &TransactionalCollectSink<UserSummary>) -> Vec<UserSummary> {
    job.wait_timeout(Duration::from_secs(120))
        .expect("the job did not finish")
        .unwrap();
    let mut out = sink.committed();
    out.sort();
    out
}

#[test]
fn failed_and_restored_from_s3_exactly_once() {
    let bucket = Bucket::new("eo");
    let config = orders(20_000, 20_000);
    let want = expected_summaries(&config);
    let cases: Vec<(&str, FaultInjector)> = vec![
        (
            "between barrier and snapshot",
            fail_once(
                |p| matches!(p, FaultPoint::BeforeSnapshot { checkpoint, .. } if *checkpoint >= 3),
            ),
        ),
        (
            "after metadata, before completion",
            fail_once(
                |p| matches!(p, FaultPoint::AfterMetadata { checkpoint } if *checkpoint >= 3),
            ),
        ),
    ];
    for (i, (what, fault)) in cases.into_iter().enumerate() {
        let root = bucket.uri(&format!("orders-{i}"));
        let mut run = Run::new(root.clone(), config.clone());
        run.fault = Some(fault);
        let (job, sink) = run.start();
        let got = finish(&job, &sink);
        assert!(
            got == want,
            "{what}: {} results, expected {}",
            got.len(),
            want.len()
        );
        assert!(
            job.status().num_restarts >= 1,
            "{what}: no failure happened"
        );
        let (id, path, _, _) = job.checkpoint_stats().last_restore.unwrap();
        assert!(
            path.starts_with(&format!("{root}/chk-")),
            "{what}: restored from {path}"
        );
        // The pointer names the newest checkpoint, which is after the restored one.
        let storage = bucket.storage(&format!("orders-{i}"));
        let pointer = storage.read_latest().unwrap().unwrap().pointer;
        assert!(pointer.checkpoint_id().unwrap() > id, "{pointer:?}");
    }
}

/// The objects a checkpoint consists of: its state files and `_metadata`.
fn checkpoint_objects(storage: &S3Storage, location: &str) -> BTreeSet<String> {
    let meta: SnapshotMetadata =
        serde_json::from_slice(&storage.read_file(location, "_metadata").unwrap()).unwrap();
    meta.operators
        .iter()
        .flat_map(|o| &o.files)
        .map(|f| format!("{location}/{}", f.file))
        .chain([format!("{location}/_metadata")])
        .collect()
}

#[test]
fn retention_leaves_exactly_the_retained_checkpoints_and_restores_fall_back() {
    let bucket = Bucket::new("retain");
    let root = bucket.uri("orders");
    let mut run = Run::new(root.clone(), orders(30_000, 15_000));
    run.interval = Duration::from_millis(50);
    run.num_retained = 3;
    let (job, sink) = run.start();
    finish(&job, &sink);
    let stats = job.checkpoint_stats();
    assert!(stats.completed >= 8, "a chain of checkpoints: {stats:?}");

    let storage = bucket.storage("orders");
    // Retention runs after tasks are told of a completion, so the job can end before the
    // last checkpoint's predecessors are deleted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retained = loop {
        let list = storage.list_checkpoints().unwrap();
        if list.len() <= 3 || Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(retained.len(), 3, "numRetained is 3: {retained:?}");
    let newest = stats.latest_completed().unwrap().id;
    assert_eq!(retained.last().unwrap().0, newest);
    let mut want: BTreeSet<String> = retained
        .iter()
        .flat_map(|(_, loc)| checkpoint_objects(&storage, loc))
        .collect();
    want.insert(format!("{root}/_latest"));
    let have: BTreeSet<String> = bucket.objects().into_iter().collect();
    assert_eq!(
        have, want,
        "exactly the retained checkpoints' objects remain"
    );

    // A corrupt file in the newest checkpoint: the restore falls back and says which and why.
    let (id3, loc3) = retained[2].clone();
    let (id2, loc2) = retained[1].clone();
    let file = checkpoint_objects(&storage, &loc3)
        .into_iter()
        .find(|o| o.contains("orders-per-user-window-"))
        .unwrap();
    let mut bytes = storage.get_object(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    storage.put_object(&file, &bytes).unwrap();
    let (restored, warnings) = RestoredJob::latest(&storage).unwrap();
    assert_eq!(restored.unwrap().metadata.id, id2);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!("checkpoint {id3} is not restorable, falling back"))
            && warnings[0].contains("checksum mismatch"),
        "{warnings:?}"
    );

    // A missing file in the next one: it falls back once more.
    let file = checkpoint_objects(&storage, &loc2)
        .into_iter()
        .find(|o| o.contains("orders-source-"))
        .unwrap();
    storage.delete_object(&file).unwrap();
    let (restored, warnings) = RestoredJob::latest(&storage).unwrap();
    assert_eq!(restored.unwrap().metadata.id, retained[0].0);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[1].contains(&format!("checkpoint {id2} is not restorable"))
            && warnings[1].contains("is missing"),
        "{warnings:?}"
    );
}

#[test]
fn a_job_keeps_running_while_its_checkpoints_cannot_be_written() {
    let bucket = Bucket::new("outage");
    let proxy = Proxy::new();
    let config = orders(60_000, 12_000);
    let want = expected_summaries(&config);
    let mut run = Run::new(bucket.uri("orders"), config);
    run.settings = S3Settings {
        endpoint: Some(proxy.url.clone()),
        operation_deadline: Duration::from_millis(800),
        ..settings()
    };
    run.tolerable_failures = 1000;
    // Any job failure would fail the test.
    run.restart = RestartStrategy::None;
    let (job, sink) = run.start();

    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("two checkpoints", &|| job.checkpoint_stats().completed >= 2);
    proxy.block();
    let completed_before = job.checkpoint_stats().completed;
    wait_for("failed checkpoints", &|| job.checkpoint_stats().failed >= 2);
    proxy.unblock();
    let got = finish(&job, &sink);

    let stats = job.checkpoint_stats();
    assert_eq!(job.status().num_restarts, 0, "{:?}", job.status());
    assert!(stats.completed > completed_before, "{stats:?}");
    let failure = stats
        .history
        .iter()
        .filter(|r| r.status == CheckpointStatus::Failed)
        .find_map(|r| r.failure.clone())
        .unwrap_or_default();
    assert!(
        failure.contains(&format!("cannot reach the S3 endpoint {}", proxy.url)),
        "{failure}"
    );
    assert!(
        got == want,
        "{} results, expected {}",
        got.len(),
        want.len()
    );

    // A restore that cannot reach the store fails; it does not fall back to older checkpoints
    // (or to none), which would replay what sinks committed already.
    let storage = bucket.storage_with(
        "orders",
        S3Settings {
            endpoint: Some(proxy.url.clone()),
            operation_deadline: Duration::from_millis(500),
            ..settings()
        },
    );
    proxy.block();
    let err = RestoredJob::latest(&storage).unwrap_err().to_string();
    assert!(err.contains("cannot reach the S3 endpoint"), "{err}");
}
