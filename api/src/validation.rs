//! Semantic validation of StreamJob resources: rules the schema cannot
//! express (cross-field constraints, URI formats, names), reported all at once
//! as field errors that each carry a concrete fix.

use std::fmt;

use crate::crd::{
    CheckpointingMode, CheckpointingSpec, JobManagerSpec, MAX_PARALLELISM_LIMIT, ResourceSpec,
    RestartStrategy, S3StorageSpec, StreamJob, StreamJobSpec, TaskManagerSpec, UpgradeMode,
};
use crate::duration::Duration;
use crate::schema::is_valid_quantity;
use crate::storage::{CheckpointStorageUri, STORAGE_FIX};

/// Shortest checkpoint interval accepted; anything shorter spends more time
/// checkpointing than processing.
pub const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(10);

/// Longest restart delay accepted; a longer pause is almost certainly a unit
/// mistake (`1d` where `1s` was meant).
pub const MAX_RESTART_DELAY: Duration = Duration::from_hours(24);

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}. Fix: {fix}.")]
pub struct FieldError {
    /// Full path of the offending field, e.g. `spec.job.parallelism`.
    pub field: String,
    /// What is wrong, e.g. `must be at least 1 (found 0)`.
    pub message: String,
    /// What to change, e.g. `set spec.job.parallelism to 1 or more`.
    pub fix: String,
}

impl FieldError {
    /// A field error; `message` and `fix` should not end with a period.
    pub fn new(
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// Every problem found in a resource; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// The individual problems, in the order they were found.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no problems.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.0.iter()
    }

    /// The problem reported for `field`, if any.
    pub fn for_field(&self, field: &str) -> Option<&FieldError> {
        self.0.iter().find(|e| e.field == field)
    }

    fn push(&mut self, field: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.0.push(FieldError::new(field, message, fix));
    }

    fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl StreamJob {
    /// Validates metadata and spec, collecting every problem.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        match self.metadata.name.as_deref() {
            None | Some("") => errs.push(
                "metadata.name",
                "is required",
                "set metadata.name to a lowercase name such as my-job",
            ),
            Some(name) => check_dns_label(&mut errs, "metadata.name", name),
        }
        if let Some(ns) = self.metadata.namespace.as_deref() {
            check_dns_label(&mut errs, "metadata.namespace", ns);
        }
        if let Err(spec_errs) = self.spec.validate() {
            errs.0.extend(spec_errs.0);
        }
        errs.into_result()
    }
}

