//! Checkpoints, savepoints and restores through the `weir` binary: checkpoint statistics in the
//! REST API, `/metrics` and the progress line; `weir savepoint` with and without `--stop`;
//! `--from-savepoint`; `weir checkpoints list` with a corrupted checkpoint;
//! `--from-latest-checkpoint` after `kill -9`, and with `--checkpoints-after`; and the exit codes
//! of restores that cannot work.

// Helpers of a test crate are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use weir_api::rest::{CheckpointHistory, OperationStatus, SavepointInfo, TriggerSavepointResponse};

/// An endless orders job checkpointing every 200 ms into `dir/checkpoints`, keeping three.
fn manifest(dir: &Path) -> (String, PathBuf) {
    let storage = dir.join("checkpoints");
    let yaml = orders_manifest_yaml(
        "ckpt-orders",
        &format!(
            "    interval: 200ms\n    numRetained: 3\n    storage: file://{}\n",
            storage.display()
        ),
    );
    (write_manifest(dir, "ckpt.yaml", &yaml), storage)
}

fn checkpoints(addr: &str) -> CheckpointHistory {
    let (code, body) = http(addr, "GET", "/v1/job/checkpoints");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the checkpoint statistics until at least `n` checkpoints completed.
fn wait_for_checkpoints(addr: &str, n: u64) -> CheckpointHistory {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = checkpoints(addr);
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

/// A `file://` URI or path as a local path.
fn local(uri: &str) -> PathBuf {
    PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri))
}

