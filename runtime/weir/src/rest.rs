//! The runtime's REST API: job overview, checkpoint statistics, checkpoint and savepoint
//! triggers, stop-with-savepoint, cancellation, liveness and readiness probes, and Prometheus
//! metrics, as an axum [`Router`] over a [`JobMonitor`].
//!
//! The router holds no sockets, so tests drive it in-process; `weir run` serves it on
//! `--rest-address`. Bodies are weir-api's REST types (camelCase JSON); every error is an
//! [`ErrorResponse`]. Checkpoints, savepoints and stops are asynchronous, as in Flink: the POST
//! answers 202 with a request id at once, and the result is polled with a GET.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use weir_api::rest::{
    ErrorResponse, HealthResponse, StopJobRequest, TriggerCheckpointResponse,
    TriggerSavepointRequest, TriggerSavepointResponse,
};
use weir_api::{CheckpointStorageUri, JobState};

use crate::metrics::{CONTENT_TYPE, Exporter};
use crate::monitor::{JobMonitor, OperationKind};

#[derive(Clone)]
struct AppState {
    job: Arc<JobMonitor>,
    exporter: Arc<Exporter>,
}

/// Every route, for the 404 message.
const ROUTES: &str = "GET /v1/job, GET /v1/job/checkpoints, POST /v1/job/checkpoints, \
     GET /v1/job/checkpoints/{requestId}, POST /v1/job/savepoints, \
     GET /v1/job/savepoints/{requestId}, POST /v1/job/stop, POST /v1/job/cancel, GET /healthz, \
     GET /readyz, GET /metrics";

/// The REST API of `job`.
///
/// | route | answer |
/// |---|---|
/// | `GET /v1/job` | `JobOverview` |
/// | `GET /v1/job/checkpoints` | `CheckpointHistory` |
/// | `POST /v1/job/checkpoints` | 202 `TriggerCheckpointResponse`: a checkpoint is triggered now |
/// | `GET /v1/job/checkpoints/{requestId}` | `SavepointInfo` of that checkpoint request |
/// | `POST /v1/job/savepoints` (`TriggerSavepointRequest`) | 202 `TriggerSavepointResponse` |
/// | `GET /v1/job/savepoints/{requestId}` | `SavepointInfo`: `IN_PROGRESS`, `COMPLETED` with its location, or `FAILED` |
/// | `POST /v1/job/stop` (`StopJobRequest`) | 202 `TriggerSavepointResponse`; the job stops once the savepoint completes |
/// | `POST /v1/job/cancel` | 202 and the overview; 409 if the job already ended |
/// | `GET /healthz` | 200 while the process serves |
/// | `GET /readyz` | 200 while the job is `RUNNING`, 503 otherwise |
/// | `GET /metrics` | Prometheus text format |
///
/// Checkpoint, savepoint and stop requests answer 409 when the job has ended or does not
/// checkpoint (the engine takes savepoints through its checkpoint coordinator), and 400 for a
/// malformed body or target directory.
pub fn router(job: Arc<JobMonitor>) -> Result<Router, prometheus::Error> {
    let state = AppState {
        job,
        exporter: Arc::new(Exporter::new()?),
    };
    Ok(Router::new()
        .route("/v1/job", get(get_job))
        .route(
            "/v1/job/checkpoints",
            get(get_checkpoints).post(trigger_checkpoint),
        )
        .route(
            "/v1/job/checkpoints/{request_id}",
            get(get_checkpoint_request),
        )
        .route("/v1/job/savepoints", post(trigger_savepoint))
        .route("/v1/job/savepoints/{request_id}", get(get_savepoint))
        .route("/v1/job/stop", post(stop_job))
        .route("/v1/job/cancel", post(cancel_job))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state))
}

async fn get_job(State(s): State<AppState>) -> Response {
    Json(s.job.overview()).into_response()
}

async fn get_checkpoints(State(s): State<AppState>) -> Response {
    Json(s.job.checkpoint_history()).into_response()
}

async fn trigger_checkpoint(State(s): State<AppState>) -> Response {
    if let Err(e) = can_snapshot(&s.job) {
        return e;
    }
    let request_id = s.job.request(OperationKind::Checkpoint, "");
    (
        StatusCode::ACCEPTED,
        Json(TriggerCheckpointResponse { request_id }),
    )
        .into_response()
}

