//! Helpers shared by the tests that run the `weir` binary: starting it, reading its stderr line
//! by line, a minimal HTTP client for its REST API, and temporary manifests.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_api::rest::JobOverview;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.current_dir(root()).stdin(Stdio::null());
    c
}

pub fn run_to_end(args: &[&str]) -> Output {
    weir().args(args).output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Kills the child if a test fails before it exits, so no job outlives the test.
pub struct Running {
    pub child: Child,
    stderr: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`Running::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = weir()
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stderr: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line starting with `prefix` and returns the rest of it.
    pub fn line_after(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_string();
                    }
                }
                Err(_) => panic!(
                    "no line starting with {prefix:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn rest_address(&mut self) -> String {
        self.line_after("REST API on http://", Duration::from_secs(30))
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit and returns the code with all of stderr.
    pub fn exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "weir did not exit within {timeout:?}; stderr so far:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status.code(), self.seen.join("\n"))
    }
}

/// A minimal HTTP/1.1 client: enough for the runtime's own API on the loopback interface.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    http_body(addr, method, path, "")
}

/// [`http`] with a JSON body.
pub fn http_body(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

pub fn job(addr: &str) -> JobOverview {
    let (code, body) = http(addr, "GET", "/v1/job");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// An endless orders job named `name` at parallelism 2, with `checkpointing` (the lines under
/// `spec.checkpointing:`, indented by four spaces).
pub fn orders_manifest_yaml(name: &str, checkpointing: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: {name}
spec:
  job:
    program: orders
    args:
      rate: \"1000\"
      users: \"100\"
      event-time: synthetic
      sink: blackhole
    parallelism: 2
  taskManager:
    slots: 2
  checkpointing:
{checkpointing}"
    )
}

pub fn write_manifest(dir: &Path, name: &str, yaml: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p.to_string_lossy().into_owned()
}

/// `examples/<name>.yaml` with its checkpoints in `dir/checkpoints` instead of the shared
/// `/tmp/weir/checkpoints/<name>`, so that tests running at the same time do not write into one
/// another's checkpoint directory. Returns the manifest path and the storage URI.
pub fn example_in(dir: &Path, name: &str) -> (String, String) {
    let yaml =
        std::fs::read_to_string(root().join("examples").join(format!("{name}.yaml"))).unwrap();
    let shared = format!("file:///tmp/weir/checkpoints/{name}");
    assert!(
        yaml.contains(&shared),
        "{name}.yaml checkpoints to {shared}"
    );
    let storage = format!("file://{}", dir.join("checkpoints").display());
    let m = write_manifest(
        dir,
        &format!("{name}.yaml"),
        &yaml.replace(&shared, &storage),
    );
    (m, storage)
}

/// An orders job of 30 000 orders at `rate` per second (0: as fast as it goes) at parallelism 4,
/// writing exactly-once part files to `dir/<out>` with 300 ms checkpoints in
/// `dir/<out>-checkpoints`; `job_manager` is the YAML of `spec.jobManager` (its lines indented
/// by four spaces), empty for the defaults.
pub fn cluster_orders_manifest(
    dir: &Path,
    name: &str,
    rate: u64,
    out: &str,
    job_manager: &str,
) -> String {
    let job_manager = if job_manager.is_empty() {
        String::new()
    } else {
        format!("  jobManager:\n{job_manager}")
    };
    let yaml = format!(
        "apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: cluster-orders
spec:
  job:
    program: orders
    args:
      rate: \"{rate}\"
      count: \"30000\"
      users: \"100\"
      sink: exactly-once-file:{out}
    parallelism: 4
{job_manager}  taskManager:
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

/// Every committed line of the part files in `dir`, sorted; fails if a part is left in progress
/// (for a job that ended).
pub fn committed_lines(dir: &Path) -> Vec<String> {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".inprogress"),
            "{name} was left in progress"
        );
    }
    visible_lines(dir)
}

/// Every line of the visible (committed) part files in `dir`, sorted, while a job may still be
/// writing in-progress ones.
pub fn visible_lines(dir: &Path) -> Vec<String> {
    let mut lines = weir_connectors::read_committed(dir).unwrap();
    lines.sort();
    lines
}

/// The failure-free output of [`cluster_orders_manifest`]: the same job embedded, as fast as it
/// goes, into `dir/reference`.
pub fn cluster_orders_reference(dir: &Path) -> Vec<String> {
    let m = cluster_orders_manifest(dir, "reference.yaml", 0, "reference", "");
    let out = run_to_end(&["run", &m, "--rest-address", "127.0.0.1:0", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = committed_lines(&dir.join("reference"));
    assert!(lines.len() > 100, "{}", lines.len());
    lines
}

/// The checkpoint statistics of the job at `addr`.
pub fn checkpoint_history(addr: &str) -> weir_api::rest::CheckpointHistory {
    let (code, body) = http(addr, "GET", "/v1/job/checkpoints");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits (up to 30 s) until the job at `addr` completed `n` checkpoints.
pub fn wait_for_completed_checkpoints(addr: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint_history(addr).counts.completed < n {
        assert!(Instant::now() < deadline, "fewer than {n} checkpoints");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `weir taskmanager` process and the address of its `/metrics`.
pub struct TaskManagerProcess {
    pub proc: Running,
    pub metrics: String,
}

/// Starts `weir taskmanager` for `manifest` with the JobManager address(es) `jobmanagers`,
/// ports picked freely, and waits until it is up.
pub fn start_task_manager(manifest: &str, jobmanagers: &str, id: &str) -> TaskManagerProcess {
    let mut proc = Running::start(&[
        "taskmanager",
        manifest,
        "--jobmanager",
        jobmanagers,
        "--data-address",
        "127.0.0.1:0",
        "--metrics-address",
        "127.0.0.1:0",
        "--id",
        id,
    ]);
    let line = proc.line_after("TaskManager data port ", Duration::from_secs(30));
    let metrics = line
        .split("metrics on http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string();
    TaskManagerProcess { proc, metrics }
}
