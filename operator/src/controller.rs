//! The StreamJob controller: watches StreamJobs and the objects they own, and reconciles each as
//! a pipeline — observe (owned objects, JobManager readiness, the job's state from its REST
//! API) → [`decide`] (pure) → apply (server-side apply of [`resources::desired`], a finalizer)
//! → update status (lifecycle, conditions, events).

use crate::decide::{
    Cond, Decision, Deployed, Observed, Pending, Plan, Poll, Restore, Spec, Step, Want, decide,
};
use crate::resources::{self, Desired, Extra, Names, REST_PORT};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use weir_api::rest::{OperationStatus, SavepointInfo, TriggerSavepointResponse};
use weir_api::{
    LifecycleState, PendingSavepoint, ReconciliationStatus, RestoreKind, RestoreSource,
    SavepointRecord, StreamJob, StreamJobSpec, StreamJobStatus,
};

/// The finalizer the operator puts on every StreamJob it deploys.
pub const FINALIZER: &str = "weir.dev/finalizer";
/// The field manager of the operator's server-side applies.
pub const FIELD_MANAGER: &str = "weir-operator";
/// How often a StreamJob is looked at again without any change (to follow the job's state).
pub const RESYNC: Duration = Duration::from_secs(10);
/// How often while a deployment, an upgrade or a savepoint is under way.
pub const BUSY_RESYNC: Duration = Duration::from_secs(2);

/// Why a reconciliation failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The objects could not be built.
    #[error("building the objects: {0}")]
    Build(#[from] resources::BuildError),
    /// The deployment recorded in the status could not be read back.
    #[error("reading status.reconciliation: {0}")]
    Recorded(#[source] serde_json::Error),
    /// Checkpoint storage could not be changed.
    #[error("{action}: {source}")]
    Storage {
        /// What was being done.
        action: String,
        /// The storage error (boxed: S3 errors are large).
        source: Box<crate::storage::Error>,
    },
    /// An API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        source: kube::Error,
    },
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

/// Shared by every reconciliation.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Kubernetes Events.
    pub events: crate::events::Events,
    /// How long the JobManager's REST API may take to answer.
    pub rest_timeout: Duration,
    /// The operator's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Maps a Service host name (`<service>.<namespace>.svc`) to the address to connect to;
    /// `None` (the default) leaves it to the cluster's DNS. Tests without cluster DNS set it.
    pub resolve: Option<Resolver>,
}

/// See [`Context::resolve`].
pub type Resolver = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl Context {
    /// A context for `client`, reporting events as `instance` and counting into `metrics`.
    pub fn new(
        client: Client,
        instance: Option<String>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let events = crate::events::Events::new(client.clone(), FIELD_MANAGER, instance);
        Self {
            client,
            events,
            rest_timeout: Duration::from_secs(2),
            metrics,
            resolve: None,
        }
    }
}

/// Runs the controller over every namespace in `namespaces` (all namespaces when empty) until
/// the process is told to stop.
pub async fn run_namespaces(ctx: Arc<Context>, namespaces: &[String]) {
    if namespaces.is_empty() {
        return run(ctx, None).await;
    }
    futures::future::join_all(namespaces.iter().map(|ns| run(ctx.clone(), Some(ns)))).await;
}

/// Runs the controller over `jobs` (one namespace or all) until the process ends.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    let c = ctx.client.clone();
    let (jobs, deployments, statefulsets, configmaps, services) = match namespace {
        Some(ns) => (
            Api::<StreamJob>::namespaced(c.clone(), ns),
            Api::<Deployment>::namespaced(c.clone(), ns),
            Api::<StatefulSet>::namespaced(c.clone(), ns),
            Api::<ConfigMap>::namespaced(c.clone(), ns),
            Api::<Service>::namespaced(c, ns),
        ),
        None => (
            Api::all(c.clone()),
            Api::all(c.clone()),
            Api::all(c.clone()),
            Api::all(c.clone()),
            Api::all(c),
        ),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=weir-operator");
    Controller::new(jobs, watcher::Config::default())
        .owns(deployments, owned.clone())
        .owns(statefulsets, owned.clone())
        .owns(configmaps, owned.clone())
        .owns(services, owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("reconcile: {e}");
            }
        })
        .await;
}

