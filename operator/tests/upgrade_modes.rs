//! The operator's other upgrade paths and requests, end to end with pods run by the kubelet
//! stand-in of `weir-kube-test` (test-only: the control plane has no nodes) against the real
//! kube-apiserver and kube-controller-manager, checkpoints on the local filesystem:
//!
//! a manual savepoint (`savepointTriggerNonce`), a checkpoint on request
//! (`checkpointTriggerNonce`), periodic savepoints, a parallelism change through a savepoint
//! (keyed window state redistributed over more subtasks), a `last-state` upgrade from the
//! latest checkpoint, a `stateless` upgrade without state, a savepoint upgrade blocked because
//! the deployed version cannot take a savepoint (and carried out from the newest snapshot once a
//! fallback age is allowed), and `deletionPolicy: dispose` deleting checkpoint storage.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{job_id, patch, running, status_until};
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};
use weir_api::rest::JobOverview;
use weir_api::{SavepointTriggerType, StreamJob, StreamJobStatus};
use weir_kube_test::kubelet::Kubelet;

/// `GET /v1/job` of the job's JobManager, through the stand-in's Service proxy.
async fn overview(kubelet: &Kubelet, ns: &str) -> Option<JobOverview> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = kubelet.resolve(&format!("orders-jobmanager.{ns}.svc"))?;
    let mut s = tokio::net::TcpStream::connect((address.as_str(), 8081))
        .await
        .ok()?;
    s.write_all(b"GET /v1/job HTTP/1.1\r\nHost: jm\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw);
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn savepoints_on_request_and_on_schedule_rescaling_last_state_stateless_and_dispose() {
    let (ns, test_dir, kubelet, controller) = common::start("op-modes").await;
    let dir = test_dir.0.clone();
    let checkpoints = dir.join("checkpoints");
    // The source keeps parallelism 1 (its positions belong to its subtasks); the windows after
    // it are rescaled.
    let job = common::orders_job(
        &dir,
        serde_json::json!({
            "job": {"args": {"source-parallelism": "1"}},
            "taskManager": {"slots": 2},
            "deletionPolicy": "dispose",
        }),
    );
    let jobs: Api<StreamJob> = ns.api();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let first = status_until(&jobs, "running", Duration::from_secs(120), |s| {
        running(s) && s.last_completed_checkpoint.is_some()
    })
    .await;

    // A savepoint on request, recorded with its nonce.
    patch(
        &jobs,
        serde_json::json!({"job": {"savepointTriggerNonce": 1}}),
    )
    .await;
    let manual = status_until(&jobs, "a manual savepoint", Duration::from_secs(60), |s| {
        s.last_savepoint_trigger_nonce == Some(1)
            && s.savepoint_history.iter().any(|r| {
                r.trigger_type == SavepointTriggerType::Manual && r.trigger_nonce == Some(1)
            })
    })
    .await;
    assert_eq!(
        job_id(&manual),
        job_id(&first),
        "a savepoint does not stop the job"
    );

    // A checkpoint on request.
    let before = manual.last_completed_checkpoint.as_ref().unwrap().id;
    patch(
        &jobs,
        serde_json::json!({"job": {"checkpointTriggerNonce": 1}}),
    )
    .await;
    status_until(
        &jobs,
        "a checkpoint on request",
        Duration::from_secs(60),
        |s| {
            s.last_checkpoint_trigger_nonce == Some(1)
                && s.last_completed_checkpoint
                    .as_ref()
                    .is_some_and(|c| c.id > before)
        },
    )
    .await;

    // Periodic savepoints, then none.
    patch(&jobs, serde_json::json!({"savepoints": {"interval": "2s"}})).await;
    status_until(
        &jobs,
        "a periodic savepoint",
        Duration::from_secs(60),
        |s| {
            s.savepoint_history
                .iter()
                .any(|r| r.trigger_type == SavepointTriggerType::Periodic)
        },
    )
    .await;
    patch(&jobs, serde_json::json!({"savepoints": {"interval": null}})).await;

    // Parallelism 2 → 4 through a savepoint: the window state is redistributed.
    let before = job_id(&jobs.get("orders").await.unwrap().status.unwrap());
    patch(&jobs, serde_json::json!({"job": {"parallelism": 4}})).await;
    let rescaled = common::upgraded_from_savepoint(
        &jobs,
        "the rescaled job",
        before,
        Duration::from_secs(120),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(o) = overview(&kubelet, ns.name()).await
            && o.job_id == job_id(&rescaled).unwrap()
        {
            assert_eq!(o.parallelism, 4);
            break;
        }
        assert!(Instant::now() < deadline, "no overview of the rescaled job");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // last-state: redeployed at once from the latest checkpoint, no savepoint taken. (The
    // rescaled run completes a checkpoint first, else its savepoint is the newest snapshot.)
    let rescaled = status_until(
        &jobs,
        "a checkpoint of the rescaled job",
        Duration::from_secs(60),
        |s| {
            job_id(s) == job_id(&rescaled)
                && s.last_completed_checkpoint
                    .as_ref()
                    .is_some_and(|c| c.time > rescaled.last_savepoint.as_ref().unwrap().time)
        },
    )
    .await;
    let savepoints = rescaled.savepoint_history.len();
    let before = job_id(&rescaled);
    patch(
        &jobs,
        serde_json::json!({"image": "weir:v2", "job": {"upgradeMode": "last-state"}}),
    )
    .await;
    let last_state = status_until(
        &jobs,
        "the last-state upgrade",
        Duration::from_secs(120),
        |s| {
            running(s)
                && job_id(s) != before
                && s.restored_from
                    .as_deref()
                    .is_some_and(|p| p.contains("chk-"))
        },
    )
    .await;
    assert_eq!(last_state.savepoint_history.len(), savepoints);

    // stateless: a new run without state.
    let before = job_id(&last_state);
    patch(
        &jobs,
        serde_json::json!({"image": "weir:v3", "job": {"upgradeMode": "stateless"}}),
    )
    .await;
    let stateless = status_until(
        &jobs,
        "the stateless upgrade",
        Duration::from_secs(120),
        |s| running(s) && job_id(s) != before && s.last_completed_checkpoint.is_some(),
    )
    .await;
    assert_eq!(stateless.restored_from, None, "{stateless:#?}");

    // A savepoint upgrade to a version that cannot start (rollback off): it stays deployed.
    let upgrades = |s: &StreamJobStatus| {
        s.savepoint_history
            .iter()
            .filter(|r| r.trigger_type == SavepointTriggerType::Upgrade)
            .count()
    };
    let before = upgrades(&stateless);
    patch(
        &jobs,
        serde_json::json!({"job": {"upgradeMode": "savepoint", "args": {"rate": "fast"}},
                           "upgrade": {"rollback": {"enabled": false}}}),
    )
    .await;
    let bad = status_until(
        &jobs,
        "the bad version deployed",
        Duration::from_secs(120),
        |s| {
            upgrades(s) > before
                && s.reconciliation
                    .as_ref()
                    .is_some_and(|r| r.running && r.spec.contains("\"fast\""))
        },
    )
    .await;
    let bad_savepoint = bad.last_savepoint.clone().unwrap().path;
    // The next savepoint upgrade cannot get a savepoint from it, and no fallback age is set:
    // blocked, saying why and what to do; nothing is deployed.
    patch(
        &jobs,
        serde_json::json!({"image": "weir:v4", "job": {"args": {"rate": "300"}}}),
    )
    .await;
    let blocked = status_until(&jobs, "a blocked upgrade", Duration::from_secs(60), |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "UpgradeBlocked")
    })
    .await;
    assert_eq!(
        blocked.lifecycle_state,
        Some(weir_api::LifecycleState::Upgrading)
    );
    assert!(
        blocked
            .error
            .as_deref()
            .is_some_and(|e| e.contains("spec.upgrade.fallbackMaxCheckpointAge")),
        "{blocked:#?}"
    );
    assert_eq!(blocked.deployed_spec_hash, bad.deployed_spec_hash);
    // A fallback age: upgraded from the newest snapshot — the savepoint the bad version was
    // deployed from, newer than any checkpoint.
    patch(
        &jobs,
        serde_json::json!({"upgrade": {"fallbackMaxCheckpointAge": "1h"}}),
    )
    .await;
    status_until(
        &jobs,
        "the fallback upgrade",
        Duration::from_secs(120),
        |s| running(s) && s.restored_from.as_deref() == Some(bad_savepoint.as_str()),
    )
    .await;

    // deletionPolicy dispose: checkpoint storage goes with the StreamJob.
    assert!(checkpoints.exists());
    common::delete_until_gone(&jobs, Duration::from_secs(60)).await;
    assert!(
        !checkpoints.exists(),
        "checkpoint storage was not disposed of"
    );
    controller.abort();
}
