//! The REST router driven in-process (no sockets) over real engine jobs: an endless one for the
//! running-state routes, the refusals of checkpoint and savepoint requests without
//! checkpointing, and cancellation; an endless checkpointing one for checkpoint statistics,
//! savepoints and stop-with-savepoint; a bounded one for the finished state.

// Helpers of a test crate are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;
use weir::{JobInfo, JobMonitor};
use weir_api::JobState;
use weir_api::rest::{
    CheckpointHistory, ErrorResponse, HealthResponse, JobOverview, OperationStatus, SavepointInfo,
    TriggerSavepointResponse,
};
use weir_core::error::OperatorError;
use weir_core::sink::BlackholeSink;
use weir_core::source::{SourceContext, VecSource};
use weir_core::time::now_ms;
use weir_core::{
    CheckpointConfig, EnvConfig, JobHandle, JobOutcome, JobSettings, Record, Source, SourcePoll,
    SourceReader, StreamEnv, WatermarkStrategy,
};

/// Emits 100 records stamped with the wall clock per poll, forever.
#[derive(Clone)]
struct Endless;

struct EndlessReader(u64);

impl Source<u64> for Endless {
    fn create_reader(
        &self,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<u64>>, OperatorError> {
        Ok(Box::new(EndlessReader(0)))
    }
}

impl SourceReader<u64> for EndlessReader {
    fn poll(&mut self, out: &mut Vec<Record<u64>>) -> Result<SourcePoll, OperatorError> {
        for _ in 0..100 {
            out.push(Record::new(now_ms(), self.0));
            self.0 += 1;
        }
        // Idle makes the engine pause briefly, keeping this test light on CPU.
        Ok(SourcePoll::Idle)
    }
}

fn endless_job() -> JobHandle {
    endless_job_with(JobSettings::default())
}

fn endless_job_with(job: JobSettings) -> JobHandle {
    let env = StreamEnv::new(EnvConfig {
        name: "endless".into(),
        parallelism: 2,
        max_parallelism: 16,
        job,
        ..Default::default()
    });
    env.source(
        "numbers",
        Endless,
        WatermarkStrategy::monotonous().with_interval(Duration::from_millis(10)),
    )
    .key_by(|v: &u64| v % 7)
    .process(PassThrough)
    .sink("blackhole", BlackholeSink);
    env.start().unwrap()
}

#[derive(Clone)]
struct PassThrough;

impl weir_core::KeyedProcessFunction<u64, u64, u64> for PassThrough {
    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut weir_core::KeyedContext<'_, u64, u64>,
    ) -> Result<(), OperatorError> {
        ctx.emit(value)
    }
}

async fn call(app: &Router, method: Method, path: &str) -> (StatusCode, Option<String>, String) {
    call_with(app, method, path, "").await
}

