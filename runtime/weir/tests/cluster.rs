//! The cluster as separate processes on 127.0.0.1: a `weir jobmanager` and `weir taskmanager`
//! processes running the `orders` program with an exactly-once file sink. A TaskManager is
//! killed with `kill -9`, stopped with SIGSTOP for less than the heartbeat timeout (back
//! pressure, no failover) and for longer (declared lost); every run's committed output must
//! equal an embedded failure-free run of the same manifest — nothing lost, nothing duplicated.
//! A `--supervised` JobManager stays up after a stop with savepoint until SIGTERM, and the
//! next JobManager's `--from-latest-checkpoint` resumes from that savepoint.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{
    Running, TaskManagerProcess, checkpoint_history as checkpoints, cluster_orders_manifest,
    cluster_orders_reference as expected, committed_lines as committed, http, http_body, job,
    metric, start_task_manager, wait_for_completed_checkpoints as wait_for_checkpoints,
};
use std::path::Path;
use std::time::{Duration, Instant};

struct Cluster {
    jm: Running,
    rpc: String,
    rest: String,
}

fn job_manager(m: &str, heartbeat_timeout: &str) -> Cluster {
    job_manager_with(m, heartbeat_timeout, &[])
}

/// [`job_manager`] with more arguments.
fn job_manager_with(m: &str, heartbeat_timeout: &str, extra: &[&str]) -> Cluster {
    let mut args = vec![
        "jobmanager",
        m,
        "--rest-address",
        "127.0.0.1:0",
        "--rpc-address",
        "127.0.0.1:0",
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        heartbeat_timeout,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let mut jm = Running::start(&args);
    let rpc = jm
        .line_after("JobManager RPC on ", Duration::from_secs(30))
        .split(';')
        .next()
        .unwrap()
        .to_string();
    Cluster {
        jm,
        rpc,
        rest: String::new(),
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Starts JobManager and two TaskManagers; returns once the job runs.
fn start(
    dir: &Path,
    heartbeat_timeout: &str,
    spare: bool,
) -> (String, Cluster, Vec<TaskManagerProcess>) {
    let m = cluster_orders_manifest(dir, "job.yaml", 3000, "out", "");
    let mut c = job_manager(&m, heartbeat_timeout);
    let mut tms = vec![
        start_task_manager(&m, &c.rpc, "tm-a"),
        start_task_manager(&m, &c.rpc, "tm-b"),
    ];
    if spare {
        tms.push(start_task_manager(&m, &c.rpc, "tm-spare"));
    }
    c.rest = c.jm.rest_address();
    (m, c, tms)
}

fn finish(c: &mut Cluster) -> String {
    let (code, stderr) = c.jm.exit(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{stderr}");
    stderr
}

#[test]
fn a_task_manager_killed_with_sigkill_is_replaced_and_output_stays_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path());
    let (m, mut c, tms) = start(dir.path(), "10s", false);
    wait_for_checkpoints(&c.rest, 2);
    // The TaskManagers' counts reach the JobManager, and each serves its own.
    let (_, tm_metrics) = http(&tms[1].metrics, "GET", "/metrics");
    assert!(
        tm_metrics.contains("weir_taskmanager_operator_numRecordsIn{"),
        "{tm_metrics}"
    );
    assert!(
        metric(&tm_metrics, "weir_taskmanager_rss_bytes").unwrap() > 0.0,
        "{tm_metrics}"
    );
    let killed = Instant::now();
    tms[0].proc.signal("-KILL");
    let _replacement = start_task_manager(&m, &c.rpc, "tm-c");
    // Recovery: the job runs again, restored from a checkpoint, without any human step.
    loop {
        let h = checkpoints(&c.rest);
        if h.latest_restored.is_some() && job(&c.rest).state == weir_api::JobState::Running {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no recovery");
        std::thread::sleep(Duration::from_millis(20));
    }
    let overview = job(&c.rest);
    assert!(overview.num_restarts >= 1, "{overview:?}");
    let stderr = finish(&mut c);
    assert!(stderr.contains("TaskManager tm-a"), "{stderr}");
    assert!(stderr.contains("FINISHED"), "{stderr}");
    assert_eq!(committed(&dir.path().join("out")), expected);
}

#[test]
fn a_stopped_task_manager_backpressures_its_producers_without_loss_or_growth() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path());
    let (_m, mut c, tms) = start(dir.path(), "30s", false);
    wait_for_checkpoints(&c.rest, 1);
    let a = tms[0].proc.child.id();
    tms[1].proc.signal("-STOP");
    // Let the channels into tm-b fill; from then on tm-a's sources are held back by credit.
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kb(a);
    let in_before = job(&c.rest).records_in;
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_kb(a);
    let in_after = job(&c.rest).records_in;
    tms[1].proc.signal("-CONT");
    assert!(
        after < before + 32 * 1024,
        "tm-a grew from {before} kB to {after} kB while its consumer was stopped"
    );
    // Sources stall: at most what was in flight before the stop registers (heartbeats lag).
    assert!(
        in_after - in_before < 2_000,
        "{in_before} -> {in_after} records in while a consumer was stopped"
    );
    let stderr = finish(&mut c);
    assert!(stderr.contains("restarts 0"), "{stderr}");
    assert_eq!(committed(&dir.path().join("out")), expected);
}

#[test]
fn a_hung_task_manager_is_declared_lost_after_the_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path());
    let (_m, mut c, tms) = start(dir.path(), "2s", true);
    wait_for_checkpoints(&c.rest, 1);
    let stopped = Instant::now();
    tms[1].proc.signal("-STOP");
    loop {
        if job(&c.rest).num_restarts >= 1 {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "the hung TaskManager was not declared lost"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let detected = stopped.elapsed();
    assert!(
        detected >= Duration::from_millis(1500),
        "declared lost after {detected:?}, before its timeout"
    );
    let stderr = finish(&mut c);
    tms[1].proc.signal("-CONT");
    assert!(stderr.contains("no heartbeat for 2s"), "{stderr}");
    assert_eq!(committed(&dir.path().join("out")), expected);
}

#[test]
fn a_job_manager_waiting_for_task_managers_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let m = cluster_orders_manifest(dir.path(), "job.yaml", 3000, "out", "");
    let mut c = job_manager(&m, "10s");
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    c.jm.signal("-TERM");
    let (code, stderr) = c.jm.exit(Duration::from_secs(10));
    assert!(asked.elapsed() < Duration::from_secs(5), "{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped while waiting for task slots (0 of 4 offered)"),
        "{stderr}"
    );
}

