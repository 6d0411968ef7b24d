//! The operator with pods that really run: the kubelet stand-in of `weir-kube-test` runs each
//! pod as a local `weir` process on its own loopback address, with a proxy per Service (the
//! test control plane has no nodes, no kube-proxy and no cluster DNS — the only parts played
//! here, see `weir_kube_test::kubelet`). Against the real kube-apiserver and
//! kube-controller-manager (which create the pods of the Deployment and the StatefulSet): a
//! StreamJob reaches Running with completed checkpoints and `Ready`; its TaskManager pod
//! vanishes and the job recovers; its JobManager pod vanishes and the new one restores from the
//! latest checkpoint in checkpoint storage.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{running, start_controller, start_controller_with, status_until, weir_binary};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weir_api::{StreamJob, StreamJobStatus};
use weir_kube_test::TestNamespace;
use weir_kube_test::kubelet::Kubelet;

struct Setup {
    ns: TestNamespace,
    dir: PathBuf,
    kubelet: Kubelet,
    jobs: Api<StreamJob>,
    controller: tokio::task::JoinHandle<()>,
}

/// A namespace with the CRD, the kubelet stand-in and the controller, and the StreamJob
/// `orders` created with `restart_strategy`.
async fn setup(prefix: &str, restart_strategy: serde_json::Value) -> Setup {
    let metrics = Arc::new(weir_operator::metrics::Metrics::new().unwrap());
    setup_with(prefix, restart_strategy, serde_json::json!({}), metrics).await
}

