//! Live counters of a running job, written by tasks with relaxed atomics and read by the REST
//! API and `/metrics`. Tasks count locally and publish per batch, so counting costs nothing
//! per record.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Watermark value meaning "none yet".
pub const NO_WATERMARK: i64 = i64::MIN;

/// Counters of one subtask of one vertex.
#[derive(Debug)]
pub struct SubtaskMetrics {
    /// Records that entered the operator.
    pub records_in: AtomicU64,
    /// Records the operator emitted.
    pub records_out: AtomicU64,
    /// The operator's current input watermark.
    pub watermark: AtomicI64,
    /// Counters an operator or connector defines (e.g. a source's `numRecordsInErrors`).
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl SubtaskMetrics {
    /// The counter `name` of this subtask, created at zero on first use. Callers keep the
    /// `Arc` and bump it with relaxed atomics; `/metrics` reads it.
    pub fn counter(&self, name: &str) -> Arc<AtomicU64> {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Every counter of this subtask with its value.
    pub fn counters(&self) -> Vec<(String, u64)> {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Default for SubtaskMetrics {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            watermark: AtomicI64::new(NO_WATERMARK),
            counters: Mutex::default(),
        }
    }
}

/// Counters of one vertex (operator) of the dataflow.
#[derive(Debug)]
pub struct VertexMetrics {
    /// Stable operator id.
    pub uid: String,
    /// Display name.
    pub name: String,
    /// Whether the vertex is a source.
    pub is_source: bool,
    /// Whether the vertex is a sink.
    pub is_sink: bool,
    /// One entry per subtask.
    pub subtasks: Vec<Arc<SubtaskMetrics>>,
}

impl VertexMetrics {
    /// Sum of records in over subtasks.
    pub fn records_in(&self) -> u64 {
        self.subtasks
            .iter()
            .map(|s| s.records_in.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of records out over subtasks.
    pub fn records_out(&self) -> u64 {
        self.subtasks
            .iter()
            .map(|s| s.records_out.load(Ordering::Relaxed))
            .sum()
    }

    /// The operator-defined counters, summed over subtasks.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in &self.subtasks {
            for (k, v) in s.counters() {
                *out.entry(k).or_default() += v;
            }
        }
        out
    }

    /// The vertex's watermark: the minimum over subtasks that have one.
    pub fn watermark(&self) -> Option<i64> {
        let wms: Vec<i64> = self
            .subtasks
            .iter()
            .map(|s| s.watermark.load(Ordering::Relaxed))
            .collect();
        if wms.contains(&NO_WATERMARK) {
            return None;
        }
        wms.into_iter().min()
    }
}

/// Counters of a whole job.
#[derive(Debug, Default)]
pub struct JobMetrics {
    /// One entry per vertex, in graph order.
    pub vertices: Vec<VertexMetrics>,
}

impl JobMetrics {
    /// Records produced by all sources.
    pub fn records_in(&self) -> u64 {
        self.vertices
            .iter()
            .filter(|v| v.is_source)
            .map(VertexMetrics::records_out)
            .sum()
    }

    /// Records consumed by all sinks.
    pub fn records_out(&self) -> u64 {
        self.vertices
            .iter()
            .filter(|v| v.is_sink)
            .map(VertexMetrics::records_in)
            .sum()
    }

    /// The lowest watermark among the sinks' inputs (what the job's output has reached).
    pub fn watermark(&self) -> Option<i64> {
        self.vertices
            .iter()
            .filter(|v| v.is_sink)
            .filter_map(VertexMetrics::watermark)
            .min()
    }
}
