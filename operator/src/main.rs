//! `weir-operator`: runs the StreamJob controller. With `WEIR_OPERATOR_LEADER_ELECTION=true`
//! (what the chart sets with more than one replica) the replicas elect a leader through the
//! Lease `weir-operator-leader` in `$POD_NAMESPACE`, and only the leader reconciles; a replica
//! that loses the leadership exits so that two never act at once.
//!
//! Configuration: `WATCH_NAMESPACE` (one namespace; empty or unset: all namespaces),
//! `POD_NAME`, `POD_NAMESPACE`, `RUST_LOG`.

use anyhow::{Context as _, Result};
use std::process::ExitCode;

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

async fn run() -> Result<()> {
    let client = kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API (in a pod: its service account; elsewhere: KUBECONFIG)",
    )?;
    let namespace = std::env::var("WATCH_NAMESPACE")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let pod = std::env::var("POD_NAME").ok();
    if std::env::var("WEIR_OPERATOR_LEADER_ELECTION").as_deref() == Ok("true") {
        let ns = std::env::var("POD_NAMESPACE")
            .unwrap_or_else(|_| client.default_namespace().to_string());
        let elector = weir_ha::LeaderElector::new(
            client.clone(),
            &ns,
            "weir-operator-leader",
            weir_ha::default_identity(),
            weir_ha::ElectionConfig::default(),
        )?;
        let mut handle = elector.start();
        tracing::info!("waiting for the leadership of Lease {ns}/weir-operator-leader");
        let term = handle
            .leading()
            .await
            .context("the election stopped before this replica led")?;
        tracing::info!("leading with epoch {}", term.epoch);
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
        "reconciling StreamJobs in {}",
        namespace.as_deref().unwrap_or("all namespaces")
    );
    let ctx = weir_operator::controller::Context::new(client, pod);
    weir_operator::controller::run(ctx, namespace.as_deref()).await;
    Ok(())
}
