//! Embedded mode: loads a StreamJob manifest, builds its program into a dataflow, runs it in this
//! process with the REST API and `/metrics` served next to it, prints a progress line every
//! second, and stops it cleanly on Ctrl-C, SIGTERM, `--for` or a REST cancel.
//!
//! Threads: the engine runs every subtask on its own thread; a small tokio runtime (one worker)
//! serves HTTP and turns signals into events; the calling thread drives the run loop from a
//! channel of those events, samples the rates every second and prints progress, so the
//! shutdown sequence lives in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use weir_api::rest::JobOverview;
use weir_api::{
    JobTargetState, ManifestError, RestartStrategy, StateBackend, StreamJob, StreamJobSpec,
};
use weir_core::time::now_ms;
use weir_core::{EnvConfig, JobError, JobOutcome, Program, ProgramArgs, Registry, StreamEnv};

use crate::error::{CliError, program_fix};
use crate::monitor::{JobInfo, JobMonitor};
use crate::progress::{
    Progress, format_elapsed, format_progress, format_watermark, human_count, human_count_f,
};
use crate::rest;

/// How long tasks get to stop after the job is cancelled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often the progress line is printed and rates are sampled.
const TICK: Duration = Duration::from_secs(1);

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

/// Loads a manifest, finds its program and builds the dataflow, without starting anything.
pub fn prepare(registry: &Registry, path: &Path) -> Result<Prepared, CliError> {
    let job = load_manifest(path)?;
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
        ..Default::default()
    });
    program
        .build(&env, &ProgramArgs::new(spec.args.clone()))
        .map_err(program_error)?;
    Ok(Prepared { job, program, env })
}

