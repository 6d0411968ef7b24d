//! Errors of the `weir` command and the exit code each maps to: 2 for anything the user fixes in
//! the manifest or on the command line (nothing was started), 1 for failures while running.

use std::path::PathBuf;

use weir_api::ManifestError;
use weir_core::{JobError, ProgramError};

/// Exit code for a bad manifest, program, argument or command line.
pub const EXIT_USAGE: u8 = 2;

/// Exit code for a job or runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// Why a `weir` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The manifest file could not be read.
    #[error("cannot read manifest {}: {source}\nFix: pass the path of a StreamJob YAML file.", path.display())]
    ReadManifest {
        /// The path given on the command line.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },

    /// The manifest does not parse or validate.
    #[error("{} is not a valid StreamJob manifest:\n{source}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, with the field path and a fix.
        #[source]
        source: ManifestError,
    },

    /// The program is unknown or rejected its arguments.
    #[error("{} cannot be run: {source}\nFix: {fix}", path.display())]
    Program {
        /// The manifest file.
        path: PathBuf,
        /// The registry's or the program's error, naming the field.
        #[source]
        source: ProgramError,
        /// What to change.
        fix: String,
    },

    /// The engine refused the dataflow the program built.
    #[error("the dataflow of program {program:?} is invalid: {source}")]
    InvalidDataflow {
        /// Program name.
        program: String,
        /// The engine's error.
        #[source]
        source: JobError,
    },

    /// The job could not be started.
    #[error("cannot start the job: {0}")]
    Start(#[source] JobError),

    /// The REST address could not be bound.
    #[error(
        "cannot listen on {address}: {source}\nFix: pass a free address with --rest-address, e.g. 127.0.0.1:0 to pick any free port."
    )]
    Bind {
        /// The requested address.
        address: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },

    /// A cluster port (JobManager RPC, TaskManager data) could not be bound.
    #[error(
        "cannot listen on {address} for the {what}: {source}\nFix: pass a free address with {flag}, e.g. 127.0.0.1:0 to pick any free port."
    )]
    BindPort {
        /// What the port is for.
        what: &'static str,
        /// The requested address.
        address: String,
        /// The option that sets it.
        flag: &'static str,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },

    /// The async runtime for the REST API or signal handling could not be set up.
    #[error("cannot start the REST/signal runtime: {0}")]
    Runtime(#[source] std::io::Error),

    /// The metrics registry could not be built.
    #[error("cannot set up Prometheus metrics: {0}")]
    Metrics(#[from] prometheus::Error),

    /// The job failed while running.
    #[error("job failed: {0}")]
    JobFailed(#[source] JobError),

    /// Tasks did not stop within the shutdown grace period.
    #[error("tasks did not stop within {0:?} after the job was cancelled")]
    ShutdownTimeout(std::time::Duration),

    /// A second interrupt arrived while the job was stopping.
    #[error("interrupted again while stopping; tasks may not have finished")]
    Interrupted,

    /// The benchmark could not run or its output was not understood.
    #[error("bench: {0}")]
    Bench(String),

    /// `--from-latest-checkpoint` on a job without checkpoint storage.
    #[error(
        "--from-latest-checkpoint needs spec.checkpointing.storage, and {} has no \
         spec.checkpointing section.\nFix: add spec.checkpointing with a storage URI, or pass \
         --from-savepoint PATH.",
        path.display()
    )]
    NoCheckpointStorage {
        /// The manifest file.
        path: PathBuf,
    },

    /// `spec.state` cannot be set up as written.
    #[error("{} {field}: {message}\nFix: {fix}", path.display())]
    StateBackend {
        /// The manifest file.
        path: PathBuf,
        /// The field at fault (`spec.state.backend`).
        field: &'static str,
        /// What is wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },

    /// The checkpoint storage could not be searched for the latest checkpoint.
    #[error(
        "cannot look for the latest checkpoint in {storage}: {message}. Nothing older is restored \
         instead, since it could replay what a newer snapshot there committed. Fix: make the \
         location readable (credentials, permissions, or whatever is in the way at that path), \
         or start from a known snapshot with --from-savepoint <path>"
    )]
    LatestCheckpoint {
        /// The storage URI.
        storage: String,
        /// The engine's message.
        message: String,
    },

    /// The job cannot start from the snapshot it was asked to restore (missing or corrupt
    /// snapshot, changed maxParallelism, unmapped state, rescaled source).
    #[error("cannot restore the job from {from}: {source}")]
    Restore {
        /// The snapshot location.
        from: String,
        /// The engine's error, which names the problem and the fix.
        #[source]
        source: JobError,
    },

    /// The checkpoint storage could not be opened.
    #[error("cannot set up checkpointing: {0}")]
    CheckpointStorage(#[source] JobError),

    /// A checkpoint storage could not be listed (S3: missing bucket, refused credentials,
    /// unreachable endpoint).
    #[error("cannot list {location}: {message}")]
    ListStorage {
        /// The location.
        location: String,
        /// Why, with the fix.
        message: String,
    },

    /// Leader election could not start (no Kubernetes API, bad timing).
    #[error("leader election (spec.jobManager.replicas: 2): {0}")]
    LeaderElection(String),

    /// The command line is incomplete (the message names what is missing and how to give it).
    #[error("{0}")]
    Usage(String),

    /// A path given on the command line does not exist.
    #[error("{}: no such file or directory", .0.display())]
    NoSuchPath(PathBuf),

    /// A path given on the command line cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadPath {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The REST API of a running `weir run` could not be reached or answered with an error.
    #[error("{0}")]
    Client(#[from] crate::client::ClientError),

    /// A savepoint or checkpoint requested over the REST API failed or timed out.
    #[error("{0}")]
    Operation(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::ReadManifest { .. }
            | CliError::Manifest { .. }
            | CliError::Program { .. }
            | CliError::InvalidDataflow { .. }
            | CliError::NoCheckpointStorage { .. }
            | CliError::StateBackend { .. }
            | CliError::LatestCheckpoint { .. }
            | CliError::Restore { .. }
            | CliError::CheckpointStorage(_)
            | CliError::NoSuchPath(_)
            | CliError::ListStorage { .. }
            | CliError::ReadPath { .. }
            | CliError::Usage(_) => EXIT_USAGE,
            // The shell convention for "terminated by SIGINT".
            CliError::Interrupted => 130,
            _ => EXIT_FAILURE,
        }
    }
}

/// The fix to suggest for a program error, which names the field but not always the remedy.
pub fn program_fix(e: &ProgramError) -> String {
    match e {
        ProgramError::UnknownProgram { name, available } => {
            let names: Vec<&str> = available.split(", ").filter(|n| !n.is_empty()).collect();
            let hint = closest(name, &names)
                .map(|n| format!("did you mean `{n}`? "))
                .unwrap_or_default();
            format!(
                "{hint}set spec.job.program to one of: {available}; to run your own program, build \
                 a binary that registers it (see examples/custom-program)"
            )
        }
        ProgramError::UnknownArgument { name, accepted, .. } => {
            format!("remove spec.job.args.{name} or rename it to one of: {accepted}")
        }
        ProgramError::BadArgument { name, .. } => {
            format!("correct spec.job.args.{name}; `weir programs` lists every program's arguments")
        }
        ProgramError::Other(_) => {
            "check spec.job.args; `weir programs` lists every program's arguments".to_string()
        }
    }
}

/// The registered name closest to a mistyped one, if it is close enough to be a typo.
fn closest<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (edit_distance(name, n), *n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The message of `e` followed by each underlying cause that adds something, one per line.
///
/// Errors in this workspace often include their source in their own message; repeating it as a
/// separate cause would only add noise, so such causes are skipped.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str("\n  caused by: ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn chain_lists_new_causes_only() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "outer\n  caused by: disk full");
        let e = Repeats(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "outer: disk full");
    }

    #[test]
    fn unknown_programs_get_a_suggestion() {
        let e = ProgramError::UnknownProgram {
            name: "ordres".into(),
            available: "nexmark-q5, orders, sensor-anomaly".into(),
        };
        assert!(program_fix(&e).starts_with("did you mean `orders`? set spec.job.program"));
        let e = ProgramError::UnknownProgram {
            name: "kafka-etl".into(),
            available: "orders".into(),
        };
        assert!(program_fix(&e).starts_with("set spec.job.program to one of: orders;"));
        let e = ProgramError::UnknownProgram {
            name: "x".into(),
            available: String::new(),
        };
        assert!(program_fix(&e).starts_with("set spec.job.program"));
    }

    #[test]
    fn usage_errors_exit_2() {
        let e = CliError::Program {
            path: "x.yaml".into(),
            source: ProgramError::Other("x".into()),
            fix: "y".into(),
        };
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert_eq!(
            CliError::ShutdownTimeout(std::time::Duration::from_secs(1)).exit_code(),
            1
        );
    }
}
