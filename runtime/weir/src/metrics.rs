//! Prometheus exposition of a job's metrics (`GET /metrics`) and the process memory readings
//! (`/proc/self/status`) used by it and by the benchmark.
//!
//! The engine keeps plain atomic totals; this module owns a private Prometheus registry whose
//! gauges and counters are refreshed from those totals at scrape time, so nothing is exported
//! that was not just read and the engine needs no Prometheus dependency.
//!
//! Restart and checkpoint metrics carry Flink's names (`numRestarts`,
//! `numberOfCompletedCheckpoints`, `lastCheckpointDuration`, ...) after the `weir_job_` prefix,
//! as Flink's Prometheus reporter exports them after `flink_jobmanager_job_`, so existing
//! dashboards and alerts carry over. Like Flink's, the `lastCheckpoint*` gauges are -1 until
//! there is a value.

use std::sync::{Mutex, PoisonError};

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use weir_api::JobState;

use crate::monitor::JobMonitor;

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const OPERATOR_LABELS: [&str; 2] = ["operator_id", "operator_name"];

/// The registry and metric handles of one job.
pub struct Exporter {
    registry: Registry,
    records_in: IntCounter,
    records_out: IntCounter,
    in_per_second: Gauge,
    out_per_second: Gauge,
    watermark: Gauge,
    uptime: Gauge,
    restarts: IntCounter,
    num_restarts: IntGauge,
    full_restarts: IntGauge,
    completed_checkpoints: IntGauge,
    failed_checkpoints: IntGauge,
    in_progress_checkpoints: IntGauge,
    total_checkpoints: IntGauge,
    last_checkpoint_duration: IntGauge,
    last_checkpoint_size: IntGauge,
    last_checkpoint_alignment: IntGauge,
    last_restore_timestamp: IntGauge,
    state: IntGaugeVec,
    op_in: IntCounterVec,
    op_out: IntCounterVec,
    op_watermark: GaugeVec,
    op_counter: IntCounterVec,
    rss: IntGauge,
    // Refresh-then-gather must not interleave between concurrent scrapes, or one scrape could
    // see another's half-updated counters.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: C,
) -> Result<C, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Exporter {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new_custom(None, None)?;
        let op = |name: &str, help: &str| Opts::new(name, help);
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            register(&r, IntGauge::new(name, help)?)
        };
        Ok(Self {
            num_restarts: gauge(
                "weir_job_numRestarts",
                "Restarts of the job after failures.",
            )?,
            full_restarts: gauge(
                "weir_job_fullRestarts",
                "Restarts that redeployed every task; every restart does, so this equals \
                 numRestarts.",
            )?,
            completed_checkpoints: gauge(
                "weir_job_numberOfCompletedCheckpoints",
                "Completed checkpoints and savepoints.",
            )?,
            failed_checkpoints: gauge(
                "weir_job_numberOfFailedCheckpoints",
                "Failed checkpoints and savepoints.",
            )?,
            in_progress_checkpoints: gauge(
                "weir_job_numberOfInProgressCheckpoints",
                "Checkpoints and savepoints in progress.",
            )?,
            total_checkpoints: gauge(
                "weir_job_totalNumberOfCheckpoints",
                "Checkpoints and savepoints triggered: completed, failed and in progress.",
            )?,
            last_checkpoint_duration: gauge(
                "weir_job_lastCheckpointDuration",
                "Time the last completed checkpoint took, in ms; -1 before the first.",
            )?,
            last_checkpoint_size: gauge(
                "weir_job_lastCheckpointSize",
                "State size of the last completed checkpoint, in bytes; -1 before the first.",
            )?,
            last_checkpoint_alignment: gauge(
                "weir_job_lastCheckpointAlignmentTime",
                "Longest barrier alignment of a task in the last completed checkpoint, in ms; \
                 -1 before the first.",
            )?,
            last_restore_timestamp: gauge(
                "weir_job_lastCheckpointRestoreTimestamp",
                "When the job last restored a checkpoint or savepoint, in ms since the epoch; \
                 -1 if it never did.",
            )?,
            records_in: register(
                &r,
                IntCounter::new(
                    "weir_job_records_in_total",
                    "Records read by the job's sources.",
                )?,
            )?,
            records_out: register(
                &r,
                IntCounter::new(
                    "weir_job_records_out_total",
                    "Records written by the job's sinks.",
                )?,
            )?,
            in_per_second: register(
                &r,
                Gauge::new(
                    "weir_job_records_in_per_second",
                    "Source records per second over the last sampling interval (about 1 s).",
                )?,
            )?,
            out_per_second: register(
                &r,
                Gauge::new(
                    "weir_job_records_out_per_second",
                    "Sink records per second over the last sampling interval (about 1 s).",
                )?,
            )?,
            watermark: register(
                &r,
                Gauge::new(
                    "weir_job_current_watermark_ms",
                    "Lowest watermark at the sinks, in ms since the epoch; NaN before the first \
                     watermark, +Inf once all input ended.",
                )?,
            )?,
            uptime: register(
                &r,
                Gauge::new("weir_job_uptime_seconds", "Time since the job started.")?,
            )?,
            restarts: register(
                &r,
                IntCounter::new(
                    "weir_job_num_restarts_total",
                    "Job restarts after failures.",
                )?,
            )?,
            state: register(
                &r,
                IntGaugeVec::new(
                    op(
                        "weir_job_state",
                        "1 for the job's current state, 0 for the others.",
                    ),
                    &["state"],
                )?,
            )?,
            op_in: register(
                &r,
                IntCounterVec::new(
                    op(
                        "weir_operator_records_in_total",
                        "Records received by an operator.",
                    ),
                    &OPERATOR_LABELS,
                )?,
            )?,
            op_out: register(
                &r,
                IntCounterVec::new(
                    op(
                        "weir_operator_records_out_total",
                        "Records emitted by an operator.",
                    ),
                    &OPERATOR_LABELS,
                )?,
            )?,
            op_watermark: register(
                &r,
                GaugeVec::new(
                    op(
                        "weir_operator_current_input_watermark_ms",
                        "Lowest input watermark over an operator's subtasks, in ms since the \
                         epoch; NaN before every subtask has one.",
                    ),
                    &OPERATOR_LABELS,
                )?,
            )?,
            op_counter: register(
                &r,
                IntCounterVec::new(
                    op(
                        "weir_operator_counter_total",
                        "Counters an operator or its connector defines, by name (for example a \
                         Kafka source's numRecordsInErrors), summed over subtasks.",
                    ),
                    &["operator_id", "operator_name", "counter"],
                )?,
            )?,
            rss: register(
                &r,
                IntGauge::new(
                    "weir_process_resident_memory_bytes",
                    "Resident memory of the weir process.",
                )?,
            )?,
            registry: r,
            scrape: Mutex::new(()),
        })
    }

    /// Refreshes every metric from `job` and renders the text exposition format.
    pub fn render(&self, job: &JobMonitor) -> Result<String, prometheus::Error> {
        let _guard = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let overview = job.overview();
        advance(&self.records_in, overview.records_in);
        advance(&self.records_out, overview.records_out);
        self.in_per_second.set(overview.records_in_per_second);
        self.out_per_second.set(overview.records_out_per_second);
        self.watermark
            .set(watermark_value(overview.current_watermark_ms));
        self.uptime.set(overview.duration_ms as f64 / 1000.0);
        advance(&self.restarts, overview.num_restarts);
        let restarts = saturating_i64(overview.num_restarts);
        self.num_restarts.set(restarts);
        self.full_restarts.set(restarts);
        let stats = job.checkpoint_stats();
        let in_progress = stats.in_progress();
        self.completed_checkpoints
            .set(saturating_i64(stats.completed));
        self.failed_checkpoints.set(saturating_i64(stats.failed));
        self.in_progress_checkpoints
            .set(saturating_i64(in_progress));
        self.total_checkpoints
            .set(saturating_i64(stats.completed + stats.failed + in_progress));
        let last = stats.latest_completed();
        self.last_checkpoint_duration
            .set(last.and_then(|c| c.duration_ms).unwrap_or(-1));
        self.last_checkpoint_size
            .set(last.map_or(-1, |c| saturating_i64(c.size_bytes)));
        self.last_checkpoint_alignment
            .set(last.map_or(-1, |c| c.alignment_ms));
        self.last_restore_timestamp
            .set(stats.last_restore.as_ref().map_or(-1, |r| r.2));
        for s in JobState::ALL {
            self.state
                .with_label_values(&[s.as_str()])
                .set(i64::from(s == overview.state));
        }
        for v in &overview.vertices {
            let labels = [v.id.as_str(), v.name.as_str()];
            advance(&self.op_in.with_label_values(&labels), v.records_in);
            advance(&self.op_out.with_label_values(&labels), v.records_out);
            self.op_watermark
                .with_label_values(&labels)
                .set(watermark_value(v.current_input_watermark_ms));
            for (name, total) in &v.counters {
                let labels = [v.id.as_str(), v.name.as_str(), name.as_str()];
                advance(&self.op_counter.with_label_values(&labels), *total);
            }
        }
        if let Some(mem) = process_memory() {
            self.rss
                .set(i64::try_from(mem.rss_bytes).unwrap_or(i64::MAX));
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// The metrics of a TaskManager process (`weir taskmanager`'s `/metrics`): its operator
/// subtasks' counters and watermarks, labelled by subtask, and its memory.
pub struct TaskManagerExporter {
    registry: Registry,
    tm: std::sync::Arc<weir_core::cluster::TaskManager>,
    op_in: IntCounterVec,
    op_out: IntCounterVec,
    op_watermark: GaugeVec,
    op_counter: IntCounterVec,
    rss: IntGauge,
    scrape: Mutex<()>,
}

impl std::fmt::Debug for TaskManagerExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManagerExporter")
            .finish_non_exhaustive()
    }
}

