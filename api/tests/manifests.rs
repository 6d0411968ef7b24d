//! Manifest loading end to end: example manifests, defaults, and the error
//! text users see for common mistakes.

use std::collections::BTreeMap;

use weir_api::{
    CheckpointStorageUri, CheckpointingMode, DeletionPolicy, Duration, ExponentialDelayRestart,
    JobTargetState, ManifestError, RestartStrategy, RetentionOnCancel, StateBackend, StreamJobSpec,
    UpgradeMode, parse_manifest,
};

const MINIMAL: &str = "\
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: orders
spec:
  job:
    program: orders
";

const FULL: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: orders-enrichment
  namespace: streaming
  labels:
    team: payments
spec:
  image: ghcr.io/weir-dev/weir:0.1.0
  restartNonce: 7
  job:
    program: orders
    args:
      topic: orders
      window: 5m
    parallelism: 4
    maxParallelism: 256
    state: suspended
    upgradeMode: last-state
    initialSavepointPath: s3://weir-state/orders/savepoint-1
    allowNonRestoredState: true
    savepointTriggerNonce: 2
    checkpointTriggerNonce: 3
  checkpointing:
    interval: 30s
    mode: exactly-once
    timeout: 5m
    minPause: 500ms
    maxConcurrent: 2
    tolerableFailures: 3
    unaligned:
      enabled: true
      alignedTimeout: 100ms
    incremental: true
    numRetained: 3
    storage: s3://weir-state/orders
    retentionOnCancel: delete
  restartStrategy:
    type: exponentialDelay
    initialBackoff: 2s
    maxBackoff: 10m
    multiplier: 1.5
    resetBackoffThreshold: 2h
    jitter: 0.2
  state:
    backend: rocksdb
    localRecovery: true
  jobManager:
    replicas: 2
    resources:
      cpu: 500m
      memory: 2Gi
    podTemplate:
      metadata:
        annotations:
          prometheus.io/scrape: "true"
  taskManager:
    replicas: 2
    slots: 2
    resources:
      cpu: 2
      memory: 4Gi
    podTemplate:
      spec:
        nodeSelector:
          pool: streaming
  deletionPolicy: dispose
"#;

#[test]
fn minimal_manifest_gets_defaults() {
    let job = parse_manifest(MINIMAL).unwrap();
    assert_eq!(job.metadata.name.as_deref(), Some("orders"));
    assert!(job.status.is_none());
    let expected = StreamJobSpec::for_program("orders");
    assert_eq!(job.spec, expected);

    let spec = &job.spec;
    assert_eq!(spec.image, "ghcr.io/weir-dev/weir:latest");
    assert!(spec.job.args.is_empty());
    assert_eq!(spec.job.parallelism, 1);
    assert_eq!(spec.job.max_parallelism, 128);
    assert_eq!(spec.job.state, JobTargetState::Running);
    assert_eq!(spec.job.upgrade_mode, UpgradeMode::Savepoint);
    assert!(!spec.job.allow_non_restored_state);
    assert_eq!(
        spec.checkpointing, None,
        "checkpointing is off when the section is absent"
    );
    match spec.restart_strategy {
        RestartStrategy::FixedDelay(fixed) => {
            assert_eq!(fixed.attempts, 3);
            assert_eq!(fixed.delay, Duration::from_secs(1));
        }
        ref other => panic!("unexpected default restart strategy {other:?}"),
    }
    assert_eq!(spec.state.backend, StateBackend::Heap);
    assert!(!spec.state.local_recovery);
    assert_eq!(spec.job_manager.replicas, 1);
    assert_eq!(spec.job_manager.resources.cpu, "1");
    assert_eq!(spec.job_manager.resources.memory, "1Gi");
    assert_eq!(spec.job_manager.pod_template, None);
    assert_eq!(spec.task_manager.replicas, 1);
    assert_eq!(spec.task_manager.slots, 1);
    assert_eq!(spec.deletion_policy, DeletionPolicy::Savepoint);
}

