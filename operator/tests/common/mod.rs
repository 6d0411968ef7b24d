//! What the operator's end-to-end tests share: the `weir` binary the kubelet stand-in runs, the
//! controller started in-process, and waiting for a status.

#![allow(dead_code, clippy::unwrap_used)] // each test crate uses a part; tests fail loudly

use kube::api::Api;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_api::{JobState, StreamJob, StreamJobStatus};
use weir_kube_test::TestNamespace;
use weir_kube_test::kubelet::Kubelet;
use weir_operator::controller;

/// The `weir` binary next to the test binary.
pub fn weir_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("weir");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// The StreamJob `orders`' status once `f` holds; fails after `timeout`.
pub async fn status_until(
    jobs: &Api<StreamJob>,
    what: &str,
    timeout: Duration,
    f: impl Fn(&StreamJobStatus) -> bool,
) -> StreamJobStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = jobs.get("orders").await.unwrap().status.unwrap_or_default();
        if f(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The job runs.
pub fn running(s: &StreamJobStatus) -> bool {
    s.job_status.as_ref().and_then(|j| j.state) == Some(JobState::Running)
}

/// The controller for `ns`, reaching the JobManagers through the stand-in's Service proxies.
pub fn start_controller(ns: &TestNamespace, kubelet: &Kubelet) -> tokio::task::JoinHandle<()> {
    // `RUST_LOG=weir_operator=debug` shows every decision.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let metrics = Arc::new(weir_operator::metrics::Metrics::new().unwrap());
    let mut ctx = controller::Context::new(ns.client(), Some("e2e".into()), metrics);
    ctx.resolve = Some(Arc::new(kubelet.resolver()));
    let (ctx, name) = (Arc::new(ctx), ns.name().to_string());
    tokio::spawn(async move { controller::run(ctx, Some(&name)).await })
}

/// The StreamJob `orders` running the `orders` program into an exactly-once file sink under
/// `dir`, checkpointing to `dir/checkpoints` every 500 ms; `patch` is merged into its spec.
pub fn orders_job(dir: &std::path::Path, patch: serde_json::Value) -> StreamJob {
    let mut spec = serde_json::json!({
        "image": "weir:v1",
        "job": {"program": "orders", "parallelism": 2,
                "args": {"rate": "300", "users": "50",
                         "sink": format!("exactly-once-file:{}", dir.join("out").display())}},
        "jobManager": {"heartbeat": {"interval": "200ms", "timeout": "3s"}},
        "taskManager": {"replicas": 2, "slots": 1},
        "checkpointing": {"interval": "500ms",
                          "storage": format!("file://{}", dir.join("checkpoints").display())},
        "restartStrategy": {"type": "fixedDelay", "attempts": 100, "delay": "200ms"},
    });
    weir_operator::resources::merge(&mut spec, &patch);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "StreamJob",
        "metadata": {"name": "orders"},
        "spec": spec,
    }))
    .unwrap()
}

/// Deletes the StreamJob `orders` and waits until it is gone (its finalizer released).
pub async fn delete_until_gone(jobs: &Api<StreamJob>, timeout: Duration) {
    jobs.delete("orders", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + timeout;
    while jobs.get_opt("orders").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the StreamJob was not deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
