//! Checkpointing benchmark for the `window-bench` workload (datagen → key by user → 10 s
//! tumbling window count + sum → blackhole): sustained throughput with and without periodic
//! checkpoints, checkpoint duration and size, and recovery time after an injected task failure.
//!
//! ```text
//! cargo run --release -p weir-programs --example checkpoint_bench -- \
//!     [--keys 100000] [--parallelism 1] [--seconds 20] [--warmup 5] [--interval-ms 1000] [--recovery]
//! ```
//! `--interval-ms 0` disables checkpointing. Prints one `SUMMARY` line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_core::checkpoint::coordinator::{CheckpointStatus, FaultPoint};
use weir_core::sink::BlackholeSink;
use weir_core::{CheckpointConfig, EnvConfig, JobSettings, RestartStrategy, RunState, StreamEnv};
use weir_programs::window_bench::{BenchConfig, build_dataflow};

struct Args {
    keys: u64,
    parallelism: u32,
    seconds: u64,
    warmup: u64,
    interval_ms: u64,
    recovery: bool,
}

fn parse() -> Args {
    let mut a = Args {
        keys: 100_000,
        parallelism: 1,
        seconds: 20,
        warmup: 5,
        interval_ms: 1000,
        recovery: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = |i: usize| {
            v.get(i + 1)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match v[i].as_str() {
            "--keys" => a.keys = next(i),
            "--parallelism" => a.parallelism = next(i) as u32,
            "--seconds" => a.seconds = next(i),
            "--warmup" => a.warmup = next(i),
            "--interval-ms" => a.interval_ms = next(i),
            "--recovery" => {
                a.recovery = true;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time (user + system) of this process in seconds: unlike wall-clock throughput, CPU per
/// record barely moves when other processes compete for the cores.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Least-squares slope of (t, n) samples: sustained records per second.
fn slope(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = samples.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

fn percentile(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a = parse();
    let dir = std::env::temp_dir().join(format!("weir-checkpoint-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let armed = Arc::new(AtomicBool::new(false));
    let fired_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let mut job = JobSettings::default();
    if a.interval_ms > 0 {
        let mut c = CheckpointConfig::new(dir.display().to_string())
            .with_interval(Duration::from_millis(a.interval_ms));
        c.num_retained = 2;
        job.checkpoint = Some(c);
        job.restart = Some(RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::ZERO,
        });
    }
    if a.recovery {
        let (armed, fired_at) = (armed.clone(), fired_at.clone());
        job.fault = Some(Arc::new(move |p: &FaultPoint| {
            let hit = matches!(p, FaultPoint::BeforeSnapshot { subtask: 0, .. })
                && armed.swap(false, Ordering::SeqCst);
            if hit && let Ok(mut f) = fired_at.lock() {
                *f = Some(Instant::now());
            }
            hit
        }));
    }
    let env = StreamEnv::new(EnvConfig {
        parallelism: a.parallelism,
        job,
        ..Default::default()
    });
    let cfg = BenchConfig {
        keys: a.keys,
        ..Default::default()
    };
    build_dataflow(&env, &cfg)
        .sink("blackhole", BlackholeSink)
        .uid("blackhole");
    let handle = env.start().expect("job starts");
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut cpu_start: Option<(f64, u64)> = None;
    let mut recovery_ms: Option<f64> = None;
    let mut before = 0u64;
    let end = Duration::from_secs(a.warmup + a.seconds);
    while start.elapsed() < end {
        std::thread::sleep(Duration::from_millis(if a.recovery { 5 } else { 1000 }));
        let t = start.elapsed().as_secs_f64();
        let n = handle.metrics().records_in();
        if !a.recovery {
            if t >= a.warmup as f64 {
                samples.push((t, n as f64));
                cpu_start.get_or_insert((cpu_seconds(), n));
            }
            continue;
        }
        // Recovery mode: arm the fault after the warm-up, then time failure → records flowing.
        if t >= a.warmup as f64
            && fired_at.lock().map(|f| f.is_none()).unwrap_or(false)
            && !armed.load(Ordering::SeqCst)
            && recovery_ms.is_none()
        {
            armed.store(true, Ordering::SeqCst);
            before = n;
        }
        let fired = fired_at.lock().ok().and_then(|f| *f);
        if let Some(f) = fired
            && recovery_ms.is_none()
        {
            let st = handle.status();
            // A new attempt counts from zero: once it has emitted records again, it flows.
            if st.num_restarts >= 1 && st.state == RunState::Running && n < before && n > 1_000 {
                recovery_ms = Some(f.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if recovery_ms.is_some() {
            break;
        }
    }
    let cpu_ns_per_record = cpu_start.map_or(0.0, |(c0, n0)| {
        let n = handle.metrics().records_in().saturating_sub(n0).max(1);
        (cpu_seconds() - c0) * 1e9 / n as f64
    });
    let stats = handle.checkpoint_stats();
    handle.cancel();
    let _ = handle.wait_timeout(Duration::from_secs(30));
    let completed: Vec<_> = stats
        .history
        .iter()
        .filter(|r| r.status == CheckpointStatus::Completed)
        .collect();
    let mut durations: Vec<i64> = completed.iter().filter_map(|r| r.duration_ms).collect();
    let sizes: Vec<u64> = completed.iter().map(|r| r.size_bytes).collect();
    let mean_size = if sizes.is_empty() {
        0
    } else {
        sizes.iter().sum::<u64>() / sizes.len() as u64
    };
    println!(
        "SUMMARY weir p={} keys={} interval_ms={} records_per_s={:.0} checkpoints={} ckpt_p50_ms={} ckpt_max_ms={} ckpt_size_mb={:.1} recovery_ms={} cpu_ns_per_record={:.1} peak_rss_mb={:.1}",
        a.parallelism,
        a.keys,
        a.interval_ms,
        slope(&samples),
        completed.len(),
        percentile(&mut durations.clone(), 0.5),
        percentile(&mut durations, 1.0),
        mean_size as f64 / 1e6,
        recovery_ms.map_or("-".to_string(), |r| format!("{r:.0}")),
        cpu_ns_per_record,
        peak_rss_mb()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