#[test]
fn checkpointing_section_defaults() {
    let yaml = format!("{MINIMAL}  checkpointing:\n    storage: file:///tmp/weir\n");
    let job = parse_manifest(&yaml).unwrap();
    let ckpt = job.spec.checkpointing.unwrap();
    assert_eq!(ckpt.interval, Duration::from_secs(10));
    assert_eq!(ckpt.mode, CheckpointingMode::ExactlyOnce);
    assert_eq!(ckpt.timeout, Duration::from_mins(10));
    assert_eq!(ckpt.min_pause, Duration::ZERO);
    assert_eq!(ckpt.max_concurrent, 1);
    assert_eq!(ckpt.tolerable_failures, 0);
    assert!(!ckpt.unaligned.enabled);
    assert_eq!(ckpt.unaligned.aligned_timeout, Duration::ZERO);
    assert!(!ckpt.incremental);
    assert_eq!(ckpt.num_retained, 1);
    assert_eq!(ckpt.retention_on_cancel, RetentionOnCancel::Retain);
    assert_eq!(
        ckpt.storage_uri().unwrap(),
        CheckpointStorageUri::File {
            path: "/tmp/weir".into()
        }
    );
}

#[test]
fn full_manifest_parses_every_field() {
    let job = parse_manifest(FULL).unwrap();
    assert_eq!(job.metadata.namespace.as_deref(), Some("streaming"));
    let spec = &job.spec;
    assert_eq!(spec.image, "ghcr.io/weir-dev/weir:0.1.0");
    assert_eq!(spec.restart_nonce, Some(7));
    assert_eq!(
        spec.job.args,
        BTreeMap::from([
            ("topic".to_owned(), "orders".to_owned()),
            ("window".to_owned(), "5m".to_owned())
        ])
    );
    assert_eq!(spec.job.parallelism, 4);
    assert_eq!(spec.job.max_parallelism, 256);
    assert_eq!(spec.job.state, JobTargetState::Suspended);
    assert_eq!(spec.job.upgrade_mode, UpgradeMode::LastState);
    assert_eq!(
        spec.job.initial_savepoint_path.as_deref(),
        Some("s3://weir-state/orders/savepoint-1")
    );
    assert!(spec.job.allow_non_restored_state);
    assert_eq!(spec.job.savepoint_trigger_nonce, Some(2));
    assert_eq!(spec.job.checkpoint_trigger_nonce, Some(3));

    let ckpt = spec.checkpointing.as_ref().unwrap();
    assert_eq!(ckpt.interval, Duration::from_secs(30));
    assert_eq!(ckpt.timeout, Duration::from_mins(5));
    assert_eq!(ckpt.min_pause, Duration::from_millis(500));
    assert_eq!(ckpt.max_concurrent, 2);
    assert_eq!(ckpt.tolerable_failures, 3);
    assert!(ckpt.unaligned.enabled);
    assert_eq!(ckpt.unaligned.aligned_timeout, Duration::from_millis(100));
    assert!(ckpt.incremental);
    assert_eq!(ckpt.num_retained, 3);
    assert_eq!(ckpt.retention_on_cancel, RetentionOnCancel::Delete);
    assert_eq!(
        ckpt.storage_uri().unwrap(),
        CheckpointStorageUri::S3 {
            bucket: "weir-state".into(),
            prefix: "orders".into()
        }
    );

    assert_eq!(
        spec.restart_strategy,
        RestartStrategy::ExponentialDelay(ExponentialDelayRestart {
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_mins(10),
            multiplier: 1.5,
            reset_backoff_threshold: Duration::from_hours(2),
            jitter: 0.2,
        })
    );
    assert_eq!(spec.state.backend, StateBackend::RocksDb);
    assert!(spec.state.local_recovery);
    assert_eq!(spec.job_manager.replicas, 2);
    assert_eq!(spec.job_manager.resources.cpu, "500m");
    assert_eq!(
        spec.task_manager.resources.cpu, "2",
        "numeric quantities are kept as text"
    );
    assert_eq!(
        spec.task_manager.pod_template.as_ref().unwrap()["spec"]["nodeSelector"]["pool"],
        "streaming"
    );
    assert_eq!(spec.deletion_policy, DeletionPolicy::Dispose);
}