/// `weir checkpoints list` output: (name, whole line) of every snapshot, newest first.
fn list(path: &Path) -> Vec<(String, String)> {
    let out = run_to_end(&["checkpoints", "list", &path.display().to_string()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("NAME "))
        .skip(1)
        .take_while(|l| l.starts_with("chk-") || l.starts_with("savepoint-"))
        .map(|l| {
            (
                l.split_whitespace().next().unwrap().to_string(),
                l.to_string(),
            )
        })
        .collect()
}

fn latest(entries: &[(String, String)]) -> String {
    let found: Vec<&String> = entries
        .iter()
        .filter(|(_, l)| l.ends_with("ok (latest)"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(found.len(), 1, "exactly one latest: {entries:#?}");
    found[0].clone()
}

#[test]
fn checkpoints_are_reported_listed_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (m, storage) = manifest(dir.path());
    let mut weir = Running::start(&["run", &m, "--rest-address", "127.0.0.1:0", "--for", "60s"]);
    let addr = weir.rest_address();

    let h = wait_for_checkpoints(&addr, 3);
    let last = h.latest_completed.clone().unwrap();
    assert!(
        local(last.external_path.as_deref().unwrap())
            .join("_metadata")
            .is_file()
    );
    assert!(last.alignment_ms.is_some(), "{last:?}");
    assert!(
        h.history.windows(2).all(|w| w[0].id > w[1].id),
        "newest first: {h:?}"
    );
    assert!(job(&addr).last_checkpoint.is_some());

    let (code, metrics) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    let completed = metric(&metrics, "weir_job_numberOfCompletedCheckpoints").expect(&metrics);
    assert!(completed > 0.0, "{metrics}");
    assert!(metric(&metrics, "weir_job_lastCheckpointSize").unwrap() > 0.0);
    assert!(metric(&metrics, "weir_job_lastCheckpointDuration").unwrap() >= 0.0);
    for name in [
        "weir_job_numRestarts",
        "weir_job_fullRestarts",
        "weir_job_numberOfFailedCheckpoints",
        "weir_job_numberOfInProgressCheckpoints",
        "weir_job_lastCheckpointAlignmentTime",
    ] {
        assert!(metric(&metrics, name).is_some(), "{name} in {metrics}");
    }
    assert_eq!(
        metric(&metrics, "weir_job_lastCheckpointRestoreTimestamp"),
        Some(-1.0)
    );

    // A checkpoint on request.
    let (code, body) = http(&addr, "POST", "/v1/job/checkpoints");
    assert_eq!(code, 202, "{body}");
    let id = serde_json::from_str::<TriggerSavepointResponse>(&body)
        .unwrap()
        .request_id;
    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        let (code, body) = http(&addr, "GET", &format!("/v1/job/checkpoints/{id}"));
        assert_eq!(code, 200, "{body}");
        let info: SavepointInfo = serde_json::from_str(&body).unwrap();
        if info.status != OperationStatus::InProgress {
            break info;
        }
        assert!(Instant::now() < deadline, "{info:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(info.status, OperationStatus::Completed, "{info:?}");
    assert!(info.location.unwrap().contains("chk-"));

    // The progress line shows the last checkpoint.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = weir.line_after("[0:", Duration::from_secs(5));
        if line.contains(" ckpt #") {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint in {line}");
    }
    weir.signal("-INT");
    let (code, stderr) = weir.exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("  checkpoints "), "{stderr}");
    assert!(stderr.contains(" completed, 0 failed; last #"), "{stderr}");

    // Retained checkpoints survive the cancel (retentionOnCancel: retain); the newest is latest.
    let entries = list(&storage);
    let ok: Vec<&(String, String)> = entries.iter().filter(|(_, l)| l.contains(" ok")).collect();
    assert!(ok.len() >= 2, "{entries:#?}");
    let newest = latest(&entries);
    assert_eq!(&newest, &ok[0].0, "{entries:#?}");
    assert!(ok[0].1.contains("orders-source:2"), "{entries:#?}");

    // Corrupt one state file of the newest: it is CORRUPT and the previous one is latest.
    let state = std::fs::read_dir(storage.join(&newest))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "state"))
        .unwrap();
    let mut bytes = std::fs::read(&state).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    let entries = list(&storage);
    let corrupt = entries.iter().find(|(n, _)| *n == newest).unwrap();
    assert!(corrupt.1.contains("CORRUPT: "), "{entries:#?}");
    assert!(corrupt.1.contains("checksum mismatch"), "{entries:#?}");
    assert_eq!(latest(&entries), ok[1].0, "{entries:#?}");

    // A restore skips the corrupt checkpoint, says so, and takes the previous one.
    let previous_id = ok[1].0.trim_start_matches("chk-").to_string();
    let out = run_to_end(&[
        "run",
        &m,
        "--rest-address",
        "127.0.0.1:0",
        "--for",
        "1s",
        "--quiet",
        "--from-latest-checkpoint",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let newest_id = newest.trim_start_matches("chk-");
    assert!(
        stderr.contains(&format!(
            "warning: checkpoint {newest_id} is not restorable, falling back"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("restored from checkpoint {previous_id} (")),
        "{stderr}"
    );
}

#[test]
fn savepoint_then_stop_then_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (m, storage) = manifest(dir.path());
    let mut weir = Running::start(&["run", &m, "--rest-address", "127.0.0.1:0", "--for", "60s"]);
    let addr = weir.rest_address();
    wait_for_checkpoints(&addr, 1);

    // By default under <storage>/savepoints.
    let out = run_to_end(&["savepoint", "--rest-address", &addr]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = text(&out.stdout).trim().to_string();
    assert!(
        local(&first).starts_with(storage.join("savepoints")),
        "{first}"
    );
    assert!(local(&first).join("_metadata").is_file(), "{first}");
    let h = checkpoints(&addr);
    assert_eq!(
        h.latest_savepoint.and_then(|s| s.external_path).as_deref(),
        Some(first.as_str())
    );

    // Stop with a savepoint in a directory of our choice: `weir run` exits 0 with its path.
    let target = dir.path().join("sp");
    let out = run_to_end(&[
        "savepoint",
        "--rest-address",
        &addr,
        "--stop",
        "--target",
        &target.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stopped = text(&out.stdout).trim().to_string();
    assert!(local(&stopped).starts_with(&target), "{stopped}");
    assert!(local(&stopped).join("_metadata").is_file(), "{stopped}");
    let (code, stderr) = weir.exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("SUSPENDED after"), "{stderr}");
    assert!(
        stderr.contains(&format!("stopped with savepoint {stopped}")),
        "{stderr}"
    );

    // Resume from it.
    let mut resumed = Running::start(&[
        "run",
        &m,
        "--rest-address",
        "127.0.0.1:0",
        "--for",
        "3s",
        "--from-savepoint",
        &stopped,
    ]);
    let addr = resumed.rest_address();
    let restored = checkpoints(&addr).latest_restored.unwrap();
    assert_eq!(restored.path, stopped);
    assert!(restored.is_savepoint);
    let (code, stderr) = resumed.exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "restored from savepoint {} ({stopped})",
            restored.id
        )),
        "{stderr}"
    );

    // The savepoint's key groups do not fit another maxParallelism.
    let yaml = std::fs::read_to_string(&m)
        .unwrap()
        .replace("parallelism: 2", "parallelism: 2\n    maxParallelism: 64");
    let other = write_manifest(dir.path(), "maxp.yaml", &yaml);
    let out = run_to_end(&["run", &other, "--from-savepoint", &stopped]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("maxParallelism 128"), "{stderr}");
    assert!(!stderr.contains("REST API on"), "{stderr}");
}

#[test]
fn killed_run_resumes_from_the_latest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (m, storage) = manifest(dir.path());
    let mut weir = Running::start(&[
        "run",
        &m,
        "--rest-address",
        "127.0.0.1:0",
        "--for",
        "60s",
        "--quiet",
    ]);
    let addr = weir.rest_address();
    wait_for_checkpoints(&addr, 2);
    weir.signal("-KILL");
    let (code, _) = weir.exit(Duration::from_secs(10));
    assert_eq!(code, None, "killed by a signal");

    let newest = latest(&list(&storage));
    let id = newest.trim_start_matches("chk-");
    let mut resumed = Running::start(&[
        "run",
        &m,
        "--rest-address",
        "127.0.0.1:0",
        "--for",
        "2s",
        "--quiet",
        "--from-latest-checkpoint",
    ]);
    let addr = resumed.rest_address();
    let restored = checkpoints(&addr).latest_restored.unwrap();
    assert_eq!(restored.id.to_string(), id);
    assert!(!restored.is_savepoint);
    let (_, metrics) = http(&addr, "GET", "/metrics");
    assert!(
        metric(&metrics, "weir_job_lastCheckpointRestoreTimestamp").unwrap() > 0.0,
        "{metrics}"
    );
    let (code, stderr) = resumed.exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr}");
    let path = storage.join(&newest);
    assert!(
        stderr.contains(&format!(
            "the newest restorable checkpoint in file://{} is checkpoint {id}",
            storage.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "restored from checkpoint {id} ({})",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn impossible_restores_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = manifest(dir.path());

    let out = run_to_end(&["run", &m, "--from-savepoint", "/nonexistent"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    assert!(stderr.contains("_metadata"), "{stderr}");
    assert!(!stderr.contains("REST API on"), "{stderr}");

    let plain = std::fs::read_to_string(&m).unwrap();
    let plain = plain[..plain.find("  checkpointing:").unwrap()].to_string();
    let plain = write_manifest(dir.path(), "plain.yaml", &plain);
    let out = run_to_end(&["run", &plain, "--from-latest-checkpoint"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs spec.checkpointing.storage"),
        "{stderr}"
    );

    // No checkpoint yet is not an error: the job starts without state.
    let out = run_to_end(&[
        "run",
        &m,
        "--rest-address",
        "127.0.0.1:0",
        "--for",
        "1s",
        "--quiet",
        "--from-latest-checkpoint",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("no restorable checkpoint in file://")
            && stderr.contains("starting without state"),
        "{stderr}"
    );

    let out = run_to_end(&["checkpoints", "list", "/nonexistent/checkpoints"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no such file or directory"));
}

#[test]
fn checkpoints_after_hides_the_snapshots_completed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (m, storage) = manifest(dir.path());
    let run = |extra: &[&str]| {
        let mut args = vec!["run", &m, "--rest-address", "127.0.0.1:0", "--quiet"];
        args.extend_from_slice(extra);
        run_to_end(&args)
    };
    let out = run(&["--for", "2s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!list(&storage).is_empty());

    // A stateless start: everything in the storage completed before now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let out = run(&[
        "--for",
        "1s",
        "--from-latest-checkpoint",
        "--checkpoints-after",
        &now,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("completed before it, so no checkpoint is restored"),
        "{stderr}"
    );
    assert!(stderr.contains("starting without state"), "{stderr}");
    assert!(!stderr.contains("restored from"), "{stderr}");

    // An earlier time (RFC 3339) hides nothing.
    let out = run(&[
        "--for",
        "1s",
        "--from-latest-checkpoint",
        "--checkpoints-after",
        "2000-01-01T00:00:00Z",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");

    // A time that is not one, and the flag without --from-latest-checkpoint, are usage errors.
    let out = run(&["--from-latest-checkpoint", "--checkpoints-after", "soon"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--checkpoints-after") && stderr.contains("RFC 3339"),
        "{stderr}"
    );
    let out = run(&["--checkpoints-after", &now]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--from-latest-checkpoint"), "{stderr}");
}
