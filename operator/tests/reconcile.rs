//! The controller against the real kube-apiserver and kube-controller-manager that `.ci/run`
//! starts, without running pods (the kubelet stand-in is not started here, so the lifecycle
//! stays at Deploying): the objects, RBAC, status, events, recreation of vanished objects,
//! invalid specs and deletion. `e2e.rs` runs the pods.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use std::time::{Duration, Instant};
use weir_api::{CheckpointingSpec, LifecycleState, StreamJob, StreamJobSpec};
use weir_kube_test::TestNamespace;
use weir_operator::controller;

/// A namespace with the CRD installed and the controller running for it.
async fn setup(prefix: &str) -> TestNamespace {
    let ns = TestNamespace::create(prefix).await;
    weir_kube_test::install_crd(&ns.client(), StreamJob::crd()).await;
    let metrics = std::sync::Arc::new(weir_operator::metrics::Metrics::new().unwrap());
    let ctx = std::sync::Arc::new(controller::Context::new(
        ns.client(),
        Some("test".into()),
        metrics,
    ));
    let name = ns.name().to_string();
    tokio::spawn(async move { controller::run(ctx, Some(&name)).await });
    ns
}

fn orders(name: &str) -> StreamJob {
    let mut spec = StreamJobSpec::for_program("orders");
    spec.job.parallelism = 4;
    spec.task_manager.replicas = 2;
    spec.task_manager.slots = 2;
    spec.checkpointing = Some(CheckpointingSpec::new("s3://checkpoints/orders"));
    StreamJob::new(name, spec)
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true) && o.kind == "StreamJob")
}

#[tokio::test]
async fn a_streamjob_is_deployed_with_owned_objects_status_and_events() {
    let ns = setup("op-create").await;
    let jobs: Api<StreamJob> = ns.api();
    let created = jobs
        .create(&PostParams::default(), &orders("orders"))
        .await
        .unwrap();
    let uid = created.uid().unwrap();

    let dep: Api<Deployment> = ns.api();
    let jm = eventually("the JobManager Deployment", || async {
        dep.get_opt("orders-jobmanager").await.unwrap()
    })
    .await;
    assert!(owned_by(&jm.metadata, &uid));
    let ss: Api<StatefulSet> = ns.api();
    let tm = eventually("the TaskManager StatefulSet", || async {
        ss.get_opt("orders-taskmanager").await.unwrap()
    })
    .await;
    assert!(owned_by(&tm.metadata, &uid));
    assert_eq!(tm.spec.as_ref().unwrap().replicas, Some(2));
    let cm: Api<ConfigMap> = ns.api();
    assert!(owned_by(
        &cm.get("orders-config").await.unwrap().metadata,
        &uid
    ));
    let svc: Api<Service> = ns.api();
    for s in [
        "orders-jobmanager",
        "orders-jobmanager-rpc",
        "orders-taskmanager",
    ] {
        assert!(owned_by(&svc.get(s).await.unwrap().metadata, &uid), "{s}");
    }
    let sa: Api<ServiceAccount> = ns.api();
    assert!(owned_by(
        &sa.get("orders-jobmanager").await.unwrap().metadata,
        &uid
    ));
    let roles: Api<Role> = ns.api();
    let role = roles.get("orders-jobmanager").await.unwrap();
    assert!(owned_by(&role.metadata, &uid));
    let rules = role.rules.unwrap();
    assert!(
        rules
            .iter()
            .all(|r| r.resources.as_deref() == Some(&["leases".to_string()][..]))
    );
    let rbs: Api<RoleBinding> = ns.api();
    assert!(owned_by(
        &rbs.get("orders-jobmanager").await.unwrap().metadata,
        &uid
    ));

    // Status: deploying (no kubelet here, so no JobManager becomes ready), with conditions.
    let status = eventually("a status", || async {
        let j = jobs.get("orders").await.unwrap();
        // The first status says what is being created; once all exists, the wait for a
        // JobManager.
        j.status.filter(|s| {
            s.lifecycle_state == Some(LifecycleState::Deploying)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Progressing" && c.reason == "WaitingForJobManager")
        })
    })
    .await;
    assert_eq!(status.observed_generation, Some(1));
    let cond = |t: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .cloned()
            .unwrap()
    };
    assert_eq!(cond("Ready").status, "False");
    assert_eq!(cond("Progressing").status, "True");
    assert_eq!(cond("Progressing").reason, "WaitingForJobManager");
    assert_eq!(cond("Degraded").status, "False");
    assert!(status.deployed_spec_hash.is_some());
    let job = jobs.get("orders").await.unwrap();
    assert!(job.finalizers().iter().any(|f| f == controller::FINALIZER));

    // An Event for the transition.
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    eventually("an event", || async {
        let list = events.list(&Default::default()).await.unwrap();
        list.items
            .into_iter()
            .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orders"))
    })
    .await;

    // A vanished StatefulSet is recreated.
    ss.delete("orders-taskmanager", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the StatefulSet recreated", || async {
        ss.get_opt("orders-taskmanager")
            .await
            .unwrap()
            .filter(|s| s.metadata.deletion_timestamp.is_none() && s.uid() != tm.uid())
    })
    .await;

    // Deleting the StreamJob releases the finalizer; the garbage collector removes the rest.
    jobs.delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the StreamJob gone", || async {
        jobs.get_opt("orders")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    eventually("the Deployment collected", || async {
        dep.get_opt("orders-jobmanager")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_invalid_spec_is_reported_as_degraded_and_nothing_is_applied() {
    let ns = setup("op-invalid").await;
    let jobs: Api<StreamJob> = ns.api();
    let mut bad = orders("bad");
    bad.spec.checkpointing = Some(CheckpointingSpec::new("hdfs://namenode/checkpoints"));
    jobs.create(&PostParams::default(), &bad).await.unwrap();
    let status = eventually("a Degraded condition", || async {
        let j = jobs.get("bad").await.unwrap();
        j.status.filter(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "True")
        })
    })
    .await;
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(
        degraded.message.contains("spec.checkpointing.storage"),
        "{}",
        degraded.message
    );
    assert!(status.error.unwrap().contains("spec.checkpointing.storage"));
    // Nothing half-applied.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dep: Api<Deployment> = ns.api();
    assert!(dep.get_opt("bad-jobmanager").await.unwrap().is_none());
    let cm: Api<ConfigMap> = ns.api();
    assert!(cm.get_opt("bad-config").await.unwrap().is_none());
    // Fixing the spec deploys it.
    jobs.patch(
        "bad",
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"spec": {"checkpointing": {"storage": "s3://checkpoints/bad"}}}),
        ),
    )
    .await
    .unwrap();
    eventually("the fixed job deployed", || async {
        dep.get_opt("bad-jobmanager").await.unwrap()
    })
    .await;
}
