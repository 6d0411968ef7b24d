//! `weir-operator`: runs the StreamJob controller and serves its metrics. With
//! `WEIR_OPERATOR_LEADER_ELECTION=true` (what the chart sets with more than one replica) the
//! replicas elect a leader through the Lease `weir-operator-leader` in `$POD_NAMESPACE`, and
//! only the leader reconciles; a replica that loses the leadership exits so that two never act
//! at once.
//!
//! Configuration: `WATCH_NAMESPACES` (comma-separated; empty or unset: all namespaces),
//! `METRICS_ADDRESS` (default `0.0.0.0:8080`: `/metrics`, `/healthz`), `POD_NAME`,
//! `POD_NAMESPACE`, `RUST_LOG`.

use anyhow::{Context as _, Result};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::process::ExitCode;
use std::sync::Arc;
use weir_operator::metrics::Metrics;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The election's timing: client-go's defaults, or `WEIR_OPERATOR_LEASE_DURATION`,
/// `WEIR_OPERATOR_RENEW_DEADLINE`, `WEIR_OPERATOR_RETRY_PERIOD` (seconds).
fn election_config() -> Result<weir_ha::ElectionConfig> {
    let mut c = weir_ha::ElectionConfig::default();
    for (var, field) in [
        ("WEIR_OPERATOR_LEASE_DURATION", &mut c.lease_duration),
        ("WEIR_OPERATOR_RENEW_DEADLINE", &mut c.renew_deadline),
        ("WEIR_OPERATOR_RETRY_PERIOD", &mut c.retry_period),
    ] {
        if let Ok(v) = std::env::var(var) {
            let secs: f64 = v
                .parse()
                .with_context(|| format!("{var}={v:?}: expected seconds, e.g. 15"))?;
            *field = std::time::Duration::from_secs_f64(secs);
        }
    }
    c.validate().context("leader election timing")?;
    Ok(c)
}

/// `WATCH_NAMESPACES` as a list; empty means all namespaces.
fn watched(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

async fn serve_metrics(address: &str, metrics: Arc<Metrics>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on METRICS_ADDRESS {address}"))?;
    eprintln!(
        "weir-operator: metrics on http://{}/metrics",
        listener.local_addr()?
    );
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics.render() {
                        Ok(text) => (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(())
}

async fn run() -> Result<()> {
    let metrics = Arc::new(Metrics::new().context("setting up metrics")?);
    let address = std::env::var("METRICS_ADDRESS").unwrap_or_else(|_| "0.0.0.0:8080".to_string());
    serve_metrics(&address, metrics.clone()).await?;
    let client = kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API (in a pod: its service account; elsewhere: KUBECONFIG)",
    )?;
    let namespaces = watched(std::env::var("WATCH_NAMESPACES").ok().as_deref());
    let pod = std::env::var("POD_NAME").ok();
    if std::env::var("WEIR_OPERATOR_LEADER_ELECTION").as_deref() == Ok("true") {
        let ns = std::env::var("POD_NAMESPACE")
            .unwrap_or_else(|_| client.default_namespace().to_string());
        let elector = weir_ha::LeaderElector::new(
            client.clone(),
            &ns,
            "weir-operator-leader",
            weir_ha::default_identity(),
            election_config()?,
        )?;
        let mut handle = elector.start();
        eprintln!("weir-operator: standby, campaigning for Lease {ns}/weir-operator-leader");
        let term = handle
            .leading()
            .await
            .context("the election stopped before this replica led")?;
        eprintln!("weir-operator: leading with fencing epoch {}", term.epoch);
        tokio::spawn(async move {
            if let Some(lost) = handle.lost(&term).await {
                eprintln!(
                    "weir-operator: lost the leadership ({:?}); exiting",
                    lost.reason
                );
                std::process::exit(1);
            }
        });
    }
    tracing::info!(
        "reconciling StreamJobs in {}; metrics on {address}",
        if namespaces.is_empty() {
            "all namespaces".to_string()
        } else {
            namespaces.join(", ")
        }
    );
    let ctx = Arc::new(weir_operator::controller::Context::new(
        client, pod, metrics,
    ));
    weir_operator::controller::run_namespaces(ctx, &namespaces).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::watched;

    #[test]
    fn watched_namespaces() {
        assert!(watched(None).is_empty());
        assert!(watched(Some(" ")).is_empty());
        assert_eq!(watched(Some("a, b,,c")), ["a", "b", "c"]);
    }
}