fn error_policy(job: Arc<StreamJob>, e: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!("reconciling {}: {e}", job.name_any());
    // Every error also becomes an Event on the StreamJob, where `kubectl describe` shows it.
    let (note, reference) = (e.to_string(), job.object_ref(&()));
    tokio::spawn(async move {
        let _ = ctx
            .events
            .publish(&reference, true, "ReconcileFailed", "Reconcile", &note)
            .await;
    });
    Action::requeue(Duration::from_secs(5))
}

/// One reconciliation of one StreamJob, measured.
pub async fn reconcile(job: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(job, ctx.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    match &result {
        Ok(_) => ctx.metrics.reconciled(seconds, Ok(())),
        Err(e) => ctx.metrics.reconciled(seconds, Err(e.reason())),
    }
    result
}

impl Error {
    /// A short label for the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Build(_) => "Build",
            Error::Recorded(_) => "Recorded",
            Error::Storage { .. } => "Storage",
            Error::Api { .. } => "Api",
        }
    }
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn parse_ms(t: &str) -> Option<i64> {
    t.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

fn ms(d: weir_api::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The operator's view of the spec.
fn want_of(spec: &StreamJobSpec) -> Want {
    Want {
        hash: spec.deployment_view().spec_hash(),
        full_hash: spec.spec_hash(),
        running: spec.job.state == weir_api::JobTargetState::Running,
        mode: spec.job.upgrade_mode,
        savepoint_timeout_ms: ms(spec.upgrade.savepoint_timeout),
        savepoint_attempts: spec.upgrade.savepoint_attempts.max(1),
        fallback_max_age_ms: spec.upgrade.fallback_max_checkpoint_age.map(ms),
        rollback: spec.upgrade.rollback.enabled && spec.checkpointing.is_some(),
        readiness_timeout_ms: ms(spec.upgrade.rollback.readiness_timeout),
        savepoint_nonce: spec.job.savepoint_trigger_nonce,
        checkpoint_nonce: spec.job.checkpoint_trigger_nonce,
        savepoint_interval_ms: spec.savepoints.interval.map(ms),
        deletion: spec.deletion_policy,
    }
}

fn restore_of(r: &RestoreSource) -> Restore {
    match (r.kind, &r.path) {
        (RestoreKind::Savepoint, Some(p)) => Restore::Savepoint(p.clone()),
        (RestoreKind::None, _) => Restore::Fresh,
        _ => Restore::Latest,
    }
}

fn deployed_of(r: &ReconciliationStatus) -> Deployed {
    Deployed {
        hash: r.spec_hash.clone(),
        running: r.running,
        deployed_at_ms: parse_ms(&r.deployed_at).unwrap_or(0),
        upgraded_from: r.upgraded_from.clone(),
        stable_spec: r.stable_spec.is_some(),
        rollback_savepoint: r.rollback_savepoint.clone(),
        rolled_back: r.rolled_back_spec_hash.clone(),
        gave_up_on: r.gave_up_on.clone(),
        blocked: r.blocked.clone(),
        restore: restore_of(&r.restore),
    }
}

/// The reconciliation record of a new deployment made by `plan`.
fn reconciliation(
    job: &StreamJob,
    old: Option<&ReconciliationStatus>,
    plan: &Plan,
    now: i64,
) -> Result<ReconciliationStatus, Error> {
    let spec: StreamJobSpec = match plan.spec {
        Spec::Wanted => job.spec.clone(),
        Spec::Deployed => deployed_spec(old, job)?,
        Spec::Stable => old
            .and_then(|r| r.stable_spec.as_deref())
            .map(serde_json::from_str)
            .transpose()
            .map_err(Error::Recorded)?
            .unwrap_or_else(|| job.spec.clone()),
    };
    let (restore, floor) = match &plan.restore {
        Restore::Latest => (
            RestoreSource {
                kind: RestoreKind::Latest,
                path: None,
            },
            None,
        ),
        // Snapshots the storage holds from before this deployment (a bad run's checkpoints
        // after a rollback, the old job's before a stateless start) are not restored.
        Restore::Savepoint(p) => (
            RestoreSource {
                kind: RestoreKind::Savepoint,
                path: Some(p.clone()),
            },
            Some(crate::report::rfc3339(now)),
        ),
        Restore::Fresh => (
            RestoreSource {
                kind: RestoreKind::None,
                path: None,
            },
            Some(crate::report::rfc3339(now)),
        ),
    };
    let spec_json = serde_json::to_string(&spec).map_err(Error::Recorded)?;
    let stable_spec = old.and_then(|r| r.stable_spec.clone());
    Ok(ReconciliationStatus {
        spec_hash: spec.deployment_view().spec_hash(),
        spec: spec_json,
        running: plan.running,
        restore,
        // A deployment that stops the pods keeps the floor of the run it stops: its resume
        // restores the suspension's savepoint with a floor of its own.
        checkpoints_after: floor,
        deployed_at: crate::report::rfc3339(now),
        upgraded_from: plan.upgraded_from.clone(),
        stable_spec,
        rollback_savepoint: plan.rollback_savepoint.clone(),
        rolled_back_spec_hash: plan.rolled_back.clone(),
        gave_up_on: None,
        blocked: None,
    })
}

fn deployed_spec(
    r: Option<&ReconciliationStatus>,
    job: &StreamJob,
) -> Result<StreamJobSpec, Error> {
    match r {
        Some(r) => serde_json::from_str(&r.spec).map_err(Error::Recorded),
        None => Ok(job.spec.clone()),
    }
}

/// The StreamJob as deployed by `r`: its recorded spec, running or not, restoring what `r`
/// says.
fn deployed_job(job: &StreamJob, r: &ReconciliationStatus) -> Result<(StreamJob, Extra), Error> {
    let mut spec = deployed_spec(Some(r), job)?;
    spec.job.state = if r.running {
        weir_api::JobTargetState::Running
    } else {
        weir_api::JobTargetState::Suspended
    };
    match r.restore.kind {
        RestoreKind::Savepoint => spec.job.initial_savepoint_path = r.restore.path.clone(),
        RestoreKind::None => spec.job.initial_savepoint_path = None,
        RestoreKind::Latest => {}
    }
    let mut deployed = job.clone();
    deployed.spec = spec;
    Ok((
        deployed,
        Extra {
            checkpoints_after: r.checkpoints_after.clone(),
        },
    ))
}

async fn apply_recorded(
    ctx: &Context,
    names: &Names,
    job: &StreamJob,
    r: &ReconciliationStatus,
) -> Result<(), Error> {
    let (deployed, extra) = deployed_job(job, r)?;
    let d = resources::desired_with(&deployed, &extra)?;
    apply_all(&ctx.client, names, &d).await
}

async fn reconcile_inner(cached: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let names = Names::of(&cached)?;
    let jobs: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &names.namespace);
    // The watch cache may not have caught up with the status the previous reconciliation
    // wrote (a savepoint requested, a deployment made): acting on it would do that again — a
    // second savepoint, a second upgrade. So every reconciliation reads the StreamJob itself.
    let Some(job) = jobs
        .get_opt(&names.job)
        .await
        .map_err(api_error("reading the StreamJob"))?
    else {
        return Ok(Action::await_change());
    };
    let job = Arc::new(job);
    let deleting = job.metadata.deletion_timestamp.is_some();
    if !deleting && !job.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = job.finalizers().to_vec();
        finalizers.push(FINALIZER.into());
        set_finalizers(&jobs, &job, finalizers, "adding the finalizer").await?;
        // The patch is an event of its own; the next reconciliation does the rest.
        return Ok(Action::await_change());
    }
    let now = now_ms();
    let old = job.status.clone().unwrap_or_default();
    let recorded = old.reconciliation.as_ref();

    // Observe.
    let invalid: Vec<String> = match job.spec.validate() {
        Ok(()) => Vec::new(),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    };
    // Objects are only looked for when they should exist.
    let missing = if invalid.is_empty() && !deleting && recorded.is_some() {
        missing(&ctx.client, &names).await?
    } else {
        Vec::new()
    };
    let jobmanager_ready = Api::<Deployment>::namespaced(ctx.client.clone(), &names.namespace)
        .get_opt(&names.jobmanager())
        .await
        .map_err(api_error("reading the JobManager Deployment"))?
        .and_then(|d| d.status?.ready_replicas)
        .unwrap_or(0)
        > 0;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &names.namespace)
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/managed-by=weir-operator",
            names.job
        )))
        .await
        .map_err(api_error("listing the StreamJob's pods"))?
        .items;
    let rest = JobManagerRest::new(&names, &ctx, &pods);
    let report = if jobmanager_ready {
        rest.job_report().await
    } else {
        None
    };
    let deployed = recorded.map(deployed_of);
    let stable = match (&report, &deployed) {
        (Some(r), Some(d)) => r.stable(
            u64::from(job.spec.upgrade.rollback.stable_checkpoints),
            d.deployed_at_ms,
        ),
        _ => false,
    };
    let pending = old.pending_savepoint.as_ref().map(|p| Pending {
        purpose: p.trigger_type,
        triggered_ms: parse_ms(&p.triggered_at).unwrap_or(0),
        attempt: p.attempt,
        nonce: p.trigger_nonce,
    });
    let poll = match &old.pending_savepoint {
        None => Poll::Nothing,
        Some(p) if p.request_id.is_empty() => Poll::Failed(
            p.last_failure
                .clone()
                .unwrap_or_else(|| "the JobManager did not accept the request".into()),
        ),
        Some(_) if !jobmanager_ready => Poll::Unreachable,
        Some(p) => rest.poll_savepoint(&p.request_id).await,
    };
    // A request whose answer was lost (the JobManager was slow to reply) may still have been
    // carried out: a savepoint the JobManager completed since the request is the one asked for.
    let poll = match (&poll, &old.pending_savepoint, &report) {
        (Poll::Failed(_) | Poll::Unreachable, Some(p), Some(r)) => r
            .checkpoints
            .as_ref()
            .and_then(|c| c.latest_savepoint.as_ref())
            .filter(|sp| parse_ms(&p.triggered_at).is_some_and(|t| sp.trigger_time_ms + 1_000 >= t))
            .and_then(|sp| sp.external_path.clone())
            .map_or(poll, |path| Poll::Completed { path }),
        _ => poll,
    };
    let previous = old.lifecycle_state;
    let observed = Observed {
        now_ms: now,
        deleting,
        invalid,
        missing: missing.clone(),
        jobmanager_ready,
        pods: !pods.is_empty(),
        job: report.as_ref().map(|r| r.overview.state),
        stable,
        previous,
        want: want_of(&job.spec),
        deployed,
        pending,
        poll,
        latest_checkpoint_ms: old
            .last_completed_checkpoint
            .as_ref()
            .and_then(|c| parse_ms(&c.time)),
        last_savepoint_ms: old
            .savepoint_history
            .iter()
            .filter_map(|s| parse_ms(&s.time))
            .max(),
        handled_savepoint_nonce: old.last_savepoint_trigger_nonce,
        handled_checkpoint_nonce: old.last_checkpoint_trigger_nonce,
    };

    // Decide.
    let decision = decide(&observed);
    tracing::debug!(
        "{}/{}: {:?} → {:?} ({:?})",
        names.namespace,
        names.job,
        observed.previous,
        decision.step,
        decision.lifecycle
    );

    // Apply.
    let mut status = old.clone();
    match &decision.step {
        Step::Hold => {}
        Step::Keep => {
            if let Some(r) = recorded {
                apply_recorded(&ctx, &names, &job, r).await?;
            }
        }
        Step::Deploy(plan) => {
            let r = reconciliation(&job, recorded, plan, now)?;
            apply_recorded(&ctx, &names, &job, &r).await?;
            status.deployed_spec_hash = Some(r.spec_hash.clone());
            status.reconciliation = Some(r);
            // A new run counts its own restarts and checkpoints.
            status.restart_count = 0;
        }
        Step::Savepoint(t) => {
            if !deleting && let Some(r) = recorded {
                apply_recorded(&ctx, &names, &job, r).await?;
            }
            let (request_id, failure) = match rest.trigger_savepoint(t.stop).await {
                Ok(id) => (id, t.last_failure.clone()),
                Err(why) => (String::new(), Some(why)),
            };
            status.pending_savepoint = Some(PendingSavepoint {
                trigger_type: t.purpose,
                stop: t.stop,
                request_id,
                triggered_at: crate::report::rfc3339(now),
                attempt: t.attempt,
                trigger_nonce: t.nonce,
                last_failure: failure,
            });
        }
        Step::Checkpoint => {
            if let Some(r) = recorded {
                apply_recorded(&ctx, &names, &job, r).await?;
            }
            if let Err(why) = rest.post_json("/v1/job/checkpoints", "{}").await {
                publish(
                    &ctx,
                    &job,
                    true,
                    "CheckpointFailed",
                    format!("spec.job.checkpointTriggerNonce: {why}"),
                )
                .await;
            }
        }
        Step::Release { dispose } => {
            for n in &decision.notices {
                publish(&ctx, &job, n.warning, n.reason, n.message.clone()).await;
            }
            if *dispose && let Some(c) = &job.spec.checkpointing {
                let mut locations = vec![c.storage.clone()];
                locations.extend(old.savepoint_history.iter().map(|s| s.path.clone()));
                crate::storage::discard(&ctx.client, &names.namespace, c, locations)
                    .await
                    .map_err(|e| Error::Storage {
                        action: format!("deleting checkpoint storage {}", c.storage),
                        source: Box::new(e),
                    })?;
            }
            let finalizers: Vec<String> = job
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            set_finalizers(&jobs, &job, finalizers, "removing the finalizer").await?;
            ctx.metrics
                .set_state(&format!("{}/{}", names.namespace, names.job), None);
            return Ok(Action::await_change());
        }
    }

    // Update status.
    ctx.metrics.set_state(
        &format!("{}/{}", names.namespace, names.job),
        Some(decision.lifecycle),
    );
    update_status(&mut status, &job, &decision, report.as_ref(), now);
    let disposed = retention(&ctx, &names, &job, &mut status, now).await;
    if job.status.as_ref() != Some(&status) {
        // Fields that became empty are left out when serialised, and a merge patch keeps what
        // it leaves out: the patch nulls them explicitly (a pending savepoint must go away).
        let patch = merge_patch(
            &serde_json::to_value(job.status.as_ref()).unwrap_or_default(),
            &serde_json::to_value(&status).unwrap_or_default(),
        );
        jobs.patch_status(
            &names.job,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": patch })),
        )
        .await
        .map_err(api_error("updating the status"))?;
    }
    for n in &decision.notices {
        publish(&ctx, &job, n.warning, n.reason, n.message.clone()).await;
    }
    for d in disposed {
        publish(&ctx, &job, false, "SavepointDisposed", d).await;
    }
    if previous != Some(decision.lifecycle) || (decision.degraded.status && previous.is_none()) {
        let warning = decision.degraded.status;
        let (reason, note) = if warning {
            (
                decision.degraded.reason.to_string(),
                decision.degraded.message.clone(),
            )
        } else {
            (
                format!("{:?}", decision.lifecycle),
                decision.progressing.message.clone(),
            )
        };
        publish(&ctx, &job, warning, &reason, note).await;
    }
    // While something is under way the job is looked at more often.
    let busy = status.pending_savepoint.is_some()
        || matches!(
            decision.lifecycle,
            LifecycleState::Deploying | LifecycleState::Upgrading | LifecycleState::RollingBack
        );
    Ok(Action::requeue(if busy { BUSY_RESYNC } else { RESYNC }))
}

