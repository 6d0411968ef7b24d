//! `weir bench`: sustained throughput and peak memory of the `window-bench` program, the same
//! workload as the Flink anchor (`shared/bench/flink-anchor.sh`), measured the same way.
//!
//! Each parallelism runs in a fresh child process (`weir bench-child`) so that the peak RSS of one
//! configuration is not inflated by the one before. The child samples the sources' record counter
//! every second and reports the least-squares slope of the samples after the warm-up as records
//! per second, plus `VmHWM` as peak RSS, in one `SUMMARY` line that the parent collects.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_core::{EnvConfig, ProgramArgs, Registry, StreamEnv};

use crate::error::CliError;
use crate::metrics::process_memory;
use crate::progress::{format_elapsed, human_count, human_count_f};

/// The program every configuration runs.
pub const BENCH_PROGRAM: &str = "window-bench";

/// How long a child gets to stop after cancelling its job.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One configuration's result, as printed on a `SUMMARY` line.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSummary {
    /// Parallelism.
    pub parallelism: u32,
    /// Sustained source records per second after the warm-up.
    pub records_per_second: f64,
    /// Peak resident memory in MiB.
    pub peak_rss_mb: f64,
    /// Total run time in seconds, warm-up included.
    pub seconds: u64,
}

impl BenchSummary {
    /// The machine-readable line, e.g.
    /// `SUMMARY weir p=2 records_per_s=1830000 peak_rss_mb=95.2 seconds=20`.
    pub fn line(&self) -> String {
        format!(
            "SUMMARY weir p={} records_per_s={:.0} peak_rss_mb={:.1} seconds={}",
            self.parallelism, self.records_per_second, self.peak_rss_mb, self.seconds
        )
    }

    /// Parses a line written by [`BenchSummary::line`].
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix("SUMMARY weir ")?;
        let mut p = None;
        let mut rate = None;
        let mut rss = None;
        let mut secs = None;
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "p" => p = v.parse().ok(),
                "records_per_s" => rate = v.parse().ok(),
                "peak_rss_mb" => rss = v.parse().ok(),
                "seconds" => secs = v.parse().ok(),
                _ => {}
            }
        }
        Some(Self {
            parallelism: p?,
            records_per_second: rate?,
            peak_rss_mb: rss?,
            seconds: secs?,
        })
    }
}

/// Least-squares slope of `y` over `x`; `None` with fewer than two distinct `x`.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

fn check_times(seconds: u64, warmup: u64) -> Result<(), CliError> {
    // The slope needs at least three samples after the warm-up to mean anything.
    if seconds < warmup + 3 {
        return Err(CliError::Bench(format!(
            "--seconds {seconds} leaves fewer than 3 s after --warmup {warmup}; use --seconds {} or more",
            warmup + 3
        )));
    }
    Ok(())
}