async fn call_with(
    app: &Router,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, Option<String>, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

async fn overview(app: &Router) -> JobOverview {
    let (status, _, body) = call(app, Method::GET, "/v1/job").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn running_job_routes_and_cancel() {
    let monitor = JobMonitor::new(JobInfo::new("endless", "endless"), endless_job());
    let app = weir::rest::router(monitor.clone()).unwrap();

    // Wait until records reach the sink and a watermark is through.
    let deadline = Instant::now() + Duration::from_secs(20);
    let o = loop {
        monitor.sample();
        let o = overview(&app).await;
        if o.records_out > 0 && o.current_watermark_ms.is_some() {
            break o;
        }
        assert!(Instant::now() < deadline, "no progress: {o:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(o.state, JobState::Running);
    assert!(o.job_id.starts_with("endless-"), "{}", o.job_id);
    assert_eq!(
        (o.name.as_str(), o.program.as_str()),
        ("endless", "endless")
    );
    assert_eq!(
        (o.parallelism, o.max_parallelism, o.num_restarts),
        (2, 16, 0)
    );
    // No records_in >= records_out check: sources and sinks publish their counters on their
    // own 10 ms ticks, so a snapshot may briefly show the sink ahead of the source.
    let names: Vec<&str> = o.vertices.iter().map(|v| v.name.as_str()).collect();
    assert!(
        names.contains(&"numbers") && names.contains(&"blackhole"),
        "{names:?}"
    );
    assert!(o.vertices.iter().all(|v| v.parallelism == 2));

    // Raw JSON is camelCase.
    let (_, ctype, body) = call(&app, Method::GET, "/v1/job").await;
    assert_eq!(ctype.as_deref(), Some("application/json"));
    assert!(
        body.contains("\"recordsInPerSecond\"") && body.contains("\"jobId\""),
        "{body}"
    );

    // Rates come from the sampler.
    tokio::time::sleep(Duration::from_millis(300)).await;
    monitor.sample();
    assert!(overview(&app).await.records_in_per_second > 0.0);

    let (status, _, body) = call(&app, Method::GET, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<HealthResponse>(&body).unwrap(),
        HealthResponse::ok()
    );
    let (status, _, _) = call(&app, Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, body) = call(&app, Method::GET, "/v1/job/checkpoints").await;
    assert_eq!(status, StatusCode::OK);
    let h: CheckpointHistory = serde_json::from_str(&body).unwrap();
    assert_eq!(h, CheckpointHistory::default());

    // Counters an operator or connector registers (a Kafka source's numRecordsInErrors, say)
    // reach the REST view and `/metrics`, summed over subtasks.
    let metrics = monitor.handle().metrics().clone();
    let numbers = metrics
        .vertices
        .iter()
        .find(|v| v.name == "numbers")
        .unwrap();
    for s in &numbers.subtasks {
        s.counter("numRecordsInErrors")
            .fetch_add(2, Ordering::Relaxed);
    }
    monitor.sample();
    let o = overview(&app).await;
    let v = o.vertices.iter().find(|v| v.name == "numbers").unwrap();
    assert_eq!(v.counters.get("numRecordsInErrors"), Some(&4), "{v:?}");

    let (status, ctype, text) = call(&app, Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.unwrap().starts_with("text/plain"));
    assert!(
        text.contains("weir_operator_counter_total{counter=\"numRecordsInErrors\",")
            && text.contains("operator_name=\"numbers\"} 4"),
        "{text}"
    );
    for name in [
        "weir_job_records_in_total",
        "weir_job_records_out_total",
        "weir_job_records_in_per_second",
        "weir_job_records_out_per_second",
        "weir_job_current_watermark_ms",
        "weir_job_uptime_seconds",
        "weir_job_num_restarts_total 0",
        "weir_job_state{state=\"RUNNING\"} 1",
        "weir_job_state{state=\"FAILED\"} 0",
        "weir_operator_records_in_total{operator_id=",
        "weir_operator_records_out_total{operator_id=",
        "weir_operator_current_input_watermark_ms{operator_id=",
        "operator_name=\"blackhole\"",
        "weir_process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
    let records_in: f64 = metric_value(&text, "weir_job_records_in_total");
    assert!(records_in > 0.0, "{text}");

    let (status, _, body) = call(&app, Method::GET, "/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let e: ErrorResponse = serde_json::from_str(&body).unwrap();
    assert!(e.errors[0].contains("/v1/nope"), "{e:?}");
    let (status, _, body) = call(&app, Method::DELETE, "/v1/job").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        serde_json::from_str::<ErrorResponse>(&body).is_ok(),
        "{body}"
    );

    // Without checkpointing there are no savepoints: every request is refused up front, naming
    // what to change.
    for (method, path, body, code, says) in [
        (
            Method::POST,
            "/v1/job/savepoints",
            "",
            StatusCode::BAD_REQUEST,
            "targetDirectory: no savepoint directory given",
        ),
        (
            Method::POST,
            "/v1/job/savepoints",
            r#"{"targetDirectory": "file:///tmp/sp"}"#,
            StatusCode::CONFLICT,
            "checkpointing is off",
        ),
        (
            Method::POST,
            "/v1/job/savepoints",
            r#"{"targetDirectory": "s3://Bad_Bucket/sp"}"#,
            StatusCode::BAD_REQUEST,
            "invalid S3 bucket name",
        ),
        (
            Method::POST,
            "/v1/job/savepoints",
            r#"{"targetDirectory": "/tmp/sp"}"#,
            StatusCode::BAD_REQUEST,
            "targetDirectory: missing scheme",
        ),
        (
            Method::POST,
            "/v1/job/savepoints",
            "{nope",
            StatusCode::BAD_REQUEST,
            "invalid JSON body",
        ),
        (
            Method::POST,
            "/v1/job/stop",
            r#"{"targetDirectory": "file:///tmp/sp", "drain": true}"#,
            StatusCode::BAD_REQUEST,
            "drain is not supported yet",
        ),
        (
            Method::POST,
            "/v1/job/checkpoints",
            "",
            StatusCode::CONFLICT,
            "checkpointing is off",
        ),
        (
            Method::GET,
            "/v1/job/savepoints/unknown",
            "",
            StatusCode::NOT_FOUND,
            "no savepoint request \"unknown\"",
        ),
    ] {
        let (status, _, text) = call_with(&app, method.clone(), path, body).await;
        assert_eq!(status, code, "{method} {path} {body}: {text}");
        let e: ErrorResponse = serde_json::from_str(&text).unwrap();
        assert!(e.errors[0].contains(says), "{method} {path} {body}: {e:?}");
    }

    let (status, _, body) = call(&app, Method::POST, "/v1/job/cancel").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    monitor
        .handle()
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(overview(&app).await.state, JobState::Canceled);
    let (status, _, body) = call(&app, Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("CANCELED"), "{body}");
    let (status, _, _) = call(&app, Method::GET, "/healthz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness does not depend on the job"
    );
    let (status, _, body) = call(&app, Method::POST, "/v1/job/cancel").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, _, text) = call(&app, Method::GET, "/metrics").await;
    assert!(
        text.contains("weir_job_state{state=\"CANCELED\"} 1"),
        "{text}"
    );
}

async fn poll_savepoint(app: &Router, request_id: &str) -> SavepointInfo {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = call(
            app,
            Method::GET,
            &format!("/v1/job/savepoints/{request_id}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let info: SavepointInfo = serde_json::from_str(&body).unwrap();
        if info.status != OperationStatus::InProgress {
            return info;
        }
        assert!(Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn checkpointing_job_takes_savepoints_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("checkpoints").display());
    let handle = endless_job_with(JobSettings {
        checkpoint: Some(
            CheckpointConfig::new(storage.clone()).with_interval(Duration::from_millis(100)),
        ),
        ..Default::default()
    });
    let info = JobInfo::new("endless", "endless").with_checkpoint_storage(&storage);
    let monitor = JobMonitor::new(info, handle);
    let app = weir::rest::router(monitor.clone()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let h = loop {
        let (status, _, body) = call(&app, Method::GET, "/v1/job/checkpoints").await;
        assert_eq!(status, StatusCode::OK);
        let h: CheckpointHistory = serde_json::from_str(&body).unwrap();
        if h.counts.completed >= 2 {
            break h;
        }
        assert!(Instant::now() < deadline, "{h:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(h.counts.total >= h.counts.completed);
    assert_eq!(
        h.history[0].id,
        h.history.iter().map(|c| c.id).max().unwrap(),
        "newest first"
    );
    assert!(overview(&app).await.last_checkpoint.is_some());

    // No body: the savepoint goes under <storage>/savepoints.
    let (status, _, body) = call(&app, Method::POST, "/v1/job/savepoints").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = serde_json::from_str::<TriggerSavepointResponse>(&body)
        .unwrap()
        .request_id;
    let sp = poll_savepoint(&app, &id).await;
    assert_eq!(sp.status, OperationStatus::Completed, "{sp:?}");
    let location = sp.location.unwrap();
    assert!(
        location.starts_with(&format!("{storage}/savepoints/savepoint-")),
        "{location}"
    );
    // A savepoint request id is not a checkpoint request id.
    let (status, _, _) = call(&app, Method::GET, &format!("/v1/job/checkpoints/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, _, text) = call(&app, Method::GET, "/metrics").await;
    assert!(metric_value(&text, "weir_job_numberOfCompletedCheckpoints") >= 3.0);
    assert_eq!(metric_value(&text, "weir_job_numRestarts"), 0.0);

    let target = format!("file://{}", dir.path().join("final").display());
    let (status, _, body) = call_with(
        &app,
        Method::POST,
        "/v1/job/stop",
        &format!(r#"{{"targetDirectory": "{target}"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = serde_json::from_str::<TriggerSavepointResponse>(&body)
        .unwrap()
        .request_id;
    let sp = poll_savepoint(&app, &id).await;
    assert_eq!(sp.status, OperationStatus::Completed, "{sp:?}");
    let location = sp.location.unwrap();
    assert!(location.starts_with(&target), "{location}");
    let outcome = monitor
        .handle()
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(outcome, JobOutcome::Stopped(location));
    assert!(monitor.wait_stop_reported(Duration::ZERO));
    assert_eq!(overview(&app).await.state, JobState::Suspended);
    let (status, _, body) = call(&app, Method::POST, "/v1/job/savepoints").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn finished_job_reports_totals() {
    let env = StreamEnv::new(EnvConfig {
        name: "bounded".into(),
        ..Default::default()
    });
    env.source(
        "five",
        VecSource::new((1..=5).map(|i| (i * 1000, i))),
        WatermarkStrategy::monotonous(),
    )
    .sink("blackhole", BlackholeSink);
    let handle = env.start().unwrap();
    handle
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    let monitor = JobMonitor::new(JobInfo::new("bounded", "five"), handle);
    let app = weir::rest::router(Arc::clone(&monitor)).unwrap();
    let o = overview(&app).await;
    assert_eq!(o.state, JobState::Finished);
    assert_eq!((o.records_in, o.records_out), (5, 5));
    assert_eq!(o.failure, None);
    assert!(o.duration_ms >= 0);
    let (status, _, _) = call(&app, Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, _, text) = call(&app, Method::GET, "/metrics").await;
    assert_eq!(metric_value(&text, "weir_job_records_out_total"), 5.0);
    // After the end of input the watermark is "end of time".
    assert_eq!(
        metric_value(&text, "weir_job_current_watermark_ms"),
        f64::INFINITY
    );
}
