//! The `orders` example under fault injection: run at parallelism 1 and 4, with aligned and
//! unaligned checkpoints, and failed while processing, between barrier and snapshot, during the
//! asynchronous write, after `_metadata` but before completion is notified, during restore, and
//! repeatedly. The committed output of a two-phase-commit sink must equal the window results
//! computed directly from the generated orders: nothing lost, nothing duplicated.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use weir_core::checkpoint::coordinator::{FaultInjector, FaultPoint, fail_once};
use weir_core::{
    CheckpointConfig, EnvConfig, JobSettings, RestartStrategy, StreamEnv, TransactionalCollectSink,
};
use weir_programs::orders::{OrdersConfig, UserSummary, build_dataflow, expected_summaries};

const COUNT: u64 = 30_000;

fn config() -> OrdersConfig {
    OrdersConfig {
        count: Some(COUNT),
        rate: Some(60_000),
        users: 300,
        seed: 11,
        ..Default::default()
    }
}

fn expected() -> Vec<UserSummary> {
    expected_summaries(&config())
}

fn run(
    parallelism: u32,
    unaligned: bool,
    fault: Option<FaultInjector>,
    fail_processing: bool,
) -> (Vec<UserSummary>, u64) {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "weir-orders-eo-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let mut ckpt =
        CheckpointConfig::new(dir.display().to_string()).with_interval(Duration::from_millis(20));
    ckpt.unaligned = unaligned;
    let env = StreamEnv::new(EnvConfig {
        parallelism,
        channel_capacity: 2,
        job: JobSettings {
            checkpoint: Some(ckpt),
            restart: Some(RestartStrategy::FixedDelay {
                attempts: 20,
                delay: Duration::ZERO,
            }),
            fault,
            ..Default::default()
        },
        ..Default::default()
    });
    let sink = TransactionalCollectSink::new();
    let failed = Arc::new(AtomicBool::new(!fail_processing));
    build_dataflow(&env, &config())
        .map(move |s: UserSummary| {
            if !failed.swap(true, Ordering::SeqCst) {
                panic!("injected failure while processing a window result");
            }
            s
        })
        .sink("txn", sink.clone());
    let job = env.start().unwrap();
    job.wait_timeout(Duration::from_secs(120))
        .expect("orders job did not finish")
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = sink.committed();
    out.sort();
    (out, job.status().num_restarts)
}

fn once(pick: impl Fn(&FaultPoint) -> bool + Send + Sync + 'static) -> Option<FaultInjector> {
    Some(fail_once(pick))
}

fn matrix(parallelism: u32, unaligned: bool) {
    let want = expected();
    let cases: Vec<(&str, Option<FaultInjector>, bool)> = vec![
        ("no failure", None, false),
        ("while processing", None, true),
        (
            "between barrier and snapshot",
            once(
                |p| matches!(p, FaultPoint::BeforeSnapshot { checkpoint, .. } if *checkpoint >= 3),
            ),
            false,
        ),
        (
            "during the asynchronous write",
            once(|p| matches!(p, FaultPoint::AsyncWrite { checkpoint } if *checkpoint >= 3)),
            false,
        ),
        (
            "after metadata, before completion",
            once(|p| matches!(p, FaultPoint::AfterMetadata { checkpoint } if *checkpoint >= 3)),
            false,
        ),
        (
            "during restore",
            once(|p| matches!(p, FaultPoint::Restore { attempt: 1, .. })),
            true,
        ),
        (
            "repeatedly",
            {
                let n = AtomicU64::new(0);
                Some(Arc::new(move |p: &FaultPoint| {
                    matches!(p, FaultPoint::BeforeSnapshot { checkpoint, subtask: 0, .. } if checkpoint % 4 == 0)
                        && n.fetch_add(1, Ordering::SeqCst) < 3
                }) as FaultInjector)
            },
            false,
        ),
    ];
    for (what, fault, fail_processing) in cases {
        let (got, restarts) = run(parallelism, unaligned, fault, fail_processing);
        assert!(
            got == want,
            "p{parallelism} unaligned={unaligned} {what}: {} results, expected {}",
            got.len(),
            want.len()
        );
        assert!(
            restarts >= 1 || what == "no failure",
            "{what}: no failure happened"
        );
    }
}

#[test]
fn orders_exactly_once_p1_aligned() {
    matrix(1, false);
}

#[test]
fn orders_exactly_once_p4_aligned() {
    matrix(4, false);
}

#[test]
fn orders_exactly_once_p1_unaligned() {
    matrix(1, true);
}

#[test]
fn orders_exactly_once_p4_unaligned() {
    matrix(4, true);
}
