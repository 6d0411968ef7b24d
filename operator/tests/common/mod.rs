//! What the operator's end-to-end tests share: the `weir` binary the kubelet stand-in runs, the
//! controller started in-process, waiting for a status or for pods to go, a pod killed and the
//! job's recovery, and the `orders` program's oracle and committed output.

#![allow(dead_code, clippy::unwrap_used)] // each test crate uses a part; tests fail loudly

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_api::{JobState, StreamJob, StreamJobStatus};
use weir_kube_test::TestNamespace;
use weir_kube_test::kubelet::Kubelet;
use weir_operator::controller;
use weir_programs::orders::{OrdersConfig, UserSummary, expected_summaries};

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
    let metrics = Arc::new(weir_operator::metrics::Metrics::new().unwrap());
    start_controller_with(ns, kubelet, metrics)
}

/// [`start_controller`] counting into `metrics`.
pub fn start_controller_with(
    ns: &TestNamespace,
    kubelet: &Kubelet,
    metrics: Arc<weir_operator::metrics::Metrics>,
) -> tokio::task::JoinHandle<()> {
    // `RUST_LOG=weir_operator=debug` shows every decision.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
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
    manifest(spec)
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

/// The StreamJob `orders` with `spec`.
pub fn manifest(spec: serde_json::Value) -> StreamJob {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "StreamJob",
        "metadata": {"name": "orders"},
        "spec": spec,
    }))
    .unwrap()
}

/// Merges `spec` into the StreamJob `orders`' spec.
pub async fn patch(jobs: &Api<StreamJob>, spec: serde_json::Value) {
    jobs.patch(
        "orders",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "spec": spec })),
    )
    .await
    .unwrap();
}

/// The id of the run the status reports.
pub fn job_id(s: &StreamJobStatus) -> Option<String> {
    s.job_status.as_ref().and_then(|j| j.job_id.clone())
}

/// A namespace with the StreamJob CRD, the test's working directory (`weir-<prefix>-…`), the
/// kubelet stand-in running pods from it, and the controller.
pub async fn start(prefix: &str) -> (TestNamespace, TestDir, Kubelet, tokio::task::JoinHandle<()>) {
    use kube::CustomResourceExt;
    let ns = TestNamespace::create(prefix).await;
    weir_kube_test::install_crd(&ns.client(), StreamJob::crd()).await;
    let test_dir = TestDir::new(&format!("weir-{prefix}"), &ns);
    let kubelet = Kubelet::start(
        ns.client(),
        ns.name(),
        weir_binary(),
        test_dir.0.join("pods"),
    )
    .await;
    let controller = start_controller(&ns, &kubelet);
    (ns, test_dir, kubelet, controller)
}