impl TaskManagerExporter {
    /// Creates and registers every metric of `tm`.
    pub fn new(
        tm: std::sync::Arc<weir_core::cluster::TaskManager>,
    ) -> Result<Self, prometheus::Error> {
        let r = Registry::new_custom(None, None)?;
        let labels = ["operator_id", "operator_name", "subtask"];
        Ok(Self {
            op_in: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "weir_taskmanager_operator_numRecordsIn",
                        "Records that entered the operator subtask in this TaskManager.",
                    ),
                    &labels,
                )?,
            )?,
            op_out: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "weir_taskmanager_operator_numRecordsOut",
                        "Records the operator subtask emitted in this TaskManager.",
                    ),
                    &labels,
                )?,
            )?,
            op_watermark: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "weir_taskmanager_operator_currentInputWatermark",
                        "The operator subtask's input watermark (ms since the epoch).",
                    ),
                    &labels,
                )?,
            )?,
            op_counter: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "weir_taskmanager_operator_counter",
                        "Counters operators and connectors define, by name.",
                    ),
                    &["operator_id", "operator_name", "subtask", "counter"],
                )?,
            )?,
            rss: register(
                &r,
                IntGauge::new(
                    "weir_taskmanager_rss_bytes",
                    "Resident memory of the TaskManager process, bytes.",
                )?,
            )?,
            registry: r,
            tm,
            scrape: Mutex::new(()),
        })
    }

    /// Refreshes every metric and renders the text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let _guard = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        for v in &self.tm.metrics().vertices {
            for (i, s) in v.subtasks.iter().enumerate() {
                let sub = i.to_string();
                let labels = [v.uid.as_str(), v.name.as_str(), sub.as_str()];
                let (rin, rout) = (
                    s.records_in.load(std::sync::atomic::Ordering::Relaxed),
                    s.records_out.load(std::sync::atomic::Ordering::Relaxed),
                );
                let wm = s.watermark.load(std::sync::atomic::Ordering::Relaxed);
                if rin == 0 && rout == 0 && wm == weir_core::metrics::NO_WATERMARK {
                    // Never ran here.
                    continue;
                }
                advance(&self.op_in.with_label_values(&labels), rin);
                advance(&self.op_out.with_label_values(&labels), rout);
                self.op_watermark
                    .with_label_values(&labels)
                    .set(watermark_value(
                        (wm != weir_core::metrics::NO_WATERMARK).then_some(wm),
                    ));
                for (name, total) in s.counters() {
                    let l = [v.uid.as_str(), v.name.as_str(), sub.as_str(), name.as_str()];
                    advance(&self.op_counter.with_label_values(&l), total);
                }
            }
        }
        if let Some(mem) = process_memory() {
            self.rss
                .set(i64::try_from(mem.rss_bytes).unwrap_or(i64::MAX));
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Brings a Prometheus counter up to an engine total. Engine totals never decrease; should one
/// ever appear to, the counter keeps its value instead of going backwards.
fn advance(c: &IntCounter, total: u64) {
    let cur = c.get();
    if total > cur {
        c.inc_by(total - cur);
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn watermark_value(wm: Option<i64>) -> f64 {
    match wm {
        None => f64::NAN,
        Some(i64::MAX) => f64::INFINITY,
        Some(w) => w as f64,
    }
}

/// Memory use of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    /// Resident set size now.
    pub rss_bytes: u64,
    /// Peak resident set size (high-water mark).
    pub peak_rss_bytes: u64,
}

/// Reads `VmRSS` and `VmHWM` from `/proc/self/status`; `None` where that file does not exist.
///
/// The status file reports kilobytes, whereas `/proc/self/statm` counts pages, whose size cannot
/// be asked for without `unsafe` libc calls (forbidden in this workspace).
pub fn process_memory() -> Option<ProcessMemory> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_status(text: &str) -> Option<ProcessMemory> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some(ProcessMemory {
        rss_bytes: field("VmRSS:")?,
        peak_rss_bytes: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_parsing() {
        let text = "Name:\tweir\nVmPeak:\t  900 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            parse_status(text),
            Some(ProcessMemory {
                rss_bytes: 1024 * 1024,
                peak_rss_bytes: 2048 * 1024
            })
        );
        assert_eq!(parse_status("Name: x\n"), None);
    }

    #[test]
    fn counters_only_move_forward() {
        let c = IntCounter::new("c", "c").unwrap();
        advance(&c, 10);
        advance(&c, 7);
        assert_eq!(c.get(), 10);
        advance(&c, 12);
        assert_eq!(c.get(), 12);
    }

    #[test]
    fn watermark_values() {
        assert!(watermark_value(None).is_nan());
        assert_eq!(watermark_value(Some(i64::MAX)), f64::INFINITY);
        assert_eq!(watermark_value(Some(5)), 5.0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_own_memory() {
        let m = process_memory().unwrap();
        assert!(m.rss_bytes > 0 && m.peak_rss_bytes >= m.rss_bytes);
    }
}