async fn publish(ctx: &Context, job: &StreamJob, warning: bool, reason: &str, note: String) {
    let reference = job.object_ref(&());
    if let Err(e) = ctx
        .events
        .publish(&reference, warning, reason, "Reconcile", &note)
        .await
    {
        tracing::warn!("publishing an event for {}: {e}", job.name_any());
    }
}

/// Disposes of savepoints beyond `spec.savepoints.maxCount` or older than `maxAge`, oldest
/// first — never the one the deployment restores, nor the one a rollback would. Returns what
/// was disposed of, for events; a savepoint whose deletion failed stays in the history and is
/// tried again next time.
async fn retention(
    ctx: &Context,
    names: &Names,
    job: &StreamJob,
    status: &mut StreamJobStatus,
    now: i64,
) -> Vec<String> {
    let keep = &job.spec.savepoints;
    let protected: Vec<String> = status
        .reconciliation
        .iter()
        .flat_map(|r| [r.restore.path.clone(), r.rollback_savepoint.clone()])
        .flatten()
        .chain(status.last_savepoint.as_ref().map(|s| s.path.clone()))
        .chain(status.restored_from.clone())
        .collect();
    let history: Vec<(String, Option<i64>)> = status
        .savepoint_history
        .iter()
        .map(|s| (s.path.clone(), parse_ms(&s.time)))
        .collect();
    let dispose = crate::decide::to_dispose(
        &history,
        keep.max_count as usize,
        keep.max_age.map(ms),
        &protected,
        now,
    );
    if dispose.is_empty() {
        return Vec::new();
    }
    let mut done = Vec::new();
    for path in dispose {
        let deleted = match (&job.spec.checkpointing, keep.delete_disposed) {
            (Some(c), true) => {
                match crate::storage::discard(&ctx.client, &names.namespace, c, vec![path.clone()])
                    .await
                {
                    Ok(()) => Ok(format!(
                        "savepoint {path} disposed of and deleted from storage"
                    )),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(format!("savepoint {path} disposed of (its files are kept)")),
        };
        match deleted {
            Ok(m) => {
                status.savepoint_history.retain(|s| s.path != path);
                done.push(m);
            }
            Err(e) => {
                publish(
                    ctx,
                    job,
                    true,
                    "SavepointDisposalFailed",
                    format!("deleting savepoint {path}: {e}; tried again later"),
                )
                .await;
            }
        }
    }
    done
}

/// Replaces the StreamJob's finalizers, on the version that was read: a merge patch replaces
/// the whole list, so a concurrent change by someone else must make it fail (and be retried)
/// rather than be overwritten.
async fn set_finalizers(
    jobs: &Api<StreamJob>,
    job: &StreamJob,
    finalizers: Vec<String>,
    what: &str,
) -> Result<(), Error> {
    jobs.patch(
        &job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": job.resource_version(),
        }})),
    )
    .await
    .map_err(api_error(what))?;
    Ok(())
}

