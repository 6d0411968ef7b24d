//! Benchmarks of the distributed runtime, run against the `weir` binary next to this example
//! (build both with `cargo build --release -p weir --bin weir --example cluster_bench`):
//!
//! - `cluster_bench recovery [--runs N] [--warmup S]`: the window-bench job at parallelism 1
//!   in one TaskManager (1 s checkpoints, 1 s / 5 s heartbeats, 1 s restart delay: the
//!   settings of the Flink anchor's `ds:1:hashmap:fasthb` recovery run). The TaskManager is
//!   killed with SIGKILL and a replacement started at once; printed are the seconds from the
//!   kill to: the failure detected, the job running again, records flowing in the new
//!   TaskManager, and the first checkpoint completed after the restore.
//! - `cluster_bench throughput [--seconds S] [--warmup S]`: window-bench at parallelism 2,
//!   embedded (`weir run`) and as a JobManager with two TaskManagers of one slot each (the key
//!   exchange crosses processes), records/s as the slope of the sources' counts, and peak RSS.
//!
//! Every line starting with `SUMMARY` is a result.

use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use weir::client::Client;
use weir_api::rest::{CheckpointHistory, JobOverview};

fn weir_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("no target directory above {}", exe.display()))?;
    let bin = dir.join("weir");
    if !bin.exists() {
        bail!(
            "{} not found: build it with the same profile",
            bin.display()
        );
    }
    Ok(bin)
}

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(args: &[&str]) -> Result<Self> {
        let mut child = Command::new(weir_binary()?)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let err = child.stderr.take().context("stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Ok(Self { child, lines })
    }

    /// The rest of the first stderr line containing `marker`, after it.
    fn after(&self, marker: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| anyhow!("no line with {marker:?}"))?;
            if let Some((_, rest)) = line.split_once(marker) {
                return Ok(rest.to_string());
            }
        }
    }

    fn peak_rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifest(dir: &Path, parallelism: u32, slots: u32, checkpoints: bool) -> Result<String> {
    let ckpt = if checkpoints {
        format!(
            "  checkpointing:\n    interval: 1s\n    storage: file://{}\n",
            dir.join("ckpt").display()
        )
    } else {
        String::new()
    };
    let yaml = format!(
        "apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: cluster-bench
spec:
  job:
    program: window-bench
    parallelism: {parallelism}
  jobManager:
    heartbeat:
      interval: 1s
      timeout: 5s
  taskManager:
    replicas: {parallelism}
    slots: {slots}
{ckpt}  restartStrategy:
    type: fixedDelay
    attempts: 1000
    delay: 1s
"
    );
    let p = dir.join(format!("job-p{parallelism}.yaml"));
    std::fs::write(&p, yaml)?;
    Ok(p.display().to_string())
}

fn job_manager(m: &str) -> Result<(Proc, String)> {
    let jm = Proc::start(&[
        "jobmanager",
        m,
        "--rest-address",
        "127.0.0.1:0",
        "--rpc-address",
        "127.0.0.1:0",
        "--quiet",
    ])?;
    let rpc = jm
        .after("JobManager RPC on ")?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((jm, rpc))
}

fn task_manager(m: &str, rpc: &str, id: &str) -> Result<(Proc, Client)> {
    let tm = Proc::start(&[
        "taskmanager",
        m,
        "--jobmanager",
        rpc,
        "--data-address",
        "127.0.0.1:0",
        "--metrics-address",
        "127.0.0.1:0",
        "--id",
        id,
    ])?;
    let metrics = tm
        .after("metrics on http://")?
        .trim_end_matches("/metrics")
        .to_string();
    Ok((tm, Client::new(&metrics, Duration::from_secs(5))))
}

