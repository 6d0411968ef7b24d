//! JobManager high availability with separate processes: two `weir jobmanager` processes of a
//! job with `spec.jobManager.replicas: 2` campaign for its Lease on the real kube-apiserver
//! that `.ci/run` starts; TaskManagers are given both addresses. Killing the leader hands the
//! job to the standby, which restores it from the latest checkpoint with no human step; a
//! leader paused past its Lease is deposed, its successor's fencing epoch owns the
//! latest-checkpoint pointer, and the old leader exits when it wakes. Output stays exactly
//! once throughout.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{Running, http, write_manifest};
use std::path::Path;
use std::time::{Duration, Instant};
use weir_api::rest::CheckpointHistory;
use weir_core::checkpoint::storage::{CheckpointStorage, LocalFsStorage};

fn manifest(dir: &Path, name: &str, rate: u64, out: &str, replicas: u32) -> String {
    let yaml = format!(
        "apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: ha-orders
spec:
  job:
    program: orders
    args:
      rate: \"{rate}\"
      count: \"30000\"
      users: \"100\"
      sink: exactly-once-file:{out}
    parallelism: 4
  jobManager:
    replicas: {replicas}
    leaderElection:
      leaseDuration: 2s
      renewDeadline: 1500ms
      retryPeriod: 250ms
    heartbeat:
      interval: 200ms
      timeout: 2s
  taskManager:
    replicas: 2
    slots: 2
  checkpointing:
    interval: 300ms
    storage: file://{ckpt}
  restartStrategy:
    type: fixedDelay
    attempts: 10
    delay: 100ms
",
        out = dir.join(out).display(),
        ckpt = dir.join(format!("{out}-checkpoints")).display()
    );
    write_manifest(dir, name, &yaml)
}

fn committed(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".inprogress"),
            "{name} was left in progress"
        );
        if name.starts_with("part-") {
            lines.extend(
                std::fs::read_to_string(e.path())
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    lines.sort();
    lines
}

fn expected(dir: &Path) -> Vec<String> {
    let m = manifest(dir, "reference.yaml", 0, "reference", 1);
    let out = common::run_to_end(&["run", &m, "--rest-address", "127.0.0.1:0", "--quiet"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    committed(&dir.join("reference"))
}

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

fn task_manager(m: &str, rpcs: &str, id: &str) -> Running {
    let mut tm = Running::start(&[
        "taskmanager",
        m,
        "--jobmanager",
        rpcs,
        "--data-address",
        "127.0.0.1:0",
        "--metrics-address",
        "127.0.0.1:0",
        "--id",
        id,
    ]);
    tm.line_after("TaskManager data port ", Duration::from_secs(30));
    tm
}

fn checkpoints(addr: &str) -> CheckpointHistory {
    let (code, body) = http(addr, "GET", "/v1/job/checkpoints");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_for_checkpoints(addr: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoints(addr).counts.completed < n {
        assert!(Instant::now() < deadline, "fewer than {n} checkpoints");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Setup {
    _ns: weir_kube_test::TestNamespace,
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    expected: Vec<String>,
    leader: Running,
    standby: Running,
    _tms: Vec<Running>,
    rest: String,
}

/// A leader with a standby and two TaskManagers, the job running with checkpoints done.
fn setup(prefix: &str) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ns = rt.block_on(weir_kube_test::TestNamespace::create(prefix));
    let dir = tempfile::tempdir().unwrap();
    let expected = expected(dir.path());
    let m = manifest(dir.path(), "job.yaml", 2000, "out", 2);
    let (rpc1, rpc2) = (free_port(), free_port());
    let mut leader = job_manager(&m, ns.name(), "jm-1", &rpc1);
    leader.line_after("JobManager jm-1: leading", Duration::from_secs(30));
    let mut standby = job_manager(&m, ns.name(), "jm-2", &rpc2);
    standby.line_after("JobManager jm-2: standby", Duration::from_secs(30));
    let rpcs = format!("{rpc1},{rpc2}");
    let tms = vec![
        task_manager(&m, &rpcs, "tm-a"),
        task_manager(&m, &rpcs, "tm-b"),
    ];
    let rest = leader.rest_address();
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