/// Kinds and names of the owned objects that do not exist.
async fn missing(client: &Client, names: &Names) -> Result<Vec<String>, Error> {
    async fn absent<K>(
        client: &Client,
        ns: &str,
        name: String,
        kind: &str,
    ) -> Result<Option<String>, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let found = Api::<K>::namespaced(client.clone(), ns)
            .get_opt(&name)
            .await
            .map_err(api_error(format!("reading {kind} {name}")))?;
        Ok(found.is_none().then(|| format!("{kind}/{name}")))
    }
    let ns = &names.namespace;
    let found = [
        absent::<ConfigMap>(client, ns, names.config(), "ConfigMap").await?,
        absent::<ServiceAccount>(client, ns, names.jobmanager(), "ServiceAccount").await?,
        absent::<Role>(client, ns, names.jobmanager(), "Role").await?,
        absent::<RoleBinding>(client, ns, names.jobmanager(), "RoleBinding").await?,
        absent::<Service>(client, ns, names.jobmanager(), "Service").await?,
        absent::<Service>(client, ns, names.jobmanager_rpc(), "Service").await?,
        absent::<Service>(client, ns, names.taskmanager(), "Service").await?,
        absent::<Deployment>(client, ns, names.jobmanager(), "Deployment").await?,
        absent::<StatefulSet>(client, ns, names.taskmanager(), "StatefulSet").await?,
    ];
    Ok(found.into_iter().flatten().collect())
}

