//! The runtime's REST API: job overview, checkpoint statistics, cancellation, liveness and
//! readiness probes, and Prometheus metrics, as an axum [`Router`] over a [`JobMonitor`].
//!
//! The router holds no sockets, so tests drive it in-process; `weir run` serves it on
//! `--rest-address`. Bodies are weir-api's REST types (camelCase JSON); every error is an
//! [`ErrorResponse`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use weir_api::JobState;
use weir_api::rest::{CheckpointHistory, ErrorResponse, HealthResponse};

use crate::metrics::{CONTENT_TYPE, Exporter};
use crate::monitor::JobMonitor;

#[derive(Clone)]
struct AppState {
    job: Arc<JobMonitor>,
    exporter: Arc<Exporter>,
}

/// The REST API of `job`.
///
/// | route | answer |
/// |---|---|
/// | `GET /v1/job` | `JobOverview` |
/// | `GET /v1/job/checkpoints` | `CheckpointHistory` |
/// | `POST /v1/job/cancel` | 202 and the overview; 409 if the job already ended |
/// | `GET /healthz` | 200 while the process serves |
/// | `GET /readyz` | 200 while the job is `RUNNING`, 503 otherwise |
/// | `GET /metrics` | Prometheus text format |
pub fn router(job: Arc<JobMonitor>) -> Result<Router, prometheus::Error> {
    let state = AppState {
        job,
        exporter: Arc::new(Exporter::new()?),
    };
    Ok(Router::new()
        .route("/v1/job", get(get_job))
        .route("/v1/job/checkpoints", get(get_checkpoints))
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

/// Checkpoint statistics: always zero counts and an empty history, because the engine does not
/// take checkpoints yet (checkpointing arrives in the next release). The route exists already so
/// that the operator and dashboards can be built against the final API.
async fn get_checkpoints() -> Response {
    Json(CheckpointHistory::default()).into_response()
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
        format!(
            "no route {}; available: GET /v1/job, GET /v1/job/checkpoints, POST /v1/job/cancel, \
             GET /healthz, GET /readyz, GET /metrics",
            uri.path()
        ),
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
