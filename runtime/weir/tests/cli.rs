//! The `weir` binary end to end: `run` with its REST API, metrics and signal handling, `cancel`,
//! `validate` on the examples and on broken manifests, `programs`, and the exit codes of each
//! outcome. Checkpoints, savepoints and restores are in `checkpoints.rs`.

// Helpers of a test crate are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use weir_api::JobState;

#[test]
fn run_serves_rest_and_metrics_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = example_in(dir.path(), "orders");
    let mut weir = Running::start(&[
        "run",
        &manifest,
        "--rest-address",
        "127.0.0.1:0",
        "--for",
        "120s",
    ]);
    let addr = weir.rest_address();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first: Option<u64> = None;
    let o = loop {
        let o = job(&addr);
        if o.state == JobState::Running && o.records_in > 0 {
            match first {
                Some(n) if o.records_in > n => break o,
                None => first = Some(o.records_in),
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "records did not increase: {o:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (o.name.as_str(), o.program.as_str(), o.parallelism),
        ("orders", "orders", 2)
    );
    assert!(o.job_id.starts_with("orders-"));
    assert!(!o.vertices.is_empty());

    let (code, metrics) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    let records_in = metric(&metrics, "weir_job_records_in_total").expect(&metrics);
    assert!(records_in > 0.0, "{metrics}");
    assert!(
        metrics.contains("weir_job_state{state=\"RUNNING\"} 1"),
        "{metrics}"
    );
    assert_eq!(http(&addr, "GET", "/readyz").0, 200);
    assert_eq!(http(&addr, "GET", "/healthz").0, 200);
    let (code, body) = http(&addr, "GET", "/nope");
    assert_eq!(code, 404);
    assert!(body.contains("\"errors\""), "{body}");

    // Progress lines arrive every second, with the checkpoint column (none yet: 10 s interval).
    let line = weir.line_after("[0:", Duration::from_secs(5));
    assert!(line.contains(" restarts 0 ckpt "), "{line}");
    weir.signal("-INT");
    let (code, stderr) = weir.exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("received SIGINT: cancelling the job"),
        "{stderr}"
    );
    assert!(stderr.contains("CANCELED after"), "{stderr}");
    assert!(
        !stderr.contains("not yet active"),
        "everything orders.yaml configures is active: {stderr}"
    );
    assert!(
        stderr.contains("checkpoints every 10s to file://"),
        "{stderr}"
    );
    assert!(stderr.contains("  checkpoints "), "{stderr}");
}

#[test]
fn rest_cancel_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = example_in(dir.path(), "orders");
    let mut weir = Running::start(&[
        "run",
        &manifest,
        "--rest-address",
        "127.0.0.1:0",
        "--quiet",
        "--for",
        "120s",
    ]);
    let addr = weir.rest_address();
    // `weir cancel` posts to /v1/job/cancel.
    let out = run_to_end(&["cancel", "--rest-address", &addr]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("cancelling orders-"),
        "{}",
        text(&out.stderr)
    );
    let (code, stderr) = weir.exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("CANCELED"), "{stderr}");
    assert!(
        !stderr.contains("[0:"),
        "--quiet prints no progress: {stderr}"
    );
    // Nothing serves there any more.
    let out = run_to_end(&["cancel", "--rest-address", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach the weir REST API"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = example_in(dir.path(), "orders");
    let mut weir = Running::start(&["run", &manifest, "--rest-address", "127.0.0.1:0", "--quiet"]);
    let addr = weir.rest_address();
    assert_eq!(job(&addr).state, JobState::Running);
    weir.signal("-TERM");
    let (code, stderr) = weir.exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("received SIGTERM: cancelling the job"),
        "{stderr}"
    );
}

#[test]
fn run_for_stops_by_itself_and_sensor_alerts_print() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = example_in(dir.path(), "sensor-anomaly");
    let out = run_to_end(&[
        "run",
        &manifest,
        "--rest-address",
        "127.0.0.1:0",
        "--for",
        "3s",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("--for 0:03 elapsed"), "{stderr}");
    assert!(
        stdout.lines().any(|l| l.contains("sensor_id")),
        "no alerts:\n{stdout}\n{stderr}"
    );
}

const GOOD: &str = "apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: small-orders
spec:
  job:
    program: orders
    args:
      rate: \"0\"
      count: \"3000\"
      sink: blackhole
    parallelism: 1
";

#[test]
fn bounded_job_finishes_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_manifest(dir.path(), "bounded.yaml", GOOD);
    let out = run_to_end(&["run", &m, "--rest-address", "127.0.0.1:0"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("FINISHED after"), "{stderr}");
    assert!(stderr.contains("records in 3.00k"), "{stderr}");
}

