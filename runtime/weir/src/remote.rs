//! `weir savepoint` and `weir cancel`: control a running `weir run` through its REST API.
//!
//! A savepoint is asynchronous on the server, as in Flink: the POST answers with a request id at
//! once and the command polls the request until it completed or failed, so a long savepoint
//! never hits an HTTP timeout.

use std::path::Path;
use std::time::{Duration, Instant};

use weir_api::rest::{
    JobOverview, OperationStatus, SavepointInfo, StopJobRequest, TriggerSavepointRequest,
    TriggerSavepointResponse,
};

use crate::client::Client;
use crate::error::CliError;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Time between two status polls of a savepoint.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What `weir savepoint` does.
#[derive(Debug, Clone)]
pub struct SavepointOptions {
    /// REST address of the running job.
    pub rest_address: String,
    /// Directory to write the savepoint under; the job's default when `None`.
    pub target: Option<String>,
    /// Stop the job once the savepoint completed.
    pub stop: bool,
    /// How long to wait for the savepoint.
    pub timeout: Duration,
}

/// `weir savepoint`: triggers a savepoint (or a stop with savepoint), waits for it, and returns
/// its path.
pub fn savepoint(opts: &SavepointOptions) -> Result<String, CliError> {
    let client = Client::new(&opts.rest_address, REQUEST_TIMEOUT);
    let target_directory = opts.target.as_deref().map(target_uri);
    let accepted: TriggerSavepointResponse = if opts.stop {
        let body = StopJobRequest {
            target_directory,
            drain: false,
        };
        client.call("POST", "/v1/job/stop", Some(&body), &[202])?
    } else {
        let body = TriggerSavepointRequest { target_directory };
        client.call("POST", "/v1/job/savepoints", Some(&body), &[202])?
    };
    let id = accepted.request_id;
    eprintln!(
        "{} requested (request {id}); waiting up to {}s",
        if opts.stop {
            "stop with savepoint"
        } else {
            "savepoint"
        },
        opts.timeout.as_secs()
    );
    let deadline = Instant::now() + opts.timeout;
    let status_path = format!("/v1/job/savepoints/{id}");
    loop {
        let info: SavepointInfo = client.call("GET", &status_path, None::<&()>, &[200])?;
        match info.status {
            OperationStatus::Completed => {
                return info.location.ok_or_else(|| {
                    CliError::Operation(format!(
                        "savepoint {id} completed but the API reported no location"
                    ))
                });
            }
            OperationStatus::Failed => {
                return Err(CliError::Operation(format!(
                    "savepoint failed: {}{}",
                    info.failure.as_deref().unwrap_or("no reason given"),
                    if opts.stop {
                        "; the job keeps running"
                    } else {
                        ""
                    }
                )));
            }
            OperationStatus::InProgress => {}
        }
        if Instant::now() >= deadline {
            return Err(CliError::Operation(format!(
                "savepoint {id} did not complete within {}s; it may still complete: check GET \
                 {status_path} on {}, or retry with a longer --timeout",
                opts.timeout.as_secs(),
                client.address()
            )));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `weir cancel`: asks the job to cancel and returns its id.
pub fn cancel(rest_address: &str) -> Result<String, CliError> {
    let client = Client::new(rest_address, REQUEST_TIMEOUT);
    let o: JobOverview = client.call("POST", "/v1/job/cancel", None::<&()>, &[202])?;
    Ok(o.job_id)
}

/// A `--target` as a URI: a plain path gets `file://`, and a relative one is made absolute here,
/// because the running job may have another working directory than this command.
pub fn target_uri(target: &str) -> String {
    if target.contains("://") {
        return target.to_string();
    }
    let path = Path::new(target);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    format!("file://{}", absolute.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_become_uris() {
        assert_eq!(target_uri("file:///sp"), "file:///sp");
        assert_eq!(target_uri("s3://b/p"), "s3://b/p");
        assert_eq!(target_uri("/var/sp"), "file:///var/sp");
        let rel = target_uri("sp");
        assert!(rel.starts_with("file:///") && rel.ends_with("/sp"), "{rel}");
    }
}
