//! The command line: clap definitions of every `weir` subcommand and the dispatch to the modules
//! that implement them, plus [`main_with_registry`], the entry point custom binaries call.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use weir_core::Registry;

use crate::embedded::{self, RunOptions};
use crate::error::{CliError, error_chain};
use crate::remote::{self, SavepointOptions};
use crate::{bench, snapshots};

/// Weir: a stream processor that runs StreamJob manifests.
#[derive(Debug, Parser)]
#[command(name = "weir", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a StreamJob manifest in this process (embedded mode), serving the REST API and
    /// Prometheus metrics, until its input ends, it fails, or it is stopped (Ctrl-C, SIGTERM,
    /// --for, `weir cancel`, `weir savepoint --stop`).
    ///
    /// With spec.checkpointing the job takes checkpoints and, after a task failure, restarts
    /// from the latest one as spec.restartStrategy says.
    ///
    /// Exit codes: 0 when the job finished or was stopped, 1 when it failed, 2 when the manifest,
    /// program, arguments or the snapshot to restore are invalid (nothing is started then).
    Run(RunArgs),

    /// Run a StreamJob manifest as the JobManager of a cluster: like `weir run` (REST API,
    /// metrics, checkpoints, savepoints, restarts, exit codes), but the subtasks run in
    /// `weir taskmanager` processes that register here and offer slots.
    ///
    /// Subtask i of every operator runs in slot i; slots are taken in the order TaskManagers
    /// registered. A TaskManager whose connection breaks, or that sends no heartbeat for
    /// --heartbeat-timeout, is lost: the job restarts from its latest checkpoint as
    /// spec.restartStrategy says, on the TaskManagers that are there (waiting up to
    /// --slot-timeout for enough slots, e.g. for a replacement). A TaskManager that loaded a
    /// different manifest (one from before an upgrade) is refused.
    ///
    /// Under a supervisor that restarts it (a Kubernetes Deployment), pass --supervised.
    Jobmanager(JobManagerArgs),

    /// Run the subtasks a `weir jobmanager` deploys here, for the StreamJob manifest it runs.
    ///
    /// Registers with the JobManager at --jobmanager (or $WEIR_JOBMANAGER_ADDRESS; several
    /// comma-separated addresses are tried in turn, the leader accepts), offers
    /// spec.taskManager.slots slots, exchanges data with other TaskManagers over its data port
    /// with credit-based flow control, and registers again when the JobManager is lost. Stops
    /// on SIGINT or SIGTERM.
    ///
    /// A JobManager running a different manifest (the TaskManager is from before an upgrade)
    /// refuses it; it logs why and keeps trying until it is replaced.
    Taskmanager(TaskManagerArgs),

    /// Take a savepoint of a job running in `weir run`, through its REST API, and print its
    /// path; with --stop, stop the job after the savepoint.
    ///
    /// Resume from it with `weir run MANIFEST --from-savepoint PATH`. Exit code 1 when the
    /// savepoint failed or the job cannot be reached.
    Savepoint(SavepointArgs),

    /// Cancel a job running in `weir run`, through its REST API (no savepoint; checkpoints are
    /// kept or deleted as spec.checkpointing.retentionOnCancel says).
    Cancel {
        /// REST address of the running job, as printed by `weir run`.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8081")]
        rest_address: String,
    },

    /// Inspect checkpoints and savepoints on disk.
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),

    /// Check a manifest: parse and validate it, and build its program with its arguments
    /// without starting it. Prints `ok: <name> (program <p>, parallelism <n>)`; exit code 2 and
    /// the problems, each naming its field and a fix, otherwise.
    Validate {
        /// The StreamJob manifest (YAML).
        manifest: PathBuf,
    },

    /// List the programs this binary can run, with their arguments.
    Programs,

    /// Benchmark the engine with the window-bench program.
    ///
    /// The workload is the one of the Flink anchor, shared/bench/flink-anchor.sh: generated
    /// records (user id in [0, 100 000), amount, event time up to 5 s behind the wall clock),
    /// 5 s bounded out-of-orderness watermarks, key by user, 10 s tumbling event-time windows
    /// with count and sum, discarding sink. Like the anchor, throughput is the least-squares
    /// slope of the source's record count sampled every second after the warm-up, and every
    /// configuration runs in a fresh process so its peak RSS (VmHWM) is its own. Prints one
    /// `SUMMARY weir p=<N> records_per_s=<x> peak_rss_mb=<y> seconds=<s>` line per parallelism,
    /// then a table.
    Bench(BenchArgs),

    /// Runs one benchmark configuration; started by `weir bench`.
    #[command(hide = true)]
    BenchChild(BenchChildArgs),
}

