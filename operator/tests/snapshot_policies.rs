//! What the operator does when savepoints fail on a running job, how it keeps savepoints by age,
//! and `deletionPolicy: retain` — end to end with pods run by the kubelet stand-in of
//! `weir-kube-test` (test-only: the control plane has no nodes) against the real kube-apiserver
//! and kube-controller-manager, checkpoints on the local filesystem:
//!
//! savepoints of the running job fail (their directory is a dangling link) → a savepoint upgrade tries
//! `savepointAttempts` times with `SavepointFailed` events, then blocks (`UpgradeBlocked`) with
//! the old job still running, untouched → `fallbackMaxCheckpointAge` set: tried again, then
//! carried out from the latest checkpoint → savepoints work again: manual savepoints, then
//! `savepoints.maxAge` disposes of the old ones (deleted from storage), never the latest →
//! deleted with `deletionPolicy: retain` (no final savepoint, checkpoints kept) → created again
//! on the same storage: resumes from the newest checkpoint and runs to the end.
//!
//! The job is the bounded `orders` program with an exactly-once file sink: its committed output
//! equals the output computed straight from the generator — the checkpoint fallback and the
//! retained state lose and duplicate nothing.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{job_id, patch, running, status_until};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use std::path::Path;
use std::time::{Duration, Instant};
use weir_api::{LifecycleState, SavepointTriggerType, StreamJob, StreamJobStatus};
use weir_kube_test::TestNamespace;

const COUNT: u64 = 60_000;
const USERS: u64 = 50;
const SEED: u64 = 11;

fn job(dir: &Path, rate: &str) -> StreamJob {
    common::orders_job(
        dir,
        serde_json::json!({
            "job": {"args": {"rate": rate, "users": USERS.to_string(),
                             "count": COUNT.to_string(), "seed": SEED.to_string()}},
            "upgrade": {"savepointTimeout": "30s", "savepointAttempts": 2},
        }),
    )
}