impl StreamJobSpec {
    /// Checks every rule the schema cannot express, collecting all problems
    /// rather than stopping at the first, so one edit can fix them all.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if self.image.trim().is_empty() {
            errs.push(
                "spec.image",
                "must not be empty",
                format!(
                    "set spec.image to a container image, e.g. {}",
                    crate::crd::DEFAULT_IMAGE
                ),
            );
        }
        self.validate_job(&mut errs);
        validate_job_manager(&mut errs, &self.job_manager);
        validate_task_manager(&mut errs, &self.task_manager);
        let parallelism = self.job.parallelism;
        let slots = self.task_manager.total_slots();
        if parallelism >= 1 && slots >= 1 && u64::from(parallelism) > slots {
            let per_tm = u64::from(self.task_manager.slots.max(1));
            let replicas_needed = u64::from(parallelism).div_ceil(per_tm);
            errs.push(
                "spec.job.parallelism",
                format!(
                    "needs {parallelism} task slots but spec.taskManager.replicas × \
                     spec.taskManager.slots = {} × {} = {slots}",
                    self.task_manager.replicas, self.task_manager.slots
                ),
                format!(
                    "set spec.taskManager.replicas to {replicas_needed} (or raise \
                     spec.taskManager.slots), or lower spec.job.parallelism to {slots}"
                ),
            );
        }
        if let Some(ckpt) = &self.checkpointing {
            validate_checkpointing(&mut errs, ckpt);
        } else if self.job.upgrade_mode == UpgradeMode::LastState {
            errs.push(
                "spec.job.upgradeMode",
                "last-state restores the latest checkpoint, but checkpointing is off \
                 (spec.checkpointing is absent)",
                "add a spec.checkpointing section with a storage URI, or set \
                 spec.job.upgradeMode to savepoint",
            );
        }
        validate_restart_strategy(&mut errs, &self.restart_strategy);
        self.validate_upgrade(&mut errs);
        errs.into_result()
    }

    fn validate_upgrade(&self, errs: &mut ValidationErrors) {
        if self.upgrade.savepoint_attempts == 0 {
            errs.push(
                "spec.upgrade.savepointAttempts",
                "must be at least 1",
                "set spec.upgrade.savepointAttempts to 1 or more (default 3)",
            );
        }
        if self.upgrade.savepoint_timeout.is_zero() {
            errs.push(
                "spec.upgrade.savepointTimeout",
                "must be more than 0s",
                "set spec.upgrade.savepointTimeout to how long a savepoint may take, e.g. 5m",
            );
        }
        if self.upgrade.rollback.stable_checkpoints == 0 {
            errs.push(
                "spec.upgrade.rollback.stableCheckpoints",
                "must be at least 1",
                "set spec.upgrade.rollback.stableCheckpoints to 1 or more (default 3)",
            );
        }
        if self.savepoints.max_count == 0 {
            errs.push(
                "spec.savepoints.maxCount",
                "must be at least 1: the savepoint a resume or a rollback restores is kept",
                "set spec.savepoints.maxCount to 1 or more (default 10)",
            );
        }
        if self.checkpointing.is_none() && self.savepoints.interval.is_some() {
            errs.push(
                "spec.savepoints.interval",
                "savepoints are written under spec.checkpointing.storage, but checkpointing is \
                 off (spec.checkpointing is absent)",
                "add a spec.checkpointing section with a storage URI, or remove \
                 spec.savepoints.interval",
            );
        }
        if let Some(i) = self.savepoints.interval
            && i.is_zero()
        {
            errs.push(
                "spec.savepoints.interval",
                "must be more than 0s",
                "set spec.savepoints.interval to e.g. 1h, or remove it",
            );
        }
    }

    fn validate_job(&self, errs: &mut ValidationErrors) {
        let job = &self.job;
        let program = job.program.as_str();
        if program.is_empty() {
            errs.push(
                "spec.job.program",
                "is required",
                "set spec.job.program to the name of a program registered in the weir binary, \
                 e.g. orders",
            );
        } else if !is_program_name(program) {
            errs.push(
                "spec.job.program",
                format!(
                    "must start with a lowercase letter or digit and contain only lowercase \
                     letters, digits and '-' (found \"{program}\")"
                ),
                format!("set spec.job.program to \"{}\"", suggest_name(program)),
            );
        }
        if job.parallelism == 0 {
            errs.push(
                "spec.job.parallelism",
                "must be at least 1 (found 0)",
                "set spec.job.parallelism to 1 or more",
            );
        }
        if job.max_parallelism > MAX_PARALLELISM_LIMIT {
            errs.push(
                "spec.job.maxParallelism",
                format!(
                    "must be at most {MAX_PARALLELISM_LIMIT} (found {})",
                    job.max_parallelism
                ),
                format!("set spec.job.maxParallelism to {MAX_PARALLELISM_LIMIT} or less"),
            );
        } else if job.max_parallelism < job.parallelism.max(1) {
            errs.push(
                "spec.job.maxParallelism",
                format!(
                    "must be at least spec.job.parallelism ({}) (found {})",
                    job.parallelism.max(1),
                    job.max_parallelism
                ),
                format!(
                    "set spec.job.maxParallelism to {} or more, or lower spec.job.parallelism",
                    job.parallelism.max(1)
                ),
            );
        }
        if let Some(path) = &job.initial_savepoint_path
            && let Err(e) =
                CheckpointStorageUri::parse_for_field(path, "spec.job.initialSavepointPath")
        {
            errs.push(
                "spec.job.initialSavepointPath",
                format!("{} (found \"{path}\")", e.reason),
                format!("{STORAGE_FIX}, or remove spec.job.initialSavepointPath"),
            );
        }
    }
}