#[test]
fn manifests_round_trip_through_yaml() {
    for yaml in [MINIMAL, FULL] {
        let job = parse_manifest(yaml).unwrap();
        let text = serde_yaml::to_string(&job).unwrap();
        assert!(
            text.starts_with("apiVersion: weir.dev/v1alpha1\nkind: StreamJob\n"),
            "{text}"
        );
        assert_eq!(parse_manifest(&text).unwrap(), job);
    }
}

#[test]
fn restart_strategy_variants() {
    for (yaml, expected) in [
        ("{type: none}", RestartStrategy::None),
        ("{type: fixedDelay}", RestartStrategy::default()),
        (
            "{type: failureRate, delay: 5s}",
            RestartStrategy::FailureRate(weir_api::FailureRateRestart {
                delay: Duration::from_secs(5),
                ..Default::default()
            }),
        ),
        (
            "{type: exponentialDelay}",
            RestartStrategy::ExponentialDelay(ExponentialDelayRestart::default()),
        ),
    ] {
        let manifest = format!("{MINIMAL}  restartStrategy: {yaml}\n");
        let job = parse_manifest(&manifest).unwrap();
        assert_eq!(job.spec.restart_strategy, expected, "{yaml}");
    }
}

#[test]
fn spec_hash_is_stable_and_sensitive() {
    let a = parse_manifest(MINIMAL).unwrap().spec;
    let mut b = a.clone();
    assert_eq!(a.spec_hash(), b.spec_hash());
    assert_eq!(a.spec_hash().len(), 16);
    b.job.parallelism = 2;
    assert_ne!(a.spec_hash(), b.spec_hash());
}

/// Replaces the line starting with `from` (after indentation) in the full
/// manifest with `to`, keeping the indentation.
fn full_with(from: &str, to: &str) -> String {
    let mut found = false;
    let out: Vec<String> = FULL
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if !found && trimmed.starts_with(from) {
                found = true;
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}{to}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(found, "no line starts with {from}");
    out.join("\n")
}