/// The messages of the Events with `reason` once `f` holds for them (Events are published
/// after the status is written); fails after 30 s.
async fn events_until(
    ns: &TestNamespace,
    reason: &str,
    f: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let events: Api<Event> = ns.api();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let notes: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect();
        if f(&notes) {
            return notes;
        }
        assert!(Instant::now() < deadline, "{reason} events: {notes:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The snapshot directories under `dir` whose names start with `prefix`.
fn snapshots(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn manual(s: &StreamJobStatus) -> Vec<String> {
    s.savepoint_history
        .iter()
        .filter(|r| r.trigger_type == SavepointTriggerType::Manual)
        .map(|r| r.path.clone())
        .collect()
}

fn blocked(s: &StreamJobStatus) -> bool {
    s.conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "UpgradeBlocked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_savepoints_are_retried_then_fall_back_old_savepoints_expire_and_retain_keeps_state()
 {
    let (ns, test_dir, kubelet, controller) = common::start("op-snapshots").await;
    let dir = test_dir.0.clone();
    let jobs: Api<StreamJob> = ns.api();
    let pods: Api<Pod> = ns.api();

    jobs.create(&PostParams::default(), &job(&dir, "200"))
        .await
        .unwrap();
    let first = status_until(&jobs, "running", Duration::from_secs(120), |s| {
        running(s) && s.last_completed_checkpoint.is_some()
    })
    .await;
    // From now on savepoints cannot be written: their directory is a link to a volume that is
    // gone. (Nothing is listed there either, so a JobManager starting meanwhile finds no
    // savepoints rather than an error.)
    let checkpoints = dir.join("checkpoints");
    let savepoints = checkpoints.join("savepoints");
    std::os::unix::fs::symlink("/nonexistent-weir-savepoint-volume", &savepoints).unwrap();

    // A savepoint upgrade: two attempts fail, no fallback age is set, so it is blocked and
    // says why; the old job keeps running.
    patch(&jobs, serde_json::json!({"image": "weir:v2"})).await;
    let stuck = status_until(
        &jobs,
        "a blocked upgrade",
        Duration::from_secs(120),
        blocked,
    )
    .await;
    let error = stuck.error.clone().unwrap_or_default();
    assert!(
        error.contains("attempt 2 of 2") && error.contains("fallbackMaxCheckpointAge"),
        "{stuck:#?}"
    );
    assert_eq!(stuck.lifecycle_state, Some(LifecycleState::Upgrading));
    assert_eq!(stuck.deployed_spec_hash, first.deployed_spec_hash);
    events_until(&ns, "SavepointFailed", |notes| {
        let has = |a: &str, b: &str| notes.iter().any(|m| m.contains(a) && m.contains(b));
        has("attempt 1 of 2", "trying again") && has("attempt 2 of 2", "giving up")
    })
    .await;
    // Still the same run, still processing: its checkpoints go on.
    let checkpoint = stuck.last_completed_checkpoint.as_ref().unwrap().id;
    let still = status_until(
        &jobs,
        "the old job still running",
        Duration::from_secs(60),
        |s| {
            running(s)
                && s.last_completed_checkpoint
                    .as_ref()
                    .is_some_and(|c| c.id > checkpoint)
        },
    )
    .await;
    assert_eq!(job_id(&still), job_id(&first));
    assert!(still.savepoint_history.is_empty(), "{still:#?}");

    // A fallback age: the spec changed, so the upgrade is tried again; its savepoints fail
    // again and it is carried out from the latest checkpoint, which is young enough.
    patch(
        &jobs,
        serde_json::json!({"upgrade": {"fallbackMaxCheckpointAge": "1h"}}),
    )
    .await;
    let fallen_back = status_until(
        &jobs,
        "the upgrade from the latest checkpoint",
        Duration::from_secs(120),
        |s| {
            running(s)
                && job_id(s) != job_id(&first)
                && s.restored_from
                    .as_deref()
                    .is_some_and(|p| p.contains("/chk-"))
        },
    )
    .await;
    assert!(!blocked(&fallen_back), "{fallen_back:#?}");

    // Savepoints work again: three on request.
    std::fs::remove_file(&savepoints).unwrap();
    for nonce in 1..=3 {
        patch(
            &jobs,
            serde_json::json!({"job": {"savepointTriggerNonce": nonce}}),
        )
        .await;
        status_until(&jobs, "a manual savepoint", Duration::from_secs(60), |s| {
            s.last_savepoint_trigger_nonce == Some(nonce) && manual(s).len() == nonce as usize
        })
        .await;
    }
    let taken = manual(&jobs.get("orders").await.unwrap().status.unwrap());
    assert_eq!(snapshots(&savepoints, "savepoint-").len(), 3);

    // Kept for a second: the older two are disposed of and deleted, the latest stays.
    patch(&jobs, serde_json::json!({"savepoints": {"maxAge": "1s"}})).await;
    let kept = status_until(
        &jobs,
        "old savepoints disposed of",
        Duration::from_secs(60),
        |s| s.savepoint_history.len() == 1,
    )
    .await;
    assert_eq!(manual(&kept), vec![taken[2].clone()]);
    let on_disk = snapshots(&savepoints, "savepoint-");
    assert_eq!(on_disk.len(), 1, "{on_disk:?}");
    assert!(taken[2].ends_with(&on_disk[0]), "{taken:?} {on_disk:?}");
    events_until(&ns, "SavepointDisposed", |notes| notes.len() == 2).await;

    // deletionPolicy retain: deleted without a final savepoint, checkpoints kept.
    patch(&jobs, serde_json::json!({"deletionPolicy": "retain"})).await;
    common::delete_until_gone(&jobs, Duration::from_secs(60)).await;
    common::pods_gone(
        &pods,
        "pods outlived their StreamJob",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(snapshots(&savepoints, "savepoint-"), on_disk);
    assert!(!snapshots(&checkpoints, "chk-").is_empty());

    // Created again on the same storage, as fast as it goes: it resumes from the newest
    // checkpoint (newer than the kept savepoint) and runs to the end of its input.
    jobs.create(&PostParams::default(), &job(&dir, "0"))
        .await
        .unwrap();
    let again = status_until(&jobs, "the re-created job", Duration::from_secs(120), |s| {
        s.restored_from.is_some()
    })
    .await;
    assert!(
        again.restored_from.as_deref().unwrap().contains("/chk-"),
        "{again:#?}"
    );
    common::finished(&jobs, Duration::from_secs(240)).await;

    // Nothing lost, nothing duplicated.
    let out = common::committed_summaries(&dir.join("out"));
    let want = common::orders_oracle(COUNT, USERS, SEED);
    assert_eq!(out.len(), want.len());
    assert_eq!(out, want);
    controller.abort();
    drop(kubelet);
}
