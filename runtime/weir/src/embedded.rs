//! Embedded mode: loads a StreamJob manifest, builds its program into a dataflow, runs it in this
//! process with the REST API and `/metrics` served next to it, prints a progress line every
//! second, and stops it cleanly on Ctrl-C, SIGTERM, `--for`, a REST cancel or a REST stop with
//! savepoint. A JobManager under a supervisor (`--supervised`) or leading among standbys leaves
//! its job to its successor on a signal instead, and a supervised one outlives the job's end
//! until it is told to go.
//!
//! The manifest's fault-tolerance settings become the engine's [`JobSettings`]:
//! `spec.checkpointing` the checkpoint coordinator's configuration, `spec.restartStrategy` the
//! restart strategy, and `spec.job.initialSavepointPath`, `--from-savepoint` or
//! `--from-latest-checkpoint` (with `--checkpoints-after`, see [`restore_plan`]) the snapshot
//! the job starts from. Checkpoint storage is local (`file://`) or S3 (`s3://`, see
//! [`crate::storage`]).
//!
//! Threads: the engine runs every subtask on its own thread; a small tokio runtime (one worker)
//! serves HTTP and turns signals into events; the calling thread drives the run loop from a
//! channel of those events, samples the rates every second and prints progress, so the
//! shutdown sequence lives in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use weir_api::rest::{CheckpointCounts, JobOverview};
use weir_api::{
    CheckpointingSpec, JobTargetState, ManifestError, RestartStrategy, RetentionOnCancel,
    StateBackend, StreamJob, StreamJobSpec,
};
use weir_core::checkpoint::format::SnapshotMetadata;
use weir_core::checkpoint::restore::RestoredJob;
use weir_core::checkpoint::storage::{CheckpointStorage, METADATA_FILE, StorageError};
use weir_core::restart::RestartStrategy as EngineRestart;
use weir_core::time::now_ms;
use weir_core::{
    CheckpointConfig, CheckpointingMode, EnvConfig, JobError, JobOutcome, JobSettings,
    OperatorError, Program, ProgramArgs, Registry, StreamEnv,
};

use crate::error::{CliError, program_fix};
use crate::monitor::{JobInfo, JobMonitor};
use crate::progress::{
    Progress, format_checkpoint, format_elapsed, format_progress, format_watermark, human_bytes,
    human_count, human_count_f, iso8601_utc,
};
use crate::rest;
use crate::signals::Signals;

/// How long tasks get to stop after the job is cancelled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often the progress line is printed and rates are sampled.
const TICK: Duration = Duration::from_secs(1);

/// After a stop with savepoint: how long the REST API stays up for the client that asked for the
/// stop to fetch the savepoint's path.
const STOP_REPORT_GRACE: Duration = Duration::from_secs(5);

/// Options of `weir run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The manifest file.
    pub manifest: PathBuf,
    /// Where to serve the REST API (port 0 picks a free port).
    pub rest_address: SocketAddr,
    /// No progress lines.
    pub quiet: bool,
    /// Stop after this long, as if interrupted.
    pub run_for: Option<Duration>,
    /// Start from this savepoint or checkpoint (overrides `spec.job.initialSavepointPath`).
    pub from_savepoint: Option<String>,
    /// Start from the newest restorable snapshot: checkpoint in `spec.checkpointing.storage`,
    /// savepoint in its `savepoints` directory, or `spec.job.initialSavepointPath` (see
    /// [`restore_plan`]).
    pub from_latest_checkpoint: bool,
    /// With `from_latest_checkpoint`: snapshots found in the storage that completed before this
    /// time (ms since the epoch) are ignored (`--checkpoints-after`).
    pub checkpoints_after_ms: Option<i64>,
    /// The process runs under a supervisor that restarts it (`weir jobmanager --supervised`):
    /// a signal leaves the job to the next process instead of cancelling it, and a job that
    /// ended without failing keeps the process serving until a signal.
    pub supervised: bool,
    /// Run as the JobManager of a cluster: the subtasks run in TaskManager processes.
    pub cluster: Option<crate::cluster::JobManagerOptions>,
}

/// A manifest whose program built its dataflow, ready to start.
pub struct Prepared {
    /// The parsed manifest.
    pub job: StreamJob,
    /// The program it names.
    pub program: Program,
    /// The environment holding the built dataflow.
    pub env: StreamEnv,
}

impl Prepared {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.job.metadata.name.as_deref().unwrap_or("weir-job")
    }
}

/// Reads, parses and validates a manifest.
pub fn load_manifest(path: &Path) -> Result<StreamJob, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadManifest {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |source| CliError::Manifest {
        path: path.to_path_buf(),
        source,
    };
    let job = weir_api::parse_manifest(&text).map_err(invalid)?;
    // parse_manifest validates too; validating here again keeps this command strict even if a
    // lenient parse is ever used upstream.
    job.validate()
        .map_err(|e| invalid(ManifestError::Invalid(e)))?;
    Ok(job)
}

/// Loads a manifest, finds its program and builds the dataflow, without starting anything and
/// without engine settings (what `weir validate` checks).
pub fn prepare(registry: &Registry, path: &Path) -> Result<Prepared, CliError> {
    let job = load_manifest(path)?;
    build(registry, path, job, JobSettings::default())
}

/// Finds the manifest's program and builds the dataflow into an environment with `settings`.
pub fn build(
    registry: &Registry,
    path: &Path,
    job: StreamJob,
    settings: JobSettings,
) -> Result<Prepared, CliError> {
    let program_error = |source| CliError::Program {
        path: path.to_path_buf(),
        fix: program_fix(&source),
        source,
    };
    let spec = &job.spec.job;
    let program = *registry.get(&spec.program).map_err(program_error)?;
    let env = StreamEnv::new(EnvConfig {
        name: job.metadata.name.clone().unwrap_or_default(),
        parallelism: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        job: settings,
        ..Default::default()
    });
    program
        .build(&env, &ProgramArgs::new(spec.args.clone()))
        .map_err(program_error)?;
    Ok(Prepared { job, program, env })
}

/// The engine settings of a manifest: checkpointing, restart strategy, the restore point of
/// `spec.job.initialSavepointPath` (which `weir run` may replace, see [`restore_plan`]), and
/// the storage for `file://` and `s3://` locations; `path` is the manifest file, for messages.
pub fn job_settings(path: &Path, spec: &StreamJobSpec) -> Result<JobSettings, CliError> {
    let checkpoint = spec
        .checkpointing
        .as_ref()
        .map(|c| checkpoint_config(path, c))
        .transpose()?;
    Ok(JobSettings {
        checkpoint,
        restart: Some(restart_strategy(spec)),
        restore_from: spec.job.initial_savepoint_path.clone(),
        allow_non_restored_state: spec.job.allow_non_restored_state,
        fault: None,
        storage: Some(crate::storage::factory(crate::storage::s3_settings(
            spec.checkpointing.as_ref().and_then(|c| c.s3.as_ref()),
        ))),
        state_backend: crate::state::backend(path, spec)?,
        cluster: None,
        fencing: None,
    })
}

/// `spec.checkpointing` as the checkpoint coordinator's configuration; the storage URI is passed
/// on as written (the job's storage factory opens `file://` URIs, plain paths and `s3://`).
pub fn checkpoint_config(
    _path: &Path,
    c: &CheckpointingSpec,
) -> Result<CheckpointConfig, CliError> {
    Ok(CheckpointConfig {
        interval: c.interval.as_std(),
        mode: match c.mode {
            weir_api::CheckpointingMode::ExactlyOnce => CheckpointingMode::ExactlyOnce,
            weir_api::CheckpointingMode::AtLeastOnce => CheckpointingMode::AtLeastOnce,
        },
        timeout: c.timeout.as_std(),
        min_pause: c.min_pause.as_std(),
        max_concurrent: usize::try_from(c.max_concurrent).unwrap_or(usize::MAX),
        tolerable_failures: c.tolerable_failures,
        unaligned: c.unaligned.enabled,
        aligned_timeout: c.unaligned.aligned_timeout.as_std(),
        num_retained: usize::try_from(c.num_retained).unwrap_or(usize::MAX),
        retain_on_cancel: c.retention_on_cancel == RetentionOnCancel::Retain,
        storage: c.storage.clone(),
    })
}