#[test]
fn bad_manifests_name_the_field_and_a_fix() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "wrong apiVersion",
            FULL.replace("weir.dev/v1alpha1", "weir.dev/v1"),
            "apiVersion: expected weir.dev/v1alpha1, found weir.dev/v1",
            "Fix: set `apiVersion: weir.dev/v1alpha1`",
        ),
        (
            "missing apiVersion",
            MINIMAL.replace("apiVersion: weir.dev/v1alpha1\n", ""),
            "apiVersion: expected weir.dev/v1alpha1, found nothing",
            "Fix:",
        ),
        (
            "wrong kind",
            MINIMAL.replace("kind: StreamJob", "kind: FlinkDeployment"),
            "kind: expected StreamJob, found FlinkDeployment",
            "Fix: set `kind: StreamJob`",
        ),
        (
            "typo in a spec field",
            full_with("parallelism: 4", "paralelism: 4"),
            "spec.job.paralelism: unknown field",
            "did you mean `parallelism`?",
        ),
        (
            "unknown top-level spec field",
            format!("{MINIMAL}  replicas: 3\n"),
            "spec.replicas: unknown field",
            "valid fields here: image, job,",
        ),
        (
            "bad duration",
            full_with("interval: 30s", "interval: ten seconds"),
            "spec.checkpointing.interval: invalid duration \"ten seconds\": expected a number \
             with a unit, e.g. 10s, 500ms, 5m",
            "Fix: write a whole number with a unit",
        ),
        (
            "duration without unit",
            full_with("interval: 30s", "interval: 10"),
            "spec.checkpointing.interval: invalid duration \"10\": expected a number with a \
             unit, e.g. 10s, 500ms, 5m",
            "Fix:",
        ),
        (
            "unknown enum value",
            full_with("mode: exactly-once", "mode: exactly_once"),
            "spec.checkpointing.mode: unknown variant `exactly_once`",
            "Fix: use one of: exactly-once, at-least-once",
        ),
        (
            "missing program",
            MINIMAL.replace("    program: orders\n", "    parallelism: 2\n"),
            "spec.job.program: is required but missing",
            "Fix: add spec.job.program",
        ),
        (
            "wrong type",
            full_with("parallelism: 4", "parallelism: four"),
            "spec.job.parallelism: invalid type",
            "Fix: change spec.job.parallelism to the expected type",
        ),
        (
            "typo in a restart parameter",
            format!("{MINIMAL}  restartStrategy: {{type: fixedDelay, attemps: 5}}\n"),
            "spec.restartStrategy.attemps: unknown field",
            "did you mean `attempts`?",
        ),
        (
            "parameter of another restart type",
            format!("{MINIMAL}  restartStrategy: {{type: none, attempts: 5}}\n"),
            "spec.restartStrategy: `attempts` (used by fixedDelay) does not apply to restart \
             strategy type none",
            "Fix: remove it or change spec.restartStrategy.type",
        ),
        (
            "bad restart duration",
            full_with("initialBackoff: 2s", "initialBackoff: 2 seconds"),
            "spec.restartStrategy.initialBackoff: invalid duration \"2 seconds\"",
            "Fix:",
        ),
        (
            "unknown restart type",
            format!("{MINIMAL}  restartStrategy: {{type: always}}\n"),
            "spec.restartStrategy.type: unknown variant `always`",
            "Fix: use one of: none, fixedDelay, exponentialDelay, failureRate",
        ),
        (
            "checkpointing without storage",
            format!("{MINIMAL}  checkpointing:\n    interval: 5s\n"),
            "spec.checkpointing.storage: is required but missing",
            "Fix: add spec.checkpointing.storage",
        ),
        (
            "parallelism 0",
            full_with("parallelism: 4", "parallelism: 0"),
            "spec.job.parallelism: must be at least 1 (found 0)",
            "Fix: set spec.job.parallelism to 1 or more.",
        ),
        (
            "maxParallelism below parallelism",
            full_with("maxParallelism: 256", "maxParallelism: 2"),
            "spec.job.maxParallelism: must be at least spec.job.parallelism (4) (found 2)",
            "Fix: set spec.job.maxParallelism to 4 or more",
        ),
        (
            "maxParallelism above the limit",
            full_with("maxParallelism: 256", "maxParallelism: 40000"),
            "spec.job.maxParallelism: must be at most 32768 (found 40000)",
            "Fix: set spec.job.maxParallelism to 32768 or less",
        ),
        (
            "unsupported storage scheme",
            full_with("storage: s3://weir-state/orders", "storage: hdfs://x"),
            "spec.checkpointing.storage: unsupported scheme \"hdfs\" (found \"hdfs://x\")",
            "Fix: use file:///absolute/path or s3://bucket/prefix.",
        ),
        (
            "parallelism above the task slots",
            full_with("slots: 2", "slots: 1"),
            "spec.job.parallelism: needs 4 task slots but spec.taskManager.replicas × \
             spec.taskManager.slots = 2 × 1 = 2",
            "Fix: set spec.taskManager.replicas to 4",
        ),
        (
            "unaligned with at-least-once",
            full_with("mode: exactly-once", "mode: at-least-once"),
            "spec.checkpointing.unaligned.enabled: unaligned checkpoints require \
             spec.checkpointing.mode exactly-once",
            "Fix: set spec.checkpointing.mode to exactly-once",
        ),
        (
            "checkpoint interval too short",
            full_with("interval: 30s", "interval: 5ms"),
            "spec.checkpointing.interval: must be at least 10ms (found 5ms)",
            "Fix:",
        ),
        (
            "three job managers",
            full_with("replicas: 2", "replicas: 3"),
            "spec.jobManager.replicas: must be 1 or 2 (found 3)",
            "Fix:",
        ),
        (
            "jitter out of range",
            full_with("jitter: 0.2", "jitter: 1.5"),
            "spec.restartStrategy.jitter: must be between 0 and 1 (found 1.5)",
            "Fix:",
        ),
        (
            "multiplier below one",
            full_with("multiplier: 1.5", "multiplier: 0.5"),
            "spec.restartStrategy.multiplier: must be at least 1 (found 0.5)",
            "Fix:",
        ),
        (
            "bad program name",
            MINIMAL.replace("program: orders", "program: Order_Stats"),
            "spec.job.program: must start with a lowercase letter or digit",
            "Fix: set spec.job.program to \"order-stats\"",
        ),
        (
            "missing metadata.name",
            MINIMAL.replace("  name: orders", "  labels: {}"),
            "metadata.name: is required",
            "Fix: set metadata.name",
        ),
        (
            "invalid metadata.name",
            MINIMAL.replace("name: orders", "name: Orders_Job"),
            "metadata.name: must be a DNS-1123 label",
            "Fix: set metadata.name to \"orders-job\"",
        ),
        (
            "last-state without checkpointing",
            format!("{MINIMAL}    upgradeMode: last-state\n"),
            "spec.job.upgradeMode: last-state restores the latest checkpoint",
            "Fix: add a spec.checkpointing section",
        ),
        (
            "bad quantity",
            full_with("memory: 4Gi", "memory: 4GB"),
            "spec.taskManager.resources.memory: is not a Kubernetes quantity (found \"4GB\")",
            "Fix:",
        ),
        (
            "not YAML",
            "apiVersion: [unclosed".to_owned(),
            "manifest is not valid YAML",
            "Fix: check the indentation",
        ),
    ];
    for (name, yaml, needle, fix) in cases {
        let err = match parse_manifest(&yaml) {
            Ok(_) => panic!("{name}: expected an error"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(needle),
            "{name}: expected `{needle}` in:\n{err}"
        );
        assert!(err.contains(fix), "{name}: expected `{fix}` in:\n{err}");
    }
}

