//! Embedded mode: loads a StreamJob manifest, builds its program into a dataflow, runs it in this
//! process with the REST API and `/metrics` served next to it, prints a progress line every
//! second, and stops it cleanly on Ctrl-C, SIGTERM, `--for`, a REST cancel or a REST stop with
//! savepoint.
//!
//! The manifest's fault-tolerance settings become the engine's [`JobSettings`]:
//! `spec.checkpointing` the checkpoint coordinator's configuration, `spec.restartStrategy` the
//! restart strategy, and `spec.job.initialSavepointPath`, `--from-savepoint` or
//! `--from-latest-checkpoint` the snapshot the job starts from. Checkpoint storage is local
//! (`file://`) or S3 (`s3://`, see [`crate::storage`]).
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
use weir_core::checkpoint::restore::RestoredJob;
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
    /// Start from the newest restorable checkpoint in `spec.checkpointing.storage`.
    pub from_latest_checkpoint: bool,
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

/// Decides the restore point: `--from-savepoint` wins, then `--from-latest-checkpoint` (the
/// newest checkpoint that loads cleanly, falling back past corrupt ones; without one the
/// initial savepoint if configured, else no state), then `spec.job.initialSavepointPath`.
pub fn restore_plan(
    path: &Path,
    spec: &StreamJobSpec,
    from_savepoint: Option<&str>,
    from_latest_checkpoint: bool,
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
    let lookup_error = |message: String| CliError::LatestCheckpoint {
        storage: c.storage.clone(),
        message,
    };
    let settings = crate::storage::s3_settings(c.s3.as_ref());
    let storage =
        crate::storage::open(&c.storage, &settings).map_err(|e| lookup_error(e.to_string()))?;
    let (latest, warnings) =
        RestoredJob::latest(storage.as_ref()).map_err(|e| lookup_error(e.to_string()))?;
    let mut notes: Vec<String> = warnings
        .into_iter()
        .map(|w| format!("warning: {w}"))
        .collect();
    // A savepoint to start from that is newer than every checkpoint in the storage (one taken
    // when the job was stopped, the storage still holding the checkpoints before it) wins:
    // restoring an older checkpoint would replay what the savepoint already committed.
    let latest = match (latest, &initial) {
        (Some(job), Some(sp)) => {
            let newer = crate::storage::open(sp, &settings)
                .ok()
                .and_then(|st| RestoredJob::load(st.as_ref(), sp).ok())
                .filter(|s| s.metadata.completed_ms > job.metadata.completed_ms);
            match newer {
                Some(s) => {
                    notes.push(format!(
                        "--from-latest-checkpoint: spec.job.initialSavepointPath {sp} (completed \
                         {}) is newer than the newest checkpoint in {} (checkpoint {}, completed \
                         {}), so the savepoint is restored",
                        iso8601_utc(s.metadata.completed_ms),
                        c.storage,
                        job.metadata.id,
                        iso8601_utc(job.metadata.completed_ms)
                    ));
                    return Ok(RestorePlan {
                        from: Some(sp.clone()),
                        notes,
                    });
                }
                None => Some(job),
            }
        }
        (latest, _) => latest,
    };
    let from = match latest {
        Some(job) => {
            notes.push(format!(
                "--from-latest-checkpoint: the newest restorable checkpoint in {} is checkpoint \
                 {} ({}, completed {})",
                c.storage,
                job.metadata.id,
                job.location,
                iso8601_utc(job.metadata.completed_ms)
            ));
            Some(job.location)
        }
        None => {
            notes.push(match &initial {
                Some(p) => format!(
                    "--from-latest-checkpoint: no restorable checkpoint in {}; starting from \
                     spec.job.initialSavepointPath {p}",
                    c.storage
                ),
                None => format!(
                    "--from-latest-checkpoint: no restorable checkpoint in {}; starting \
                     without state",
                    c.storage
                ),
            });
            initial
        }
    };
    Ok(RestorePlan { from, notes })
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
        "running {} (program {}, parallelism {}); {}; Ctrl-C stops it",
        monitor.info().job_id,
        prepared.program.name,
        handle.parallelism(),
        match &spec.checkpointing {
            Some(c) => format!("checkpoints every {} to {}", c.interval, c.storage),
            None => "checkpointing off".to_string(),
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
            Ok(Event::Ended(res)) => {
                if let Ok(JobOutcome::Stopped(_)) = &res {
                    // The REST client that asked for the stop polls for the savepoint's path;
                    // exiting before it got it would leave it with a refused connection.
                    monitor.wait_stop_reported(STOP_REPORT_GRACE);
                }
                return finish(monitor, res, None, opts, started);
            }
            Ok(Event::Signal(sig)) if leading => {
                // A leading JobManager that is told to go (its pod is deleted or moved) hands
                // the job over instead of cancelling it: the TaskManagers cancel their tasks
                // when it is gone, and the next leader restores the latest checkpoint.
                eprintln!(
                    "received {sig}: this JobManager leaves without cancelling the job; the next \
                     leader restores it from its latest checkpoint (cancel it with weir cancel)"
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
            restore_plan(m, &spec, None, false).unwrap(),
            RestorePlan::default()
        );
        spec.job.initial_savepoint_path = Some("file:///sp/a".into());
        assert_eq!(
            restore_plan(m, &spec, None, false).unwrap().from.as_deref(),
            Some("file:///sp/a")
        );
        assert_eq!(
            restore_plan(m, &spec, Some("file:///sp/b"), true)
                .unwrap()
                .from
                .as_deref(),
            Some("file:///sp/b"),
            "--from-savepoint wins"
        );
        let e = restore_plan(m, &spec, None, true).unwrap_err();
        assert!(e.to_string().contains("spec.checkpointing"), "{e}");

        // No checkpoint yet: fall back to the initial savepoint, else no state.
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("file://{}", dir.path().display());
        spec.checkpointing = Some(CheckpointingSpec::new(uri.clone()));
        let plan = restore_plan(m, &spec, None, true).unwrap();
        assert_eq!(plan.from.as_deref(), Some("file:///sp/a"));
        assert!(
            plan.notes[0].contains("no restorable checkpoint"),
            "{plan:?}"
        );
        spec.job.initial_savepoint_path = None;
        let plan = restore_plan(m, &spec, None, true).unwrap();
        assert_eq!(plan.from, None);
        assert!(
            plan.notes[0].ends_with("starting without state"),
            "{plan:?}"
        );

        // An incomplete checkpoint (no _metadata) is never picked.
        std::fs::create_dir_all(dir.path().join("chk-3")).unwrap();
        assert_eq!(restore_plan(m, &spec, None, true).unwrap().from, None);
    }

    /// Writes the `_metadata` of an (empty) snapshot completed at `completed_ms`.
    fn snapshot(dir: &Path, id: u64, completed_ms: i64, savepoint: bool) {
        use weir_core::checkpoint::SnapshotKind;
        use weir_core::checkpoint::format::{METADATA_VERSION, SnapshotMetadata};
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
            operators: Vec::new(),
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
        let plan = restore_plan(m, &spec, None, true).unwrap();
        assert_eq!(plan.from, Some(savepoint.display().to_string()), "{plan:?}");
        assert!(
            plan.notes[0].contains("is newer than the newest checkpoint"),
            "{plan:?}"
        );
        // A checkpoint taken after the savepoint wins.
        snapshot(&storage.join("chk-6"), 6, 3_000_000, false);
        let plan = restore_plan(m, &spec, None, true).unwrap();
        assert!(plan.from.unwrap().ends_with("chk-6"));
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