/// Configured features the engine does not act on yet, each with what that means, e.g.
/// `checkpointing (every 10s to file:///…)`. Empty when everything configured is active.
pub fn inactive_features(spec: &StreamJobSpec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &spec.checkpointing {
        out.push(format!(
            "checkpointing (every {} to {}; no checkpoints are taken)",
            c.interval, c.storage
        ));
    }
    if spec.restart_strategy != RestartStrategy::None {
        out.push(format!(
            "restartStrategy {} (a task failure ends the job)",
            spec.restart_strategy.type_name()
        ));
    }
    if spec.state.backend == StateBackend::RocksDb {
        out.push("state.backend rocksdb (state is kept on the heap)".to_string());
    }
    if let Some(p) = &spec.job.initial_savepoint_path {
        out.push(format!(
            "job.initialSavepointPath {p} (the job starts without state)"
        ));
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
    let prepared = prepare(registry, &opts.manifest)?;
    let name = prepared.name().to_string();
    let spec = &prepared.job.spec;
    if spec.job.state == JobTargetState::Suspended {
        eprintln!(
            "{name}: spec.job.state is suspended, so the job is not started; set it to running \
             to run it"
        );
        return Ok(());
    }
    if let Some(note) = inactive_note(spec) {
        eprintln!("{note}");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("weir-rest")
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    // Bind before starting the job, so a busy port fails the command before any work is done.
    let listener =
        std::net::TcpListener::bind(opts.rest_address).map_err(|source| CliError::Bind {
            address: opts.rest_address.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(CliError::Runtime)?;
    listener.set_nonblocking(true).map_err(CliError::Runtime)?;
    let listener = {
        let _enter = rt.enter();
        tokio::net::TcpListener::from_std(listener).map_err(CliError::Runtime)?
    };

    let (tx, rx) = mpsc::channel();
    // Handlers go in before the job starts: from here on SIGINT/SIGTERM stop the job cleanly
    // instead of killing the process with tasks mid-record.
    let signals = rt.block_on(Signals::install()).map_err(CliError::Runtime)?;
    rt.spawn(signals.forward(tx.clone()));

    let handle = prepared.env.start().map_err(|e| match e {
        JobError::InvalidGraph(_) => CliError::InvalidDataflow {
            program: prepared.program.name.to_string(),
            source: e,
        },
        e => CliError::Start(e),
    })?;
    let started = Instant::now();
    let monitor = JobMonitor::new(JobInfo::new(&name, prepared.program.name), handle.clone());
    let app = match rest::router(monitor.clone()) {
        Ok(app) => app,
        Err(e) => {
            handle.cancel();
            return Err(e.into());
        }
    };
    rt.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("REST server stopped: {e}");
        }
    });
    monitor.sample();
    eprintln!("REST API on http://{bound}");
    eprintln!(
        "running {} (program {}, parallelism {}); Ctrl-C stops it",
        monitor.info().job_id,
        prepared.program.name,
        handle.parallelism()
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

    let result = drive(&monitor, &rx, opts, started);
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

/// The run loop: progress lines until the job ends or a stop is requested, then the shutdown.
fn drive(
    monitor: &JobMonitor,
    rx: &Receiver<Event>,
    opts: &RunOptions,
    started: Instant,
) -> Result<(), CliError> {
    let deadline = opts.run_for.map(|d| started + d);
    let mut next_tick = started + TICK;
    let reason = loop {
        let wake = deadline.map_or(next_tick, |d| d.min(next_tick));
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(Event::Ended(res)) => return finish(monitor, res, None, started),
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
        Ok(Event::Ended(res)) => finish(monitor, res, Some(&reason), started),
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
                Some(res) => finish(monitor, res, Some(&reason), started),
                None => Err(CliError::ShutdownTimeout(SHUTDOWN_GRACE)),
            }
        }
    }
}

fn progress(monitor: &JobMonitor, started: Instant) -> Progress {
    let o = monitor.overview();
    Progress {
        elapsed: started.elapsed(),
        state: o.state,
        in_per_second: o.records_in_per_second,
        out_per_second: o.records_out_per_second,
        records_in: o.records_in,
        records_out: o.records_out,
        watermark_ms: o.current_watermark_ms,
        now_ms: now_ms(),
        parallelism: o.parallelism,
        restarts: o.num_restarts,
        last_checkpoint: None,
    }
}

/// Prints the summary and turns the job's outcome into the command's result.
fn finish(
    monitor: &JobMonitor,
    res: Result<JobOutcome, JobError>,
    stopped_because: Option<&str>,
    started: Instant,
) -> Result<(), CliError> {
    monitor.sample();
    let overview = monitor.overview();
    eprint!(
        "{}",
        format_summary(&overview, started.elapsed(), stopped_because, now_ms())
    );
    match res {
        Ok(_) => Ok(()),
        Err(e) => Err(CliError::JobFailed(e)),
    }
}

/// The final report: state, totals, average rates, watermark, and one line per operator.
pub fn format_summary(
    o: &JobOverview,
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

/// SIGINT and SIGTERM (Ctrl-C only, off Unix), turned into run-loop events.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    async fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    async fn forward(mut self, tx: Sender<Event>) {
        loop {
            #[cfg(unix)]
            let sig = tokio::select! {
                Some(()) = self.interrupt.recv() => "SIGINT",
                Some(()) = self.terminate.recv() => "SIGTERM",
                else => return,
            };
            #[cfg(not(unix))]
            let sig = match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => return,
            };
            if tx.send(Event::Signal(sig)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::rest::VertexOverview;
    use weir_api::{CheckpointingSpec, JobState};

    #[test]
    fn inactive_features_are_named() {
        let mut spec = StreamJobSpec::for_program("orders");
        spec.checkpointing = Some(CheckpointingSpec::new(
            "file:///tmp/weir/checkpoints/orders",
        ));
        let note = inactive_note(&spec).unwrap();
        assert!(
            note.contains("checkpointing (every 10s to file:///tmp/weir/checkpoints/orders"),
            "{note}"
        );
        assert!(note.contains("restartStrategy fixedDelay"), "{note}");
        spec.checkpointing = None;
        spec.restart_strategy = RestartStrategy::None;
        assert_eq!(inactive_note(&spec), None);
    }

    #[test]
    fn summary_lists_operators() {
        let o = JobOverview {
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
                },
                VertexOverview {
                    id: "1-sink".into(),
                    name: "sink".into(),
                    parallelism: 2,
                    records_in: 1_000,
                    records_out: 0,
                    current_input_watermark_ms: None,
                },
            ],
        };
        let s = format_summary(&o, Duration::from_secs(20), Some("received SIGINT"), 0);
        assert_eq!(
            s,
            "job orders-0123456789abcdef CANCELED after 0:20 (received SIGINT)\n\
             \x20 records in 2.00M (100k/s avg), out 1.00k (50/s avg); watermark -\n\
             \x20 operator    p       in      out\n\
             \x20 0-source    2        0    2.00M\n\
             \x20 1-sink      2    1.00k        0\n"
        );
    }
}