#[test]
fn all_validation_problems_are_reported_together() {
    let yaml = full_with("parallelism: 4", "parallelism: 0")
        .replace("storage: s3://weir-state/orders", "storage: hdfs://x");
    let err = parse_manifest(&yaml).unwrap_err();
    let ManifestError::Invalid(errs) = &err else {
        panic!("expected validation errors, got {err:?}");
    };
    assert!(errs.for_field("spec.job.parallelism").is_some());
    assert!(errs.for_field("spec.checkpointing.storage").is_some());
    let text = err.to_string();
    assert!(text.starts_with(&format!(
        "StreamJob manifest is invalid ({} problems):\n  - ",
        errs.len()
    )));
    assert_eq!(text.lines().count(), errs.len() + 1, "{text}");
}

#[test]
fn field_errors_expose_the_path() {
    let err = parse_manifest(&full_with("interval: 30s", "interval: 1.5s")).unwrap_err();
    assert_eq!(err.field(), Some("spec.checkpointing.interval"));
    assert!(err.to_string().contains("1500ms instead of 1.5s"), "{err}");
    let err = parse_manifest(&MINIMAL.replace("weir.dev/v1alpha1", "v1")).unwrap_err();
    assert_eq!(
        err,
        ManifestError::WrongApiVersion {
            found: Some("v1".into())
        }
    );
}