#[test]
fn failing_job_exits_1_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let yaml = GOOD
        .replace("count: \"3000\"", "count: \"100000000\"")
        .replace(
            "sink: blackhole",
            &format!("sink: \"file:{}/out\"", file.display()),
        );
    let m = write_manifest(dir.path(), "failing.yaml", &yaml);
    let out = run_to_end(&["run", &m, "--rest-address", "127.0.0.1:0", "--for", "60s"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED after"), "{stderr}");
    assert!(stderr.contains("error: job failed: task"), "{stderr}");
}

#[test]
fn suspended_job_is_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_manifest(
        dir.path(),
        "s.yaml",
        &GOOD.replace("parallelism: 1", "parallelism: 1\n    state: suspended"),
    );
    let out = run_to_end(&["run", &m, "--rest-address", "127.0.0.1:0"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("spec.job.state is suspended"), "{stderr}");
    assert!(!stderr.contains("REST API on"), "{stderr}");
}

#[test]
fn examples_validate() {
    for (file, line) in [
        (
            "examples/orders.yaml",
            "ok: orders (program orders, parallelism 2)",
        ),
        (
            "examples/sensor-anomaly.yaml",
            "ok: sensor-anomaly (program sensor-anomaly, parallelism 1)",
        ),
        (
            "examples/nexmark-q5.yaml",
            "ok: nexmark-q5 (program nexmark-q5, parallelism 2)",
        ),
        (
            "examples/orders-kafka.yaml",
            "ok: orders-kafka (program orders-kafka, parallelism 2)",
        ),
        (
            "examples/orders-rocksdb.yaml",
            "ok: orders-rocksdb (program orders, parallelism 2)",
        ),
        (
            "examples/orders-cluster.yaml",
            "ok: orders-cluster (program orders, parallelism 4)",
        ),
    ] {
        let out = run_to_end(&["validate", file]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), line);
    }
    // Every example manifest in the directory is covered above.
    let mut found: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "nexmark-q5.yaml",
            "orders-cluster.yaml",
            "orders-kafka.yaml",
            "orders-rocksdb.yaml",
            "orders.yaml",
            "sensor-anomaly.yaml"
        ]
    );
}

#[test]
fn bad_manifests_exit_2_naming_the_field_and_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "api-version",
            GOOD.replace("weir.dev/v1alpha1", "weir.dev/v1"),
            &[
                "apiVersion: expected weir.dev/v1alpha1",
                "Fix: set `apiVersion: weir.dev/v1alpha1`",
            ],
        ),
        (
            "typo",
            GOOD.replace("parallelism: 1", "paralelism: 1"),
            &["spec.job.paralelism", "did you mean `parallelism`"],
        ),
        (
            "parallelism-0",
            GOOD.replace("parallelism: 1", "parallelism: 0"),
            &[
                "spec.job.parallelism: must be at least 1",
                "Fix: set spec.job.parallelism to 1 or more",
            ],
        ),
        (
            "unknown-program",
            GOOD.replace("program: orders", "program: ordres"),
            &[
                "spec.job.program: no program named \"ordres\"",
                "Fix: did you mean `orders`? set spec.job.program to one of:",
                "orders",
            ],
        ),
        (
            "bad-arg",
            GOOD.replace("rate: \"0\"", "rate: fast"),
            &[
                "spec.job.args.rate: cannot parse \"fast\"",
                "Fix: correct spec.job.args.rate",
            ],
        ),
        (
            "unknown-arg",
            GOOD.replace("rate: \"0\"", "ratee: \"0\""),
            &[
                "spec.job.args.ratee: unknown argument",
                "Fix: remove spec.job.args.ratee or rename it",
            ],
        ),
    ];
    for (name, yaml, expected) in cases {
        let m = write_manifest(dir.path(), &format!("{name}.yaml"), &yaml);
        for cmd in [
            vec!["validate", m.as_str()],
            vec!["run", m.as_str(), "--rest-address", "127.0.0.1:0"],
        ] {
            let out = run_to_end(&cmd);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {cmd:?}: {stderr}");
            assert!(stderr.contains(&m), "{name}: the path is named: {stderr}");
            for e in expected {
                assert!(
                    stderr.contains(e),
                    "{name} {cmd:?}: missing {e:?} in:\n{stderr}"
                );
            }
            assert!(
                !stderr.contains("REST API on"),
                "{name}: nothing starts: {stderr}"
            );
        }
    }
    let out = run_to_end(&["validate", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read manifest no/such/file.yaml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn programs_are_listed_with_their_arguments() {
    let out = run_to_end(&["programs"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    for p in ["orders", "sensor-anomaly", "window-bench", "nexmark-q5"] {
        assert!(s.lines().any(|l| l == p), "{p} missing:\n{s}");
    }
    assert!(s.contains("args (spec.job.args):"), "{s}");
}

#[test]
fn usage_errors_exit_2() {
    let out = run_to_end(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_to_end(&["run", "examples/orders.yaml", "--for", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid duration"),
        "{}",
        text(&out.stderr)
    );
    let out = run_to_end(&["bench", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("shared/bench/flink-anchor.sh"));
}