/// Arguments of `weir run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The StreamJob manifest (YAML).
    pub manifest: PathBuf,

    /// Address of the REST API and /metrics; port 0 picks a free port (the bound address is
    /// printed at startup).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8081")]
    pub rest_address: SocketAddr,

    /// Do not print the progress line every second.
    #[arg(long, short)]
    pub quiet: bool,

    /// Stop the job after this long, as Ctrl-C would (e.g. 30s, 5m, 1h30m).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub run_for: Option<Duration>,

    /// Start from this savepoint or checkpoint directory (path or file:// URI); overrides
    /// spec.job.initialSavepointPath.
    #[arg(long, value_name = "PATH", conflicts_with = "from_latest_checkpoint")]
    pub from_savepoint: Option<String>,

    /// Start from the newest completed snapshot (e.g. after the process was killed): the newest
    /// restorable checkpoint in spec.checkpointing.storage, the newest restorable savepoint in
    /// its `savepoints` directory (where `weir savepoint` writes by default), or
    /// spec.job.initialSavepointPath, whichever completed last; incomplete or corrupt snapshots
    /// are skipped. Without any, the job starts without state.
    #[arg(long)]
    pub from_latest_checkpoint: bool,

    /// With --from-latest-checkpoint: ignore the checkpoints and savepoints in the storage that
    /// completed before TIME, as if there were none, so that the job starts from
    /// spec.job.initialSavepointPath (even an older one: a rollback) or without state (a
    /// stateless upgrade), while later starts with the same TIME restore what this run
    /// checkpoints. TIME is RFC 3339 (2026-11-24T12:00:00Z) or milliseconds since the Unix
    /// epoch.
    #[arg(
        long,
        value_name = "TIME",
        value_parser = parse_time,
        requires = "from_latest_checkpoint"
    )]
    pub checkpoints_after: Option<i64>,
}

/// Arguments of `weir jobmanager`.
#[derive(Debug, Args)]
pub struct JobManagerArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Address TaskManagers connect to.
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:6123")]
    pub rpc_address: SocketAddr,

    /// How often TaskManagers send heartbeats (default spec.jobManager.heartbeat.interval).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,

    /// A TaskManager that sends nothing for this long is lost; a killed one is noticed at once,
    /// when its connection breaks, this bounds hung ones (default
    /// spec.jobManager.heartbeat.timeout).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_timeout: Option<Duration>,

    /// How long a (re)deployment waits for enough task slots before it fails.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub slot_timeout: Duration,

    /// With spec.jobManager.replicas 2: namespace of the leader-election Lease (default
    /// $POD_NAMESPACE, else the kubeconfig's namespace).
    #[arg(long)]
    pub namespace: Option<String>,

    /// With spec.jobManager.replicas 2: this JobManager's identity in the election (default
    /// $HOSTNAME and a part unique to the process).
    #[arg(long)]
    pub id: Option<String>,

    /// This process runs under a supervisor that restarts it when it exits (a Kubernetes
    /// Deployment): on SIGTERM or SIGINT it leaves without cancelling the job (the TaskManagers
    /// cancel their tasks; the next JobManager restores the latest checkpoint, which is kept),
    /// and when the job finishes, is cancelled or is stopped with a savepoint it does not exit
    /// but keeps serving the REST API (the final state, the savepoint's location) until SIGTERM
    /// or SIGINT, then exits with code 0. Exiting would make the supervisor run the job again.
    /// A job that fails beyond spec.restartStrategy still exits with code 1.
    #[arg(long)]
    pub supervised: bool,
}

/// Arguments of `weir taskmanager`.
#[derive(Debug, Args)]
pub struct TaskManagerArgs {
    /// The StreamJob manifest (YAML) the JobManager runs.
    pub manifest: PathBuf,