async fn apply<K>(client: &Client, ns: &str, name: &str, object: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(api_error(format!("applying {} {name}", K::kind(&()))))?;
    Ok(())
}

/// Server-side applies every object; the RBAC first, so the pods' identity exists when they
/// start, the workloads last.
async fn apply_all(client: &Client, names: &Names, d: &Desired) -> Result<(), Error> {
    let ns = &names.namespace;
    apply(client, ns, &names.config(), &d.config).await?;
    apply(client, ns, &names.jobmanager(), &d.service_account).await?;
    apply(client, ns, &names.jobmanager(), &d.role).await?;
    apply(client, ns, &names.jobmanager(), &d.role_binding).await?;
    apply(client, ns, &names.jobmanager(), &d.jobmanager_service).await?;
    apply(
        client,
        ns,
        &names.jobmanager_rpc(),
        &d.jobmanager_rpc_service,
    )
    .await?;
    apply(client, ns, &names.taskmanager(), &d.taskmanager_service).await?;
    apply(client, ns, &names.jobmanager(), &d.jobmanager).await?;
    apply(client, ns, &names.taskmanager(), &d.taskmanager).await?;
    Ok(())
}

fn condition(
    type_: &str,
    c: &Cond,
    generation: Option<i64>,
    old: Option<&StreamJobStatus>,
) -> Condition {
    let status = if c.status { "True" } else { "False" };
    // The transition time changes only when the status does (Kubernetes convention).
    let last = old
        .and_then(|s| s.conditions.iter().find(|x| x.type_ == type_))
        .filter(|x| x.status == status)
        .map(|x| x.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: c.reason.to_string(),
        message: c.message.clone(),
        last_transition_time: last,
        observed_generation: generation,
    }
}

