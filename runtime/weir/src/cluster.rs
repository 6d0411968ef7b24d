//! `weir jobmanager` and `weir taskmanager`: the two processes of a cluster, each configured
//! from the same StreamJob manifest (mounted as a file in Kubernetes) plus a few options or
//! environment variables (`POD_NAME`, `WEIR_JOBMANAGER_ADDRESS`) that the operator sets.
//!
//! The JobManager is `weir run` whose subtasks run in TaskManagers instead of in-process: the
//! same REST API, metrics, checkpoints, savepoints and restart strategy. Every TaskManager
//! builds the manifest's program itself, so nothing but positions crosses the wire at
//! deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use weir_api::StreamJobSpec;
use weir_core::Registry;
use weir_core::cluster::{ClusterConfig, JobManagerCluster, TaskManagerConfig};

use crate::embedded::{build, job_settings, load_manifest};
use crate::error::CliError;
use crate::metrics::TaskManagerExporter;
use crate::signals::Signals;

/// How `weir jobmanager` listens for TaskManagers.
#[derive(Debug, Clone)]
pub struct JobManagerOptions {
    /// Address of the RPC port TaskManagers connect to.
    pub rpc_address: SocketAddr,
    /// Heartbeat interval; `None`: `spec.jobManager.heartbeat.interval`.
    pub heartbeat_interval: Option<Duration>,
    /// Heartbeat timeout; `None`: `spec.jobManager.heartbeat.timeout`.
    pub heartbeat_timeout: Option<Duration>,
    /// How long a deployment waits for enough slots.
    pub slot_timeout: Duration,
    /// Namespace of the leader-election Lease (`None`: `$POD_NAMESPACE`, else the
    /// kubeconfig's).
    pub namespace: Option<String>,
    /// Identity in the election (`None`: pod name and a part unique to the process).
    pub identity: Option<String>,
}

impl JobManagerOptions {
    fn cluster_config(&self, spec: &StreamJobSpec) -> ClusterConfig {
        let hb = &spec.job_manager.heartbeat;
        ClusterConfig {
            heartbeat_interval: self.heartbeat_interval.unwrap_or(hb.interval.0),
            heartbeat_timeout: self.heartbeat_timeout.unwrap_or(hb.timeout.0),
            slot_timeout: self.slot_timeout,
            manifest_hash: Some(manifest_hash(spec)),
        }
    }
}

/// The fingerprint a JobManager and its TaskManagers compare at registration: the hash of the
/// spec each loaded from its manifest file. Both read the same file (the operator's ConfigMap),
/// so they differ only while an upgrade replaces the pods: a TaskManager from before it is
/// refused instead of running the new job's subtasks with the old program or arguments.
pub fn manifest_hash(spec: &StreamJobSpec) -> String {
    spec.spec_hash()
}

/// A JobManager that won the election: the runtime that keeps renewing its Lease, and its
/// term. Leadership lost ends the process (see [`become_leader`]).
pub struct Leader {
    _rt: tokio::runtime::Runtime,
    /// The term: its epoch fences the latest-checkpoint pointer.
    pub term: weir_ha::Term,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader").field("term", &self.term).finish()
    }
}

/// Whether the manifest asks for standby JobManagers.
pub fn high_availability(spec: &StreamJobSpec) -> bool {
    spec.job_manager.replicas > 1
}

/// Campaigns for the job's Lease `<name>-jobmanager-leader` and waits until this JobManager
/// leads. While it waits it is a standby: it does not listen for TaskManagers, so they find
/// the leader among the addresses they are given. Once leading, losing the Lease (a renewal
/// missed its deadline, another took over) exits the process at once: a deposed leader must
/// not act, and whatever it was writing is fenced by the term's epoch anyway.
pub fn become_leader(
    o: &JobManagerOptions,
    name: &str,
    spec: &StreamJobSpec,
) -> Result<Leader, CliError> {
    let le = &spec.job_manager.leader_election;
    let election = weir_ha::ElectionConfig {
        lease_duration: le.lease_duration.0,
        renew_deadline: le.renew_deadline.0,
        retry_period: le.retry_period.0,
    };
    let rt = crate::serve::runtime("weir-election")?;
    let client = rt.block_on(kube::Client::try_default()).map_err(|e| {
        CliError::LeaderElection(format!(
            "cannot reach the Kubernetes API: {e}; run in a pod with a service account, set \
                 KUBECONFIG, or set spec.jobManager.replicas to 1"
        ))
    })?;
    let namespace = o
        .namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| client.default_namespace().to_string());
    let lease = format!("{name}-jobmanager-leader");
    // Epochs must stay above what the latest-checkpoint pointer holds, even if the Lease was
    // deleted and its count starts over.
    let floor = spec
        .checkpointing
        .as_ref()
        .and_then(|c| {
            crate::storage::open(&c.storage, &crate::storage::s3_settings(c.s3.as_ref())).ok()
        })
        .and_then(|st| st.read_latest().ok().flatten())
        .map_or(0, |v| v.pointer.epoch);
    let identity = o.identity.clone().unwrap_or_else(weir_ha::default_identity);
    let elector =
        weir_ha::LeaderElector::new(client, &namespace, &lease, identity.clone(), election)
            .map_err(|e| CliError::LeaderElection(e.to_string()))?
            .with_epoch_floor(floor);
    let mut handle = {
        let _enter = rt.enter();
        elector.start()
    };
    eprintln!(
        "JobManager {identity}: standby, campaigning for Lease {namespace}/{lease} (lease \
         duration {:?})",
        election.lease_duration
    );
    let term = rt.block_on(handle.leading()).ok_or_else(|| {
        CliError::LeaderElection("the election stopped before this JobManager led".into())
    })?;
    eprintln!(
        "JobManager {identity}: leading Lease {namespace}/{lease} with fencing epoch {}",
        term.epoch
    );
    let watched = term.clone();
    rt.spawn(async move {
        if let Some(lost) = handle.lost(&watched).await {
            eprintln!(
                "JobManager {}: lost the leadership of epoch {} ({:?}); exiting so that only \
                 the new leader acts",
                watched.identity, lost.epoch, lost.reason
            );
            std::process::exit(crate::error::EXIT_FAILURE.into());
        }
    });
    Ok(Leader { _rt: rt, term })
}