/// `spec.restartStrategy` as the engine's restart strategy.
///
/// One exception: a spec whose restart strategy is just the default (`fixedDelay`, as the field
/// is filled in when absent) and that does not checkpoint gets no restarts. Without checkpoints a
/// restart starts the job from scratch, so its sources read their input again and sinks write
/// everything a second time; nobody asked for that, and Flink likewise does not restart jobs
/// without checkpointing unless a strategy is configured. A strategy that differs from the
/// default is followed as written, with or without checkpointing.
pub fn restart_strategy(spec: &StreamJobSpec) -> EngineRestart {
    let strategy = &spec.restart_strategy;
    if spec.checkpointing.is_none() && *strategy == RestartStrategy::default() {
        return EngineRestart::None;
    }
    match strategy {
        RestartStrategy::None => EngineRestart::None,
        RestartStrategy::FixedDelay(f) => EngineRestart::FixedDelay {
            attempts: f.attempts,
            delay: f.delay.as_std(),
        },
        RestartStrategy::ExponentialDelay(e) => EngineRestart::ExponentialDelay {
            initial: e.initial_backoff.as_std(),
            max: e.max_backoff.as_std(),
            multiplier: e.multiplier,
            reset_threshold: e.reset_backoff_threshold.as_std(),
            jitter: e.jitter,
        },
        RestartStrategy::FailureRate(f) => EngineRestart::FailureRate {
            max_failures: f.max_failures_per_interval,
            interval: f.failure_rate_interval.as_std(),
            delay: f.delay.as_std(),
        },
    }
}

/// Where a run starts from, and what to tell the user about how that was decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestorePlan {
    /// The snapshot to restore, if any.
    pub from: Option<String>,
    /// Lines to print before starting (which checkpoint is the latest, checkpoints skipped).
    pub notes: Vec<String>,
}

/// Decides the restore point: `--from-savepoint` wins, then `--from-latest-checkpoint`, then
/// `spec.job.initialSavepointPath`.
///
/// `--from-latest-checkpoint` restores the snapshot that completed last among the newest
/// checkpoint in `spec.checkpointing.storage` that loads cleanly (falling back past damaged
/// ones), the newest savepoint in its `savepoints` directory that loads cleanly, and
/// `spec.job.initialSavepointPath`; without any of them the job starts without state.
/// `checkpoints_after_ms` (`--checkpoints-after`) hides the checkpoints and savepoints found in
/// the storage that completed before it, as if there were none; the initial savepoint is an
/// explicit choice and is used however old it is.
pub fn restore_plan(
    path: &Path,
    spec: &StreamJobSpec,
    from_savepoint: Option<&str>,
    from_latest_checkpoint: bool,
    checkpoints_after_ms: Option<i64>,
) -> Result<RestorePlan, CliError> {
    if let Some(p) = from_savepoint {
        return Ok(RestorePlan {
            from: Some(p.to_string()),
            notes: Vec::new(),
        });
    }
    let initial = spec.job.initial_savepoint_path.clone();
    if !from_latest_checkpoint {
        return Ok(RestorePlan {
            from: initial,
            notes: Vec::new(),
        });
    }
    let Some(c) = &spec.checkpointing else {
        return Err(CliError::NoCheckpointStorage {
            path: path.to_path_buf(),
        });
    };
    let lookup_error = |storage: &str, message: String| CliError::LatestCheckpoint {
        storage: storage.to_string(),
        message,
    };
    let settings = crate::storage::s3_settings(c.s3.as_ref());
    let storage = crate::storage::open(&c.storage, &settings)
        .map_err(|e| lookup_error(&c.storage, e.to_string()))?;
    let (latest, warnings) = RestoredJob::latest(storage.as_ref())
        .map_err(|e| lookup_error(&c.storage, e.to_string()))?;
    let mut notes: Vec<String> = warnings
        .into_iter()
        .map(|w| format!("warning: {w}"))
        .collect();
    let floor = checkpoints_after_ms.map(|ms| format!("--checkpoints-after {}", iso8601_utc(ms)));
    // `latest` is the newest checkpoint that loads; when even that one is too old, every
    // other one is older still.
    let checkpoint = match (latest, checkpoints_after_ms) {
        (Some(job), Some(after)) if job.metadata.completed_ms < after => {
            notes.push(format!(
                "{}: the newest restorable checkpoint in {}, checkpoint {} (completed {}), \
                 completed before it, so no checkpoint is restored",
                floor.as_deref().unwrap_or_default(),
                c.storage,
                job.metadata.id,
                iso8601_utc(job.metadata.completed_ms)
            ));
            None
        }
        (latest, _) => latest,
    };
    // A savepoint completes and commits the exactly-once sinks' transactions just as a
    // checkpoint does, so restoring a checkpoint older than the newest savepoint (after a stop
    // with savepoint and a restart, or a StreamJob deleted with a final savepoint and created
    // again on the same storage) would emit again what the savepoint already committed.
    let savepoints_dir = crate::monitor::default_savepoint_dir(&c.storage);
    let savepoint = newest_savepoint(
        storage.as_ref(),
        &savepoints_dir,
        checkpoints_after_ms,
        checkpoint.as_ref().map(|j| j.metadata.completed_ms),
        &mut notes,
    )
    .map_err(|message| lookup_error(&savepoints_dir, message))?;
    // The newest snapshot found in the storage, and the note saying so (printed unless the
    // initial savepoint is newer still).
    let found = match (savepoint, checkpoint) {
        // Only savepoints newer than the checkpoint were looked at.
        (Some(sp), checkpoint) => {
            let note = format!(
                "--from-latest-checkpoint: savepoint {} ({}, completed {}) is newer than {}, so \
                 the savepoint is restored",
                sp.metadata.id,
                sp.location,
                iso8601_utc(sp.metadata.completed_ms),
                match &checkpoint {
                    Some(job) => format!(
                        "the newest restorable checkpoint in {} (checkpoint {}, completed {})",
                        c.storage,
                        job.metadata.id,
                        iso8601_utc(job.metadata.completed_ms)
                    ),
                    None => format!("any restorable checkpoint in {}", c.storage),
                }
            );
            Some((sp, note))
        }
        (None, Some(job)) => {
            let note = format!(
                "--from-latest-checkpoint: the newest restorable checkpoint in {} is checkpoint \
                 {} ({}, completed {})",
                c.storage,
                job.metadata.id,
                job.location,
                iso8601_utc(job.metadata.completed_ms)
            );
            Some((job, note))
        }
        (None, None) => None,
    };
    let from = match (found, &initial) {
        // A savepoint to start from that is newer than every snapshot in the storage (one
        // taken when the job was stopped, the storage still holding the checkpoints before
        // it) wins, for the same reason as a newer savepoint in the storage does.
        (Some((job, note)), Some(sp)) => {
            let newer = crate::storage::open(sp, &settings)
                .ok()
                .and_then(|st| RestoredJob::load(st.as_ref(), sp).ok())
                .filter(|s| s.metadata.completed_ms > job.metadata.completed_ms);
            match newer {
                Some(s) => {
                    let kind = snapshot_kind(&job);
                    notes.push(format!(
                        "--from-latest-checkpoint: spec.job.initialSavepointPath {sp} (completed \
                         {}) is newer than the newest {kind} in {} ({kind} {}, completed {}), so \
                         the initial savepoint is restored",
                        iso8601_utc(s.metadata.completed_ms),
                        if kind == "savepoint" {
                            &savepoints_dir
                        } else {
                            &c.storage
                        },
                        job.metadata.id,
                        iso8601_utc(job.metadata.completed_ms)
                    ));
                    Some(sp.clone())
                }
                None => {
                    notes.push(note);
                    Some(job.location)
                }
            }
        }
        (Some((job, note)), None) => {
            notes.push(note);
            Some(job.location)
        }
        (None, initial) => {
            let searched = format!(
                "no restorable checkpoint in {} or savepoint in {savepoints_dir}{}",
                c.storage,
                floor
                    .as_deref()
                    .map(|f| format!(" completed since {f}"))
                    .unwrap_or_default()
            );
            notes.push(match initial {
                Some(p) => format!(
                    "--from-latest-checkpoint: {searched}; starting from \
                     spec.job.initialSavepointPath {p}"
                ),
                None => format!("--from-latest-checkpoint: {searched}; starting without state"),
            });
            initial.clone()
        }
    };
    Ok(RestorePlan { from, notes })
}