fn update_status(
    s: &mut StreamJobStatus,
    job: &StreamJob,
    d: &Decision,
    report: Option<&crate::report::JobReport>,
    now: i64,
) {
    let old = job.status.as_ref();
    let generation = job.metadata.generation;
    s.observed_generation = generation;
    s.lifecycle_state = Some(d.lifecycle);
    s.error = d.error.clone();
    if let Some((trigger_type, path)) = &d.completed {
        let nonce = s.pending_savepoint.as_ref().and_then(|p| p.trigger_nonce);
        let record = SavepointRecord {
            path: path.clone(),
            time: crate::report::rfc3339(now),
            trigger_type: *trigger_type,
            trigger_nonce: nonce,
        };
        match s.savepoint_history.iter_mut().find(|r| &r.path == path) {
            Some(r) => *r = record.clone(),
            None => s.savepoint_history.push(record.clone()),
        }
        s.last_savepoint = Some(record);
    }
    if d.clear_pending {
        s.pending_savepoint = None;
    }
    if let Some(n) = d.handled_savepoint_nonce {
        s.last_savepoint_trigger_nonce = Some(n);
    }
    if let Some(n) = d.handled_checkpoint_nonce {
        s.last_checkpoint_trigger_nonce = Some(n);
    }
    if let (Some((key, why)), Some(r)) = (&d.give_up, s.reconciliation.as_mut()) {
        r.gave_up_on = Some(key.clone());
        r.blocked = Some(why.clone());
    }
    if let Some(r) = report {
        crate::report::apply(s, r, now);
    }
    if d.lifecycle == LifecycleState::Stable
        && let Some(r) = s.reconciliation.as_mut()
    {
        // This run proved itself: it is what a later rollback returns to.
        r.stable_spec = Some(r.spec.clone());
        r.upgraded_from = None;
        r.rollback_savepoint = None;
        s.last_stable_spec_hash = Some(r.spec_hash.clone());
    }
    s.conditions = vec![
        condition("Ready", &d.ready, generation, old),
        condition("Progressing", &d.progressing, generation, old),
        condition("Degraded", &d.degraded, generation, old),
    ];
    if d.lifecycle == LifecycleState::Deleting {
        s.job_status = None;
    }
}