/// [`setup`] with `patch` merged into the spec and the controller counting into `metrics`.
async fn setup_with(
    prefix: &str,
    restart_strategy: serde_json::Value,
    patch: serde_json::Value,
    metrics: Arc<weir_operator::metrics::Metrics>,
) -> Setup {
    let ns = TestNamespace::create(prefix).await;
    weir_kube_test::install_crd(&ns.client(), StreamJob::crd()).await;
    let dir = std::env::temp_dir().join(format!("weir-op-e2e-{}", ns.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kubelet = Kubelet::start(ns.client(), ns.name(), weir_binary(), dir.join("pods")).await;
    let controller = start_controller_with(&ns, &kubelet, metrics);
    let mut spec = serde_json::json!({
        "job": {"program": "orders", "parallelism": 2,
                "args": {"rate": "500", "users": "50",
                         "sink": format!("exactly-once-file:{}", dir.join("out").display())}},
        "jobManager": {"heartbeat": {"interval": "200ms", "timeout": "3s"}},
        "taskManager": {"replicas": 2, "slots": 1},
        "checkpointing": {"interval": "500ms",
                          "storage": format!("file://{}", dir.join("checkpoints").display())},
        "restartStrategy": restart_strategy,
    });
    weir_operator::resources::merge(&mut spec, &patch);
    let job = common::manifest(spec);
    let jobs: Api<StreamJob> = ns.api();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    Setup {
        ns,
        dir,
        kubelet,
        jobs,
        controller,
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.controller.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn running_with_checkpoint(jobs: &Api<StreamJob>) -> StreamJobStatus {
    status_until(
        jobs,
        "the job running with a checkpoint",
        Duration::from_secs(120),
        |s| {
            running(s)
                && s.last_completed_checkpoint.is_some()
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        },
    )
    .await
}

async fn jobmanager_pod(pods: &Api<Pod>) -> Pod {
    pods.list(&ListParams::default().labels("app.kubernetes.io/component=jobmanager"))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_runs_a_streamjob_and_recovers_its_pods() {
    let s = setup(
        "op-e2e",
        serde_json::json!({"type": "fixedDelay", "attempts": 100, "delay": "200ms"}),
    )
    .await;
    let jobs = &s.jobs;
    let first = running_with_checkpoint(jobs).await;
    let first_checkpoint = first.last_completed_checkpoint.unwrap().id;

    // A TaskManager pod vanishes: the StatefulSet replaces it and the job restarts from its
    // latest checkpoint.
    let pods: Api<Pod> = s.ns.api();
    let after_tm =
        common::kill_and_recover(jobs, &pods, "orders-taskmanager-0", first_checkpoint).await;

    // The JobManager pod vanishes: the Deployment replaces it, and the new JobManager restores
    // the latest checkpoint from checkpoint storage.
    let jm = jobmanager_pod(&pods).await;
    let job_id = after_tm.job_status.as_ref().and_then(|j| j.job_id.clone());
    pods.delete(&jm.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let after_jm = status_until(
        jobs,
        "recovery from the JobManager's loss",
        Duration::from_secs(120),
        |s| {
            running(s)
                && s.job_status.as_ref().and_then(|j| j.job_id.clone()) != job_id
                && s.restored_from.is_some()
        },
    )
    .await;
    assert!(
        after_jm.restored_from.as_deref().unwrap().contains("chk-"),
        "{after_jm:#?}"
    );
}

/// With no restart strategy, losing a TaskManager fails the job; its JobManager process ends,
/// its container is restarted, and the new process restores the latest checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_failed_beyond_its_restart_strategy_is_recovered_from_its_latest_checkpoint() {
    let s = setup("op-e2e-failed", serde_json::json!({"type": "none"})).await;
    let jobs = &s.jobs;
    let first = running_with_checkpoint(jobs).await;
    let job_id = first.job_status.as_ref().and_then(|j| j.job_id.clone());
    let pods: Api<Pod> = s.ns.api();
    let jm_before = jobmanager_pod(&pods).await;
    pods.delete("orders-taskmanager-1", &DeleteParams::default())
        .await
        .unwrap();
    let after = status_until(
        jobs,
        "recovery of the failed job",
        Duration::from_secs(120),
        |s| {
            running(s)
                && s.job_status.as_ref().and_then(|j| j.job_id.clone()) != job_id
                && s.restored_from
                    .as_deref()
                    .is_some_and(|p| p.contains("chk-"))
        },
    )
    .await;
    // The same JobManager pod, its container restarted: the failure ended the process.
    let jm_after = jobmanager_pod(&pods).await;
    assert_eq!(jm_after.uid(), jm_before.uid());
    let restarts = jm_after
        .status
        .and_then(|st| st.container_statuses)
        .and_then(|c| c.first().map(|c| c.restart_count))
        .unwrap_or(0);
    assert!(restarts >= 1, "{after:#?}");
    let _ = &s.kubelet;
}

/// A restarted operator takes over without redoing anything: no object is re-created, no pod
/// replaced, the job not restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_operator_does_not_repeat_actions() {
    let mut s = setup(
        "op-e2e-restart",
        serde_json::json!({"type": "fixedDelay", "attempts": 100, "delay": "200ms"}),
    )
    .await;
    let before = running_with_checkpoint(&s.jobs).await;
    let pods: Api<Pod> = s.ns.api();
    let uids = |list: Vec<Pod>| {
        let mut v: Vec<String> = list.into_iter().filter_map(|p| p.uid()).collect();
        v.sort();
        v
    };
    let pods_before = uids(pods.list(&ListParams::default()).await.unwrap().items);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = s.ns.api();
    let generation_before = deployments
        .get("orders-jobmanager")
        .await
        .unwrap()
        .metadata
        .generation;
    s.controller.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.controller = start_controller(&s.ns, &s.kubelet);
    // Let the new operator reconcile a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = s.jobs.get("orders").await.unwrap().status.unwrap();
    assert!(running(&after), "{after:#?}");
    assert_eq!(
        after.job_status.as_ref().and_then(|j| j.job_id.clone()),
        before.job_status.as_ref().and_then(|j| j.job_id.clone()),
        "the job was not restarted"
    );
    assert_eq!(after.restart_count, 0);
    assert_eq!(
        uids(pods.list(&ListParams::default()).await.unwrap().items),
        pods_before,
        "no pod was replaced"
    );
    assert_eq!(
        deployments
            .get("orders-jobmanager")
            .await
            .unwrap()
            .metadata
            .generation,
        generation_before,
        "the Deployment was not changed"
    );
}

/// Reconciliations of StreamJobs so far, from the operator's metrics.
fn reconciliations(metrics: &weir_operator::metrics::Metrics) -> u64 {
    metrics
        .render()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("weir_operator_reconciliations_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A job whose state does not change is looked at on the resync interval, not continuously:
/// a status written on every reconciliation (a refresh time) would wake the controller again
/// at once, many times a second, each time calling the JobManager and the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchanged_job_is_not_reconciled_over_and_over() {
    let metrics = Arc::new(weir_operator::metrics::Metrics::new().unwrap());
    let s = setup_with(
        "op-e2e-quiet",
        serde_json::json!({"type": "fixedDelay", "attempts": 100, "delay": "200ms"}),
        // No checkpoint within the test: nothing in the status has a reason to change.
        serde_json::json!({"checkpointing": {"interval": "1h"}}),
        metrics.clone(),
    )
    .await;
    status_until(
        &s.jobs,
        "running and ready",
        Duration::from_secs(120),
        |st| {
            running(st)
                && st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        },
    )
    .await;
    // Whatever the start still had to settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = reconciliations(&metrics);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = reconciliations(&metrics) - before;
    // One resync (every 10 s) at most, and a little slack for late watch events.
    assert!(
        during <= 3,
        "{during} reconciliations in 6 s of an unchanged job"
    );
}

/// `spec.job.state: suspended` stops the job with a savepoint, removes the pods and keeps
/// everything else; `running` brings them back, and the job resumes from that savepoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspended_job_runs_no_pods_and_resumes_from_its_savepoint() {
    let s = setup(
        "op-e2e-suspend",
        serde_json::json!({"type": "fixedDelay", "attempts": 100, "delay": "200ms"}),
    )
    .await;
    let first = running_with_checkpoint(&s.jobs).await;
    let job_id = first.job_status.as_ref().and_then(|j| j.job_id.clone());
    let state =
        |v: &str| kube::api::Patch::Merge(serde_json::json!({"spec": {"job": {"state": v}}}));
    s.jobs
        .patch(
            "orders",
            &kube::api::PatchParams::default(),
            &state("suspended"),
        )
        .await
        .unwrap();
    let suspended = status_until(&s.jobs, "Suspended", Duration::from_secs(60), |st| {
        st.lifecycle_state == Some(weir_api::LifecycleState::Suspended)
    })
    .await;
    let savepoint = suspended.last_savepoint.clone().unwrap();
    assert_eq!(
        savepoint.trigger_type,
        weir_api::SavepointTriggerType::Suspend
    );
    let pods: Api<Pod> = s.ns.api();
    common::pods_gone(
        &pods,
        "pods still there while suspended",
        Duration::from_secs(60),
    )
    .await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = s.ns.api();
    assert!(cms.get_opt("orders-config").await.unwrap().is_some());
    s.jobs
        .patch(
            "orders",
            &kube::api::PatchParams::default(),
            &state("running"),
        )
        .await
        .unwrap();
    let resumed = status_until(&s.jobs, "the resumed job", Duration::from_secs(120), |st| {
        running(st)
            && st.job_status.as_ref().and_then(|j| j.job_id.clone()) != job_id
            && st.restored_from.as_deref() == Some(savepoint.path.as_str())
    })
    .await;
    assert_ne!(
        resumed.lifecycle_state,
        Some(weir_api::LifecycleState::Suspended)
    );
    let _ = &s.kubelet;
}
