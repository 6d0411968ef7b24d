//! The operator's Prometheus metrics, served on `/metrics` with `/healthz`: reconciliations by
//! result, errors by reason, reconciliation durations, and StreamJobs per lifecycle state.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use std::collections::BTreeMap;
use std::sync::Mutex;
use weir_api::LifecycleState;

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    lifecycle: IntGaugeVec,
    /// Lifecycle state per StreamJob (`namespace/name`), for the per-state gauge.
    states: Mutex<BTreeMap<String, LifecycleState>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const STATES: [LifecycleState; 10] = [
    LifecycleState::Created,
    LifecycleState::Deploying,
    LifecycleState::Running,
    LifecycleState::Stable,
    LifecycleState::Upgrading,
    LifecycleState::Suspended,
    LifecycleState::Failed,
    LifecycleState::RollingBack,
    LifecycleState::RolledBack,
    LifecycleState::Deleting,
];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("weir_operator".into()), None)?;
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "reconciliations_total",
                "Reconciliations of StreamJobs, by result.",
            ),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Failed reconciliations, by reason.",
            ),
            &["reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "How long one reconciliation took.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &[],
        )?;
        let lifecycle = IntGaugeVec::new(
            Opts::new("streamjobs", "StreamJobs per lifecycle state."),
            &["lifecycle"],
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(lifecycle.clone()))?;
        for s in STATES {
            lifecycle.with_label_values(&[&format!("{s:?}")]).set(0);
        }
        Ok(Self {
            registry,
            reconciliations,
            errors,
            duration,
            lifecycle,
            states: Mutex::new(BTreeMap::new()),
        })
    }

    /// Records one reconciliation: its duration and outcome (`Err` carries the reason).
    pub fn reconciled(&self, seconds: f64, outcome: Result<(), &str>) {
        self.duration
            .with_label_values(&[] as &[&str])
            .observe(seconds);
        match outcome {
            Ok(()) => self.reconciliations.with_label_values(&["ok"]).inc(),
            Err(reason) => {
                self.reconciliations.with_label_values(&["error"]).inc();
                self.errors.with_label_values(&[reason]).inc();
            }
        }
    }

    /// The lifecycle state of `job` (`None`: it is gone).
    pub fn set_state(&self, job: &str, state: Option<LifecycleState>) {
        let mut g = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match state {
            Some(s) => g.insert(job.to_string(), s),
            None => g.remove(job),
        };
        for s in STATES {
            let n = g.values().filter(|v| **v == s).count();
            self.lifecycle
                .with_label_values(&[&format!("{s:?}")])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_reconciliations_errors_and_states() {
        let m = Metrics::new().unwrap();
        m.reconciled(0.01, Ok(()));
        m.reconciled(0.02, Err("Api"));
        m.set_state("ns/a", Some(LifecycleState::Deploying));
        m.set_state("ns/b", Some(LifecycleState::Deploying));
        m.set_state("ns/b", Some(LifecycleState::Running));
        m.set_state("ns/a", None);
        let text = m.render().unwrap();
        assert!(
            text.contains("weir_operator_reconciliations_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weir_operator_reconcile_errors_total{reason=\"Api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weir_operator_streamjobs{lifecycle=\"Running\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weir_operator_streamjobs{lifecycle=\"Deploying\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("weir_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }
}
