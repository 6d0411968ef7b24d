//! The small async runtime the long-running commands keep beside their engine threads — for the
//! REST API, `/metrics`, signals and leader election — and the HTTP servers on it.

use axum::Router;
use tokio::runtime::Runtime;

use crate::error::CliError;

/// A one-worker runtime; the engine's work happens on its own threads.
pub(crate) fn runtime(thread_name: &str) -> Result<Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(thread_name)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Serves `app` on `listener` (bound beforehand, so a busy port is the command's error before
/// anything starts) from `rt`; `what` names the server in the log if it stops.
pub(crate) fn serve(
    rt: &Runtime,
    listener: std::net::TcpListener,
    app: Router,
    what: &'static str,
) -> Result<(), CliError> {
    listener.set_nonblocking(true).map_err(CliError::Runtime)?;
    let listener = {
        let _enter = rt.enter();
        tokio::net::TcpListener::from_std(listener).map_err(CliError::Runtime)?
    };
    rt.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("{what} server stopped: {e}");
        }
    });
    Ok(())
}
