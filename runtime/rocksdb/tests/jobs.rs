//! Jobs on the RocksDB backend with checkpoints on a local filesystem: exactly-once under
//! injected failures (full and incremental checkpoints, the `orders` windows checked against
//! `expected_summaries`), savepoints moving a job from the heap to RocksDB and back, a chain of
//! 20 incremental checkpoints leaving exactly the shared files the retained ones reference,
//! rescaling from an incremental checkpoint, local recovery (and its fallback when a local
//! file is corrupt), and state ten times the memory budget.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{
    OrdersJob, Rounds, checkpoint_now, fat_job, metadata, orders, rocks, shared_and_referenced,
    temp_dir,
};
use weir_core::checkpoint::coordinator::{FaultPoint, fail_once};
use weir_core::checkpoint::storage::{CheckpointStorage, LocalFsStorage};
use weir_core::state::StateBackendFactory;
use weir_core::{
    CheckpointConfig, EnvConfig, JobOutcome, JobSettings, RestartStrategy, StreamEnv,
    TransactionalCollectSink,
};
use weir_programs::orders::expected_summaries;

#[test]
fn exactly_once_under_failures_with_full_and_incremental_checkpoints() {
    let config = orders(12_000, 30_000, 200);
    let want = expected_summaries(&config);
    let cases: Vec<(
        &str,
        bool,
        u32,
        weir_core::checkpoint::coordinator::FaultInjector,
    )> = vec![
        (
            "full, between barrier and snapshot",
            false,
            2,
            fail_once(
                |p| matches!(p, FaultPoint::BeforeSnapshot { checkpoint, .. } if *checkpoint >= 3),
            ),
        ),
        (
            "incremental, between barrier and snapshot",
            true,
            2,
            fail_once(
                |p| matches!(p, FaultPoint::BeforeSnapshot { checkpoint, .. } if *checkpoint >= 3),
            ),
        ),
        (
            "incremental, during the asynchronous upload",
            true,
            1,
            fail_once(|p| matches!(p, FaultPoint::AsyncWrite { checkpoint } if *checkpoint >= 4)),
        ),
        (
            "incremental, after metadata before completion",
            true,
            2,
            fail_once(
                |p| matches!(p, FaultPoint::AfterMetadata { checkpoint } if *checkpoint >= 3),
            ),
        ),
    ];
    for (name, incremental, parallelism, fault) in cases {
        let dir = temp_dir("eo");
        let mut job = OrdersJob::new(config.clone(), dir.join("ckpt").display().to_string());
        job.backend = Some(rocks(&dir.join("local"), incremental, false, 16 << 20));
        job.parallelism = parallelism;
        job.fault = Some(fault);
        let (got, restarts) = job.run();
        assert!(restarts >= 1, "{name}: the fault never fired");
        assert_eq!(got, want, "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Stops a running orders job with a savepoint once a few checkpoints are done.
fn stop_midway(job: &OrdersJob, target: &Path) -> String {
    let handle = job.start();
    for _ in 0..3 {
        checkpoint_now(&handle);
    }
    let path = handle
        .stop_with_savepoint(&target.display().to_string())
        .recv_timeout(Duration::from_secs(60))
        .unwrap()
        .unwrap();
    assert_eq!(
        handle
            .wait_timeout(Duration::from_secs(60))
            .unwrap()
            .unwrap(),
        JobOutcome::Stopped(path.clone())
    );
    path
}

#[test]
fn savepoints_move_a_job_from_heap_to_rocksdb_and_back() {
    let config = orders(15_000, 15_000, 300);
    let want = expected_summaries(&config);
    let dir = temp_dir("move");
    let local = dir.join("local");
    let sink = TransactionalCollectSink::new();
    let job = |backend: bool, restore: Option<String>| {
        let mut j = OrdersJob::new(config.clone(), dir.join("ckpt").display().to_string());
        j.interval = Duration::from_secs(3600);
        j.backend =
            backend.then(|| -> StateBackendFactory { rocks(&local, true, false, 16 << 20) });
        j.restore_from = restore;
        j.sink = sink.clone();
        j
    };
    // heap → RocksDB → heap, each leg stopped with a savepoint part way through.
    let sp1 = stop_midway(&job(false, None), &dir.join("sp"));
    let sp2 = stop_midway(&job(true, Some(sp1)), &dir.join("sp"));
    let last = job(false, Some(sp2.clone()));
    let handle = last.start();
    handle
        .wait_timeout(Duration::from_secs(120))
        .unwrap()
        .unwrap();
    assert_eq!(last.committed(), want);
    // The RocksDB savepoint is canonical: no native files, no shared files.
    let st = LocalFsStorage::new(&sp2).unwrap();
    let meta = metadata(&st, &sp2);
    assert!(meta.shared_files().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn twenty_incremental_checkpoints_keep_exactly_the_referenced_files() {
    let dir = temp_dir("chain");
    let storage_uri = dir.join("ckpt").display().to_string();
    let mut job = OrdersJob::new(orders(2_000_000, 20_000, 5_000), storage_uri.clone());
    job.interval = Duration::from_secs(3600);
    job.num_retained = 3;
    job.backend = Some(rocks(&dir.join("local"), true, false, 16 << 20));
    let handle = job.start();
    let storage = LocalFsStorage::new(&storage_uri).unwrap();
    let mut all_uploaded = BTreeSet::new();
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(60));
        let loc = checkpoint_now(&handle);
        all_uploaded.extend(
            metadata(&storage, &loc)
                .shared_files()
                .into_iter()
                .map(|r| r.name),
        );
        let (files, referenced, retained) = shared_and_referenced(&storage);
        assert_eq!(retained, (i + 1).min(3), "checkpoint {i}");
        assert_eq!(files, referenced, "after checkpoint {i}");
    }
    // Compaction replaced files along the way, and those were deleted.
    let (files, _, _) = shared_and_referenced(&storage);
    assert!(
        all_uploaded.len() > files.len(),
        "{} uploaded, {} kept",
        all_uploaded.len(),
        files.len()
    );
    handle.cancel();
    let _ = handle.wait_timeout(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The fat-state job on RocksDB at `parallelism` (its source at 2).
fn fat(
    dir: &Path,
    parallelism: u32,
    source: Rounds,
    restore_from: Option<String>,
    sink: TransactionalCollectSink<(u64, u64)>,
) -> weir_core::JobHandle {
    let mut ckpt = CheckpointConfig::new(dir.join("ckpt").display().to_string())
        .with_interval(Duration::from_secs(3600));
    ckpt.num_retained = 2;
    let env = StreamEnv::new(EnvConfig {
        name: "fat".into(),
        parallelism,
        job: JobSettings {
            checkpoint: Some(ckpt),
            restore_from,
            state_backend: Some(rocks(&dir.join("local"), true, false, 16 << 20)),
            ..Default::default()
        },
        ..Default::default()
    });
    fat_job(&env, source, 32, sink);
    env.start().unwrap()
}

#[test]
fn an_incremental_checkpoint_restores_at_another_parallelism() {
    let dir = temp_dir("rescale");
    let source = Rounds {
        keys: 30_000,
        rounds: 4,
        per_poll: 16,
    };
    let sink = TransactionalCollectSink::new();
    let first = fat(&dir, 2, source.clone(), None, sink.clone());
    let mut last = String::new();
    for _ in 0..3 {
        last = checkpoint_now(&first);
    }
    first.cancel();
    let _ = first.wait_timeout(Duration::from_secs(30));
    let storage = LocalFsStorage::new(&dir.join("ckpt").display().to_string()).unwrap();
    assert!(!metadata(&storage, &last).shared_files().is_empty());
    // The same sink: a transaction pending in the checkpoint is committed once.
    let second = fat(&dir, 3, source.clone(), Some(last), sink.clone());
    second
        .wait_timeout(Duration::from_secs(120))
        .expect("the job did not finish")
        .unwrap();
    // Every key reaches the last round exactly once over both runs.
    let mut got = sink.committed();
    got.sort();
    let want: Vec<(u64, u64)> = (0..source.keys).map(|k| (k, source.rounds)).collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SST files of local snapshot copies under `dir`.
fn local_ssts(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "sst")
                && p.components().any(|c| c.as_os_str() == "snapshots")
            {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn local_recovery_restores_from_the_local_copy_and_falls_back_when_it_is_corrupt() {
    let config = orders(12_000, 20_000, 300);
    let want = expected_summaries(&config);
    for corrupt in [false, true] {
        let dir = temp_dir("local");
        let local = dir.join("local");
        let factory = rocks(&local, true, true, 16 << 20);
        let stats = factory.restore_stats();
        let mut job = OrdersJob::new(config.clone(), dir.join("ckpt").display().to_string());
        job.backend = Some(factory);
        let local2 = local.clone();
        job.fault = Some(fail_once(move |p| {
            let hit =
                matches!(p, FaultPoint::BeforeSnapshot { checkpoint, .. } if *checkpoint >= 4);
            if hit && corrupt {
                // Replaced, not modified in place: the running database shares the inodes.
                // A copy may vanish while this runs (a newer checkpoint completing removes the
                // older one), so files that are gone are skipped.
                for f in local_ssts(&local2) {
                    let Ok(m) = std::fs::metadata(&f) else {
                        continue;
                    };
                    if std::fs::remove_file(&f).is_ok() {
                        std::fs::write(&f, vec![0x5a; m.len() as usize]).unwrap();
                    }
                }
            }
            hit
        }));
        let (got, restarts) = job.run();
        assert!(restarts >= 1);
        assert_eq!(got, want, "corrupt local copy: {corrupt}");
        let (local_files, remote_files, rejected) = (
            stats.local_files.load(Ordering::SeqCst),
            stats.remote_files.load(Ordering::SeqCst),
            stats.rejected_local.load(Ordering::SeqCst),
        );
        if corrupt {
            assert!(
                rejected > 0 && remote_files > 0,
                "{rejected} rejected, {remote_files} downloaded"
            );
            assert_eq!(local_files, 0);
        } else {
            assert!(local_files > 0, "no local file used");
            assert_eq!(
                remote_files, 0,
                "downloaded although the local copy was there"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn state_ten_times_the_memory_budget_runs_and_recovers() {
    let budget = 8 << 20;
    let (keys, rounds, payload) = (160_000u64, 2u64, 600usize);
    let dir = temp_dir("big");
    let storage_uri = dir.join("ckpt").display().to_string();
    let mut ckpt =
        CheckpointConfig::new(storage_uri.clone()).with_interval(Duration::from_millis(500));
    ckpt.num_retained = 1;
    let env = StreamEnv::new(EnvConfig {
        name: "big".into(),
        parallelism: 2,
        job: JobSettings {
            checkpoint: Some(ckpt),
            restart: Some(RestartStrategy::FixedDelay {
                attempts: 5,
                delay: Duration::ZERO,
            }),
            fault: Some(fail_once(
                |p| matches!(p, FaultPoint::BeforeSnapshot { checkpoint, .. } if *checkpoint >= 4),
            )),
            state_backend: Some(rocks(&dir.join("local"), true, true, budget)),
            ..Default::default()
        },
        ..Default::default()
    });
    let sink = TransactionalCollectSink::new();
    fat_job(
        &env,
        Rounds {
            keys,
            rounds,
            per_poll: 512,
        },
        payload,
        sink.clone(),
    );
    let job = env.start().unwrap();
    job.wait_timeout(Duration::from_secs(300))
        .expect("the job did not finish")
        .unwrap();
    assert!(job.status().num_restarts >= 1, "the fault never fired");
    let mut got = sink.committed();
    got.sort();
    let want: Vec<(u64, u64)> = (0..keys).map(|k| (k, rounds)).collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    // The last checkpoint holds the whole state: at least ten times the budget.
    let storage = LocalFsStorage::new(&storage_uri).unwrap();
    let (_, loc) = storage.list_checkpoints().unwrap().pop().unwrap();
    let size = metadata(&storage, &loc).size();
    assert!(
        size >= 10 * budget as u64,
        "state of {size} bytes, budget {budget}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