fn validate_job_manager(errs: &mut ValidationErrors, jm: &JobManagerSpec) {
    if !(1..=2).contains(&jm.replicas) {
        errs.push(
            "spec.jobManager.replicas",
            format!("must be 1 or 2 (found {})", jm.replicas),
            "set spec.jobManager.replicas to 1, or 2 for a standby job manager",
        );
    }
    validate_resources(errs, "spec.jobManager", &jm.resources);
    validate_pod_template(errs, "spec.jobManager", jm.pod_template.as_ref());
    let le = &jm.leader_election;
    if le.lease_duration < Duration::from_secs(1) {
        errs.push(
            "spec.jobManager.leaderElection.leaseDuration",
            format!(
                "must be at least 1s, the Lease stores whole seconds (found {})",
                le.lease_duration
            ),
            "set spec.jobManager.leaderElection.leaseDuration to 1s or more (15s is the default)",
        );
    }
    if le.renew_deadline >= le.lease_duration {
        errs.push(
            "spec.jobManager.leaderElection.renewDeadline",
            format!(
                "must be shorter than leaseDuration ({}), or two leaders could overlap (found {})",
                le.lease_duration, le.renew_deadline
            ),
            "lower spec.jobManager.leaderElection.renewDeadline or raise leaseDuration",
        );
    }
    if le.retry_period.is_zero() || le.retry_period >= le.renew_deadline {
        errs.push(
            "spec.jobManager.leaderElection.retryPeriod",
            format!(
                "must be positive and shorter than renewDeadline ({}) (found {})",
                le.renew_deadline, le.retry_period
            ),
            "lower spec.jobManager.leaderElection.retryPeriod (2s is the default)",
        );
    }
    let hb = &jm.heartbeat;
    if hb.interval.is_zero() || hb.interval >= hb.timeout {
        errs.push(
            "spec.jobManager.heartbeat.interval",
            format!(
                "must be positive and shorter than spec.jobManager.heartbeat.timeout ({}) \
                 (found {})",
                hb.timeout, hb.interval
            ),
            "set spec.jobManager.heartbeat.interval below the timeout, e.g. 1s with a 10s timeout",
        );
    }
}

fn validate_task_manager(errs: &mut ValidationErrors, tm: &TaskManagerSpec) {
    if tm.replicas == 0 {
        errs.push(
            "spec.taskManager.replicas",
            "must be at least 1 (found 0)",
            "set spec.taskManager.replicas to 1 or more; to stop the job set \
             spec.job.state to suspended",
        );
    }
    if tm.slots == 0 {
        errs.push(
            "spec.taskManager.slots",
            "must be at least 1 (found 0)",
            "set spec.taskManager.slots to 1 or more",
        );
    }
    validate_resources(errs, "spec.taskManager", &tm.resources);
    validate_pod_template(errs, "spec.taskManager", tm.pod_template.as_ref());
}

fn validate_resources(errs: &mut ValidationErrors, parent: &str, res: &ResourceSpec) {
    for (name, value, example) in [
        ("cpu", &res.cpu, "500m or 2"),
        ("memory", &res.memory, "1Gi"),
    ] {
        if !is_valid_quantity(value) {
            let field = format!("{parent}.resources.{name}");
            errs.push(
                &field,
                format!("is not a Kubernetes quantity (found \"{value}\")"),
                format!("set {field} to a quantity such as {example}"),
            );
        }
    }
}

fn validate_pod_template(
    errs: &mut ValidationErrors,
    parent: &str,
    template: Option<&serde_json::Value>,
) {
    if let Some(t) = template
        && !t.is_object()
    {
        let field = format!("{parent}.podTemplate");
        errs.push(
            &field,
            "must be an object (a Pod template with metadata and spec)",
            format!("write {field} as a mapping, e.g. {{spec: {{nodeSelector: {{...}}}}}}"),
        );
    }
}

