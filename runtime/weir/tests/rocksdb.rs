//! `weir run` with `state.backend: rocksdb`: incremental checkpoints upload SST files into the
//! storage's `shared/` directory and `weir checkpoints list` verifies them; after `kill -9` a
//! run resumes from the latest checkpoint out of the task's local copy (local recovery, seen in
//! the `/metrics` counters) and clears the working databases the killed process left behind.

// Helpers of a test crate are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use weir_api::rest::CheckpointHistory;

/// The orders job on RocksDB with incremental checkpoints every 200 ms and local recovery.
fn manifest(dir: &Path) -> (String, PathBuf) {
    let storage = dir.join("checkpoints");
    let yaml = orders_manifest_yaml(
        "rocks-orders",
        &format!(
            "    interval: 200ms\n    numRetained: 3\n    incremental: true\n    storage: file://{}\n  \
             state:\n    backend: rocksdb\n    localRecovery: true\n",
            storage.display()
        ),
    );
    (write_manifest(dir, "rocks.yaml", &yaml), storage)
}

fn wait_for_checkpoints(addr: &str, n: u64) -> CheckpointHistory {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http(addr, "GET", "/v1/job/checkpoints");
        assert_eq!(code, 200, "{body}");
        let h: CheckpointHistory = serde_json::from_str(&body).unwrap();
        if h.counts.completed >= n {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} checkpoints: {h:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sum over operators and subtasks of the operator counter `counter`.
fn counter(metrics: &str, counter: &str) -> u64 {
    let label = format!("counter=\"{counter}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("weir_operator_counter_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Directories named `<prefix>*` anywhere under `dir`.
fn dirs_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    out.push(p.clone());
                }
                todo.push(p);
            }
        }
    }
    out
}

#[test]
fn incremental_checkpoints_and_local_recovery_through_weir_run() {
    let dir = tempfile::tempdir().unwrap();
    let (m, storage) = manifest(dir.path());
    let state_dir = dir.path().join("state");
    let state = state_dir.display().to_string();
    let env = [("WEIR_STATE_DIR", state.as_str())];
    let run = |extra: &[&str], for_: &str| {
        let mut args = vec![
            "run",
            m.as_str(),
            "--rest-address",
            "127.0.0.1:0",
            "--for",
            for_,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        Running::start_with_env(&args, &env)
    };

    let mut weir = run(&[], "60s");
    let addr = weir.rest_address();
    wait_for_checkpoints(&addr, 4);
    weir.signal("-KILL");
    let (code, _) = weir.exit(Duration::from_secs(10));
    assert_eq!(code, None, "killed by a signal");

    // Incremental checkpoints: SST files in shared/, referenced from the checkpoints.
    let shared: Vec<_> = std::fs::read_dir(storage.join("shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        shared.iter().any(|n| n.ends_with(".sst")),
        "no shared SST files: {shared:?}"
    );
    let out = run_to_end(&["checkpoints", "list", &storage.display().to_string()]);
    let listing = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let latest = listing
        .lines()
        .find(|l| l.ends_with("ok (latest)"))
        .unwrap_or_else(|| panic!("no latest checkpoint:\n{listing}"));
    let id = latest
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("chk-")
        .to_string();

    // The killed process's working databases are still on disk; the local snapshot copies too.
    let stale = dirs_named(&state_dir, "db-");
    assert!(!stale.is_empty(), "no working database under {state}");
    assert!(!dirs_named(&state_dir, "snapshots").is_empty());

    let mut resumed = run(&["--from-latest-checkpoint"], "3s");
    let addr = resumed.rest_address();
    let (_, body) = http(&addr, "GET", "/v1/job/checkpoints");
    let h: CheckpointHistory = serde_json::from_str(&body).unwrap();
    assert_eq!(h.latest_restored.unwrap().id.to_string(), id);
    // The tasks open (and restore) their state after the REST API is up: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (_, metrics) = http(&addr, "GET", "/metrics");
        if counter(&metrics, "stateFilesRestoredLocal") > 0 || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        counter(&metrics, "stateFilesRestoredLocal") > 0,
        "no file from the local copy:\n{metrics}"
    );
    assert_eq!(
        counter(&metrics, "stateFilesRestoredRemote"),
        0,
        "downloaded although the local copy was there:\n{metrics}"
    );
    assert_eq!(counter(&metrics, "stateLocalFilesRejected"), 0);
    for d in &stale {
        assert!(!d.exists(), "{} left behind by the killed run", d.display());
    }
    let (code, stderr) = resumed.exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("restored from checkpoint {id} (")),
        "{stderr}"
    );
    // A clean exit closes every database and removes its working directory.
    assert_eq!(dirs_named(&state_dir, "db-"), Vec::<PathBuf>::new());
}

#[test]
fn the_rocksdb_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = example_in(dir.path(), "orders-rocksdb");
    let state = dir.path().join("state").display().to_string();
    let out = weir()
        .args([
            "run",
            &m,
            "--rest-address",
            "127.0.0.1:0",
            "--for",
            "3s",
            "--quiet",
        ])
        .env("WEIR_STATE_DIR", &state)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("not yet active"), "{stderr}");
    assert!(
        std::fs::read_dir(dir.path().join("state")).is_ok(),
        "RocksDB did not work in $WEIR_STATE_DIR"
    );
}
