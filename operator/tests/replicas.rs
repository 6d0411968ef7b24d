//! Two `weir-operator` processes with leader election, against the real kube-apiserver: only
//! the leader reconciles; when it is killed, the other takes over within the lease duration and
//! carries on. Also the processes' `/metrics`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use weir_api::{CheckpointingSpec, StreamJob, StreamJobSpec};
use weir_kube_test::TestNamespace;

struct Operator {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    fn start(ns: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir-operator"))
            .env("KUBECONFIG", weir_kube_test::kubeconfig_path())
            .env("WATCH_NAMESPACES", ns)
            .env("POD_NAMESPACE", ns)
            .env("WEIR_OPERATOR_LEADER_ELECTION", "true")
            .env("WEIR_OPERATOR_LEASE_DURATION", "2")
            .env("WEIR_OPERATOR_RENEW_DEADLINE", "1.5")
            .env("WEIR_OPERATOR_RETRY_PERIOD", "0.25")
            .env("METRICS_ADDRESS", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `marker`; the text after it.
    fn after(&mut self, marker: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if let Some((_, rest)) = line.split_once(marker) {
                return Some(rest.to_string());
            }
        }
    }
}

fn job(name: &str) -> StreamJob {
    let mut spec = StreamJobSpec::for_program("orders");
    spec.checkpointing = Some(CheckpointingSpec::new("s3://checkpoints/orders"));
    StreamJob::new(name, spec)
}

async fn wait_for_configmap(ns: &TestNamespace, name: &str) {
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = ns.api();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cms.get_opt(name).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "{name} was not created");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let ns = TestNamespace::create("op-replicas").await;
    weir_kube_test::install_crd(&ns.client(), StreamJob::crd()).await;
    let mut a = Operator::start(ns.name());
    a.after("leading with fencing epoch", Duration::from_secs(30))
        .unwrap();
    let mut b = Operator::start(ns.name());
    b.after("standby, campaigning", Duration::from_secs(30))
        .unwrap();
    let metrics = a
        .after("metrics on http://", Duration::from_secs(1))
        .or_else(|| {
            a.seen.iter().find_map(|l| {
                l.split_once("metrics on http://")
                    .map(|(_, r)| r.to_string())
            })
        })
        .unwrap();
    assert!(
        b.after("leading", Duration::from_secs(3)).is_none(),
        "two leaders"
    );

    let jobs: Api<StreamJob> = ns.api();
    jobs.create(&PostParams::default(), &job("first"))
        .await
        .unwrap();
    wait_for_configmap(&ns, "first-config").await;

    // The leader's metrics count its reconciliations.
    let address = metrics.trim_end_matches("/metrics").to_string();
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&address).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(
        body.contains("weir_operator_reconciliations_total{result=\"ok\"}"),
        "{body}"
    );

    // The leader dies; the standby leads and reconciles what comes next.
    a.child.kill().unwrap();
    b.after("leading with fencing epoch", Duration::from_secs(15))
        .unwrap();
    jobs.create(&PostParams::default(), &job("second"))
        .await
        .unwrap();
    wait_for_configmap(&ns, "second-config").await;
}