/// The leading JobManager's REST API, as one reconciliation reaches it.
struct JobManagerRest {
    /// `<job>-jobmanager.<namespace>.svc`, the `Host` of every request.
    host: String,
    /// Where to connect: the ready JobManager pod's IP (the pod the `<job>-jobmanager` Service
    /// routes to, reached without depending on cluster DNS), what [`Context::resolve`] says,
    /// else the Service name.
    address: String,
    /// How long a read may take.
    timeout: Duration,
}

impl JobManagerRest {
    /// The REST API of the job's JobManager, given the job's pods.
    fn new(names: &Names, ctx: &Context, pods: &[Pod]) -> Self {
        let host = format!("{}.{}.svc", names.jobmanager(), names.namespace);
        let ready_jobmanager = pods.iter().find_map(|p| {
            let component = p.labels().get("app.kubernetes.io/component");
            let status = p.status.as_ref()?;
            let ready = status
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (component.map(String::as_str) == Some("jobmanager")
                && ready
                && p.metadata.deletion_timestamp.is_none())
            .then(|| status.pod_ip.clone())
            .flatten()
        });
        let address = ctx
            .resolve
            .as_ref()
            .and_then(|r| r(&host))
            .or(ready_jobmanager)
            .unwrap_or_else(|| host.clone());
        Self {
            host,
            address,
            timeout: ctx.rest_timeout,
        }
    }