/// `weir bench`: runs every parallelism in its own child process and prints their summaries and a
/// table.
pub fn run_parent(
    parallelisms: &[u32],
    seconds: u64,
    warmup: u64,
) -> Result<Vec<BenchSummary>, CliError> {
    check_times(seconds, warmup)?;
    if parallelisms.is_empty() || parallelisms.contains(&0) {
        return Err(CliError::Bench(
            "--parallelism needs one or more values of at least 1, e.g. 1,2".into(),
        ));
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Bench(format!("cannot find the weir executable: {e}")))?;
    let mut results = Vec::new();
    for &p in parallelisms {
        eprintln!(
            "bench: {BENCH_PROGRAM} p={p} for {seconds}s ({warmup}s warm-up) in a fresh process"
        );
        let mut child = Command::new(&exe)
            .args(["bench-child", "--parallelism", &p.to_string()])
            .args([
                "--seconds",
                &seconds.to_string(),
                "--warmup",
                &warmup.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| CliError::Bench(format!("cannot start {}: {e}", exe.display())))?;
        let mut summary = None;
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines() {
                let line =
                    line.map_err(|e| CliError::Bench(format!("reading the child's output: {e}")))?;
                match BenchSummary::parse(&line) {
                    Some(s) => {
                        println!("{line}");
                        summary = Some(s);
                    }
                    None => println!("{line}"),
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| CliError::Bench(format!("waiting for the child: {e}")))?;
        match summary {
            Some(s) if status.success() => results.push(s),
            _ => {
                return Err(CliError::Bench(format!(
                    "the p={p} run failed ({status}); see its output above"
                )));
            }
        }
    }
    println!();
    println!("{}", format_table(&results));
    Ok(results)
}

/// A small human-readable table of results.
pub fn format_table(results: &[BenchSummary]) -> String {
    let mut s = format!("{:<6} {:>12} {:>14}\n", "config", "records/s", "peak RSS");
    for r in results {
        s.push_str(&format!(
            "{:<6} {:>12} {:>11.1} MB\n",
            format!("p={}", r.parallelism),
            human_count_f(r.records_per_second),
            r.peak_rss_mb
        ));
    }
    s
}

/// `weir bench-child`: runs one configuration in this process and prints its `SUMMARY` line.
pub fn run_child(
    registry: &Registry,
    parallelism: u32,
    seconds: u64,
    warmup: u64,
) -> Result<BenchSummary, CliError> {
    check_times(seconds, warmup)?;
    let program = registry.get(BENCH_PROGRAM).map_err(|e| {
        CliError::Bench(format!(
            "{e}; `weir bench` needs the built-in {BENCH_PROGRAM} program in the registry"
        ))
    })?;
    let env = StreamEnv::new(EnvConfig {
        name: BENCH_PROGRAM.into(),
        parallelism,
        max_parallelism: 128.max(parallelism),
        ..Default::default()
    });
    // Default arguments are the anchor's workload (100 000 keys, 10 s windows, unbounded input).
    program
        .build(&env, &ProgramArgs::default())
        .map_err(|e| CliError::Bench(format!("{BENCH_PROGRAM} did not build: {e}")))?;
    let handle = env.start().map_err(CliError::Start)?;
    let metrics = handle.metrics().clone();
    let start = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut last = 0u64;
    for i in 1..=seconds {
        std::thread::sleep(
            (start + Duration::from_secs(i)).saturating_duration_since(Instant::now()),
        );
        let t = start.elapsed().as_secs_f64();
        let n = metrics.records_in();
        if i > warmup {
            samples.push((t, n as f64));
        }
        let phase = if i <= warmup { "warm-up" } else { "measure" };
        eprintln!(
            "[{}] p{parallelism} {phase} {} records, {}/s",
            format_elapsed(start.elapsed()),
            human_count(n),
            human_count_f(n.saturating_sub(last) as f64)
        );
        last = n;
        if handle.is_done() {
            break;
        }
    }
    handle.cancel();
    match handle.wait_timeout(STOP_GRACE) {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(CliError::JobFailed(e)),
        None => return Err(CliError::ShutdownTimeout(STOP_GRACE)),
    }
    let rate = slope(&samples).ok_or_else(|| {
        CliError::Bench("the job ended before enough samples were taken after the warm-up".into())
    })?;
    let peak = process_memory().map_or(0, |m| m.peak_rss_bytes);
    let summary = BenchSummary {
        parallelism,
        records_per_second: rate,
        peak_rss_mb: peak as f64 / (1024.0 * 1024.0),
        seconds,
    };
    println!("{}", summary.line());
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 1000.0 * f64::from(i) + 7.0))
            .collect();
        assert!((slope(&pts).unwrap() - 1000.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }

    #[test]
    fn summary_lines_round_trip() {
        let s = BenchSummary {
            parallelism: 2,
            records_per_second: 1_830_000.4,
            peak_rss_mb: 95.21,
            seconds: 20,
        };
        assert_eq!(
            s.line(),
            "SUMMARY weir p=2 records_per_s=1830000 peak_rss_mb=95.2 seconds=20"
        );
        let back = BenchSummary::parse(&s.line()).unwrap();
        assert_eq!((back.parallelism, back.seconds), (2, 20));
        assert_eq!(back.records_per_second, 1_830_000.0);
        assert_eq!(BenchSummary::parse("SUMMARY flink p=1"), None);
        assert_eq!(BenchSummary::parse("SUMMARY weir p=1 seconds=3"), None);
    }

    #[test]
    fn warmup_must_leave_samples() {
        assert!(check_times(8, 5).is_ok());
        assert!(check_times(7, 5).is_err());
    }

    #[test]
    fn table() {
        let t = format_table(&[BenchSummary {
            parallelism: 1,
            records_per_second: 1.0e6,
            peak_rss_mb: 40.0,
            seconds: 20,
        }]);
        assert_eq!(
            t,
            "config    records/s       peak RSS\np=1           1.00M        40.0 MB\n"
        );
    }
}
