//! The `weir` binary with S3 checkpoint storage, against the real S3-compatible server that
//! `.ci/s3.sh` starts (endpoint in `WEIR_S3_ENDPOINT`, credentials in the AWS variables):
//! checkpoints and a stop-with-savepoint to `s3://`, `weir checkpoints list` on S3,
//! `--from-latest-checkpoint` from S3 (a checkpoint, or a newer savepoint in the default
//! savepoint directory), and the fail-fast error for a missing bucket.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use weir_api::rest::CheckpointHistory;
use weir_s3::{S3Settings, S3Storage};

fn endpoint() -> String {
    assert!(
        std::env::var("AWS_ACCESS_KEY_ID").is_ok(),
        "S3 credentials missing: start the server with `bash .ci/s3.sh start` and export its \
         settings with `eval \"$(bash .ci/s3.sh env)\"`"
    );
    std::env::var("WEIR_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:28333".into())
}

/// A bucket for this test, deleted when dropped.
struct Bucket(String, S3Storage);

impl Bucket {
    fn new(base: &str) -> Self {
        let name = format!(
            "weir-cli-{base}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let admin = S3Storage::open(
            &format!("s3://{name}"),
            S3Settings {
                endpoint: Some(endpoint()),
                region: Some("us-east-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        if let Err(e) = admin.create_bucket(&name) {
            panic!("{e}\nstart the S3 server with `bash .ci/s3.sh start`");
        }
        Self(name, admin)
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let _ = self.1.delete_bucket(&self.0);
    }
}

fn manifest(dir: &std::path::Path, storage: &str) -> String {
    let yaml = orders_manifest_yaml(
        "s3-orders",
        &format!(
            "    interval: 200ms\n    numRetained: 2\n    storage: {storage}\n    s3:\n      \
             endpoint: {}\n      region: us-east-1\n      pathStyle: true\n",
            endpoint()
        ),
    );
    write_manifest(dir, "s3.yaml", &yaml)
}

fn list(uri: &str) -> String {
    let out = weir()
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["checkpoints", "list", uri])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn checkpoints_savepoints_and_restores_on_s3() {
    let bucket = Bucket::new("run");
    let dir = tempfile::tempdir().unwrap();
    let root = format!("s3://{}/ckpt", bucket.0);
    let m = manifest(dir.path(), &root);

    let mut weir = Running::start(&["run", &m, "--rest-address", "127.0.0.1:0", "--for", "60s"]);
    let addr = weir.rest_address();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http(&addr, "GET", "/v1/job/checkpoints");
        assert_eq!(code, 200, "{body}");
        let h: CheckpointHistory = serde_json::from_str(&body).unwrap();
        if h.counts.completed >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoints on S3: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stop with a savepoint on S3.
    let target = format!("s3://{}/sp", bucket.0);
    let out = run_to_end(&[
        "savepoint",
        "--rest-address",
        &addr,
        "--stop",
        "--target",
        &target,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let savepoint = text(&out.stdout).trim().to_string();
    assert!(
        savepoint.starts_with(&format!("{target}/savepoint-")),
        "{savepoint}"
    );
    let (code, stderr) = weir.exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");

    let listing = list(&root);
    assert!(listing.contains("ok (latest)"), "{listing}");
    assert_eq!(
        listing.matches("chk-").count(),
        2,
        "numRetained 2: {listing}"
    );
    let listing = list(&target);
    assert!(
        listing.contains("savepoint-") && listing.contains("ok (latest)"),
        "{listing}"
    );

    let out = run_to_end(&["run", &m, "--from-latest-checkpoint", "--for", "1s"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("({root}/chk-")), "{stderr}");
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
}

/// A stop with savepoint writes to `<storage>/savepoints` by default; `--from-latest-checkpoint`
/// lists that directory on S3 and restores the savepoint, newer than every checkpoint.
#[test]
fn the_newest_savepoint_on_s3_is_restored() {
    let bucket = Bucket::new("sp");
    let dir = tempfile::tempdir().unwrap();
    let root = format!("s3://{}/ckpt", bucket.0);
    let m = manifest(dir.path(), &root);
    let mut weir = Running::start(&["run", &m, "--rest-address", "127.0.0.1:0", "--for", "60s"]);
    let addr = weir.rest_address();
    wait_for_completed_checkpoints(&addr, 2);
    let out = run_to_end(&["savepoint", "--rest-address", &addr, "--stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let savepoint = text(&out.stdout).trim().to_string();
    assert!(
        savepoint.starts_with(&format!("{root}/savepoints/savepoint-")),
        "{savepoint}"
    );
    let (code, stderr) = weir.exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");

    let out = run_to_end(&[
        "run",
        &m,
        "--rest-address",
        "127.0.0.1:0",
        "--from-latest-checkpoint",
        "--for",
        "1s",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("so the savepoint is restored"), "{stderr}");
    assert!(
        stderr.contains("restored from savepoint ") && stderr.contains(&savepoint),
        "{stderr}"
    );
}

#[test]
fn a_missing_bucket_fails_the_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("weir-cli-missing-{}", std::process::id());
    let m = manifest(dir.path(), &format!("s3://{missing}/ckpt"));
    let out = run_to_end(&["run", &m]);
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("cannot reach"),
        "start the S3 server with `bash .ci/s3.sh start`: {stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("bucket {missing} does not exist")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("aws s3 mb s3://{missing}")),
        "{stderr}"
    );
    assert!(!stderr.contains("REST API on"), "{stderr}");
}