    /// JobManager RPC address(es), comma-separated.
    #[arg(
        long,
        value_name = "HOST:PORT[,HOST:PORT]",
        env = "WEIR_JOBMANAGER_ADDRESS",
        value_delimiter = ','
    )]
    pub jobmanager: Vec<String>,

    /// Address to bind the data port to.
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:6121")]
    pub data_address: SocketAddr,

    /// Data address other TaskManagers connect to (e.g. the pod IP), when not the bound one.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// TaskManager id (default $POD_NAME, else host name and process id).
    #[arg(long)]
    pub id: Option<String>,

    /// Slots to offer (default spec.taskManager.slots).
    #[arg(long)]
    pub slots: Option<u32>,

    /// Address of this TaskManager's Prometheus /metrics (and /healthz).
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:9249")]
    pub metrics_address: SocketAddr,
}

/// `weir checkpoints` subcommands.
#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// List the snapshots under PATH, newest first, with id, kind, completion time, size,
    /// operators (uid:parallelism) and whether each can be restored (every state file is read
    /// and its checksum verified). The newest restorable one, which --from-latest-checkpoint
    /// would pick, is marked `(latest)`.
    ///
    /// Exit code 2 when PATH does not exist.
    List {
        /// A checkpoint storage root (spec.checkpointing.storage, with its chk-* directories), a
        /// directory of savepoints (savepoint-*), or one snapshot directory; a path or file://
        /// URI.
        path: String,
    },
}

/// Arguments of `weir savepoint`.
#[derive(Debug, Args)]
pub struct SavepointArgs {
    /// REST address of the running job, as printed by `weir run`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8081")]
    pub rest_address: String,

    /// Directory (path or file:// URI) to write the savepoint under; by default `savepoints`
    /// under the job's checkpoint storage.
    #[arg(long, value_name = "DIR")]
    pub target: Option<String>,

    /// Stop the job once the savepoint completed (`weir run` then exits with code 0).
    #[arg(long)]
    pub stop: bool,

    /// How long to wait for the savepoint.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Arguments of `weir bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Run time of each configuration in seconds, warm-up included.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,

    /// Parallelisms to run, comma-separated; each gets its own process.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub parallelism: Vec<u32>,

    /// Seconds at the start of each run left out of the throughput.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
}

/// Arguments of the hidden `weir bench-child`.
#[derive(Debug, Args)]
pub struct BenchChildArgs {
    /// Parallelism.
    #[arg(long)]
    pub parallelism: u32,
    /// Run time in seconds, warm-up included.
    #[arg(long)]
    pub seconds: u64,
    /// Warm-up seconds.
    #[arg(long)]
    pub warmup: u64,
}

fn parse_time(s: &str) -> Result<i64, String> {
    crate::progress::parse_time_ms(s).ok_or_else(|| {
        format!(
            "invalid time {s:?}: use RFC 3339, e.g. 2026-11-24T12:00:00Z, or milliseconds since \
             the Unix epoch, e.g. 1795521600000"
        )
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    weir_core::program::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!(
                "invalid duration {s:?}: use a positive number with a unit, e.g. 30s, 5m, 1h30m"
            )
        })
}

