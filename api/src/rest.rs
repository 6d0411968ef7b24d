//! Wire types of the runtime's REST API (job overview, checkpoints,
//! savepoints, stop), shared by the REST server in the runtime and the
//! operator that polls it.
//!
//! Field names are camelCase and enum values SCREAMING_SNAKE_CASE, following
//! Flink's REST API so that people and tools familiar with it feel at home.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Lifecycle state of a running job, as reported by the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// The job was submitted but has not started running yet.
    Created,
    /// All tasks are deployed and processing records.
    Running,
    /// A task failed; the job is tearing down before restarting or failing.
    Failing,
    /// The job failed and the restart strategy gave up.
    Failed,
    /// A cancel was requested and tasks are stopping.
    Cancelling,
    /// The job was cancelled.
    Canceled,
    /// All sources were exhausted and the job completed.
    Finished,
    /// The job is restarting after a failure.
    Restarting,
    /// The job was stopped with a savepoint and can be resumed from it.
    Suspended,
}

impl JobState {
    /// Every state, in declaration order.
    pub const ALL: [JobState; 9] = [
        JobState::Created,
        JobState::Running,
        JobState::Failing,
        JobState::Failed,
        JobState::Cancelling,
        JobState::Canceled,
        JobState::Finished,
        JobState::Restarting,
        JobState::Suspended,
    ];

    /// States the job never leaves on its own: no further transitions will
    /// happen without outside action (a resubmission).
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Failed | JobState::Canceled | JobState::Finished | JobState::Suspended
        )
    }

    /// The wire name, e.g. `RUNNING`.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Created => "CREATED",
            JobState::Running => "RUNNING",
            JobState::Failing => "FAILING",
            JobState::Failed => "FAILED",
            JobState::Cancelling => "CANCELLING",
            JobState::Canceled => "CANCELED",
            JobState::Finished => "FINISHED",
            JobState::Restarting => "RESTARTING",
            JobState::Suspended => "SUSPENDED",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Summary of one job, returned by `GET /v1/job`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobOverview {
    /// Unique id of this job run.
    pub job_id: String,
    /// Human-readable job name (usually the StreamJob's name).
    pub name: String,
    /// Registry name of the program being run.
    pub program: String,
    /// Current state.
    pub state: JobState,
    /// When the job started, in milliseconds since the Unix epoch.
    pub start_time_ms: i64,
    /// How long the job has been running, in milliseconds.
    pub duration_ms: i64,
    /// Current parallelism.
    pub parallelism: u32,
    /// Maximum parallelism (number of key groups).
    pub max_parallelism: u32,
    /// Number of restarts since submission.
    pub num_restarts: u64,
    /// Records read by sources since the job started.
    pub records_in: u64,
    /// Records written by sinks since the job started.
    pub records_out: u64,
    /// Recent source input rate.
    pub records_in_per_second: f64,
    /// Recent sink output rate.
    pub records_out_per_second: f64,
    /// Lowest watermark across sinks, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_watermark_ms: Option<i64>,
    /// The most recent completed checkpoint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointSummary>,
    /// Root cause of the latest failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Per-operator details.
    #[serde(default)]
    pub vertices: Vec<VertexOverview>,
}

/// Summary of one operator (vertex) of the job graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VertexOverview {
    /// Stable operator id.
    pub id: String,
    /// Operator name.
    pub name: String,
    /// Number of parallel subtasks.
    pub parallelism: u32,
    /// Records received by all subtasks.
    pub records_in: u64,
    /// Records emitted by all subtasks.
    pub records_out: u64,
    /// Minimum input watermark across subtasks, in milliseconds since the
    /// Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_input_watermark_ms: Option<i64>,
    /// Counters the operator or its connector defines (for example a Kafka
    /// source's `numRecordsInErrors`), summed over subtasks.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// Progress of a checkpoint or savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointStatus {
    /// Barriers are in flight or state is being written.
    InProgress,
    /// All tasks acknowledged and the metadata was written.
    Completed,
    /// The checkpoint was aborted.
    Failed,
}

/// One checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSummary {
    /// Checkpoint id, increasing within a job.
    pub id: u64,
    /// Progress.
    pub status: CheckpointStatus,
    /// Whether this is a savepoint rather than a periodic checkpoint.
    pub is_savepoint: bool,
    /// When the checkpoint was triggered, in milliseconds since the Unix epoch.
    pub trigger_time_ms: i64,
    /// Time from trigger to completion or failure, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Total size of the persisted state.
    pub state_size_bytes: u64,
    /// Storage URI of the checkpoint's metadata, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_path: Option<String>,
    /// Why the checkpoint failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Longest time a task spent aligning barriers for this checkpoint, in
    /// milliseconds, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment_ms: Option<i64>,
}

/// Checkpoint statistics, returned by `GET /v1/job/checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointHistory {
    /// Counters over the job's lifetime.
    pub counts: CheckpointCounts,
    /// The latest completed checkpoint or savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_completed: Option<CheckpointSummary>,
    /// The latest failed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_failed: Option<CheckpointSummary>,
    /// The latest completed savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_savepoint: Option<CheckpointSummary>,
    /// What the current run was restored from, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_restored: Option<RestoredCheckpoint>,
    /// Recent checkpoints, newest first.
    #[serde(default)]
    pub history: Vec<CheckpointSummary>,
}