/// The savepoint request `id` of the job at `addr`, once it is no longer in progress.
fn savepoint_result(addr: &str, id: &str) -> weir_api::rest::SavepointInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http(addr, "GET", &format!("/v1/job/savepoints/{id}"));
        assert_eq!(code, 200, "{body}");
        let info: weir_api::rest::SavepointInfo = serde_json::from_str(&body).unwrap();
        if info.status != weir_api::rest::OperationStatus::InProgress {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "savepoint {id} still in progress"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn without_scheme(uri: &str) -> &str {
    uri.strip_prefix("file://").unwrap_or(uri)
}

/// Under a supervisor (a Kubernetes Deployment restarts the container whenever it exits), a
/// JobManager whose job was stopped with a savepoint must not exit: the restarted one would
/// restore the latest checkpoint, older than the savepoint, and emit again what came between.
/// It keeps serving the job's final state and the savepoint over REST until SIGTERM, then
/// exits 0; the next `--from-latest-checkpoint` start (a resumed job) finds the savepoint in
/// the default savepoint directory and restores it rather than the older checkpoint, and the
/// output across both runs is exactly the failure-free output.
#[test]
fn a_supervised_job_manager_stays_up_after_a_stop_and_the_next_one_resumes_from_the_savepoint() {
    use weir_api::JobState;
    use weir_api::rest::OperationStatus;

    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path());
    let m = cluster_orders_manifest(dir.path(), "job.yaml", 3000, "out", "");
    let mut c = job_manager_with(&m, "10s", &["--supervised"]);
    let tms = [
        start_task_manager(&m, &c.rpc, "tm-a"),
        start_task_manager(&m, &c.rpc, "tm-b"),
    ];
    c.rest = c.jm.rest_address();
    wait_for_checkpoints(&c.rest, 1);

    let (code, body) = http_body(&c.rest, "POST", "/v1/job/stop", "{}");
    assert_eq!(code, 202, "{body}");
    let request: weir_api::rest::TriggerSavepointResponse = serde_json::from_str(&body).unwrap();
    let done = savepoint_result(&c.rest, &request.request_id);
    assert_eq!(done.status, OperationStatus::Completed, "{done:?}");
    let savepoint = done.location.clone().unwrap();
    let default_target = format!("{}/out-checkpoints/savepoints/", dir.path().display());
    assert!(
        without_scheme(&savepoint).starts_with(&default_target),
        "{savepoint} is not in {default_target}"
    );
    c.jm.line_after(
        "the job is SUSPENDED; --supervised: waiting to be terminated",
        Duration::from_secs(30),
    );

    // Well after the stop, the process still serves the job's end and the savepoint.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        c.jm.child.try_wait().unwrap().is_none(),
        "the JobManager exited"
    );
    assert_eq!(job(&c.rest).state, JobState::Suspended);
    assert_eq!(savepoint_result(&c.rest, &request.request_id), done);
    // Ready: it serves the stopped job's final state and savepoint to whoever asks.
    let (code, body) = http(&c.rest, "GET", "/readyz");
    assert_eq!(code, 200, "{body}");

    c.jm.signal("-TERM");
    let (code, stderr) = c.jm.exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("received SIGTERM: exiting"), "{stderr}");
    drop(tms);

    // The job resumed: the next JobManager restores the savepoint, not the older checkpoint.
    let mut next = job_manager_with(&m, "10s", &["--from-latest-checkpoint"]);
    let _tms = [
        start_task_manager(&m, &next.rpc, "tm-c"),
        start_task_manager(&m, &next.rpc, "tm-d"),
    ];
    next.rest = next.jm.rest_address();
    let restored = checkpoints(&next.rest).latest_restored.unwrap();
    assert!(restored.is_savepoint, "{restored:?}");
    assert_eq!(without_scheme(&restored.path), without_scheme(&savepoint));
    let stderr = finish(&mut next);
    assert!(stderr.contains("so the savepoint is restored"), "{stderr}");
    assert_eq!(committed(&dir.path().join("out")), expected);
}