    /// One HTTP request: status code and body, or `None` when it does not answer in time.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = &self.host;
        let fetch = async {
            let mut s = tokio::net::TcpStream::connect((self.address.as_str(), REST_PORT))
                .await
                .ok()?;
            let body = body.unwrap_or("");
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await.ok()?;
            let text = String::from_utf8_lossy(&raw);
            let (head, body) = text.split_once("\r\n\r\n")?;
            let code = head.split_whitespace().nth(1)?.parse().ok()?;
            Some((code, body.to_string()))
        };
        tokio::time::timeout(timeout, fetch).await.ok().flatten()
    }

    /// `GET path`, decoded; `None` when it does not answer in time or not with 200.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Option<T> {
        match self.request("GET", path, None, self.timeout).await? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// `POST path` with a JSON body; the answer's body on 2xx, else why not.
    async fn post_json(&self, path: &str, body: &str) -> Result<String, String> {
        // A POST starts an operation: it gets longer than a read to be answered, since a
        // request that was carried out but not answered is only found again through the job's
        // history.
        let timeout = self.timeout.max(Duration::from_secs(10));
        match self.request("POST", path, Some(body), timeout).await {
            None => Err(format!("POST {path}: the JobManager did not answer")),
            Some((code, body)) if (200..300).contains(&code) => Ok(body),
            Some((code, body)) => Err(format!("POST {path}: HTTP {code}: {}", body.trim())),
        }
    }

    /// The job and its checkpoints.
    async fn job_report(&self) -> Option<crate::report::JobReport> {
        let overview = self.get_json("/v1/job").await?;
        let checkpoints = self.get_json("/v1/job/checkpoints").await;
        Some(crate::report::JobReport {
            overview,
            checkpoints,
        })
    }

    /// Asks for a savepoint (`stop`: then stop the job); its request id, or why not.
    async fn trigger_savepoint(&self, stop: bool) -> Result<String, String> {
        let path = if stop {
            "/v1/job/stop"
        } else {
            "/v1/job/savepoints"
        };
        let body = self.post_json(path, "{}").await?;
        serde_json::from_str::<TriggerSavepointResponse>(&body)
            .map(|r| r.request_id)
            .map_err(|e| format!("POST {path}: unexpected answer {body:?}: {e}"))
    }

    /// What the JobManager says about savepoint request `id`.
    async fn poll_savepoint(&self, id: &str) -> Poll {
        let path = format!("/v1/job/savepoints/{id}");
        match self.request("GET", &path, None, self.timeout).await {
            None => Poll::Unreachable,
            Some((200, body)) => match serde_json::from_str::<SavepointInfo>(&body) {
                Ok(i) => match (i.status, i.location) {
                    (OperationStatus::Completed, Some(path)) => Poll::Completed { path },
                    (OperationStatus::InProgress, _) => Poll::InProgress,
                    (_, _) => Poll::Failed(i.failure.unwrap_or_else(|| "failed".into())),
                },
                Err(e) => Poll::Failed(format!("GET {path}: unexpected answer: {e}")),
            },
            // A JobManager that does not know the request (it was replaced) will never finish
            // it.
            Some((404, _)) => Poll::Failed(format!(
                "the JobManager does not know savepoint request {id} (it was restarted)"
            )),
            Some((code, body)) => Poll::Failed(format!("GET {path}: HTTP {code}: {body}")),
        }
    }
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: objects key by key, with
/// `null` for every key `new` lacks; anything else replaced whole.
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) => {
                        patch.insert(k.clone(), merge_patch(ov, v));
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        (_, n) => n.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn a_merge_patch_nulls_what_is_gone_at_every_level() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "f": "x"});
        let new = json!({"a": 1, "b": {"c": 4}, "e": [2]});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"b": {"c": 4, "d": null}, "e": [2], "f": null})
        );
        assert_eq!(merge_patch(&json!(null), &new), new);
    }
}
