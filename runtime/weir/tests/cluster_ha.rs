//! JobManager high availability with separate processes: two `weir jobmanager` processes of a
//! job with `spec.jobManager.replicas: 2` campaign for its Lease on the real kube-apiserver
//! that `.ci/run` starts; TaskManagers are given both addresses. Killing the leader hands the
//! job to the standby, which restores it from the latest checkpoint with no human step; a
//! leader paused past its Lease is deposed, its successor's fencing epoch owns the
//! latest-checkpoint pointer, and the old leader exits when it wakes. Output stays exactly
//! once throughout.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{
    Running, checkpoint_history as checkpoints, cluster_orders_manifest,
    cluster_orders_reference as expected, committed_lines as committed,
    wait_for_completed_checkpoints as wait_for_checkpoints,
};
use std::time::{Duration, Instant};
use weir_core::checkpoint::storage::{CheckpointStorage, LocalFsStorage};

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn kube_env() -> Vec<(&'static str, String)> {
    vec![(
        "KUBECONFIG",
        weir_kube_test::kubeconfig_path().display().to_string(),
    )]
}

fn job_manager(m: &str, ns: &str, id: &str, rpc: &str) -> Running {
    let env = kube_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Running::start_with_env(
        &[
            "jobmanager",
            m,
            "--rest-address",
            "127.0.0.1:0",
            "--rpc-address",
            rpc,
            "--namespace",
            ns,
            "--id",
            id,
            "--quiet",
        ],
        &env,
    )
}

/// A leading JobManager (`jm-1`), its standby (`jm-2`) and two TaskManagers given both
/// addresses, for manifest `m` in namespace `ns`; the leader's REST address.
fn ha_cluster(m: &str, ns: &str) -> (Running, Running, Vec<common::TaskManagerProcess>, String) {
    let (rpc1, rpc2) = (free_port(), free_port());
    let mut leader = job_manager(m, ns, "jm-1", &rpc1);
    leader.line_after("JobManager jm-1: leading", Duration::from_secs(30));
    let mut standby = job_manager(m, ns, "jm-2", &rpc2);
    standby.line_after("JobManager jm-2: standby", Duration::from_secs(30));
    let rpcs = format!("{rpc1},{rpc2}");
    let tms = vec![
        common::start_task_manager(m, &rpcs, "tm-a"),
        common::start_task_manager(m, &rpcs, "tm-b"),
    ];
    let rest = leader.rest_address();
    (leader, standby, tms, rest)
}

struct Setup {
    _ns: weir_kube_test::TestNamespace,
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    expected: Vec<String>,
    leader: Running,
    standby: Running,
    _tms: Vec<common::TaskManagerProcess>,
    rest: String,
}

/// A leader with a standby and two TaskManagers, the job running with checkpoints done.
fn setup(prefix: &str) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ns = rt.block_on(weir_kube_test::TestNamespace::create(prefix));
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path());
    let m = cluster_orders_manifest(
        dir.path(),
        "job.yaml",
        2000,
        "out",
        "    replicas: 2
    leaderElection:
      leaseDuration: 2s
      renewDeadline: 1500ms
      retryPeriod: 250ms
    heartbeat:
      interval: 200ms
      timeout: 2s
",
    );
    let (leader, standby, tms, rest) = ha_cluster(&m, ns.name());
    wait_for_checkpoints(&rest, 2);
    Setup {
        _ns: ns,
        _rt: rt,
        dir,
        expected,
        leader,
        standby,
        _tms: tms,
        rest,
    }
}

#[test]
fn killing_the_leader_hands_the_job_to_the_standby_which_restores_it() {
    let mut s = setup("ha-kill");
    let before = checkpoints(&s.rest).counts.completed;
    assert!(before >= 2);
    let killed = Instant::now();
    s.leader.signal("-KILL");
    let epoch = s
        .standby
        .line_after("JobManager jm-2: leading", Duration::from_secs(30));
    let took_over = killed.elapsed();
    assert!(epoch.contains("fencing epoch"), "{epoch}");
    let rest = s.standby.rest_address();
    let restored = s
        .standby
        .line_after("restored from checkpoint ", Duration::from_secs(30));
    let recovered = killed.elapsed();
    eprintln!("standby led after {took_over:?}, job restored ({restored}) after {recovered:?}");
    assert!(checkpoints(&rest).latest_restored.is_some());
    let (code, stderr) = s.standby.exit(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("FINISHED"), "{stderr}");
    assert_eq!(committed(&s.dir.path().join("out")), s.expected);
}

#[test]
fn a_deposed_leader_is_fenced_and_stops_when_it_wakes() {
    let mut s = setup("ha-fence");
    s.leader.signal("-STOP");
    s.standby
        .line_after("JobManager jm-2: leading", Duration::from_secs(30));
    let rest = s.standby.rest_address();
    wait_for_checkpoints(&rest, 1);
    // The pointer now carries the new leader's term, above the old one's.
    let storage =
        LocalFsStorage::new(&s.dir.path().join("out-checkpoints").display().to_string()).unwrap();
    let pointer = storage.read_latest().unwrap().unwrap().pointer;
    assert!(pointer.writer.starts_with("jm-2"), "{pointer:?}");
    s.leader.signal("-CONT");
    let (code, stderr) = s.leader.exit(Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("lost the leadership"), "{stderr}");
    let (code, stderr) = s.standby.exit(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{stderr}");
    let after = storage.read_latest().unwrap().unwrap().pointer;
    assert!(after.writer.starts_with("jm-2"), "{after:?}");
    assert!(after.epoch >= pointer.epoch);
    assert_eq!(committed(&s.dir.path().join("out")), s.expected);
}

/// `examples/orders-cluster.yaml` as shipped (its paths moved into a temporary directory): two
/// JobManagers and two TaskManagers produce committed summaries; the leader told to go
/// (SIGTERM) leaves without cancelling, and the standby carries on from the latest checkpoint.
#[test]
fn the_cluster_example_runs_and_survives_its_leader_leaving() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ns = rt.block_on(weir_kube_test::TestNamespace::create("ha-example"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("output");
    let yaml = std::fs::read_to_string(common::root().join("examples/orders-cluster.yaml"))
        .unwrap()
        .replace(
            "file:///tmp/weir/checkpoints/orders-cluster",
            &format!("file://{}", dir.path().join("checkpoints").display()),
        )
        .replace(
            "/tmp/weir/output/orders-cluster",
            &out.display().to_string(),
        );
    let m = common::write_manifest(dir.path(), "orders-cluster.yaml", &yaml);
    let (mut leader, mut standby, _tms, rest) = ha_cluster(&m, ns.name());
    wait_for_checkpoints(&rest, 1);
    // Summaries appear as checkpoints complete.
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::visible_lines(&out).is_empty() {
        assert!(Instant::now() < deadline, "no committed output");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = common::visible_lines(&out).len();
    leader.signal("-TERM");
    let (code, stderr) = leader.exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("leaves without cancelling the job"),
        "{stderr}"
    );
    standby.line_after("JobManager jm-2: leading", Duration::from_secs(60));
    standby.line_after("restored from checkpoint ", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::visible_lines(&out).len() <= before {
        assert!(Instant::now() < deadline, "no output after the takeover");
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = common::visible_lines(&out);
    let unique: std::collections::BTreeSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "a summary was committed twice");
}