/// `checkpoint` or `savepoint`, for notes.
fn snapshot_kind(job: &RestoredJob) -> &'static str {
    if job.metadata.kind.is_savepoint() {
        "savepoint"
    } else {
        "checkpoint"
    }
}

/// The newest savepoint in `dir` that loads cleanly, among those that completed at or after
/// `after_ms` (`--checkpoints-after`) and later than `newer_than_ms` (the checkpoint it
/// competes with; older savepoints would not be restored anyway, so they are not read).
///
/// The `_metadata` of every `savepoint-*` directory is read to order them by completion;
/// then they are loaded newest first, as a restore loads them, until one loads. A directory
/// without `_metadata` is a savepoint still being written (or abandoned) and is passed over;
/// a damaged savepoint is passed over with a warning in `notes`; a missing directory holds no
/// savepoints. A storage that fails is an error, as for checkpoints: falling back to older
/// state would replay what the newer savepoint committed.
fn newest_savepoint(
    storage: &dyn CheckpointStorage,
    dir: &str,
    after_ms: Option<i64>,
    newer_than_ms: Option<i64>,
    notes: &mut Vec<String>,
) -> Result<Option<RestoredJob>, String> {
    let names = match storage.list_directories(dir) {
        Ok(names) => names,
        Err(e @ StorageError::Unsupported { .. }) => {
            notes.push(format!(
                "warning: savepoints in {dir} are not considered: {e}"
            ));
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut candidates: Vec<(i64, String)> = Vec::new();
    let mut too_old = 0;
    for name in names.iter().filter(|n| n.starts_with("savepoint-")) {
        let location = format!("{}/{name}", dir.trim_end_matches('/'));
        let bytes = match storage.read_file(&location, METADATA_FILE) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.to_string()),
        };
        match serde_json::from_slice::<SnapshotMetadata>(&bytes) {
            Ok(m) if after_ms.is_some_and(|after| m.completed_ms < after) => too_old += 1,
            Ok(m) if newer_than_ms.is_some_and(|newer| m.completed_ms <= newer) => {}
            Ok(m) => candidates.push((m.completed_ms, location)),
            Err(e) => notes.push(format!(
                "warning: savepoint {location} is not restorable, skipping it: unreadable \
                 {METADATA_FILE} ({e})"
            )),
        }
    }
    if let (Some(after), true) = (after_ms, too_old > 0) {
        notes.push(format!(
            "--checkpoints-after {}: {too_old} savepoint(s) in {dir} completed before it and \
             are not restored",
            iso8601_utc(after)
        ));
    }
    candidates.sort_by(|a, b| b.cmp(a));
    for (_, location) in candidates {
        match RestoredJob::load(storage, &location) {
            Ok(job) => return Ok(Some(job)),
            Err(e) if e.is_damaged() => notes.push(format!(
                "warning: savepoint {location} is not restorable, skipping it: {e}"
            )),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(None)
}

/// Configured features the engine does not act on yet, each with what that means, e.g.
/// `state.backend rocksdb (state is kept on the heap)`. Empty when everything configured is
/// active.
pub fn inactive_features(spec: &StreamJobSpec) -> Vec<String> {
    let mut out = Vec::new();
    // Heap state is copied whole at every checkpoint and has no files to keep locally: both
    // settings need the RocksDB backend, as in Flink.
    if spec.state.backend == StateBackend::Heap {
        if spec.state.local_recovery {
            out.push(
                "state.localRecovery with state.backend heap (restores read the checkpoint \
                 storage; set state.backend: rocksdb)"
                    .to_string(),
            );
        }
        if spec.checkpointing.as_ref().is_some_and(|c| c.incremental) {
            out.push(
                "checkpointing.incremental with state.backend heap (every checkpoint writes the \
                 full state; set state.backend: rocksdb)"
                    .to_string(),
            );
        }
    }
    out
}

/// The note printed for [`inactive_features`], or `None` when there is nothing to say.
pub fn inactive_note(spec: &StreamJobSpec) -> Option<String> {
    let features = inactive_features(spec);
    (!features.is_empty()).then(|| {
        format!(
            "note: configured but not yet active in embedded mode in this version: {}",
            features.join("; ")
        )
    })
}

/// What the run loop reacts to.
enum Event {
    /// SIGINT or SIGTERM arrived.
    Signal(&'static str),
    /// The job ended by itself, failed, or was cancelled (also via REST).
    Ended(Result<JobOutcome, JobError>),
}

/// `weir run`: runs the manifest until its input ends, it fails, or it is stopped.
pub fn run(registry: &Registry, opts: &RunOptions) -> Result<(), CliError> {
    let job = load_manifest(&opts.manifest)?;
    let mut settings = job_settings(&opts.manifest, &job.spec)?;
    let suspended = job.spec.job.state == JobTargetState::Suspended;
    // With standby JobManagers this one acts only as the leader, and every leader takes over
    // from the newest checkpoint its predecessors completed.
    let leader = match &opts.cluster {
        Some(c) if !suspended && crate::cluster::high_availability(&job.spec) => {
            Some(crate::cluster::become_leader(
                c,
                job.metadata.name.as_deref().unwrap_or("weir-job"),
                &job.spec,
            )?)
        }
        _ => None,
    };
    let from_latest =
        opts.from_latest_checkpoint || (leader.is_some() && job.spec.checkpointing.is_some());
    // A suspended job is not started, so there is nothing to restore and no storage to search.
    let restore = if suspended {
        RestorePlan::default()
    } else {
        restore_plan(
            &opts.manifest,
            &job.spec,
            opts.from_savepoint.as_deref(),
            from_latest,
            opts.checkpoints_after_ms,
        )?
    };
    settings.restore_from = restore.from.clone();
    settings.fencing = leader.as_ref().map(|l| l.term.fencing());
    if let Some(c) = &opts.cluster
        && !suspended
    {
        settings.cluster = Some(crate::cluster::bind_job_manager(c, &job.spec)?);
    }
    let settings_cluster = settings.cluster.clone();
    let prepared = build(registry, &opts.manifest, job, settings)?;
    let name = prepared.name().to_string();
    let spec = &prepared.job.spec;
    if suspended {
        eprintln!(
            "{name}: spec.job.state is suspended, so the job is not started; set it to running \
             to run it"
        );
        return Ok(());
    }
    if let Some(note) = inactive_note(spec) {
        eprintln!("{note}");
    }
    if let Some(note) = crate::storage::credentials_secret_note(
        spec.checkpointing.as_ref().and_then(|c| c.s3.as_ref()),
    ) {
        eprintln!("{note}");
    }
    for note in &restore.notes {
        eprintln!("{note}");
    }

    let rt = crate::serve::runtime("weir-rest")?;
    // Bind before starting the job, so a busy port fails the command before any work is done.
    let listener =
        std::net::TcpListener::bind(opts.rest_address).map_err(|source| CliError::Bind {
            address: opts.rest_address.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(CliError::Runtime)?;

    let (tx, rx) = mpsc::channel();
    // Handlers go in before the job starts: from here on SIGINT/SIGTERM stop the job cleanly
    // instead of killing the process with tasks mid-record.
    let signals = rt.block_on(Signals::install()).map_err(CliError::Runtime)?;
    rt.spawn(forward_signals(
        signals,
        tx.clone(),
        settings_cluster.clone(),
    ));

    let handle = prepared
        .env
        .start()
        .map_err(|e| start_error(e, prepared.program.name, restore.from.as_deref()))?;
    let started = Instant::now();
    let mut info = JobInfo::new(&name, prepared.program.name);
    if let Some(c) = &spec.checkpointing {
        info = info.with_checkpoint_storage(&c.storage);
    }
    let monitor = JobMonitor::new(info, handle.clone());
    let app = match rest::router(monitor.clone()) {
        Ok(app) => app,
        Err(e) => {
            handle.cancel();
            return Err(e.into());
        }
    };
    if let Err(e) = crate::serve::serve(&rt, listener, app, "REST") {
        handle.cancel();
        return Err(e);
    }
    monitor.sample();
    eprintln!("REST API on http://{bound}");
    if let Some((id, path, _, is_savepoint)) = handle.checkpoint_stats().last_restore {
        let kind = if is_savepoint {
            "savepoint"
        } else {
            "checkpoint"
        };
        eprintln!("restored from {kind} {id} ({path})");
    }
    eprintln!(
        "running {} (program {}, parallelism {}); {}; {}",
        monitor.info().job_id,
        prepared.program.name,
        handle.parallelism(),
        match &spec.checkpointing {
            Some(c) => format!("checkpoints every {} to {}", c.interval, c.storage),
            None => "checkpointing off".to_string(),
        },
        if opts.supervised || leader.is_some() {
            "SIGTERM leaves it to the next JobManager"
        } else {
            "Ctrl-C stops it"
        }
    );
    {
        let tx = tx.clone();
        let waited = handle.clone();
        // `wait` blocks, so it gets its own thread; the result carries the failure's cause.
        let spawned = std::thread::Builder::new()
            .name("weir-job-waiter".into())
            .spawn(move || {
                let _ = tx.send(Event::Ended(waited.wait()));
            });
        if let Err(e) = spawned {
            handle.cancel();
            return Err(CliError::Runtime(e));
        }
    }
    drop(tx);

    let result = drive(&monitor, &rx, opts, started, leader.is_some());
    rt.shutdown_timeout(Duration::from_millis(500));
    drop(leader);
    result
}

/// The command's error for a job that did not start. Restore problems are the user's to fix
/// (another snapshot, the job's settings), so they get the usage exit code with the engine's
/// message, which names the problem and the fix.
fn start_error(e: JobError, program: &str, restore_from: Option<&str>) -> CliError {
    // Deploying a task fails with a "restore" state error when the snapshot's state cannot be
    // handed to the new parallelism (e.g. in-flight data of an unaligned checkpoint).
    let restoring_task = matches!(
        &e,
        JobError::TaskFailed { source: OperatorError::State { name, .. }, .. } if name == "restore"
    );
    match (e, restore_from) {
        (e @ JobError::InvalidGraph(_), _) => CliError::InvalidDataflow {
            program: program.to_string(),
            source: e,
        },
        (e @ JobError::Checkpoint(_), Some(from)) => CliError::Restore {
            from: from.to_string(),
            source: e,
        },
        (e, Some(from)) if restoring_task => CliError::Restore {
            from: from.to_string(),
            source: e,
        },
        (e @ JobError::Checkpoint(_), None) => CliError::CheckpointStorage(e),
        (e, _) => CliError::Start(e),
    }
}

/// The run loop: progress lines until the job ends or a stop is requested, then the shutdown.
fn drive(
    monitor: &JobMonitor,
    rx: &Receiver<Event>,
    opts: &RunOptions,
    started: Instant,
    leading: bool,
) -> Result<(), CliError> {
    let deadline = opts.run_for.map(|d| started + d);
    let mut next_tick = started + TICK;
    let reason = loop {
        let wake = deadline.map_or(next_tick, |d| d.min(next_tick));
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(Event::Ended(res)) if opts.supervised => {
                return wait_for_termination(monitor, rx, res, opts, started);
            }
            Ok(Event::Ended(res)) => {
                if let Ok(JobOutcome::Stopped(_)) = &res {
                    // The REST client that asked for the stop polls for the savepoint's path;
                    // exiting before it got it would leave it with a refused connection.
                    monitor.wait_stop_reported(STOP_REPORT_GRACE);
                }
                return finish(monitor, res, None, opts, started);
            }
            Ok(Event::Signal(sig)) if leading || opts.supervised => {
                // A leading or supervised JobManager that is told to go (its pod is deleted or
                // moved) hands the job over instead of cancelling it: the TaskManagers cancel
                // their tasks when it is gone, and the next leader (or the process the
                // supervisor starts) restores the latest checkpoint. A cancel would also delete
                // the checkpoints under retentionOnCancel: delete, leaving nothing to restore.
                eprintln!(
                    "received {sig}: this JobManager leaves without cancelling the job; the next \
                     {} restores it from its latest checkpoint (cancel it with weir cancel)",
                    if leading { "leader" } else { "JobManager" }
                );
                return Ok(());
            }
            Ok(Event::Signal(sig)) => break format!("received {sig}"),
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if let (Some(d), Some(run_for)) = (deadline, opts.run_for)
                    && now >= d
                {
                    break format!("--for {} elapsed", format_elapsed(run_for));
                }
                if now >= next_tick {
                    // This loop is the rate sampler: one sample per tick keeps the rates on the
                    // progress line and in the REST API the same.
                    monitor.sample();
                    if !opts.quiet {
                        eprintln!("{}", format_progress(&progress(monitor, started)));
                    }
                    // Skip ticks missed while the machine was busy rather than printing a burst.
                    while next_tick <= now {
                        next_tick += TICK;
                    }
                }
            }
            // Every sender is gone only if the waiter died without reporting; nothing will
            // arrive any more, so end the job as if stopped.
            Err(RecvTimeoutError::Disconnected) => break "lost track of the job".to_string(),
        }
    };

    eprintln!(
        "{reason}: cancelling the job (waiting up to {}s for tasks to stop; press Ctrl-C again to exit at once)",
        SHUTDOWN_GRACE.as_secs()
    );
    monitor.cancel();
    let until = Instant::now() + SHUTDOWN_GRACE;
    match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        Ok(Event::Ended(res)) => finish(monitor, res, Some(&reason), opts, started),
        Ok(Event::Signal(sig)) => {
            eprintln!("received {sig} again: exiting without waiting for tasks");
            Err(CliError::Interrupted)
        }
        Err(RecvTimeoutError::Timeout) => Err(CliError::ShutdownTimeout(SHUTDOWN_GRACE)),
        Err(RecvTimeoutError::Disconnected) => {
            match monitor
                .handle()
                .wait_timeout(until.saturating_duration_since(Instant::now()))
            {
                Some(res) => finish(monitor, res, Some(&reason), opts, started),
                None => Err(CliError::ShutdownTimeout(SHUTDOWN_GRACE)),
            }
        }
    }
}

/// `--supervised`: the job ended. A failed one ends the process with the failure, as
/// without the flag, so that the restarted process restores the latest checkpoint and tries
/// again. A job that finished, was cancelled or was stopped with a savepoint keeps the process
/// serving its REST API (the final state, the savepoint's location; `/readyz` answers not
/// ready) until SIGTERM or SIGINT, and then it exits with success.
///
/// Exiting at once would make the supervisor (a Deployment's pod restart policy) start the
/// process again, and it would run the job again from the latest checkpoint: a finished or
/// cancelled job would run again, and after a stop with savepoint that checkpoint is older
/// than the savepoint, so what the job emitted between the two would be emitted twice.
fn wait_for_termination(
    monitor: &JobMonitor,
    rx: &Receiver<Event>,
    res: Result<JobOutcome, JobError>,
    opts: &RunOptions,
    started: Instant,
) -> Result<(), CliError> {
    finish(monitor, res, None, opts, started)?;
    monitor.set_lingering();
    eprintln!(
        "the job is {}; --supervised: waiting to be terminated (SIGTERM or SIGINT) instead of \
         exiting, so that the supervisor does not start the job again; the REST API stays up",
        monitor.state()
    );
    loop {
        match rx.recv() {
            Ok(Event::Signal(sig)) => {
                eprintln!("received {sig}: exiting");
                return Ok(());
            }
            Ok(Event::Ended(_)) => {}
            // No signal can arrive any more, and exiting would start the job again: wait for
            // the supervisor to kill the process.
            Err(_) => loop {
                std::thread::park();
            },
        }
    }
}

fn progress(monitor: &JobMonitor, started: Instant) -> Progress {
    let o = monitor.overview();
    let stats = monitor.checkpoint_stats();
    let now = now_ms();
    let last_checkpoint = monitor.handle().checkpointing_enabled().then(|| {
        let last = stats.latest_completed().map(|c| {
            (
                c.id,
                c.duration_ms,
                c.size_bytes,
                c.trigger_ms + c.duration_ms.unwrap_or(0),
            )
        });
        format_checkpoint(last, stats.failed, now)
    });
    Progress {
        elapsed: started.elapsed(),
        state: o.state,
        in_per_second: o.records_in_per_second,
        out_per_second: o.records_out_per_second,
        records_in: o.records_in,
        records_out: o.records_out,
        watermark_ms: o.current_watermark_ms,
        now_ms: now,
        parallelism: o.parallelism,
        restarts: o.num_restarts,
        last_checkpoint,
    }
}

/// Prints the summary and turns the job's outcome into the command's result.
fn finish(
    monitor: &JobMonitor,
    res: Result<JobOutcome, JobError>,
    stopped_because: Option<&str>,
    opts: &RunOptions,
    started: Instant,
) -> Result<(), CliError> {
    monitor.sample();
    let overview = monitor.overview();
    let checkpoints = monitor
        .handle()
        .checkpointing_enabled()
        .then(|| monitor.checkpoint_history().counts);
    eprint!(
        "{}",
        format_summary(
            &overview,
            checkpoints.as_ref(),
            started.elapsed(),
            stopped_because,
            now_ms()
        )
    );
    match res {
        Ok(JobOutcome::Stopped(path)) => {
            eprintln!(
                "stopped with savepoint {path}\n  resume with: weir run {} --from-savepoint {path}",
                opts.manifest.display()
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(CliError::JobFailed(e)),
    }
}

/// The final report: state, totals, average rates, watermark, checkpoints (`None` when
/// checkpointing is off) and restarts, and one line per operator.
pub fn format_summary(
    o: &JobOverview,
    checkpoints: Option<&CheckpointCounts>,
    elapsed: Duration,
    stopped_because: Option<&str>,
    now_ms: i64,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let why = stopped_because
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let mut s = format!(
        "job {} {} after {}{why}\n  records in {} ({}/s avg), out {} ({}/s avg); watermark {}\n",
        o.job_id,
        o.state,
        format_elapsed(elapsed),
        human_count(o.records_in),
        human_count_f(o.records_in as f64 / secs),
        human_count(o.records_out),
        human_count_f(o.records_out as f64 / secs),
        format_watermark(o.current_watermark_ms, now_ms),
    );
    match checkpoints {
        None => s.push_str("  checkpointing off"),
        Some(c) => {
            s.push_str(&format!(
                "  checkpoints {} completed, {} failed",
                c.completed, c.failed
            ));
            match &o.last_checkpoint {
                Some(last) => s.push_str(&format!(
                    "; last #{} ({}) {}",
                    last.id,
                    human_bytes(last.state_size_bytes),
                    last.external_path.as_deref().unwrap_or("-")
                )),
                None => s.push_str("; none completed"),
            }
        }
    }
    s.push_str(&format!("; restarts {}\n", o.num_restarts));
    let width = o
        .vertices
        .iter()
        .map(|v| v.id.len())
        .max()
        .unwrap_or(0)
        .max("operator".len());
    s.push_str(&format!(
        "  {:<width$}  {:>3}  {:>7}  {:>7}\n",
        "operator", "p", "in", "out"
    ));
    for v in &o.vertices {
        s.push_str(&format!(
            "  {:<width$}  {:>3}  {:>7}  {:>7}\n",
            v.id,
            v.parallelism,
            human_count(v.records_in),
            human_count(v.records_out)
        ));
    }
    s
}

/// Turns SIGINT and SIGTERM into run-loop events.
async fn forward_signals(
    mut signals: Signals,
    tx: Sender<Event>,
    cluster: Option<std::sync::Arc<weir_core::cluster::JobManagerCluster>>,
) {
    while let Some(sig) = signals.next().await {
        // A JobManager still waiting for TaskManagers' slots stops waiting.
        if let Some(c) = &cluster {
            c.abort_waiting();
        }
        if tx.send(Event::Signal(sig)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::rest::{CheckpointStatus, CheckpointSummary, VertexOverview};
    use weir_api::{
        Duration as SpecDuration, ExponentialDelayRestart, FailureRateRestart, FixedDelayRestart,
        JobState, UnalignedCheckpointSpec,
    };

    #[test]
    fn only_unimplemented_features_are_named() {
        let mut spec = StreamJobSpec::for_program("orders");
        spec.checkpointing = Some(CheckpointingSpec::new(
            "file:///tmp/weir/checkpoints/orders",
        ));
        spec.job.initial_savepoint_path = Some("file:///tmp/sp".into());
        assert_eq!(inactive_note(&spec), None, "all of this is active");
        spec.state.local_recovery = true;
        if let Some(c) = spec.checkpointing.as_mut() {
            c.incremental = true;
        }
        let note = inactive_note(&spec).unwrap();
        assert!(
            note.contains("state.localRecovery with state.backend heap"),
            "{note}"
        );
        assert!(
            note.contains("checkpointing.incremental with state.backend heap"),
            "{note}"
        );
        assert!(note.contains("set state.backend: rocksdb"), "{note}");
        assert!(!note.contains("restartStrategy"), "{note}");
        spec.state.backend = StateBackend::RocksDb;
        assert_eq!(inactive_note(&spec), None, "RocksDB makes both active");
    }

    #[test]
    fn checkpointing_maps_every_field() {
        let c = CheckpointingSpec {
            interval: SpecDuration::from_millis(200),
            mode: weir_api::CheckpointingMode::AtLeastOnce,
            timeout: SpecDuration::from_secs(30),
            min_pause: SpecDuration::from_millis(50),
            max_concurrent: 2,
            tolerable_failures: 3,
            unaligned: UnalignedCheckpointSpec {
                enabled: true,
                aligned_timeout: SpecDuration::from_secs(1),
            },
            incremental: false,
            num_retained: 4,
            storage: "file:///tmp/c".into(),
            retention_on_cancel: RetentionOnCancel::Delete,
            s3: None,
        };
        let e = checkpoint_config(Path::new("m.yaml"), &c).unwrap();
        assert_eq!(e.interval, Duration::from_millis(200));
        assert_eq!(e.mode, CheckpointingMode::AtLeastOnce);
        assert_eq!(e.timeout, Duration::from_secs(30));
        assert_eq!(e.min_pause, Duration::from_millis(50));
        assert_eq!((e.max_concurrent, e.tolerable_failures), (2, 3));
        assert!(e.unaligned);
        assert_eq!(e.aligned_timeout, Duration::from_secs(1));
        assert_eq!(e.num_retained, 4);
        assert!(!e.retain_on_cancel);
        assert_eq!(e.storage, "file:///tmp/c");
        let retained = CheckpointingSpec::new("file:///tmp/c");
        let e = checkpoint_config(Path::new("m.yaml"), &retained).unwrap();
        assert!(e.retain_on_cancel);
        assert_eq!(e.mode, CheckpointingMode::ExactlyOnce);
    }

    #[test]
    fn s3_storage_gets_a_storage_factory() {
        let mut spec = StreamJobSpec::for_program("orders");
        spec.checkpointing = Some(CheckpointingSpec::new("s3://bucket/checkpoints"));
        let settings = job_settings(Path::new("m.yaml"), &spec).unwrap();
        assert!(settings.storage.is_some());
        assert_eq!(
            settings.checkpoint.map(|c| c.storage).as_deref(),
            Some("s3://bucket/checkpoints")
        );
    }

    #[test]
    fn restart_strategies_map() {
        let mut spec = StreamJobSpec::for_program("orders");
        // The default without checkpointing: no restarts, a restart would repeat all output.
        assert_eq!(restart_strategy(&spec), EngineRestart::None);
        spec.checkpointing = Some(CheckpointingSpec::new("file:///tmp/c"));
        assert_eq!(
            restart_strategy(&spec),
            EngineRestart::FixedDelay {
                attempts: FixedDelayRestart::default().attempts,
                delay: FixedDelayRestart::default().delay.as_std(),
            }
        );
        spec.checkpointing = None;
        spec.restart_strategy = RestartStrategy::FixedDelay(FixedDelayRestart {
            attempts: 7,
            delay: SpecDuration::from_millis(10),
        });
        assert_eq!(
            restart_strategy(&spec),
            EngineRestart::FixedDelay {
                attempts: 7,
                delay: Duration::from_millis(10)
            },
            "a strategy other than the default is followed without checkpointing too"
        );
        spec.restart_strategy = RestartStrategy::ExponentialDelay(ExponentialDelayRestart {
            initial_backoff: SpecDuration::from_secs(1),
            max_backoff: SpecDuration::from_secs(60),
            multiplier: 2.0,
            reset_backoff_threshold: SpecDuration::from_secs(3600),
            jitter: 0.1,
        });
        assert_eq!(
            restart_strategy(&spec),
            EngineRestart::ExponentialDelay {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                multiplier: 2.0,
                reset_threshold: Duration::from_secs(3600),
                jitter: 0.1
            }
        );
        spec.restart_strategy = RestartStrategy::FailureRate(FailureRateRestart {
            max_failures_per_interval: 2,
            failure_rate_interval: SpecDuration::from_secs(60),
            delay: SpecDuration::from_secs(1),
        });
        assert_eq!(
            restart_strategy(&spec),
            EngineRestart::FailureRate {
                max_failures: 2,
                interval: Duration::from_secs(60),
                delay: Duration::from_secs(1)
            }
        );
        spec.restart_strategy = RestartStrategy::None;
        assert_eq!(restart_strategy(&spec), EngineRestart::None);
    }

    #[test]
    fn restore_point_precedence() {
        let m = Path::new("m.yaml");
        let mut spec = StreamJobSpec::for_program("orders");
        assert_eq!(
            restore_plan(m, &spec, None, false, None).unwrap(),
            RestorePlan::default()
        );
        spec.job.initial_savepoint_path = Some("file:///sp/a".into());
        assert_eq!(
            restore_plan(m, &spec, None, false, None)
                .unwrap()
                .from
                .as_deref(),
            Some("file:///sp/a")
        );
        assert_eq!(
            restore_plan(m, &spec, Some("file:///sp/b"), true, None)
                .unwrap()
                .from
                .as_deref(),
            Some("file:///sp/b"),
            "--from-savepoint wins"
        );
        let e = restore_plan(m, &spec, None, true, None).unwrap_err();
        assert!(e.to_string().contains("spec.checkpointing"), "{e}");

        // No checkpoint yet: fall back to the initial savepoint, else no state.
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("file://{}", dir.path().display());
        spec.checkpointing = Some(CheckpointingSpec::new(uri.clone()));
        let plan = restore_plan(m, &spec, None, true, None).unwrap();
        assert_eq!(plan.from.as_deref(), Some("file:///sp/a"));
        assert!(
            plan.notes[0].contains("no restorable checkpoint"),
            "{plan:?}"
        );
        spec.job.initial_savepoint_path = None;
        let plan = restore_plan(m, &spec, None, true, None).unwrap();
        assert_eq!(plan.from, None);
        assert!(
            plan.notes[0].ends_with("starting without state"),
            "{plan:?}"
        );

        // An incomplete checkpoint (no _metadata) is never picked.
        std::fs::create_dir_all(dir.path().join("chk-3")).unwrap();
        assert_eq!(restore_plan(m, &spec, None, true, None).unwrap().from, None);
    }

    /// Writes the `_metadata` of an (empty) snapshot completed at `completed_ms`.
    fn snapshot(dir: &Path, id: u64, completed_ms: i64, savepoint: bool) {
        snapshot_with(dir, id, completed_ms, savepoint, false);
    }

    /// [`snapshot`], `damaged`: its `_metadata` lists a state file that is missing.
    fn snapshot_with(dir: &Path, id: u64, completed_ms: i64, savepoint: bool, damaged: bool) {
        use weir_core::checkpoint::SnapshotKind;
        use weir_core::checkpoint::format::{FileMeta, METADATA_VERSION, OperatorMeta};
        std::fs::create_dir_all(dir).unwrap();
        let meta = SnapshotMetadata {
            version: METADATA_VERSION,
            id,
            kind: if savepoint {
                SnapshotKind::Savepoint {
                    target: dir.display().to_string(),
                }
            } else {
                SnapshotKind::Checkpoint
            },
            job_name: "orders".into(),
            timestamp_ms: completed_ms - 10,
            completed_ms,
            max_parallelism: 128,
            operators: if damaged {
                vec![OperatorMeta {
                    uid: "orders-source".into(),
                    name: "source".into(),
                    parallelism: 1,
                    files: vec![FileMeta {
                        subtask: 0,
                        file: "orders-source-0.state".into(),
                        size: 10,
                        crc32: 0,
                        shared: Vec::new(),
                    }],
                }]
            } else {
                Vec::new()
            },
        };
        std::fs::write(dir.join("_metadata"), serde_json::to_vec(&meta).unwrap()).unwrap();
    }

    #[test]
    fn the_newer_of_the_latest_checkpoint_and_the_initial_savepoint_is_restored() {
        let m = Path::new("m.yaml");
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("checkpoints");
        snapshot(&storage.join("chk-4"), 4, 1_000_000, false);
        let savepoint = dir.path().join("savepoints/savepoint-5");
        snapshot(&savepoint, 5, 2_000_000, true);
        let mut spec = StreamJobSpec::for_program("orders");
        spec.checkpointing = Some(CheckpointingSpec::new(format!(
            "file://{}",
            storage.display()
        )));
        spec.job.initial_savepoint_path = Some(savepoint.display().to_string());
        let plan = restore_plan(m, &spec, None, true, None).unwrap();
        assert_eq!(plan.from, Some(savepoint.display().to_string()), "{plan:?}");
        assert!(
            plan.notes[0].contains("is newer than the newest checkpoint"),
            "{plan:?}"
        );
        // A checkpoint taken after the savepoint wins.
        snapshot(&storage.join("chk-6"), 6, 3_000_000, false);
        let plan = restore_plan(m, &spec, None, true, None).unwrap();
        assert!(plan.from.unwrap().ends_with("chk-6"));
    }

    /// What a case expects `--from-latest-checkpoint` to restore.
    #[derive(Debug, Clone, Copy)]
    enum Want {
        Checkpoint(u64),
        /// A savepoint in `<storage>/savepoints`, by directory name.
        Savepoint(&'static str),
        /// `spec.job.initialSavepointPath`.
        Initial,
        Nothing,
    }

    /// One storage layout and what is restored from it. Times are in seconds since the epoch.
    struct Case {
        name: &'static str,
        /// (id, completed) of complete checkpoints.
        checkpoints: &'static [(u64, i64)],
        /// Checkpoints whose `_metadata` names a state file that is missing.
        damaged_checkpoints: &'static [(u64, i64)],
        /// (directory name, completed) of complete savepoints in `<storage>/savepoints`.
        savepoints: &'static [(&'static str, i64)],
        /// Savepoints whose `_metadata` names a state file that is missing.
        damaged_savepoints: &'static [(&'static str, i64)],
        /// Savepoint directories without `_metadata` (being written), or with garbage in it.
        incomplete_savepoints: &'static [&'static str],
        garbled_savepoints: &'static [&'static str],
        /// Completion of `spec.job.initialSavepointPath` (kept outside the storage).
        initial: Option<i64>,
        /// `--checkpoints-after`.
        after: Option<i64>,
        want: Want,
        /// Every one of these is in some note.
        notes: &'static [&'static str],
    }

    impl Default for Case {
        fn default() -> Self {
            Self {
                name: "",
                checkpoints: &[],
                damaged_checkpoints: &[],
                savepoints: &[],
                damaged_savepoints: &[],
                incomplete_savepoints: &[],
                garbled_savepoints: &[],
                initial: None,
                after: None,
                want: Want::Nothing,
                notes: &[],
            }
        }
    }

    #[test]
    fn the_newest_snapshot_since_checkpoints_after_is_restored() {
        let cases = [
            Case {
                name: "no savepoints: the newest checkpoint",
                checkpoints: &[(4, 1_000), (5, 2_000)],
                want: Want::Checkpoint(5),
                notes: &["the newest restorable checkpoint in", "is checkpoint 5 ("],
                ..Case::default()
            },
            Case {
                name: "a savepoint newer than every checkpoint (a stop with savepoint) wins",
                checkpoints: &[(4, 1_000), (5, 2_000)],
                savepoints: &[("savepoint-6-3000", 3_000)],
                want: Want::Savepoint("savepoint-6-3000"),
                notes: &[
                    "savepoint 6 (",
                    "is newer than the newest restorable checkpoint in",
                    "(checkpoint 5, completed 1970-01-01T00:33:20Z), so the savepoint is restored",
                ],
                ..Case::default()
            },
            Case {
                name: "a checkpoint taken after the savepoint wins",
                checkpoints: &[(5, 2_000), (7, 4_000)],
                savepoints: &[("savepoint-6-3000", 3_000)],
                want: Want::Checkpoint(7),
                ..Case::default()
            },
            Case {
                name: "the newest of several savepoints, by completion, without checkpoints",
                savepoints: &[
                    ("savepoint-2-2000", 2_000),
                    ("savepoint-9-9000", 9_000),
                    ("savepoint-5-5000", 5_000),
                ],
                want: Want::Savepoint("savepoint-9-9000"),
                notes: &["is newer than any restorable checkpoint in"],
                ..Case::default()
            },
            Case {
                name: "damaged, incomplete and garbled savepoints are passed over",
                checkpoints: &[(4, 1_000)],
                savepoints: &[("savepoint-5-5000", 5_000)],
                damaged_savepoints: &[("savepoint-9-9000", 9_000)],
                incomplete_savepoints: &["savepoint-10-10000"],
                garbled_savepoints: &["savepoint-11-11000"],
                want: Want::Savepoint("savepoint-5-5000"),
                notes: &[
                    "savepoint-9-9000 is not restorable, skipping it",
                    "orders-source-0.state is missing",
                    "savepoint-11-11000 is not restorable, skipping it: unreadable _metadata",
                ],
                ..Case::default()
            },
            Case {
                name: "no restorable savepoint: the checkpoint",
                checkpoints: &[(4, 1_000)],
                damaged_savepoints: &[("savepoint-9-9000", 9_000)],
                want: Want::Checkpoint(4),
                notes: &["savepoint-9-9000 is not restorable"],
                ..Case::default()
            },
            Case {
                name: "a damaged newest checkpoint falls back, and a newer savepoint wins",
                checkpoints: &[(5, 2_000)],
                damaged_checkpoints: &[(8, 8_000)],
                savepoints: &[("savepoint-6-3000", 3_000)],
                want: Want::Savepoint("savepoint-6-3000"),
                notes: &["checkpoint 8 is not restorable, falling back"],
                ..Case::default()
            },
            Case {
                name: "savepoints older than the checkpoint are not read at all",
                checkpoints: &[(7, 7_000)],
                damaged_savepoints: &[("savepoint-6-6000", 6_000)],
                want: Want::Checkpoint(7),
                ..Case::default()
            },
            Case {
                name: "an initial savepoint newer than everything found wins",
                checkpoints: &[(5, 2_000)],
                savepoints: &[("savepoint-6-3000", 3_000)],
                initial: Some(4_000),
                want: Want::Initial,
                notes: &[
                    "is newer than the newest savepoint in",
                    "(savepoint 6, completed 1970-01-01T00:50:00Z), so the initial savepoint is \
                     restored",
                ],
                ..Case::default()
            },
            Case {
                name: "an older initial savepoint loses to a newer savepoint found",
                savepoints: &[("savepoint-6-3000", 3_000)],
                initial: Some(1_000),
                want: Want::Savepoint("savepoint-6-3000"),
                ..Case::default()
            },
            Case {
                name: "stateless upgrade: everything before --checkpoints-after is ignored",
                checkpoints: &[(4, 1_000), (5, 2_000)],
                savepoints: &[("savepoint-3-1500", 1_500)],
                after: Some(6_000),
                want: Want::Nothing,
                notes: &[
                    "--checkpoints-after 1970-01-01T01:40:00Z: the newest restorable checkpoint \
                     in",
                    "checkpoint 5 (completed 1970-01-01T00:33:20Z), completed before it, so no \
                     checkpoint is restored",
                    "--checkpoints-after 1970-01-01T01:40:00Z: 1 savepoint(s) in",
                    "completed since --checkpoints-after 1970-01-01T01:40:00Z; starting without \
                     state",
                ],
                ..Case::default()
            },
            Case {
                name: "the new run's own checkpoints are restored by its later starts",
                checkpoints: &[(5, 2_000), (9, 7_000)],
                savepoints: &[("savepoint-6-3000", 3_000)],
                after: Some(6_000),
                want: Want::Checkpoint(9),
                notes: &["1 savepoint(s) in"],
                ..Case::default()
            },
            Case {
                name: "a snapshot completed at --checkpoints-after itself counts",
                checkpoints: &[(5, 2_000)],
                after: Some(2_000),
                want: Want::Checkpoint(5),
                ..Case::default()
            },
            Case {
                name: "savepoints since --checkpoints-after count",
                checkpoints: &[(5, 5_000)],
                savepoints: &[("savepoint-4-4000", 4_000), ("savepoint-8-8000", 8_000)],
                after: Some(6_000),
                want: Want::Savepoint("savepoint-8-8000"),
                notes: &["so no checkpoint is restored", "1 savepoint(s) in"],
                ..Case::default()
            },
            Case {
                name: "rollback: the initial savepoint although it is older than \
                       --checkpoints-after and than the bad run's snapshots",
                checkpoints: &[(8, 5_000)],
                savepoints: &[("savepoint-7-4000", 4_000)],
                initial: Some(1_000),
                after: Some(6_000),
                want: Want::Initial,
                notes: &[
                    "so no checkpoint is restored",
                    "starting from spec.job.initialSavepointPath",
                ],
                ..Case::default()
            },
            Case {
                name: "after a rollback, the new run's checkpoints win over the initial savepoint",
                checkpoints: &[(8, 5_000), (12, 7_000)],
                initial: Some(1_000),
                after: Some(6_000),
                want: Want::Checkpoint(12),
                ..Case::default()
            },
        ];
        let m = Path::new("m.yaml");
        for case in cases {
            let name = case.name;
            let dir = tempfile::tempdir().unwrap();
            let storage = dir.path().join("checkpoints");
            std::fs::create_dir_all(&storage).unwrap();
            let savepoints = storage.join("savepoints");
            for &(id, at) in case.checkpoints {
                snapshot(&storage.join(format!("chk-{id}")), id, at * 1000, false);
            }
            for &(id, at) in case.damaged_checkpoints {
                snapshot_with(
                    &storage.join(format!("chk-{id}")),
                    id,
                    at * 1000,
                    false,
                    true,
                );
            }
            let id_of = |n: &str| n.split('-').nth(1).unwrap().parse::<u64>().unwrap();
            for &(n, at) in case.savepoints {
                snapshot(&savepoints.join(n), id_of(n), at * 1000, true);
            }
            for &(n, at) in case.damaged_savepoints {
                snapshot_with(&savepoints.join(n), id_of(n), at * 1000, true, true);
            }
            for n in case.incomplete_savepoints {
                std::fs::create_dir_all(savepoints.join(n)).unwrap();
            }
            for n in case.garbled_savepoints {
                std::fs::create_dir_all(savepoints.join(n)).unwrap();
                std::fs::write(savepoints.join(n).join("_metadata"), "{not json").unwrap();
            }
            let mut spec = StreamJobSpec::for_program("orders");
            spec.checkpointing = Some(CheckpointingSpec::new(format!(
                "file://{}",
                storage.display()
            )));
            let initial = dir.path().join("elsewhere/savepoint-1-1");
            if let Some(at) = case.initial {
                snapshot(&initial, 1, at * 1000, true);
                spec.job.initial_savepoint_path = Some(initial.display().to_string());
            }
            let after = case.after.map(|s| s * 1000);
            let plan = restore_plan(m, &spec, None, true, after).unwrap();
            let from = plan.from.clone().unwrap_or_default();
            match case.want {
                Want::Checkpoint(id) => assert!(
                    from.ends_with(&format!("/checkpoints/chk-{id}")),
                    "{name}: {plan:#?}"
                ),
                Want::Savepoint(n) => assert!(
                    from.ends_with(&format!("/checkpoints/savepoints/{n}")),
                    "{name}: {plan:#?}"
                ),
                Want::Initial => {
                    assert_eq!(from, initial.display().to_string(), "{name}: {plan:#?}")
                }
                Want::Nothing => assert_eq!(plan.from, None, "{name}: {plan:#?}"),
            }
            for want in case.notes {
                assert!(
                    plan.notes.iter().any(|n| n.contains(want)),
                    "{name}: no note contains {want:?}: {plan:#?}"
                );
            }
            if case.after.is_none() {
                assert!(
                    plan.notes
                        .iter()
                        .all(|n| !n.contains("--checkpoints-after")),
                    "{name}: {plan:#?}"
                );
            }
        }
    }

    /// A savepoint directory that cannot be listed is an error naming it and the way out, not
    /// a silent start from the older checkpoint.
    #[test]
    fn an_unreadable_savepoint_directory_stops_the_start_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("checkpoints");
        snapshot(&storage.join("chk-4"), 4, 1_000_000, false);
        std::fs::write(storage.join("savepoints"), b"not a directory").unwrap();
        let mut spec = StreamJobSpec::for_program("orders");
        spec.checkpointing = Some(CheckpointingSpec::new(format!(
            "file://{}",
            storage.display()
        )));
        let e = restore_plan(Path::new("m.yaml"), &spec, None, true, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{}/savepoints", storage.display())),
            "{e}"
        );
        assert!(e.contains("Fix:") && e.contains("--from-savepoint"), "{e}");
    }

    #[test]
    fn checkpoints_after_is_ignored_without_from_latest_checkpoint() {
        let mut spec = StreamJobSpec::for_program("orders");
        spec.job.initial_savepoint_path = Some("file:///sp/a".into());
        let plan = restore_plan(Path::new("m.yaml"), &spec, None, false, Some(1)).unwrap();
        assert_eq!(plan.from.as_deref(), Some("file:///sp/a"));
        assert!(plan.notes.is_empty());
    }

    fn overview() -> JobOverview {
        JobOverview {
            job_id: "orders-0123456789abcdef".into(),
            name: "orders".into(),
            program: "orders".into(),
            state: JobState::Canceled,
            start_time_ms: 0,
            duration_ms: 20_000,
            parallelism: 2,
            max_parallelism: 128,
            num_restarts: 0,
            records_in: 2_000_000,
            records_out: 1_000,
            records_in_per_second: 0.0,
            records_out_per_second: 0.0,
            current_watermark_ms: None,
            last_checkpoint: None,
            failure: None,
            vertices: vec![
                VertexOverview {
                    id: "0-source".into(),
                    name: "source".into(),
                    parallelism: 2,
                    records_in: 0,
                    records_out: 2_000_000,
                    current_input_watermark_ms: None,
                    counters: Default::default(),
                },
                VertexOverview {
                    id: "1-sink".into(),
                    name: "sink".into(),
                    parallelism: 2,
                    records_in: 1_000,
                    records_out: 0,
                    current_input_watermark_ms: None,
                    counters: Default::default(),
                },
            ],
        }
    }

    #[test]
    fn summary_lists_operators() {
        let s = format_summary(
            &overview(),
            None,
            Duration::from_secs(20),
            Some("received SIGINT"),
            0,
        );
        assert_eq!(
            s,
            "job orders-0123456789abcdef CANCELED after 0:20 (received SIGINT)\n\
             \x20 records in 2.00M (100k/s avg), out 1.00k (50/s avg); watermark -\n\
             \x20 checkpointing off; restarts 0\n\
             \x20 operator    p       in      out\n\
             \x20 0-source    2        0    2.00M\n\
             \x20 1-sink      2    1.00k        0\n"
        );
    }

    #[test]
    fn summary_reports_checkpoints_and_restarts() {
        let mut o = overview();
        o.num_restarts = 2;
        let counts = CheckpointCounts {
            completed: 12,
            failed: 1,
            ..Default::default()
        };
        let s = format_summary(&o, Some(&counts), Duration::from_secs(20), None, 0);
        assert!(
            s.contains("\n  checkpoints 12 completed, 1 failed; none completed; restarts 2\n"),
            "{s}"
        );
        o.last_checkpoint = Some(CheckpointSummary {
            id: 12,
            status: CheckpointStatus::Completed,
            is_savepoint: false,
            trigger_time_ms: 0,
            duration_ms: Some(35),
            state_size_bytes: 2048,
            external_path: Some("/tmp/c/chk-12".into()),
            failure: None,
            alignment_ms: Some(0),
        });
        let s = format_summary(&o, Some(&counts), Duration::from_secs(20), None, 0);
        assert!(
            s.contains(
                "\n  checkpoints 12 completed, 1 failed; last #12 (2.0KB) /tmp/c/chk-12; restarts 2\n"
            ),
            "{s}"
        );
    }
}
