//! The view of one running job that the REST API, `/metrics` and the progress line share: static
//! job information, the engine's [`JobHandle`], and record rates computed by a sampler from
//! counter deltas (the engine only keeps totals).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use weir_api::JobState;
use weir_api::rest::{JobOverview, VertexOverview};
use weir_core::metrics::JobMetrics;
use weir_core::time::now_ms;
use weir_core::{JobHandle, RunState};

/// What is known about a job before it runs.
#[derive(Debug, Clone)]
pub struct JobInfo {
    /// Unique id of this run: the job name plus random hex.
    pub job_id: String,
    /// Job name (`metadata.name`).
    pub name: String,
    /// Program name (`spec.job.program`).
    pub program: String,
}

impl JobInfo {
    /// Info for a run of `name`, with a fresh job id.
    pub fn new(name: &str, program: &str) -> Self {
        Self {
            job_id: new_job_id(name),
            name: name.to_string(),
            program: program.to_string(),
        }
    }
}

/// `<name>-<16 hex digits>`: unique per run without a UUID dependency. The std hasher's random
/// keys plus the clock and process id make collisions between runs practically impossible.
fn new_job_id(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u32(d.subsec_nanos());
    }
    format!("{name}-{:016x}", h.finish())
}

/// Totals and rates at the last sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateSample {
    /// Records read by sources.
    pub records_in: u64,
    /// Records written by sinks.
    pub records_out: u64,
    /// Source records per second since the previous sample.
    pub in_per_second: f64,
    /// Sink records per second since the previous sample.
    pub out_per_second: f64,
}

/// Turns counter totals sampled over time into per-second rates.
#[derive(Debug, Default)]
pub struct RateTracker {
    at: Option<Instant>,
    last: RateSample,
}

impl RateTracker {
    /// Records totals seen at `now` and returns them with the rates since the previous update.
    /// The first update only sets the baseline (rates 0); an update at the same instant keeps
    /// the previous rates rather than dividing by zero.
    pub fn update(&mut self, now: Instant, records_in: u64, records_out: u64) -> RateSample {
        let (in_per_second, out_per_second) = match self.at {
            Some(prev) if now > prev => {
                let dt = now.duration_since(prev).as_secs_f64();
                (
                    records_in.saturating_sub(self.last.records_in) as f64 / dt,
                    records_out.saturating_sub(self.last.records_out) as f64 / dt,
                )
            }
            Some(_) => (self.last.in_per_second, self.last.out_per_second),
            None => (0.0, 0.0),
        };
        self.at = Some(now);
        self.last = RateSample {
            records_in,
            records_out,
            in_per_second,
            out_per_second,
        };
        self.last
    }

    /// The latest sample.
    pub fn last(&self) -> RateSample {
        self.last
    }
}

/// A running job as seen by the REST API, the metrics exporter and the progress line.
#[derive(Debug)]
pub struct JobMonitor {
    info: JobInfo,
    handle: JobHandle,
    rates: Mutex<RateTracker>,
}

impl JobMonitor {
    /// Monitors `handle`.
    pub fn new(info: JobInfo, handle: JobHandle) -> Arc<Self> {
        Arc::new(Self {
            info,
            handle,
            rates: Mutex::new(RateTracker::default()),
        })
    }

    /// Static job information.
    pub fn info(&self) -> &JobInfo {
        &self.info
    }

    /// The engine's handle.
    pub fn handle(&self) -> &JobHandle {
        &self.handle
    }

    /// The engine's live counters.
    pub fn metrics(&self) -> &Arc<JobMetrics> {
        self.handle.metrics()
    }

    /// The job's state in REST terms.
    pub fn state(&self) -> JobState {
        job_state(&self.handle.status().state)
    }

    /// Asks the job to stop; false if it had already ended.
    pub fn cancel(&self) -> bool {
        if self.handle.is_done() {
            return false;
        }
        self.handle.cancel();
        true
    }

    /// Reads the counters now and updates the rates (call about once a second).
    pub fn sample(&self) -> RateSample {
        self.sample_at(Instant::now())
    }

    /// [`JobMonitor::sample`] at a given instant, for tests.
    pub fn sample_at(&self, now: Instant) -> RateSample {
        let m = self.metrics();
        let (records_in, records_out) = (m.records_in(), m.records_out());
        self.rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(now, records_in, records_out)
    }