/// Checkpoint counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointCounts {
    /// Completed checkpoints and savepoints.
    pub completed: u64,
    /// Failed checkpoints and savepoints.
    pub failed: u64,
    /// Checkpoints currently in progress.
    pub in_progress: u64,
    /// Restores performed.
    pub restored: u64,
    /// All checkpoints triggered.
    pub total: u64,
}

/// The checkpoint or savepoint a job run was restored from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredCheckpoint {
    /// Id of the restored checkpoint.
    pub id: u64,
    /// Storage URI it was restored from.
    pub path: String,
    /// When the restore happened, in milliseconds since the Unix epoch.
    pub restore_time_ms: i64,
    /// Whether it was a savepoint.
    pub is_savepoint: bool,
}

/// Body of `POST /v1/job/savepoints`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSavepointRequest {
    /// Directory URI under which the savepoint is written (in its own
    /// `savepoint-<id>-<timestamp>` subdirectory); defaults to `savepoints`
    /// under the job's checkpoint storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_directory: Option<String>,
}

/// Answer to a savepoint trigger (`POST /v1/job/savepoints`) or a stop
/// (`POST /v1/job/stop`); poll `GET /v1/job/savepoints/{requestId}` with the
/// id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSavepointResponse {
    /// Id of the asynchronous savepoint operation.
    pub request_id: String,
}

/// Answer to `POST /v1/job/checkpoints`, which triggers a checkpoint now;
/// poll `GET /v1/job/checkpoints/{requestId}` with the id. Same shape as a
/// savepoint trigger's answer.
pub type TriggerCheckpointResponse = TriggerSavepointResponse;

/// Progress of an asynchronous operation such as a savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationStatus {
    /// Still running.
    InProgress,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
}

/// Status of a savepoint operation, returned by
/// `GET /v1/job/savepoints/{requestId}` (and of a checkpoint triggered by
/// `POST /v1/job/checkpoints`, by `GET /v1/job/checkpoints/{requestId}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointInfo {
    /// Id of the operation.
    pub request_id: String,
    /// Progress.
    pub status: OperationStatus,
    /// Storage URI of the completed savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why the savepoint failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Body of `POST /v1/job/stop`: take a savepoint, then stop the job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StopJobRequest {
    /// Directory URI under which the final savepoint is written; defaults to
    /// `savepoints` under the job's checkpoint storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_directory: Option<String>,
    /// Advance the watermark to the end of time before the savepoint, firing
    /// all pending timers and windows (use when the job will not resume).
    #[serde(default)]
    pub drain: bool,
}

/// Body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    /// One message per problem.
    pub errors: Vec<String>,
}

impl ErrorResponse {
    /// A response carrying a single message.
    pub fn single(message: impl Into<String>) -> Self {
        ErrorResponse {
            errors: vec![message.into()],
        }
    }
}

/// Body of `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// `ok` when the runtime is serving.
    pub status: String,
}

impl HealthResponse {
    /// The healthy answer.
    pub fn ok() -> Self {
        HealthResponse {
            status: "ok".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_state_uses_flink_names() {
        for state in JobState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<JobState>(&json).unwrap(), state);
        }
    }

    #[test]
    fn overview_is_camel_case() {
        let overview = JobOverview {
            job_id: "j1".into(),
            name: "orders".into(),
            program: "orders".into(),
            state: JobState::Running,
            start_time_ms: 1,
            duration_ms: 2,
            parallelism: 2,
            max_parallelism: 128,
            num_restarts: 0,
            records_in: 10,
            records_out: 9,
            records_in_per_second: 1.5,
            records_out_per_second: 1.0,
            current_watermark_ms: Some(5),
            last_checkpoint: Some(CheckpointSummary {
                id: 3,
                status: CheckpointStatus::Completed,
                is_savepoint: false,
                trigger_time_ms: 4,
                duration_ms: Some(7),
                state_size_bytes: 100,
                external_path: Some("file:///tmp/chk-3".into()),
                failure: None,
                alignment_ms: None,
            }),
            failure: None,
            vertices: vec![VertexOverview {
                id: "v1".into(),
                name: "source".into(),
                parallelism: 2,
                records_in: 0,
                records_out: 10,
                current_input_watermark_ms: None,
                counters: Default::default(),
            }],
        };
        let json = serde_json::to_value(&overview).unwrap();
        assert_eq!(json["jobId"], "j1");
        assert_eq!(json["recordsInPerSecond"], 1.5);
        assert_eq!(json["lastCheckpoint"]["status"], "COMPLETED");
        assert_eq!(json["lastCheckpoint"]["isSavepoint"], false);
        assert_eq!(json["vertices"][0]["recordsOut"], 10);
        let back: JobOverview = serde_json::from_value(json).unwrap();
        assert_eq!(back, overview);
    }

    #[test]
    fn stop_request_defaults() {
        let req: StopJobRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req, StopJobRequest::default());
        let op: SavepointInfo =
            serde_json::from_str(r#"{"requestId":"r","status":"IN_PROGRESS"}"#).unwrap();
        assert_eq!(op.status, OperationStatus::InProgress);
    }

    #[test]
    fn alignment_time_is_optional() {
        // Summaries written before the field existed still parse.
        let old = r#"{"id":1,"status":"COMPLETED","isSavepoint":false,"triggerTimeMs":5,
                      "stateSizeBytes":0}"#;
        let s: CheckpointSummary = serde_json::from_str(old).unwrap();
        assert_eq!(s.alignment_ms, None);
        let json = serde_json::to_value(CheckpointSummary {
            alignment_ms: Some(12),
            ..s
        })
        .unwrap();
        assert_eq!(json["alignmentMs"], 12);
    }
}
