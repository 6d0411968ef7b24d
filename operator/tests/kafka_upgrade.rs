//! Exactly-once from Kafka to Kafka through the operator's upgrades, end to end: the real
//! Apache Kafka broker, S3 server, kube-apiserver and kube-controller-manager `.ci/run` starts,
//! pods run by the kubelet stand-in of `weir-kube-test` (test-only: the control plane has no
//! nodes).
//!
//! Orders are produced into a topic while the `orders-kafka` job (Kafka source, 10-minute
//! windows, transactional Kafka sink) runs under the operator: a TaskManager pod is killed and
//! the job recovers from its S3 checkpoint; the image changes and the job is rescaled from 2 to
//! 3 subtasks through a savepoint (the Kafka source's partition positions redistributed over the
//! new readers); it is suspended with a savepoint and resumed; the StreamJob is deleted with a
//! final savepoint and created again on the same storage at parallelism 2, now bounded, so it
//! runs to the end of the input. What a `read_committed` consumer sees in the output topic equals the summaries
//! computed straight from the orders: nothing lost, nothing duplicated.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;
#[path = "../../runtime/kafka/tests/test_support/mod.rs"]
mod test_support;

use common::{TestBucket, job_id, manifest, patch, running, status_until};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use test_support::Topics;
use weir_api::{LifecycleState, SavepointTriggerType, StreamJob};
use weir_programs::orders::{OrdersConfig, UserSummary, expected_summaries};

const COUNT: u64 = 12_000;

fn orders_config() -> OrdersConfig {
    OrdersConfig {
        count: Some(COUNT),
        rate: None,
        users: 100,
        seed: 5,
        ..Default::default()
    }
}