/// Records the TaskManager's sources emitted (its own /metrics).
fn source_records(tm: &Client) -> u64 {
    let Ok(r) = tm.request("GET", "/metrics", None) else {
        return 0;
    };
    r.body
        .lines()
        .filter(|l| {
            l.starts_with("weir_taskmanager_operator_numRecordsOut{")
                && l.contains("operator_id=\"bench-source\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or_else(|| anyhow!("{name} needs a value"))?
            .parse()?),
        None => Ok(default),
    }
}

fn recovery(runs: u64, warmup: u64) -> Result<()> {
    for run in 1..=runs {
        let dir = tempfile::tempdir()?;
        let m = manifest(dir.path(), 1, 1, true)?;
        let (jm, rpc) = job_manager(&m)?;
        let (mut tm, _) = task_manager(&m, &rpc, "tm-1")?;
        let rest = Client::new(
            jm.after("REST API on http://")?.trim(),
            Duration::from_secs(5),
        );
        let started = Instant::now();
        loop {
            let h: CheckpointHistory =
                rest.call("GET", "/v1/job/checkpoints", None::<&()>, &[200])?;
            if started.elapsed() >= Duration::from_secs(warmup) && h.counts.completed >= 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        tm.child.kill()?;
        let killed = Instant::now();
        let (_tm2, metrics2) = task_manager(&m, &rpc, "tm-2")?;
        let (mut detect, mut running, mut flowing, mut first_ckpt) = (None, None, None, None);
        let mut restored_id = None;
        while killed.elapsed() < Duration::from_secs(120) && first_ckpt.is_none() {
            let dt = killed.elapsed().as_secs_f64();
            let j: JobOverview = rest.call("GET", "/v1/job", None::<&()>, &[200])?;
            if detect.is_none() && j.num_restarts > 0 {
                detect = Some(dt);
            }
            if detect.is_some() && running.is_none() && j.state == weir_api::JobState::Running {
                running = Some(dt);
            }
            if running.is_some() && flowing.is_none() && source_records(&metrics2) > 0 {
                flowing = Some(dt);
            }
            let h: CheckpointHistory =
                rest.call("GET", "/v1/job/checkpoints", None::<&()>, &[200])?;
            if let Some(r) = &h.latest_restored {
                restored_id = Some(r.id);
            }
            if let (Some(rid), Some(c)) = (restored_id, &h.latest_completed)
                && c.id > rid
                && flowing.is_some()
            {
                first_ckpt = Some(dt);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "SUMMARY weir recovery run={run} detect_s={} running_s={} records_flowing_s={} \
             first_ckpt_after_s={}",
            f(detect),
            f(running),
            f(flowing),
            f(first_ckpt)
        );
        drop(jm);
    }
    Ok(())
}

/// Records/s as the least-squares slope of (time, count) samples.
fn slope(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = samples.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

fn measure(count: impl Fn() -> u64, warmup: u64, seconds: u64) -> f64 {
    std::thread::sleep(Duration::from_secs(warmup));
    let t0 = Instant::now();
    let mut samples = Vec::new();
    while t0.elapsed() < Duration::from_secs(seconds) {
        samples.push((t0.elapsed().as_secs_f64(), count() as f64));
        std::thread::sleep(Duration::from_millis(500));
    }
    slope(&samples)
}

fn throughput(seconds: u64, warmup: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let m = manifest(dir.path(), 2, 1, false)?;
    // Embedded: one process.
    let run = Proc::start(&["run", &m, "--rest-address", "127.0.0.1:0", "--quiet"])?;
    let rest = Client::new(
        run.after("REST API on http://")?.trim(),
        Duration::from_secs(5),
    );
    let embedded = measure(
        || {
            rest.call::<JobOverview>("GET", "/v1/job", None::<&()>, &[200])
                .map_or(0, |j| j.records_in)
        },
        warmup,
        seconds,
    );
    let embedded_rss = run.peak_rss_mb();
    drop(run);
    // Cluster: JobManager and two TaskManagers of one slot each.
    let (jm, rpc) = job_manager(&m)?;
    let (tm1, c1) = task_manager(&m, &rpc, "tm-1")?;
    let (tm2, c2) = task_manager(&m, &rpc, "tm-2")?;
    jm.after("REST API on http://")?;
    let cluster = measure(
        || source_records(&c1) + source_records(&c2),
        warmup,
        seconds,
    );
    let (jm_rss, tm_rss) = (jm.peak_rss_mb(), tm1.peak_rss_mb() + tm2.peak_rss_mb());
    println!("SUMMARY weir embedded p=2 records_per_s={embedded:.0} peak_rss_mb={embedded_rss:.1}");
    println!(
        "SUMMARY weir cluster p=2 taskmanagers=2 records_per_s={cluster:.0} \
         taskmanagers_peak_rss_mb={tm_rss:.1} jobmanager_peak_rss_mb={jm_rss:.1} \
         ratio_to_embedded={:.2}",
        cluster / embedded
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("recovery") => recovery(arg(&args, "--runs", 3)?, arg(&args, "--warmup", 20)?),
        Some("throughput") => throughput(arg(&args, "--seconds", 20)?, arg(&args, "--warmup", 5)?),
        _ => bail!(
            "usage: cluster_bench recovery [--runs N] [--warmup S] | throughput [--seconds S] [--warmup S]"
        ),
    }
}
