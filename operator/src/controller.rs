//! The StreamJob controller: watches StreamJobs and the objects they own, and reconciles each as
//! a pipeline — observe (owned objects, JobManager readiness, the job's state from its REST
//! API) → [`decide`] (pure) → apply (server-side apply of [`resources::desired`], a finalizer)
//! → update status (lifecycle, conditions, events).

use crate::decide::{Action as Do, Cond, Decision, Observed, decide};
use crate::resources::{self, Desired, Names, REST_PORT};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use weir_api::{LifecycleState, StreamJob, StreamJobStatus};

/// The finalizer the operator puts on every StreamJob it deploys.
pub const FINALIZER: &str = "weir.dev/finalizer";
/// The field manager of the operator's server-side applies.
pub const FIELD_MANAGER: &str = "weir-operator";
/// How often a StreamJob is looked at again without any change (to follow the job's state).
pub const RESYNC: Duration = Duration::from_secs(10);

/// Why a reconciliation failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The objects could not be built.
    #[error("building the objects: {0}")]
    Build(#[from] resources::BuildError),
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
    pub recorder: Recorder,
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
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance,
            },
        );
        Self {
            client,
            recorder,
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
    let (ev, reference) = (
        Event {
            type_: EventType::Warning,
            reason: "ReconcileFailed".into(),
            note: Some(e.to_string()),
            action: "Reconcile".into(),
            secondary: None,
        },
        job.object_ref(&()),
    );
    tokio::spawn(async move {
        let _ = ctx.recorder.publish(&ev, &reference).await;
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
            Error::Api { .. } => "Api",
        }
    }
}

async fn reconcile_inner(job: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let names = Names::of(&job)?;
    let jobs: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let deleting = job.metadata.deletion_timestamp.is_some();
    if !deleting && !job.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = job.finalizers().to_vec();
        finalizers.push(FINALIZER.into());
        set_finalizers(&jobs, &job, finalizers, "adding the finalizer").await?;
        // The patch is an event of its own; the next reconciliation does the rest.
        return Ok(Action::await_change());
    }

    // Observe.
    let invalid: Vec<String> = match job.spec.validate() {
        Ok(()) => Vec::new(),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    };
    let desired = if invalid.is_empty() && !deleting {
        Some(resources::desired(&job)?)
    } else {
        None
    };
    let missing = match &desired {
        Some(_) => missing(&ctx.client, &names).await?,
        None => Vec::new(),
    };
    let jobmanager_ready = Api::<Deployment>::namespaced(ctx.client.clone(), &names.namespace)
        .get_opt(&names.jobmanager())
        .await
        .map_err(api_error("reading the JobManager Deployment"))?
        .and_then(|d| d.status?.ready_replicas)
        .unwrap_or(0)
        > 0;
    let report = if jobmanager_ready {
        job_report(&names, &ctx).await
    } else {
        None
    };
    let job_state = report.as_ref().map(|r| r.overview.state);
    let previous = job.status.as_ref().and_then(|s| s.lifecycle_state);
    let observed = Observed {
        deleting,
        invalid,
        missing: missing.clone(),
        jobmanager_ready,
        job: job_state,
        stable: report
            .as_ref()
            .is_some_and(crate::report::JobReport::stable),
        suspended: job.spec.job.state == weir_api::JobTargetState::Suspended,
        previous,
    };

    // Decide.
    let decision = decide(&observed);

    // Apply.
    match decision.action {
        Do::Apply => {
            if let Some(d) = &desired {
                apply_all(&ctx.client, &names, d).await?;
            }
        }
        Do::Hold => {}
        Do::Release => {
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
    let status = status(&job, &decision, report.as_ref(), desired.is_some());
    if job.status.as_ref() != Some(&status) {
        jobs.patch_status(
            &names.job,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(api_error("updating the status"))?;
    }
    if previous != Some(decision.lifecycle) || (decision.degraded.status && previous.is_none()) {
        let warning = decision.degraded.status;
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: if warning {
                decision.degraded.reason.to_string()
            } else {
                format!("{:?}", decision.lifecycle)
            },
            note: Some(if warning {
                decision.degraded.message.clone()
            } else {
                decision.progressing.message.clone()
            }),
            action: format!("{:?}", decision.action),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &job.object_ref(&())).await {
            tracing::warn!("publishing an event for {}: {e}", names.job);
        }
    }
    Ok(Action::requeue(RESYNC))
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

/// `GET path` on the leading JobManager's REST API (through its Service), decoded; `None`
/// when it does not answer in time.
async fn get_json<T: DeserializeOwned>(names: &Names, path: &str, ctx: &Context) -> Option<T> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = format!("{}.{}.svc", names.jobmanager(), names.namespace);
    let connect_to = ctx
        .resolve
        .as_ref()
        .and_then(|r| r(&host))
        .unwrap_or_else(|| host.clone());
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect((connect_to.as_str(), REST_PORT))
            .await
            .ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw);
        let (_, body) = text.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(ctx.rest_timeout, fetch)
        .await
        .ok()
        .flatten()
}

/// The job and its checkpoints, from the JobManager.
async fn job_report(names: &Names, ctx: &Context) -> Option<crate::report::JobReport> {
    let overview = get_json(names, "/v1/job", ctx).await?;
    let checkpoints = get_json(names, "/v1/job/checkpoints", ctx).await;
    Some(crate::report::JobReport {
        overview,
        checkpoints,
    })
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

fn status(
    job: &StreamJob,
    d: &Decision,
    report: Option<&crate::report::JobReport>,
    applied: bool,
) -> StreamJobStatus {
    let old = job.status.as_ref();
    let generation = job.metadata.generation;
    let mut s = old.cloned().unwrap_or_default();
    s.observed_generation = generation;
    s.lifecycle_state = Some(d.lifecycle);
    s.error = d.error.clone();
    if applied && d.action == Do::Apply {
        s.deployed_spec_hash = Some(resources::spec_hash(job));
    }
    if let Some(r) = report {
        crate::report::apply(
            &mut s,
            r,
            k8s_openapi::jiff::Timestamp::now().as_millisecond(),
        );
    }
    if d.lifecycle == LifecycleState::Stable {
        s.last_stable_spec_hash = s.deployed_spec_hash.clone();
    }
    s.conditions = vec![
        condition("Ready", &d.ready, generation, old),
        condition("Progressing", &d.progressing, generation, old),
        condition("Degraded", &d.degraded, generation, old),
    ];
    if d.lifecycle == LifecycleState::Deleting {
        s.job_status = None;
    }
    s
}