fn validate_checkpointing(errs: &mut ValidationErrors, ckpt: &CheckpointingSpec) {
    if ckpt.interval < MIN_CHECKPOINT_INTERVAL {
        errs.push(
            "spec.checkpointing.interval",
            format!(
                "must be at least {MIN_CHECKPOINT_INTERVAL} (found {})",
                ckpt.interval
            ),
            "set spec.checkpointing.interval to 10ms or more (10s is a good start), or remove \
             spec.checkpointing to turn checkpointing off",
        );
    }
    if ckpt.timeout.is_zero() {
        errs.push(
            "spec.checkpointing.timeout",
            "must be greater than 0s",
            "set spec.checkpointing.timeout to a positive duration such as 10m",
        );
    }
    if ckpt.max_concurrent == 0 {
        errs.push(
            "spec.checkpointing.maxConcurrent",
            "must be at least 1 (found 0)",
            "set spec.checkpointing.maxConcurrent to 1 or more",
        );
    }
    if ckpt.num_retained == 0 {
        errs.push(
            "spec.checkpointing.numRetained",
            "must be at least 1 (found 0)",
            "set spec.checkpointing.numRetained to 1 or more",
        );
    }
    if let Err(e) = ckpt.storage_uri() {
        errs.push(
            "spec.checkpointing.storage",
            format!("{} (found \"{}\")", e.reason, ckpt.storage),
            STORAGE_FIX,
        );
    }
    if let Some(s3) = &ckpt.s3 {
        validate_s3(errs, s3);
    }
    if ckpt.unaligned.enabled && ckpt.mode != CheckpointingMode::ExactlyOnce {
        errs.push(
            "spec.checkpointing.unaligned.enabled",
            "unaligned checkpoints require spec.checkpointing.mode exactly-once (found \
             at-least-once)",
            "set spec.checkpointing.mode to exactly-once, or set \
             spec.checkpointing.unaligned.enabled to false",
        );
    }
}

fn validate_s3(errs: &mut ValidationErrors, s3: &S3StorageSpec) {
    if let Some(endpoint) = &s3.endpoint {
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        let host = rest.map(|r| r.trim_end_matches('/'));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(['/', ' ', '?', '#'])) {
            errs.push(
                "spec.checkpointing.s3.endpoint",
                format!("must be an http:// or https:// URL without a path (found \"{endpoint}\")"),
                "set spec.checkpointing.s3.endpoint to the store's URL, e.g. \
                 http://minio.storage:9000, or remove it for AWS S3",
            );
        }
    }
    if let Some(region) = &s3.region
        && (region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        errs.push(
            "spec.checkpointing.s3.region",
            format!(
                "must be a region name of lowercase letters, digits and '-' (found \"{region}\")"
            ),
            "set spec.checkpointing.s3.region to a region such as eu-west-1, or remove it to \
             take the region from the AWS chain",
        );
    }
    let Some(secret) = &s3.credentials_secret else {
        return;
    };
    if !is_dns1123_subdomain(&secret.name) {
        errs.push(
            "spec.checkpointing.s3.credentialsSecret.name",
            format!(
                "must be the name of a Secret: at most 253 lowercase letters, digits, '-' and \
                 '.', starting and ending with a letter or digit (found \"{}\")",
                secret.name
            ),
            "set spec.checkpointing.s3.credentialsSecret.name to the name of the Secret that \
             holds the access key pair, e.g. s3-credentials",
        );
    }
    for (field, key, default) in [
        (
            "accessKeyIdKey",
            &secret.access_key_id_key,
            "AWS_ACCESS_KEY_ID",
        ),
        (
            "secretAccessKeyKey",
            &secret.secret_access_key_key,
            "AWS_SECRET_ACCESS_KEY",
        ),
    ] {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            let field = format!("spec.checkpointing.s3.credentialsSecret.{field}");
            errs.push(
                &field,
                format!(
                    "must be a Secret key of letters, digits, '-', '_' and '.' (found \"{key}\")"
                ),
                format!("set {field} to the key in the Secret, or remove it for {default}"),
            );
        }
    }
}

/// Whether `name` is a DNS-1123 subdomain, as Kubernetes requires of Secret names.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