fn spec(
    bucket: &TestBucket,
    bootstrap: &str,
    input: &str,
    output: &str,
    bounded: bool,
) -> serde_json::Value {
    serde_json::json!({
        "image": "weir:v1",
        "job": {"program": "orders-kafka", "parallelism": 2,
                "args": {"bootstrap": bootstrap, "input-topic": input, "output-topic": output,
                         "transactional-id-prefix": output, "group": output,
                         "bounded": bounded.to_string()}},
        "jobManager": {"heartbeat": {"interval": "200ms", "timeout": "3s"}},
        "taskManager": {"replicas": 2, "slots": 1},
        "checkpointing": bucket.checkpointing("1s"),
        "restartStrategy": {"type": "fixedDelay", "attempts": 1000, "delay": "300ms"},
        "upgrade": {"savepointTimeout": "60s",
                    "rollback": {"readinessTimeout": "90s", "stableCheckpoints": 2}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_to_kafka_exactly_once_through_failover_upgrade_suspend_and_deletion() {
    let bucket = TestBucket::create("weir-kafka-lifecycle").await;
    let mut topics = tokio::task::spawn_blocking(Topics::new).await.unwrap();
    let bootstrap = topics.bootstrap.clone();
    let input = topics.create("lifecycle-orders", 4);
    let output = topics.create("lifecycle-summaries", 4);

    let (ns, _test_dir, kubelet, controller) = common::start("op-kafka").await;
    common::s3_secret(&ns).await;

    // The orders arrive while the job runs: 500 every 250 ms.
    let produced = Arc::new(AtomicBool::new(false));
    let producer = {
        let (bootstrap, input, produced) = (bootstrap.clone(), input.clone(), produced.clone());
        std::thread::spawn(move || {
            let source = orders_config().source();
            let mut seq = 0;
            while seq < COUNT {
                let batch: Vec<_> = (seq..(seq + 500).min(COUNT))
                    .map(|s| {
                        let o = source.record(s, 0).value;
                        (
                            None,
                            Some(o.user_id.to_string().into_bytes()),
                            o.ts,
                            serde_json::to_vec(&o).unwrap(),
                        )
                    })
                    .collect();
                test_support::produce(&bootstrap, &input, &batch);
                seq += 500;
                std::thread::sleep(Duration::from_millis(250));
            }
            produced.store(true, Ordering::SeqCst);
        })
    };

    let jobs: Api<StreamJob> = ns.api();
    let pods: Api<Pod> = ns.api();
    jobs.create(
        &PostParams::default(),
        &manifest(spec(&bucket, &bootstrap, &input, &output, false)),
    )
    .await
    .unwrap();
    let first = status_until(&jobs, "running", Duration::from_secs(120), |s| {
        running(s) && s.last_completed_checkpoint.is_some()
    })
    .await;

    // A TaskManager pod killed: recovered from the S3 checkpoint.
    let before = first.last_completed_checkpoint.as_ref().unwrap().id;
    common::kill_and_recover(&jobs, &pods, "orders-taskmanager-1", before).await;

    // Upgraded and rescaled 2 → 3 through a savepoint: the source's partitions, windows and
    // sink transactions are redistributed.
    let old = job_id(&jobs.get("orders").await.unwrap().status.unwrap());
    patch(
        &jobs,
        serde_json::json!({"image": "weir:v2", "job": {"parallelism": 3},
                           "taskManager": {"replicas": 3}}),
    )
    .await;
    common::upgraded_from_savepoint(&jobs, "the upgrade", old, Duration::from_secs(180)).await;
    // The new run is the rescaled one (not a rollback to the old spec from the same
    // savepoint), and it makes progress: checkpoints at parallelism 3.
    let upgraded = status_until(
        &jobs,
        "a checkpoint of the rescaled run",
        Duration::from_secs(60),
        |s| {
            running(s)
                && s.last_completed_checkpoint
                    .as_ref()
                    .is_some_and(|c| s.last_savepoint.as_ref().is_some_and(|sp| c.time > sp.time))
        },
    )
    .await;
    assert_ne!(
        upgraded.lifecycle_state,
        Some(LifecycleState::RolledBack),
        "{upgraded:#?}"
    );
    let deployed = &upgraded.reconciliation.as_ref().unwrap().spec;
    assert!(deployed.contains("\"parallelism\":3"), "{deployed}");

    // Suspended with a savepoint, resumed from it.
    patch(&jobs, serde_json::json!({"job": {"state": "suspended"}})).await;
    let suspended = status_until(&jobs, "Suspended", Duration::from_secs(120), |s| {
        s.lifecycle_state == Some(LifecycleState::Suspended)
            && s.last_savepoint
                .as_ref()
                .is_some_and(|sp| sp.trigger_type == SavepointTriggerType::Suspend)
    })
    .await;
    patch(&jobs, serde_json::json!({"job": {"state": "running"}})).await;
    let suspend_savepoint = suspended.last_savepoint.unwrap().path;
    status_until(&jobs, "resumed", Duration::from_secs(120), |s| {
        running(s) && s.restored_from.as_deref() == Some(suspend_savepoint.as_str())
    })
    .await;

    // Deleted with a final savepoint once every order is in the topic; created again, bounded,
    // on the same storage: it resumes from that savepoint and runs to the end of the input.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !produced.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the orders were not produced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producer.join().unwrap();
    status_until(
        &jobs,
        "a checkpoint after resuming",
        Duration::from_secs(60),
        |s| running(s) && s.last_completed_checkpoint.is_some(),
    )
    .await;
    common::delete_until_gone(&jobs, Duration::from_secs(120)).await;
    common::pods_gone(
        &pods,
        "pods outlived their StreamJob",
        Duration::from_secs(60),
    )
    .await;
    jobs.create(
        &PostParams::default(),
        &manifest(spec(&bucket, &bootstrap, &input, &output, true)),
    )
    .await
    .unwrap();
    let again = common::finished(&jobs, Duration::from_secs(180)).await;
    assert!(
        again
            .restored_from
            .as_deref()
            .is_some_and(|p| p.contains("/savepoints/savepoint-")),
        "{again:#?}"
    );

    // Nothing lost, nothing duplicated.
    let (b, o) = (bootstrap.clone(), output.clone());
    let records = tokio::task::spawn_blocking(move || test_support::read_committed(&b, &o))
        .await
        .unwrap();
    let mut got: Vec<UserSummary> = records
        .iter()
        .map(|(_, _, v)| serde_json::from_slice(v).unwrap())
        .collect();
    got.sort();
    let want = expected_summaries(&orders_config());
    assert_eq!(
        got.len(),
        want.len(),
        "summaries: got {}, want {}",
        got.len(),
        want.len()
    );
    assert_eq!(got, want);
    controller.abort();
    drop(kubelet);
    tokio::task::spawn_blocking(move || drop(topics))
        .await
        .unwrap();
}