/// The `weir` command line with `registry`'s programs: parses the arguments, runs the command and
/// returns the process exit code. Call it from `main` of a binary that registers its own programs:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let registry = weir_core::Registry::new(); // register programs here
///     weir::main_with_registry(registry)
/// }
/// ```
pub fn main_with_registry(registry: Registry) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version land here too, with exit code 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    init_tracing();
    match execute(&registry, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one parsed command.
pub fn execute(registry: &Registry, command: Command) -> Result<(), CliError> {
    match command {
        Command::Run(a) => embedded::run(
            registry,
            &RunOptions {
                manifest: a.manifest,
                rest_address: a.rest_address,
                quiet: a.quiet,
                run_for: a.run_for,
                from_savepoint: a.from_savepoint,
                from_latest_checkpoint: a.from_latest_checkpoint,
                checkpoints_after_ms: a.checkpoints_after,
                supervised: false,
                cluster: None,
            },
        ),
        Command::Jobmanager(a) => embedded::run(
            registry,
            &RunOptions {
                manifest: a.run.manifest,
                rest_address: a.run.rest_address,
                quiet: a.run.quiet,
                run_for: a.run.run_for,
                from_savepoint: a.run.from_savepoint,
                from_latest_checkpoint: a.run.from_latest_checkpoint,
                checkpoints_after_ms: a.run.checkpoints_after,
                supervised: a.supervised,
                cluster: Some(crate::cluster::JobManagerOptions {
                    rpc_address: a.rpc_address,
                    heartbeat_interval: a.heartbeat_interval,
                    heartbeat_timeout: a.heartbeat_timeout,
                    slot_timeout: a.slot_timeout,
                    namespace: a.namespace,
                    identity: a.id,
                }),
            },
        ),
        Command::Taskmanager(a) => {
            if a.jobmanager.is_empty() {
                return Err(CliError::Usage(
                    "no JobManager address: pass --jobmanager HOST:PORT or set                      WEIR_JOBMANAGER_ADDRESS"
                        .into(),
                ));
            }
            crate::cluster::run_task_manager(
                registry,
                &crate::cluster::TaskManagerOptions {
                    manifest: a.manifest,
                    jobmanagers: a.jobmanager,
                    data_address: a.data_address,
                    advertise: a.advertise,
                    id: a.id,
                    slots: a.slots,
                    metrics_address: a.metrics_address,
                },
            )
        }
        Command::Savepoint(a) => {
            let path = remote::savepoint(&SavepointOptions {
                rest_address: a.rest_address,
                target: a.target,
                stop: a.stop,
                timeout: a.timeout,
            })?;
            write_stdout(&format!("{path}\n"));
            if a.stop {
                eprintln!(
                    "the job stops after this savepoint; resume it with --from-savepoint {path}"
                );
            }
            Ok(())
        }
        Command::Cancel { rest_address } => {
            let job_id = remote::cancel(&rest_address)?;
            eprintln!("cancelling {job_id}");
            Ok(())
        }
        Command::Checkpoints(CheckpointsCommand::List { path }) => {
            write_stdout(&snapshots::format_listing(&snapshots::list(&path)?));
            Ok(())
        }
        Command::Validate { manifest } => {
            let prepared = embedded::prepare(registry, &manifest)?;
            println!(
                "ok: {} (program {}, parallelism {})",
                prepared.name(),
                prepared.program.name,
                prepared.job.spec.job.parallelism
            );
            if let Some(note) = embedded::inactive_note(&prepared.job.spec) {
                eprintln!("{note}");
            }
            if let Some(note) = crate::storage::credentials_secret_note(
                prepared
                    .job
                    .spec
                    .checkpointing
                    .as_ref()
                    .and_then(|c| c.s3.as_ref()),
            ) {
                eprintln!("{note}");
            }
            Ok(())
        }
        Command::Programs => {
            write_stdout(&format_programs(registry));
            Ok(())
        }
        Command::Bench(a) => bench::run_parent(&a.parallelism, a.seconds, a.warmup).map(|_| ()),
        Command::BenchChild(a) => {
            bench::run_child(registry, a.parallelism, a.seconds, a.warmup).map(|_| ())
        }
    }
}

/// `weir programs` output: each program with its description and arguments.
pub fn format_programs(registry: &Registry) -> String {
    let mut programs: Vec<_> = registry.programs().to_vec();
    programs.sort_by_key(|p| p.name);
    if programs.is_empty() {
        return "this binary has no programs registered\n".to_string();
    }
    let mut s = String::new();
    for p in programs {
        s.push_str(&format!("{}\n    {}\n", p.name, p.description));
        if p.args.is_empty() {
            s.push_str("    args: none\n");
        } else {
            let width = p.args.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            s.push_str("    args (spec.job.args):\n");
            for (name, help) in p.args {
                s.push_str(&format!("      {name:<width$}  {help}\n"));
            }
        }
        s.push('\n');
    }
    s
}

/// Writes to stdout, ignoring a closed pipe (`weir programs | head`), which `print!` would turn
/// into a panic.
fn write_stdout(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // A second initialisation (e.g. a custom binary that set up its own) is not an error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use weir_core::{Program, ProgramArgs, ProgramError, StreamEnv};

    fn nothing(_: &StreamEnv, _: &ProgramArgs) -> Result<(), ProgramError> {
        Ok(())
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_arguments() {
        let cli =
            Cli::try_parse_from(["weir", "run", "job.yaml", "--for", "1m30s", "--quiet"]).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.run_for, Some(Duration::from_secs(90)));
        assert_eq!(a.rest_address.to_string(), "127.0.0.1:8081");
        assert!(a.quiet);
        assert!(Cli::try_parse_from(["weir", "run", "job.yaml", "--for", "soon"]).is_err());
        assert!(Cli::try_parse_from(["weir", "run", "job.yaml", "--for", "0s"]).is_err());
    }

    #[test]
    fn restore_arguments() {
        let cli = Cli::try_parse_from([
            "weir",
            "run",
            "job.yaml",
            "--from-savepoint",
            "file:///sp/savepoint-1-2",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            a.from_savepoint.as_deref(),
            Some("file:///sp/savepoint-1-2")
        );
        assert!(!a.from_latest_checkpoint);
        assert!(
            Cli::try_parse_from([
                "weir",
                "run",
                "job.yaml",
                "--from-savepoint",
                "x",
                "--from-latest-checkpoint"
            ])
            .is_err(),
            "one restore point at a time"
        );
    }

    #[test]
    fn checkpoints_after_takes_a_time_and_needs_from_latest_checkpoint() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["weir", "run", "job.yaml"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        for (time, ms) in [
            ("2026-11-24T12:00:00Z", 1_795_521_600_000),
            ("1795521600000", 1_795_521_600_000),
        ] {
            let cli = parse(&["--from-latest-checkpoint", "--checkpoints-after", time]).unwrap();
            let Command::Run(a) = cli.command else {
                panic!("not run")
            };
            assert_eq!(a.checkpoints_after, Some(ms), "{time}");
        }
        let e = parse(&["--from-latest-checkpoint", "--checkpoints-after", "noon"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--checkpoints-after"), "{e}");
        assert!(e.contains("RFC 3339, e.g. 2026-11-24T12:00:00Z"), "{e}");
        assert!(e.contains("milliseconds since the Unix epoch"), "{e}");
        let e = parse(&["--checkpoints-after", "2026-11-24T12:00:00Z"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--from-latest-checkpoint"), "{e}");
    }

    #[test]
    fn supervised_is_a_jobmanager_flag() {
        let cli = Cli::try_parse_from([
            "weir",
            "jobmanager",
            "job.yaml",
            "--supervised",
            "--from-latest-checkpoint",
            "--checkpoints-after",
            "2026-11-24T12:00:00Z",
        ])
        .unwrap();
        let Command::Jobmanager(a) = cli.command else {
            panic!("not jobmanager")
        };
        assert!(a.supervised);
        assert_eq!(a.run.checkpoints_after, Some(1_795_521_600_000));
        assert!(Cli::try_parse_from(["weir", "run", "job.yaml", "--supervised"]).is_err());
    }

    #[test]
    fn savepoint_and_checkpoint_commands() {
        let cli = Cli::try_parse_from(["weir", "savepoint", "--stop", "--timeout", "2m"]).unwrap();
        let Command::Savepoint(a) = cli.command else {
            panic!("not savepoint")
        };
        assert_eq!(a.rest_address, "127.0.0.1:8081");
        assert_eq!(
            (a.stop, a.timeout, a.target),
            (true, Duration::from_secs(120), None)
        );
        let cli = Cli::try_parse_from(["weir", "checkpoints", "list", "/tmp/c"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Checkpoints(CheckpointsCommand::List { path }) if path == "/tmp/c"
        ));
        let cli =
            Cli::try_parse_from(["weir", "cancel", "--rest-address", "10.0.0.1:8081"]).unwrap();
        let Command::Cancel { rest_address } = cli.command else {
            panic!("not cancel")
        };
        assert_eq!(rest_address, "10.0.0.1:8081");
    }

    #[test]
    fn bench_arguments() {
        let cli = Cli::try_parse_from(["weir", "bench", "--parallelism", "1,2,4"]).unwrap();
        let Command::Bench(a) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(a.parallelism, vec![1, 2, 4]);
        assert_eq!((a.seconds, a.warmup), (20, 5));
    }

    #[test]
    fn programs_listing() {
        let mut r = Registry::new();
        r.register(Program {
            name: "demo",
            description: "A demo.",
            args: &[("rate", "Records per second."), ("keys", "Distinct keys.")],
            build: nothing,
        });
        r.register(Program {
            name: "bare",
            description: "No args.",
            args: &[],
            build: nothing,
        });
        assert_eq!(
            format_programs(&r),
            "bare\n    No args.\n    args: none\n\n\
             demo\n    A demo.\n    args (spec.job.args):\n      rate  Records per second.\n      keys  Distinct keys.\n\n"
        );
    }
}