/// Binds the JobManager's RPC port and says where it is.
pub fn bind_job_manager(
    o: &JobManagerOptions,
    spec: &StreamJobSpec,
) -> Result<Arc<JobManagerCluster>, CliError> {
    let config = o.cluster_config(spec);
    let c = JobManagerCluster::bind(o.rpc_address, config.clone()).map_err(|source| {
        CliError::BindPort {
            what: "JobManager RPC port",
            address: o.rpc_address.to_string(),
            flag: "--rpc-address",
            source,
        }
    })?;
    eprintln!(
        "JobManager RPC on {}; waiting for TaskManagers with {} slot(s) in all \
         (spec.job.parallelism) that loaded this manifest (spec hash {}); a TaskManager is lost \
         after {:?} without a heartbeat",
        c.address(),
        spec.job.parallelism,
        manifest_hash(spec),
        config.heartbeat_timeout
    );
    Ok(c)
}

/// What `weir taskmanager` does.
#[derive(Debug, Clone)]
pub struct TaskManagerOptions {
    /// The StreamJob manifest.
    pub manifest: PathBuf,
    /// JobManager RPC addresses, tried in turn (the leader accepts).
    pub jobmanagers: Vec<String>,
    /// Where to bind the data port.
    pub data_address: SocketAddr,
    /// The data address other TaskManagers use, when not the bound one (a pod IP, say).
    pub advertise: Option<String>,
    /// This TaskManager's id; default `$POD_NAME`, else host name and process id.
    pub id: Option<String>,
    /// Slots offered; default `spec.taskManager.slots`.
    pub slots: Option<u32>,
    /// Where to serve `/metrics` and `/healthz`.
    pub metrics_address: SocketAddr,
}

fn default_id() -> String {
    if let Ok(p) = std::env::var("POD_NAME")
        && !p.is_empty()
    {
        return p;
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "taskmanager".into());
    format!("{host}-{}", std::process::id())
}

/// `weir taskmanager`: serves the JobManager until SIGINT or SIGTERM.
pub fn run_task_manager(registry: &Registry, opts: &TaskManagerOptions) -> Result<(), CliError> {
    let job = load_manifest(&opts.manifest)?;
    let settings = job_settings(&opts.manifest, &job.spec)?;
    let slots = opts.slots.unwrap_or(job.spec.task_manager.slots).max(1);
    let prepared = build(registry, &opts.manifest, job, settings)?;
    let stop = Arc::new(AtomicBool::new(false));
    let rt = crate::serve::runtime("weir-tm-http")?;
    let metrics_listener =
        std::net::TcpListener::bind(opts.metrics_address).map_err(|source| CliError::BindPort {
            what: "TaskManager metrics",
            address: opts.metrics_address.to_string(),
            flag: "--metrics-address",
            source,
        })?;
    // Checked here so that a busy port is this command's error, with its fix.
    drop(
        std::net::TcpListener::bind(opts.data_address).map_err(|source| CliError::BindPort {
            what: "TaskManager data port",
            address: opts.data_address.to_string(),
            flag: "--data-address",
            source,
        })?,
    );
    let data_bind = opts.data_address.to_string();
    let id = opts.id.clone().unwrap_or_else(default_id);
    eprintln!(
        "TaskManager {id}: {slots} slot(s) for {} (spec hash {}); JobManager {}",
        prepared.name(),
        manifest_hash(&prepared.job.spec),
        opts.jobmanagers.join(", ")
    );
    let config = TaskManagerConfig {
        id,
        jobmanagers: opts.jobmanagers.clone(),
        slots,
        data_bind,
        data_advertise: opts.advertise.clone(),
        manifest_hash: Some(manifest_hash(&prepared.job.spec)),
    };
    let tm = prepared.env.task_manager(config).map_err(CliError::Start)?;
    let exporter = Arc::new(TaskManagerExporter::new(tm.clone()).map_err(CliError::Metrics)?);
    let metrics_bound = metrics_listener.local_addr().map_err(CliError::Runtime)?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let exporter = exporter.clone();
                async move {
                    match exporter.render() {
                        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
                            .into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    crate::serve::serve(&rt, metrics_listener, app, "metrics")?;
    let signals = rt.block_on(Signals::install()).map_err(CliError::Runtime)?;
    rt.spawn(stop_on_signal(signals, stop.clone()));
    eprintln!(
        "TaskManager data port {}; metrics on http://{metrics_bound}/metrics",
        tm.data_address()
    );
    tm.run(stop);
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// Stops the TaskManager at the first SIGINT or SIGTERM (its tasks then fail over).
async fn stop_on_signal(mut signals: Signals, stop: Arc<AtomicBool>) {
    if let Some(sig) = signals.next().await {
        eprintln!("{sig}: stopping the TaskManager");
        stop.store(true, Ordering::SeqCst);
    }
}
