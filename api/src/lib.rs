//! Public API of Weir: the `StreamJob` custom resource, manifest loading and
//! validation, and the REST types spoken between the runtime and the operator.
//!
//! This crate deliberately depends only on serde/schemars/kube-derive style
//! crates so that the runtime, the CLI and the operator can all share it
//! without pulling in an async runtime or a Kubernetes client.

pub mod crd;
pub mod duration;
pub mod manifest;
pub mod rest;
mod schema;
pub mod storage;
pub mod validation;

pub use crd::{
    CheckpointInfo, CheckpointingMode, CheckpointingSpec, DeletionPolicy, ExponentialDelayRestart,
    FailureRateRestart, FixedDelayRestart, HeartbeatSpec, JobManagerSpec, JobSpec, JobStatus,
    JobTargetState, LeaderElectionSpec, LifecycleState, PendingSavepoint, ReconciliationStatus,
    ResourceSpec, RestartStrategy, RestoreKind, RestoreSource, RetentionOnCancel, RollbackSpec,
    S3CredentialsSecret, S3StorageSpec, SavepointRecord, SavepointTriggerType, SavepointsSpec,
    StateBackend, StateSpec, StreamJob, StreamJobSpec, StreamJobStatus, TaskManagerSpec,
    UnalignedCheckpointSpec, UpgradeMode, UpgradeSpec,
};
pub use duration::{Duration, DurationParseError};
pub use manifest::{ManifestError, parse_manifest};
pub use rest::JobState;
pub use storage::{CheckpointStorageUri, StorageUriError};
pub use validation::{FieldError, ValidationErrors};

/// The `apiVersion` every StreamJob manifest must carry.
pub const API_VERSION: &str = "weir.dev/v1alpha1";

/// The API group of Weir's custom resources.
pub const GROUP: &str = "weir.dev";

/// The served and stored version of the StreamJob resource.
pub const VERSION: &str = "v1alpha1";

/// The `kind` of the StreamJob custom resource.
pub const KIND: &str = "StreamJob";