fn validate_restart_strategy(errs: &mut ValidationErrors, strategy: &RestartStrategy) {
    let check_delay = |errs: &mut ValidationErrors, name: &str, d: Duration| {
        if d > MAX_RESTART_DELAY {
            let field = format!("spec.restartStrategy.{name}");
            errs.push(
                &field,
                format!("must be at most {MAX_RESTART_DELAY} (found {d})"),
                format!("set {field} to a shorter duration such as 1s or 5m"),
            );
        }
    };
    match strategy {
        RestartStrategy::None => {}
        RestartStrategy::FixedDelay(fixed) => check_delay(errs, "delay", fixed.delay),
        RestartStrategy::ExponentialDelay(exp) => {
            if exp.initial_backoff.is_zero() {
                errs.push(
                    "spec.restartStrategy.initialBackoff",
                    "must be greater than 0s",
                    "set spec.restartStrategy.initialBackoff to a positive duration such as 1s",
                );
            }
            check_delay(errs, "initialBackoff", exp.initial_backoff);
            check_delay(errs, "maxBackoff", exp.max_backoff);
            if exp.max_backoff < exp.initial_backoff {
                errs.push(
                    "spec.restartStrategy.maxBackoff",
                    format!(
                        "must be at least spec.restartStrategy.initialBackoff ({}) (found {})",
                        exp.initial_backoff, exp.max_backoff
                    ),
                    format!(
                        "set spec.restartStrategy.maxBackoff to {} or more",
                        exp.initial_backoff
                    ),
                );
            }
            if !(exp.multiplier.is_finite() && exp.multiplier >= 1.0) {
                errs.push(
                    "spec.restartStrategy.multiplier",
                    format!("must be at least 1 (found {})", exp.multiplier),
                    "set spec.restartStrategy.multiplier to 1 or more, e.g. 2.0",
                );
            }
            if !(0.0..=1.0).contains(&exp.jitter) {
                errs.push(
                    "spec.restartStrategy.jitter",
                    format!("must be between 0 and 1 (found {})", exp.jitter),
                    "set spec.restartStrategy.jitter to a fraction between 0 and 1, e.g. 0.1",
                );
            }
            if exp.reset_backoff_threshold.is_zero() {
                errs.push(
                    "spec.restartStrategy.resetBackoffThreshold",
                    "must be greater than 0s",
                    "set spec.restartStrategy.resetBackoffThreshold to a positive duration \
                     such as 1h",
                );
            }
        }
        RestartStrategy::FailureRate(rate) => {
            if rate.max_failures_per_interval == 0 {
                errs.push(
                    "spec.restartStrategy.maxFailuresPerInterval",
                    "must be at least 1 (found 0)",
                    "set spec.restartStrategy.maxFailuresPerInterval to 1 or more, or use \
                     type: none to never restart",
                );
            }
            if rate.failure_rate_interval.is_zero() {
                errs.push(
                    "spec.restartStrategy.failureRateInterval",
                    "must be greater than 0s",
                    "set spec.restartStrategy.failureRateInterval to a positive duration such \
                     as 1m",
                );
            }
            check_delay(errs, "delay", rate.delay);
        }
    }
}

/// Program names follow `[a-z0-9][a-z0-9-]*` so that they can be used in
/// pod labels and resource names unchanged.
pub fn is_program_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `name` is a DNS-1123 label: at most 63 lowercase alphanumerics or
/// '-', starting and ending with an alphanumeric. Kubernetes requires this of
/// most names, and Weir derives pod and service names from the StreamJob name.
pub fn is_dns1123_label(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| alnum(b) || b == b'-')
        && name.bytes().next().is_some_and(alnum)
        && name.bytes().last().is_some_and(alnum)
}

fn check_dns_label(errs: &mut ValidationErrors, field: &str, name: &str) {
    if !is_dns1123_label(name) {
        errs.push(
            field,
            format!(
                "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', \
                 starting and ending with a letter or digit (found \"{name}\")"
            ),
            format!("set {field} to \"{}\"", suggest_name(name)),
        );
    }
}

