//! SIGINT and SIGTERM (Ctrl-C only, off Unix) for the long-running commands: `weir run` and
//! `weir jobmanager` stop the job on them (a supervised or leading JobManager leaves it to the
//! next one), `weir taskmanager` leaves its JobManager.

/// The installed handlers.
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers: from here on the signals no longer kill the process.
    pub(crate) async fn install() -> std::io::Result<Self> {
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

    /// The next signal's name; `None` when no more can arrive.
    pub(crate) async fn next(&mut self) -> Option<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.interrupt.recv() => Some("SIGINT"),
                Some(()) = self.terminate.recv() => Some("SIGTERM"),
                else => None,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.ok().map(|()| "Ctrl-C")
        }
    }
}