/// Waits until no pod of the StreamJob `orders` is left; fails with `what` after `timeout`.
pub async fn pods_gone(pods: &Api<Pod>, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=orders"))
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes pod `pod` and waits until the job has restarted and completed a checkpoint after
/// checkpoint `after`; the status then.
pub async fn kill_and_recover(
    jobs: &Api<StreamJob>,
    pods: &Api<Pod>,
    pod: &str,
    after: u64,
) -> StreamJobStatus {
    pods.delete(pod, &DeleteParams::default()).await.unwrap();
    status_until(jobs, "recovery", Duration::from_secs(120), |s| {
        running(s)
            && s.restart_count >= 1
            && s.last_completed_checkpoint
                .as_ref()
                .is_some_and(|c| c.id > after)
    })
    .await
}

/// Waits until a run other than `old` runs, restored from the upgrade savepoint the status
/// records last (`what` names it in a failure); the status then.
pub async fn upgraded_from_savepoint(
    jobs: &Api<StreamJob>,
    what: &str,
    old: Option<String>,
    timeout: Duration,
) -> StreamJobStatus {
    status_until(jobs, what, timeout, |s| {
        running(s)
            && job_id(s) != old
            && s.last_savepoint
                .as_ref()
                .is_some_and(|sp| sp.trigger_type == weir_api::SavepointTriggerType::Upgrade)
            && s.restored_from == s.last_savepoint.as_ref().map(|sp| sp.path.clone())
    })
    .await
}

/// Waits until the job has finished (a bounded input read to its end).
pub async fn finished(jobs: &Api<StreamJob>, timeout: Duration) -> StreamJobStatus {
    status_until(jobs, "the end of the input", timeout, |s| {
        s.job_status.as_ref().and_then(|j| j.state) == Some(JobState::Finished)
    })
    .await
}

/// The summaries the bounded `orders` program computes from its generator: the oracle an
/// exactly-once output is compared with.
pub fn orders_oracle(count: u64, users: u64, seed: u64) -> Vec<UserSummary> {
    expected_summaries(&OrdersConfig {
        count: Some(count),
        users,
        seed,
        ..OrdersConfig::default()
    })
}

/// The summaries committed by the exactly-once file sink under `dir`, sorted.
pub fn committed_summaries(dir: &std::path::Path) -> Vec<UserSummary> {
    let mut out: Vec<UserSummary> = weir_connectors::read_committed(dir)
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    out.sort();
    out
}

/// A test's working directory (pod files and logs, checkpoints, output), named after its
/// namespace; removed afterwards, except for a failed test, whose pod logs it points to.
pub struct TestDir(pub PathBuf);

impl TestDir {
    /// A fresh directory for the test in `ns`.
    pub fn new(prefix: &str, ns: &TestNamespace) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", ns.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pod logs in {}", self.0.join("pods").display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The S3 server `.ci/s3.sh` starts.
pub fn s3_endpoint() -> String {
    std::env::var("WEIR_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:28333".into())
}

/// Settings for the test's own S3 client.
pub fn s3_settings() -> weir_s3::S3Settings {
    weir_s3::S3Settings {
        endpoint: Some(s3_endpoint()),
        region: Some("us-east-1".into()),
        ..Default::default()
    }
}

/// The key pair of the S3 server, from the environment `.ci/s3.sh env` sets.
fn s3_credentials() -> (String, String) {
    match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(a), Ok(s)) => (a, s),
        _ => panic!(
            "S3 credentials missing: start the server with `bash .ci/s3.sh start` and export \
             its settings with `eval \"$(bash .ci/s3.sh env)\"`"
        ),
    }
}

/// A bucket of the test's own, with the StreamJob's checkpoints under `orders/`; emptied and
/// deleted afterwards.
pub struct TestBucket(pub String);

impl TestBucket {
    /// Creates the bucket `<base>-<pid>`.
    pub async fn create(base: &str) -> Self {
        s3_credentials();
        let bucket = format!("{base}-{}", std::process::id());
        let name = bucket.clone();
        tokio::task::spawn_blocking(move || {
            let admin = weir_s3::S3Storage::open(&format!("s3://{name}"), s3_settings()).unwrap();
            if let Err(e) = admin.create_bucket(&name) {
                panic!("{e}\nstart the S3 server with `bash .ci/s3.sh start`");
            }
        })
        .await
        .unwrap();
        Self(bucket)
    }

    /// The StreamJob's `spec.checkpointing` in this bucket, every `interval`, with the
    /// credentials of the Secret [`s3_secret`] creates.
    pub fn checkpointing(&self, interval: &str) -> serde_json::Value {
        serde_json::json!({
            "interval": interval,
            "storage": format!("s3://{}/orders", self.0),
            "s3": {"endpoint": s3_endpoint(), "region": "us-east-1", "pathStyle": true,
                   "credentialsSecret": {"name": "orders-s3"}},
        })
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let bucket = self.0.clone();
        // The S3 client blocks on a runtime of its own: not on the test's.
        let _ = std::thread::spawn(move || {
            use weir_core::checkpoint::storage::CheckpointStorage;
            if let Ok(s) = weir_s3::S3Storage::open(&format!("s3://{bucket}"), s3_settings()) {
                let _ = s.discard(&format!("s3://{bucket}/orders"));
                let _ = s.delete_bucket(&bucket);
            }
        })
        .join();
    }
}

/// The Secret `orders-s3` in `ns` with the S3 server's key pair: the pods and the operator read
/// the credentials from it.
pub async fn s3_secret(ns: &TestNamespace) {
    let (access_key, secret_key) = s3_credentials();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = ns.api();
    secrets
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orders-s3"},
                "stringData": {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}