/// A close valid name, for fix suggestions.
fn suggest_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(63);
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "my-job".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_label("orders-1"));
        assert!(!is_dns1123_label("Orders"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_program_name("orders"));
        assert!(is_program_name("0-x-"));
        assert!(!is_program_name("-x"));
        assert!(!is_program_name("my_prog"));
        assert_eq!(suggest_name("My_Job.v2"), "my-job-v2");
        assert_eq!(suggest_name("__"), "my-job");
    }

    #[test]
    fn field_error_display() {
        let e = FieldError::new(
            "spec.job.parallelism",
            "must be at least 1 (found 0)",
            "set spec.job.parallelism to 1 or more",
        );
        assert_eq!(
            e.to_string(),
            "spec.job.parallelism: must be at least 1 (found 0). Fix: set \
             spec.job.parallelism to 1 or more."
        );
    }

    #[test]
    fn default_spec_needs_only_a_program() {
        let errs = StreamJobSpec::default().validate().unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs.errors()[0].field, "spec.job.program");
        StreamJobSpec::for_program("orders").validate().unwrap();
    }

    #[test]
    fn collects_all_problems() {
        let mut spec = StreamJobSpec::for_program("Bad_Name");
        spec.job.parallelism = 0;
        spec.job_manager.replicas = 3;
        spec.checkpointing = Some(CheckpointingSpec {
            interval: Duration::from_millis(1),
            ..CheckpointingSpec::new("hdfs://x")
        });
        let errs = spec.validate().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.job.program",
                "spec.job.parallelism",
                "spec.jobManager.replicas",
                "spec.checkpointing.interval",
                "spec.checkpointing.storage",
            ]
        );
    }

    #[test]
    fn leader_election_and_heartbeat_timing() {
        let mut spec = StreamJobSpec::for_program("orders");
        spec.validate().unwrap();
        spec.job_manager.leader_election.lease_duration = Duration::from_millis(500);
        spec.job_manager.leader_election.renew_deadline = Duration::from_secs(2);
        spec.job_manager.heartbeat.interval = Duration::from_secs(10);
        let errs = spec.validate().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.jobManager.leaderElection.leaseDuration",
                "spec.jobManager.leaderElection.renewDeadline",
                "spec.jobManager.leaderElection.retryPeriod",
                "spec.jobManager.heartbeat.interval",
            ]
        );
        assert!(errs.errors()[1].fix.contains("raise leaseDuration"));
    }

    #[test]
    fn s3_settings_rules() {
        use crate::crd::{S3CredentialsSecret, S3StorageSpec};
        let mut spec = StreamJobSpec::for_program("orders");
        let mut secret = S3CredentialsSecret::new("S3 creds");
        secret.secret_access_key_key = "a/b".into();
        spec.checkpointing = Some(CheckpointingSpec {
            s3: Some(S3StorageSpec {
                endpoint: Some("minio:9000".into()),
                region: Some("EU West".into()),
                path_style: Some(true),
                credentials_secret: Some(secret),
            }),
            ..CheckpointingSpec::new("s3://bucket/ckpt")
        });
        let errs = spec.validate().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.checkpointing.s3.endpoint",
                "spec.checkpointing.s3.region",
                "spec.checkpointing.s3.credentialsSecret.name",
                "spec.checkpointing.s3.credentialsSecret.secretAccessKeyKey",
            ]
        );
        for e in &errs {
            assert!(e.fix.starts_with("set spec.checkpointing.s3."), "{e}");
        }

        spec.checkpointing = Some(CheckpointingSpec {
            s3: Some(S3StorageSpec {
                endpoint: Some("https://s3.example.com:9000/".into()),
                region: Some("eu-west-1".into()),
                path_style: None,
                credentials_secret: Some(S3CredentialsSecret::new("s3-credentials")),
            }),
            ..CheckpointingSpec::new("s3://bucket/ckpt")
        });
        spec.validate().unwrap();
    }

    #[test]
    fn exponential_restart_rules() {
        let mut spec = StreamJobSpec::for_program("orders");
        spec.restart_strategy =
            RestartStrategy::ExponentialDelay(crate::crd::ExponentialDelayRestart {
                multiplier: 0.5,
                jitter: 1.5,
                max_backoff: Duration::from_millis(10),
                ..Default::default()
            });
        let errs = spec.validate().unwrap_err();
        for field in ["multiplier", "jitter", "maxBackoff"] {
            let field = format!("spec.restartStrategy.{field}");
            assert!(errs.for_field(&field).is_some(), "{field}: {errs}");
        }
    }
}
