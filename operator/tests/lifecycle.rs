//! A StreamJob's whole life under the operator, end to end, against the real kube-apiserver and
//! kube-controller-manager and the real S3 server `.ci/run` starts, with pods run by the
//! kubelet stand-in of `weir-kube-test` (test-only: the control plane has no nodes):
//!
//! applied → Running and Stable → a TaskManager pod killed and the job recovered from its S3
//! checkpoint → image and args changed: stopped with a savepoint, upgraded, restored from it →
//! a bad upgrade (its program cannot start) rolled back to the last stable spec from the
//! savepoint taken before it → suspended with a savepoint, no pods → resumed from it → old
//! savepoints disposed of (deleted from S3 by the operator) → deleted with a final savepoint →
//! created again on the same checkpoint storage, resuming from that savepoint → run to the end.
//!
//! The job is the bounded `orders` program with an exactly-once file sink: its committed output
//! after all of that equals the output computed straight from the generator — nothing lost,
//! nothing duplicated across every upgrade, rollback, suspension and deletion.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{TestBucket, job_id, manifest, patch, running, status_until};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use std::path::Path;
use std::time::{Duration, Instant};
use weir_api::{LifecycleState, SavepointTriggerType, StreamJob, StreamJobStatus};
use weir_core::checkpoint::storage::CheckpointStorage;
use weir_s3::S3Storage;

const COUNT: u64 = 60_000;
const USERS: u64 = 50;
const SEED: u64 = 7;

/// Runs `f` off the async runtime (the S3 client blocks on a runtime of its own).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Whether a snapshot's `_metadata` is in the bucket.
async fn exists(bucket: &str, location: &str) -> bool {
    let (bucket, location) = (bucket.to_string(), location.to_string());
    blocking(move || {
        let s = S3Storage::open(&format!("s3://{bucket}"), common::s3_settings()).unwrap();
        s.read_file(&location, "_metadata").is_ok()
    })
    .await
}

fn spec(dir: &Path, bucket: &TestBucket, rate: &str, image: &str) -> serde_json::Value {
    serde_json::json!({
        "image": image,
        "job": {"program": "orders", "parallelism": 2,
                "args": {"rate": rate, "users": USERS.to_string(), "count": COUNT.to_string(),
                         "seed": SEED.to_string(),
                         "sink": format!("exactly-once-file:{}", dir.join("out").display())}},
        "jobManager": {"heartbeat": {"interval": "200ms", "timeout": "3s"}},
        "taskManager": {"replicas": 2, "slots": 1},
        "checkpointing": bucket.checkpointing("500ms"),
        "restartStrategy": {"type": "fixedDelay", "attempts": 1000, "delay": "300ms"},
        "upgrade": {"savepointTimeout": "60s",
                    "rollback": {"readinessTimeout": "45s", "stableCheckpoints": 2}},
        "savepoints": {"maxCount": 2},
    })
}

