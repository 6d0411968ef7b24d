//! Errors of the engine: what a user function or connector reports, and why a job failed.

/// An error raised while processing: by a user function, a source, a sink or the engine.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A user function reported a failure.
    #[error("{0}")]
    User(String),
    /// A source could not read.
    #[error("source failed: {0}")]
    Source(String),
    /// A sink could not write.
    #[error("sink failed: {0}")]
    Sink(#[source] std::io::Error),
    /// A state access failed.
    #[error("state {name}: {message}")]
    State {
        /// Name of the state.
        name: String,
        /// What went wrong.
        message: String,
    },
}

impl OperatorError {
    /// A user error from anything printable.
    pub fn user(msg: impl std::fmt::Display) -> Self {
        Self::User(msg.to_string())
    }
}

/// Why a job could not be built or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The dataflow is malformed (no sink, bad parallelism, ...).
    #[error("invalid dataflow: {0}")]
    InvalidGraph(String),
    /// A task failed.
    #[error("task {task} (subtask {subtask}) failed: {source}")]
    TaskFailed {
        /// Name of the failing vertex chain.
        task: String,
        /// Its subtask index.
        subtask: u32,
        /// The failure.
        #[source]
        source: OperatorError,
    },
    /// A task panicked.
    #[error("task {task} (subtask {subtask}) panicked: {message}")]
    TaskPanicked {
        /// Name of the failing vertex chain.
        task: String,
        /// Its subtask index.
        subtask: u32,
        /// The panic message.
        message: String,
    },
    /// A thread could not be started.
    #[error("could not start a task thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The job was cancelled.
    #[error("job was cancelled")]
    Cancelled,
    /// The job failed for a reason outside any one task (e.g. checkpoint failures).
    #[error("{0}")]
    Failed(String),
    /// Checkpoint storage or restore failed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}
