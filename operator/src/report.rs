//! What the JobManager's REST API says about the job (`GET /v1/job`, `GET /v1/job/checkpoints`)
//! and how it goes into the StreamJob's status — a pure mapping, tested without a JobManager.

use weir_api::rest::{CheckpointHistory, JobOverview};
use weir_api::{CheckpointInfo, JobStatus, SavepointRecord, SavepointTriggerType, StreamJobStatus};

/// The JobManager's answers.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// `GET /v1/job`.
    pub overview: JobOverview,
    /// `GET /v1/job/checkpoints`, when it answered.
    pub checkpoints: Option<CheckpointHistory>,
}

impl JobReport {
    /// Whether the run has proven itself: running since `since_ms` (the deployment; an older
    /// run is one that deployment replaces), with `checkpoints` completed checkpoints and no
    /// restart (`spec.upgrade.rollback.stableCheckpoints`).
    pub fn stable(&self, checkpoints: u64, since_ms: i64) -> bool {
        self.overview.state == weir_api::JobState::Running
            && self.overview.num_restarts == 0
            && self.overview.start_time_ms >= since_ms
            && self
                .checkpoints
                .as_ref()
                .is_some_and(|c| c.counts.completed >= checkpoints)
    }
}

/// RFC 3339 of milliseconds since the epoch.
pub fn rfc3339(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Writes the report into `status`; `now_ms` is when it was fetched.
pub fn apply(status: &mut StreamJobStatus, r: &JobReport, now_ms: i64) {
    let o = &r.overview;
    let mut job = JobStatus {
        job_id: Some(o.job_id.clone()),
        state: Some(o.state),
        start_time: Some(rfc3339(o.start_time_ms)),
        update_time: None,
    };
    // Unchanged since the last look: the status stays byte for byte the same, so writing it
    // is skipped and does not wake the controller again.
    job.update_time = match &status.job_status {
        Some(old)
            if JobStatus {
                update_time: None,
                ..old.clone()
            } == job =>
        {
            old.update_time.clone()
        }
        _ => Some(rfc3339(now_ms)),
    };
    status.job_status = Some(job);
    status.restart_count = o.num_restarts;
    let Some(c) = &r.checkpoints else { return };
    if let Some(done) = c.latest_completed.as_ref().filter(|c| !c.is_savepoint)
        && let Some(path) = &done.external_path
    {
        status.last_completed_checkpoint = Some(CheckpointInfo {
            id: done.id,
            path: path.clone(),
            time: rfc3339(done.trigger_time_ms + done.duration_ms.unwrap_or(0)),
            size_bytes: done.state_size_bytes,
        });
    }
    // The current run's: a run that started without state clears the previous run's.
    status.restored_from = c.latest_restored.as_ref().map(|r| r.path.clone());
    // A savepoint taken through the JobManager's API (`weir savepoint`); the operator's own
    // (upgrades, nonces, schedules) are recorded where it takes them, so none is recorded here
    // while one of those is pending.
    if status.pending_savepoint.is_none()
        && let Some(sp) = &c.latest_savepoint
        && let Some(path) = &sp.external_path
        && status.last_savepoint.as_ref().map(|s| &s.path) != Some(path)
        && !status.savepoint_history.iter().any(|s| &s.path == path)
    {
        let record = SavepointRecord {
            path: path.clone(),
            time: rfc3339(sp.trigger_time_ms + sp.duration_ms.unwrap_or(0)),
            trigger_type: SavepointTriggerType::Manual,
            trigger_nonce: None,
        };
        status.savepoint_history.push(record.clone());
        status.last_savepoint = Some(record);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn report() -> JobReport {
        JobReport {
            overview: serde_json::from_value(serde_json::json!({
                "jobId": "orders-1", "name": "orders", "program": "orders", "state": "RUNNING",
                "startTimeMs": 1_700_000_000_000i64, "durationMs": 5000, "parallelism": 2,
                "maxParallelism": 128, "numRestarts": 0, "recordsIn": 10, "recordsOut": 1,
                "recordsInPerSecond": 1.0, "recordsOutPerSecond": 0.1, "vertices": []
            }))
            .unwrap(),
            checkpoints: Some(
                serde_json::from_value(serde_json::json!({
                    "counts": {"completed": 3, "failed": 0, "inProgress": 0, "restored": 1, "total": 3},
                    "latestCompleted": {"id": 7, "status": "COMPLETED", "isSavepoint": false,
                        "triggerTimeMs": 1_700_000_004_000i64, "durationMs": 250,
                        "stateSizeBytes": 4096, "externalPath": "s3://b/orders/chk-7"},
                    "latestRestored": {"id": 4, "path": "s3://b/orders/chk-4",
                        "restoreTimeMs": 1_700_000_000_100i64, "isSavepoint": false},
                    "history": []
                }))
                .unwrap(),
            ),
        }
    }

    #[test]
    fn the_report_fills_the_status() {
        let mut s = StreamJobStatus::default();
        apply(&mut s, &report(), 1_700_000_006_000);
        let js = s.job_status.unwrap();
        assert_eq!(js.job_id.as_deref(), Some("orders-1"));
        assert_eq!(js.state, Some(weir_api::JobState::Running));
        assert_eq!(js.start_time.as_deref(), Some("2023-11-14T22:13:20Z"));
        let c = s.last_completed_checkpoint.unwrap();
        assert_eq!(
            (c.id, c.path.as_str(), c.size_bytes),
            (7, "s3://b/orders/chk-7", 4096)
        );
        assert_eq!(c.time, "2023-11-14T22:13:24.25Z");
        assert_eq!(s.restored_from.as_deref(), Some("s3://b/orders/chk-4"));
        assert_eq!(s.restart_count, 0);
        assert!(s.last_savepoint.is_none());
    }

    #[test]
    fn an_unchanged_job_leaves_the_status_as_it_was() {
        let mut s = StreamJobStatus::default();
        apply(&mut s, &report(), 1_700_000_006_000);
        let first = s.clone();
        // Looked at again later: nothing to write, so the watch does not fire again.
        apply(&mut s, &report(), 1_700_000_009_000);
        assert_eq!(s, first);
        // A restart into a new run: its id and the time it was seen.
        let mut r = report();
        r.overview.job_id = "orders-2".into();
        apply(&mut s, &r, 1_700_000_012_000);
        let js = s.job_status.as_ref().unwrap();
        assert_eq!(js.job_id.as_deref(), Some("orders-2"));
        assert_eq!(js.update_time.as_deref(), Some("2023-11-14T22:13:32Z"));
    }

    #[test]
    fn a_savepoint_is_recorded_once() {
        let mut r = report();
        r.checkpoints.as_mut().unwrap().latest_savepoint = Some(
            serde_json::from_value(serde_json::json!({
                "id": 8, "status": "COMPLETED", "isSavepoint": true,
                "triggerTimeMs": 1_700_000_005_000i64, "durationMs": 100,
                "stateSizeBytes": 4096, "externalPath": "s3://b/sp/savepoint-8"}))
            .unwrap(),
        );
        let mut s = StreamJobStatus::default();
        apply(&mut s, &r, 0);
        apply(&mut s, &r, 1);
        assert_eq!(
            s.last_savepoint.as_ref().unwrap().path,
            "s3://b/sp/savepoint-8"
        );
        assert_eq!(s.savepoint_history.len(), 1);
    }

    #[test]
    fn stable_after_three_checkpoints_without_restart() {
        let r = report();
        assert!(r.stable(3, 0));
        let mut restarted = report();
        restarted.overview.num_restarts = 1;
        assert!(!restarted.stable(3, 0));
        let mut young = report();
        young.checkpoints.as_mut().unwrap().counts.completed = 2;
        assert!(!young.stable(3, 0));
        // A run from before the deployment is not the deployed one.
        assert!(!r.stable(3, 1_800_000_000_000));
    }
}