fn lifecycle(s: &StreamJobStatus) -> Option<LifecycleState> {
    s.lifecycle_state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamjob_is_upgraded_rolled_back_suspended_resumed_and_deleted_without_losing_a_record()
{
    let (ns, test_dir, kubelet, controller) = common::start("op-lifecycle").await;
    let dir = test_dir.0.clone();
    let test_bucket = TestBucket::create("weir-lifecycle").await;
    let bucket = test_bucket.0.clone();
    common::s3_secret(&ns).await;
    let jobs: Api<StreamJob> = ns.api();
    let pods: Api<Pod> = ns.api();
    let v1 = spec(&dir, &test_bucket, "150", "weir:v1");
    jobs.create(&PostParams::default(), &manifest(v1.clone()))
        .await
        .unwrap();

    // Running, then Stable: two checkpoints without a restart.
    let stable = status_until(&jobs, "Stable", Duration::from_secs(120), |s| {
        lifecycle(s) == Some(LifecycleState::Stable)
    })
    .await;
    assert!(
        stable
            .last_completed_checkpoint
            .as_ref()
            .is_some_and(|c| c.path.starts_with(&format!("s3://{bucket}/orders/chk-"))),
        "{stable:#?}"
    );
    let v1_hash = stable.last_stable_spec_hash.clone().unwrap();

    // A TaskManager pod is killed: the job restarts from its latest S3 checkpoint.
    let before = stable.last_completed_checkpoint.as_ref().unwrap().id;
    common::kill_and_recover(&jobs, &pods, "orders-taskmanager-0", before).await;

    // Upgrade: image and args change. The job stops with a savepoint and the new spec
    // restores it.
    let old_job = job_id(&jobs.get("orders").await.unwrap().status.unwrap());
    patch(
        &jobs,
        serde_json::json!({"image": "weir:v2", "job": {"args": {"rate": "200"}}}),
    )
    .await;
    let upgraded =
        common::upgraded_from_savepoint(&jobs, "the upgrade", old_job, Duration::from_secs(180))
            .await;
    let upgrade_savepoint = upgraded.last_savepoint.clone().unwrap().path;
    assert!(
        upgrade_savepoint.starts_with(&format!("s3://{bucket}/orders/savepoints/savepoint-")),
        "{upgrade_savepoint}"
    );
    let v2 = status_until(&jobs, "the upgrade Stable", Duration::from_secs(120), |s| {
        lifecycle(s) == Some(LifecycleState::Stable)
    })
    .await;
    let v2_hash = v2.last_stable_spec_hash.clone().unwrap();
    assert_ne!(v2_hash, v1_hash);

    // A bad upgrade: its program cannot start. It is rolled back to the last stable spec, from
    // the savepoint taken before it.
    let v2_job = job_id(&v2);
    patch(
        &jobs,
        serde_json::json!({"job": {"args": {"rate": "fast"}}}),
    )
    .await;
    let rolled_back = status_until(&jobs, "the rollback", Duration::from_secs(240), |s| {
        lifecycle(s) == Some(LifecycleState::RolledBack) && running(s) && job_id(s) != v2_job
    })
    .await;
    let bad_upgrade_savepoint = rolled_back
        .savepoint_history
        .iter()
        .rev()
        .find(|s| s.trigger_type == SavepointTriggerType::Upgrade)
        .unwrap()
        .path
        .clone();
    assert_ne!(bad_upgrade_savepoint, upgrade_savepoint);
    assert_eq!(
        rolled_back.restored_from.as_deref(),
        Some(bad_upgrade_savepoint.as_str()),
        "{rolled_back:#?}"
    );
    assert_eq!(
        rolled_back.deployed_spec_hash.as_deref(),
        Some(v2_hash.as_str())
    );
    let degraded = rolled_back
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "RolledBack")
    );
    // The spec is put back: nothing to deploy, the rolled-back run is stable again.
    patch(&jobs, serde_json::json!({"job": {"args": {"rate": "200"}}})).await;
    status_until(
        &jobs,
        "Stable after the rollback",
        Duration::from_secs(120),
        |s| lifecycle(s) == Some(LifecycleState::Stable),
    )
    .await;

    // Suspended: stopped with a savepoint, no pods.
    patch(&jobs, serde_json::json!({"job": {"state": "suspended"}})).await;
    let suspended = status_until(&jobs, "Suspended", Duration::from_secs(120), |s| {
        lifecycle(s) == Some(LifecycleState::Suspended)
    })
    .await;
    let suspend_savepoint = suspended.last_savepoint.clone().unwrap();
    assert_eq!(
        suspend_savepoint.trigger_type,
        SavepointTriggerType::Suspend
    );
    common::pods_gone(
        &pods,
        "pods still run while suspended",
        Duration::from_secs(60),
    )
    .await;

    // Resumed from the suspension's savepoint.
    patch(&jobs, serde_json::json!({"job": {"state": "running"}})).await;
    let resumed = status_until(&jobs, "the resumed job", Duration::from_secs(120), |s| {
        running(s) && s.restored_from.as_deref() == Some(suspend_savepoint.path.as_str())
    })
    .await;

    // Retention (maxCount 2): the first upgrade's savepoint left the history and the bucket;
    // the one the deployment restores stays.
    assert!(
        resumed.savepoint_history.len() <= 2,
        "{:#?}",
        resumed.savepoint_history
    );
    assert!(
        !resumed
            .savepoint_history
            .iter()
            .any(|s| s.path == upgrade_savepoint)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while exists(&bucket, &upgrade_savepoint).await {
        assert!(
            Instant::now() < deadline,
            "{upgrade_savepoint} still in the bucket"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(exists(&bucket, &suspend_savepoint.path).await);

    // Deleted with a final savepoint (deletionPolicy savepoint, the default).
    let before_delete = status_until(&jobs, "running again", Duration::from_secs(60), |s| {
        running(s) && s.last_completed_checkpoint.is_some()
    })
    .await;
    common::delete_until_gone(&jobs, Duration::from_secs(120)).await;
    common::pods_gone(
        &pods,
        "pods outlived their StreamJob",
        Duration::from_secs(60),
    )
    .await;
    assert!(before_delete.lifecycle_state.is_some());

    // Created again on the same checkpoint storage, as fast as it goes: it resumes from the
    // final savepoint and runs to the end of its input.
    jobs.create(
        &PostParams::default(),
        &manifest(spec(&dir, &test_bucket, "0", "weir:v2")),
    )
    .await
    .unwrap();
    let again = status_until(&jobs, "the re-created job", Duration::from_secs(120), |s| {
        s.restored_from
            .as_deref()
            .is_some_and(|p| p.contains("/savepoints/savepoint-"))
    })
    .await;
    let final_savepoint = again.restored_from.clone().unwrap();
    assert_ne!(final_savepoint, suspend_savepoint.path);
    common::finished(&jobs, Duration::from_secs(240)).await;

    // Nothing lost, nothing duplicated.
    let out = common::committed_summaries(&dir.join("out"));
    let want = common::orders_oracle(COUNT, USERS, SEED);
    assert_eq!(
        out.len(),
        want.len(),
        "summaries: got {}, want {}",
        out.len(),
        want.len()
    );
    assert_eq!(out, want);
    controller.abort();
    drop(kubelet);
}