    /// The latest sample (totals as of that sample).
    pub fn last_sample(&self) -> RateSample {
        self.rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
    }

    /// The job overview served by `GET /v1/job`.
    pub fn overview(&self) -> JobOverview {
        let status = self.handle.status();
        let m = self.metrics();
        let rates = self.last_sample();
        let end = status.end_ms.unwrap_or_else(now_ms);
        // A failed job reports why it failed; a running one the last failure it restarted from.
        let failure = match &status.state {
            RunState::Failed(msg) => Some(msg.clone()),
            _ => status.last_failure.clone(),
        };
        JobOverview {
            job_id: self.info.job_id.clone(),
            name: self.info.name.clone(),
            program: self.info.program.clone(),
            state: job_state(&status.state),
            start_time_ms: status.start_ms,
            duration_ms: (end - status.start_ms).max(0),
            parallelism: self.handle.parallelism(),
            max_parallelism: self.handle.max_parallelism(),
            num_restarts: status.num_restarts,
            records_in: m.records_in(),
            records_out: m.records_out(),
            records_in_per_second: rates.in_per_second,
            records_out_per_second: rates.out_per_second,
            current_watermark_ms: m.watermark(),
            last_checkpoint: None,
            failure,
            vertices: m
                .vertices
                .iter()
                .map(|v| VertexOverview {
                    id: v.uid.clone(),
                    name: v.name.clone(),
                    parallelism: u32::try_from(v.subtasks.len()).unwrap_or(u32::MAX),
                    records_in: v.records_in(),
                    records_out: v.records_out(),
                    current_input_watermark_ms: v.watermark(),
                })
                .collect(),
        }
    }
}

/// The REST state of an engine state.
pub fn job_state(s: &RunState) -> JobState {
    match s {
        RunState::Running => JobState::Running,
        RunState::Restarting => JobState::Restarting,
        RunState::Cancelling => JobState::Cancelling,
        RunState::Finished => JobState::Finished,
        RunState::Failed(_) => JobState::Failed,
        RunState::Canceled => JobState::Canceled,
        // Stopped with a savepoint: resumable from it, which is what SUSPENDED means.
        RunState::Stopped(_) => JobState::Suspended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_flink_names() {
        assert_eq!(job_state(&RunState::Running), JobState::Running);
        assert_eq!(job_state(&RunState::Cancelling), JobState::Cancelling);
        assert_eq!(job_state(&RunState::Finished), JobState::Finished);
        assert_eq!(job_state(&RunState::Failed("x".into())), JobState::Failed);
        assert_eq!(job_state(&RunState::Canceled), JobState::Canceled);
        assert_eq!(job_state(&RunState::Restarting), JobState::Restarting);
        assert_eq!(
            job_state(&RunState::Stopped("file:///sp".into())),
            JobState::Suspended
        );
    }

    #[test]
    fn rates_come_from_deltas() {
        let t0 = Instant::now();
        let mut r = RateTracker::default();
        let s = r.update(t0, 100, 50);
        assert_eq!(
            (s.in_per_second, s.out_per_second),
            (0.0, 0.0),
            "first sample is a baseline"
        );
        let s = r.update(t0 + std::time::Duration::from_secs(2), 300, 90);
        assert_eq!((s.records_in, s.records_out), (300, 90));
        assert_eq!((s.in_per_second, s.out_per_second), (100.0, 20.0));
        let s = r.update(t0 + std::time::Duration::from_secs(2), 400, 90);
        assert_eq!(
            s.in_per_second, 100.0,
            "no time passed: keep the previous rate"
        );
        let s = r.update(t0 + std::time::Duration::from_millis(2500), 450, 90);
        assert_eq!(s.in_per_second, 100.0);
        assert_eq!(s.out_per_second, 0.0);
        assert_eq!(r.last(), s);
    }

    #[test]
    fn job_ids_are_unique_and_named() {
        let a = JobInfo::new("orders", "orders");
        let b = JobInfo::new("orders", "orders");
        assert!(a.job_id.starts_with("orders-"), "{}", a.job_id);
        assert_eq!(a.job_id.len(), "orders-".len() + 16);
        assert_ne!(a.job_id, b.job_id);
    }
}