async fn get_checkpoint_request(
    State(s): State<AppState>,
    Path(request_id): Path<String>,
) -> Response {
    operation(&s.job, &request_id, false)
}

async fn trigger_savepoint(State(s): State<AppState>, body: Bytes) -> Response {
    let req: TriggerSavepointRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    request_savepoint(&s.job, OperationKind::Savepoint, req.target_directory)
}

async fn get_savepoint(State(s): State<AppState>, Path(request_id): Path<String>) -> Response {
    operation(&s.job, &request_id, true)
}

async fn stop_job(State(s): State<AppState>, body: Bytes) -> Response {
    let req: StopJobRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if req.drain {
        // Draining needs the sources to emit a final end-of-time watermark before the barrier,
        // which the engine's stop-with-savepoint does not do yet.
        return error(
            StatusCode::BAD_REQUEST,
            "drain is not supported yet: stop without drain (the job resumes from the savepoint \
             with its pending windows and timers), or cancel the job"
                .to_string(),
        );
    }
    request_savepoint(&s.job, OperationKind::Stop, req.target_directory)
}

/// Checks the target directory and the job, then asks for the savepoint.
fn request_savepoint(job: &JobMonitor, kind: OperationKind, target: Option<String>) -> Response {
    let Some(target) = target.or_else(|| job.info().default_savepoint_target()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "targetDirectory: no savepoint directory given and the job has no \
             spec.checkpointing.storage to default to; pass targetDirectory, e.g. \
             {\"targetDirectory\": \"file:///var/lib/weir/savepoints\"}"
                .to_string(),
        );
    };
    if let Err(e) = CheckpointStorageUri::parse_for_field(&target, "targetDirectory") {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    if let Err(e) = can_snapshot(job) {
        return e;
    }
    let request_id = job.request(kind, &target);
    (
        StatusCode::ACCEPTED,
        Json(TriggerSavepointResponse { request_id }),
    )
        .into_response()
}

/// 409 unless the job runs and checkpoints: the engine takes savepoints through its checkpoint
/// coordinator, so without `spec.checkpointing` a request could only fail later.
// The Err variant is the finished response; boxing it would only add an allocation per request.
#[allow(clippy::result_large_err)]
fn can_snapshot(job: &JobMonitor) -> Result<(), Response> {
    let state = job.state();
    if state.is_terminal() {
        return Err(error(
            StatusCode::CONFLICT,
            format!("the job already ended ({state})"),
        ));
    }
    if !job.handle().checkpointing_enabled() {
        return Err(error(
            StatusCode::CONFLICT,
            "checkpointing is off for this job: checkpoints and savepoints need a \
             spec.checkpointing section with a storage URI"
                .to_string(),
        ));
    }
    Ok(())
}

fn operation(job: &JobMonitor, request_id: &str, savepoint: bool) -> Response {
    match job.operation(request_id, savepoint) {
        Some(info) => Json(info).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no {} request {request_id:?} (requests are kept for the last 100 operations)",
                if savepoint { "savepoint" } else { "checkpoint" }
            ),
        ),
    }
}

/// An optional JSON body: empty means every field at its default, so `curl -X POST` without a
/// body works.
// The Err variant is the finished response; boxing it would only add an allocation per request.
#[allow(clippy::result_large_err)]
fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn cancel_job(State(s): State<AppState>) -> Response {
    if s.job.cancel() {
        (StatusCode::ACCEPTED, Json(s.job.overview())).into_response()
    } else {
        error(
            StatusCode::CONFLICT,
            format!(
                "the job already ended ({}); there is nothing to cancel",
                s.job.state()
            ),
        )
    }
}

async fn healthz() -> Response {
    Json(HealthResponse::ok()).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.job.state() {
        JobState::Running => Json(HealthResponse::ok()).into_response(),
        // A supervised JobManager whose job ended (stopped with a savepoint, finished) stays up
        // to report that final state and the savepoint: it is what the job's REST Service must
        // reach, so it is ready.
        _ if s.job.lingering() => Json(HealthResponse::ok()).into_response(),
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthResponse {
                status: format!("not ready: the job is {other}"),
            }),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    match s.exporter.render(&s.job) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render metrics: {e}"),
        ),
    }
}

async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route {}; available: {ROUTES}", uri.path()),
    )
}

async fn method_not_allowed(uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed on {}", uri.path()),
    )
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorResponse::single(message))).into_response()
}
