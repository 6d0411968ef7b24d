//! The Kubernetes objects a StreamJob is deployed as — a pure function of the StreamJob, so it
//! is tested without a cluster:
//!
//! | object | name | why |
//! |---|---|---|
//! | ConfigMap | `<job>-config` | the manifest, mounted where both processes read it |
//! | ServiceAccount, Role, RoleBinding | `<job>-jobmanager` | the JobManager's Lease, nothing else |
//! | Service | `<job>-jobmanager` | REST (8081) of the *ready* JobManager: only the leader serves it |
//! | Service | `<job>-jobmanager-rpc` | RPC (6123) of the JobManagers, ready or not: only the leader listens |
//! | Service (headless) | `<job>-taskmanager` | stable names for the TaskManagers' data ports (6121) |
//! | Deployment | `<job>-jobmanager` | `spec.jobManager.replicas` JobManagers (2: leader and standby) |
//! | StatefulSet | `<job>-taskmanager` | `spec.taskManager.replicas` TaskManagers |
//!
//! Every object carries the StreamJob as its controlling owner, so Kubernetes' garbage collector
//! removes them with it, and the labels `app.kubernetes.io/{name,instance,component,managed-by}`.
//! Pod templates carry the hash of the spec they were made from (`weir.dev/spec-hash`), so a
//! spec change rolls the pods.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};
use weir_api::StreamJob;

/// Port of the JobManager's REST API and metrics.
pub const REST_PORT: u16 = 8081;
/// Port TaskManagers register on.
pub const RPC_PORT: u16 = 6123;
/// TaskManagers' data port.
pub const DATA_PORT: u16 = 6121;
/// TaskManagers' metrics port.
pub const METRICS_PORT: u16 = 9249;
/// Where the manifest is mounted.
pub const MANIFEST_DIR: &str = "/etc/weir";
/// The manifest's file name in the ConfigMap and the mount.
pub const MANIFEST_FILE: &str = "streamjob.yaml";
/// Annotation with the hash of the spec a pod template was made from.
pub const SPEC_HASH_ANNOTATION: &str = "weir.dev/spec-hash";

/// Why the objects of a StreamJob could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The StreamJob has no name or namespace (it was not read from the API server).
    #[error("the StreamJob has no {0}")]
    Missing(&'static str),
    /// A generated object did not match its Kubernetes type (a bug, or a podTemplate that is
    /// not a pod template).
    #[error("{object}: {source}")]
    Shape {
        /// Which object.
        object: String,
        /// The mismatch.
        source: serde_json::Error,
    },
    /// The manifest could not be serialised.
    #[error("serialising the manifest: {0}")]
    Manifest(#[source] serde_json::Error),
}

/// Everything a StreamJob is deployed as.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The manifest.
    pub config: ConfigMap,
    /// The JobManager's identity.
    pub service_account: ServiceAccount,
    /// The JobManager's rights.
    pub role: Role,
    /// Binds them.
    pub role_binding: RoleBinding,
    /// REST API of the leading (ready) JobManager.
    pub jobmanager_service: Service,
    /// RPC port of the JobManagers, ready or not.
    pub jobmanager_rpc_service: Service,
    /// The TaskManagers' stable names.
    pub taskmanager_service: Service,
    /// The JobManagers.
    pub jobmanager: Deployment,
    /// The TaskManagers.
    pub taskmanager: StatefulSet,
}

/// Names of a StreamJob's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The StreamJob.
    pub job: String,
    /// Its namespace.
    pub namespace: String,
}

impl Names {
    /// Names for `job`.
    pub fn of(job: &StreamJob) -> Result<Self, BuildError> {
        Ok(Self {
            job: job
                .metadata
                .name
                .clone()
                .ok_or(BuildError::Missing("metadata.name"))?,
            namespace: job
                .metadata
                .namespace
                .clone()
                .ok_or(BuildError::Missing("metadata.namespace"))?,
        })
    }
    /// The ConfigMap.
    pub fn config(&self) -> String {
        format!("{}-config", self.job)
    }
    /// ServiceAccount, Role, RoleBinding, Service and Deployment of the JobManagers.
    pub fn jobmanager(&self) -> String {
        format!("{}-jobmanager", self.job)
    }
    /// The Service of the JobManagers' RPC port.
    pub fn jobmanager_rpc(&self) -> String {
        format!("{}-jobmanager-rpc", self.job)
    }
    /// Service and StatefulSet of the TaskManagers.
    pub fn taskmanager(&self) -> String {
        format!("{}-taskmanager", self.job)
    }
    /// The JobManagers' leader-election Lease (named by `weir jobmanager`).
    pub fn lease(&self) -> String {
        format!("{}-jobmanager-leader", self.job)
    }
}

/// A stable hash of the spec (SHA-256 of its JSON, first 16 hex digits).
pub fn spec_hash(job: &StreamJob) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(&job.spec).unwrap_or_default();
    let digest = sha2::Sha256::digest(&bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn owner(job: &StreamJob, names: &Names) -> OwnerReference {
    OwnerReference {
        api_version: weir_api::API_VERSION.to_string(),
        kind: weir_api::KIND.to_string(),
        name: names.job.clone(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn labels(names: &Names, component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "weir",
        "app.kubernetes.io/instance": names.job,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "weir-operator",
    })
}

fn selector(names: &Names, component: &str) -> Value {
    json!({
        "app.kubernetes.io/instance": names.job,
        "app.kubernetes.io/component": component,
    })
}

fn typed<T: serde::de::DeserializeOwned>(object: &str, v: Value) -> Result<T, BuildError> {
    serde_json::from_value(v).map_err(|source| BuildError::Shape {
        object: object.to_string(),
        source,
    })
}

/// Merges `patch` into `base`: objects field by field, lists of named objects (containers,
/// volumes, env) by `name`, everything else replaced — enough of a strategic merge for a user's
/// `podTemplate` to add sidecars, volumes, node selectors or tolerations, or override a field of
/// the main container.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p))
            if p.iter().all(|v| v.get("name").is_some())
                && b.iter().all(|v| v.get("name").is_some()) =>
        {
            for item in p {
                match b.iter_mut().find(|x| x.get("name") == item.get("name")) {
                    Some(existing) => merge(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Environment shared by both processes: identity and the S3 credentials from their Secret.
fn common_env(job: &StreamJob) -> Vec<Value> {
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
    ];
    if let Some(secret) = job
        .spec
        .checkpointing
        .as_ref()
        .and_then(|c| c.s3.as_ref())
        .and_then(|s| s.credentials_secret.as_ref())
    {
        env.push(
            json!({"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
            "name": secret.name, "key": secret.access_key_id_key}}}),
        );
        env.push(
            json!({"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
            "name": secret.name, "key": secret.secret_access_key_key}}}),
        );
    }
    env
}

fn resources(r: &weir_api::ResourceSpec) -> Value {
    json!({
        "requests": {"cpu": r.cpu, "memory": r.memory},
        "limits": {"cpu": r.cpu, "memory": r.memory},
    })
}

/// What a deployment adds to its spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// `--checkpoints-after` for the JobManager (RFC 3339): snapshots in storage completed
    /// before it are not restored (a stateless start, a rollback to an older savepoint).
    pub checkpoints_after: Option<String>,
}

/// Builds every object of `job` (its spec as deployed).
pub fn desired(job: &StreamJob) -> Result<Desired, BuildError> {
    desired_with(job, &Extra::default())
}

/// Builds every object of `job`, with `extra`.
pub fn desired_with(job: &StreamJob, extra: &Extra) -> Result<Desired, BuildError> {
    let names = Names::of(job)?;
    let owner = serde_json::to_value(owner(job, &names)).map_err(BuildError::Manifest)?;
    let ns = names.namespace.clone();
    let meta = |name: String, component: &str| {
        json!({
            "name": name,
            "namespace": ns,
            "labels": labels(&names, component),
            "ownerReferences": [owner.clone()],
        })
    };
    let hash = match &extra.checkpoints_after {
        Some(t) => format!("{}-{}", spec_hash(job), t.replace(':', "")),
        None => spec_hash(job),
    };
    // A suspended job keeps every object but runs no pod; resuming starts the JobManager again,
    // which restores the latest checkpoint.
    let suspended = job.spec.job.state == weir_api::JobTargetState::Suspended;
    let (jm_replicas, tm_replicas) = if suspended {
        (0, 0)
    } else {
        (
            job.spec.job_manager.replicas,
            job.spec.task_manager.replicas,
        )
    };
    let manifest = serde_json::to_string_pretty(&json!({
        "apiVersion": weir_api::API_VERSION,
        "kind": weir_api::KIND,
        "metadata": {"name": names.job},
        "spec": job.spec,
    }))
    .map_err(BuildError::Manifest)?;
    let manifest_path = format!("{MANIFEST_DIR}/{MANIFEST_FILE}");

    let config = typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(names.config(), "config"),
            "data": {MANIFEST_FILE: manifest},
        }),
    )?;
    let service_account = typed(
        "ServiceAccount",
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": meta(names.jobmanager(), "jobmanager"),
        }),
    )?;
    // The JobManager reads and renews its Lease and nothing else: it writes no ConfigMap (the
    // latest-checkpoint pointer lives in checkpoint storage) and never lists pods.
    let role = typed(
        "Role",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": meta(names.jobmanager(), "jobmanager"),
            "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "resourceNames": [names.lease()], "verbs": ["get", "update"]},
                // `create` cannot be limited to a name: the API server checks it before the
                // object exists.
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "verbs": ["create"]},
            ],
        }),
    )?;
    let role_binding = typed(
        "RoleBinding",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": meta(names.jobmanager(), "jobmanager"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": names.jobmanager()},
            "subjects": [{"kind": "ServiceAccount", "name": names.jobmanager(),
                          "namespace": names.namespace}],
        }),
    )?;
    let jobmanager_service = typed(
        "Service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(names.jobmanager(), "jobmanager"),
            "spec": {
                "selector": selector(&names, "jobmanager"),
                "ports": [{"name": "rest", "port": REST_PORT, "targetPort": "rest"}],
            },
        }),
    )?;
    // TaskManagers must reach the JobManager before it is ready: it serves its REST API (and
    // so its readiness) only once the job is deployed, which needs their slots. A standby does
    // not listen on this port, so connections through this Service reach the leader.
    let jobmanager_rpc_service = typed(
        "Service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(names.jobmanager_rpc(), "jobmanager"),
            "spec": {
                "selector": selector(&names, "jobmanager"),
                "publishNotReadyAddresses": true,
                "ports": [{"name": "rpc", "port": RPC_PORT, "targetPort": "rpc"}],
            },
        }),
    )?;
    let taskmanager_service = typed(
        "Service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(names.taskmanager(), "taskmanager"),
            "spec": {
                "clusterIP": "None",
                "selector": selector(&names, "taskmanager"),
                "ports": [{"name": "data", "port": DATA_PORT, "targetPort": "data"}],
            },
        }),
    )?;

    let volume = json!({"name": "manifest", "configMap": {"name": names.config()}});
    let mount = json!({"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": true});
    let mut jm_args = vec![
        json!("jobmanager"),
        json!(manifest_path),
        json!("--rest-address"),
        json!(format!("0.0.0.0:{REST_PORT}")),
        json!("--rpc-address"),
        json!(format!("0.0.0.0:{RPC_PORT}")),
        json!("--quiet"),
        // A deleted pod leaves its job to the next JobManager instead of cancelling it, and a
        // job stopped with a savepoint is not started again by a container restart.
        json!("--supervised"),
    ];
    // Whenever a JobManager starts — a deleted pod, a node lost, a job that failed beyond its
    // restart strategy and exited — it restores the newest checkpoint in checkpoint storage,
    // read from the storage itself, so nothing depends on the previous pod.
    if job.spec.checkpointing.is_some() {
        jm_args.push(json!("--from-latest-checkpoint"));
        if let Some(t) = &extra.checkpoints_after {
            jm_args.push(json!("--checkpoints-after"));
            jm_args.push(json!(t));
        }
    }
    let mut jm_pod = json!({
        "metadata": {
            "labels": labels(&names, "jobmanager"),
            "annotations": {SPEC_HASH_ANNOTATION: hash},
        },
        "spec": {
            "serviceAccountName": names.jobmanager(),
            "volumes": [volume.clone()],
            "containers": [{
                "name": "jobmanager",
                "image": job.spec.image,
                "args": jm_args,
                "env": common_env(job),
                "ports": [
                    {"name": "rest", "containerPort": REST_PORT},
                    {"name": "rpc", "containerPort": RPC_PORT},
                ],
                "resources": resources(&job.spec.job_manager.resources),
                "volumeMounts": [mount.clone()],
                // Only the leader listens, so only the leader is ready and behind the Service;
                // no liveness probe on that port, or a standby would be restarted for waiting.
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "rest"},
                                   "periodSeconds": 2},
            }],
        },
    });
    if let Some(t) = &job.spec.job_manager.pod_template {
        merge(&mut jm_pod, t);
    }
    let jobmanager = typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(names.jobmanager(), "jobmanager"),
            "spec": {
                "replicas": jm_replicas,
                "selector": {"matchLabels": selector(&names, "jobmanager")},
                // Never two leaders' worth of pods at once beyond the configured replicas.
                "strategy": {"type": "Recreate"},
                "template": jm_pod,
            },
        }),
    )?;

    let mut env = common_env(job);
    env.push(json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}));
    env.push(json!({"name": "WEIR_JOBMANAGER_ADDRESS",
                    "value": format!("{}.{}.svc:{RPC_PORT}", names.jobmanager_rpc(), names.namespace)}));
    env.push(json!({"name": "WEIR_STATE_DIR", "value": "/var/lib/weir"}));
    let mut tm_pod = json!({
        "metadata": {
            "labels": labels(&names, "taskmanager"),
            "annotations": {SPEC_HASH_ANNOTATION: hash},
        },
        "spec": {
            "volumes": [volume, {"name": "state", "emptyDir": {}}],
            "containers": [{
                "name": "taskmanager",
                "image": job.spec.image,
                "args": ["taskmanager", manifest_path,
                         "--data-address", format!("0.0.0.0:{DATA_PORT}"),
                         "--advertise", format!("$(POD_IP):{DATA_PORT}"),
                         "--metrics-address", format!("0.0.0.0:{METRICS_PORT}"),
                         "--slots", job.spec.task_manager.slots.to_string()],
                "env": env,
                "ports": [
                    {"name": "data", "containerPort": DATA_PORT},
                    {"name": "metrics", "containerPort": METRICS_PORT},
                ],
                "resources": resources(&job.spec.task_manager.resources),
                "volumeMounts": [mount, {"name": "state", "mountPath": "/var/lib/weir"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"},
                                   "periodSeconds": 2},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"},
                                  "periodSeconds": 5, "failureThreshold": 6},
            }],
        },
    });
    if let Some(t) = &job.spec.task_manager.pod_template {
        merge(&mut tm_pod, t);
    }
    let taskmanager = typed(
        "StatefulSet",
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": meta(names.taskmanager(), "taskmanager"),
            "spec": {
                "replicas": tm_replicas,
                "serviceName": names.taskmanager(),
                // TaskManagers are interchangeable: start and replace them all at once.
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": selector(&names, "taskmanager")},
                "template": tm_pod,
            },
        }),
    )?;
    Ok(Desired {
        config,
        service_account,
        role,
        role_binding,
        jobmanager_service,
        jobmanager_rpc_service,
        taskmanager_service,
        jobmanager,
        taskmanager,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use weir_api::{CheckpointingSpec, S3CredentialsSecret, S3StorageSpec, StreamJobSpec};

    fn job() -> StreamJob {
        let mut spec = StreamJobSpec::for_program("orders");
        spec.job.parallelism = 4;
        spec.task_manager.replicas = 2;
        spec.task_manager.slots = 2;
        spec.job_manager.replicas = 2;
        let mut c = CheckpointingSpec::new("s3://bucket/orders");
        c.s3 = Some(S3StorageSpec {
            credentials_secret: Some(S3CredentialsSecret::new("s3-creds")),
            ..Default::default()
        });
        spec.checkpointing = Some(c);
        let mut j = StreamJob::new("orders", spec);
        j.metadata.namespace = Some("streams".into());
        j.metadata.uid = Some("uid-1".into());
        j
    }

    fn json<T: serde::Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn every_object_is_owned_by_the_streamjob_and_labelled() {
        let d = desired(&job()).unwrap();
        let objects = [
            json(&d.config),
            json(&d.service_account),
            json(&d.role),
            json(&d.role_binding),
            json(&d.jobmanager_service),
            json(&d.jobmanager_rpc_service),
            json(&d.taskmanager_service),
            json(&d.jobmanager),
            json(&d.taskmanager),
        ];
        for o in &objects {
            let refs = &o["metadata"]["ownerReferences"];
            assert_eq!(refs.as_array().unwrap().len(), 1, "{o}");
            assert_eq!(refs[0]["uid"], "uid-1");
            assert_eq!(refs[0]["controller"], true);
            assert_eq!(refs[0]["kind"], "StreamJob");
            assert_eq!(o["metadata"]["namespace"], "streams");
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "weir-operator"
            );
        }
    }

    #[test]
    fn the_jobmanager_may_only_use_its_lease() {
        let d = desired(&job()).unwrap();
        let rules = json(&d.role)["rules"].clone();
        assert_eq!(
            rules,
            serde_json::json!([
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "resourceNames": ["orders-jobmanager-leader"], "verbs": ["get", "update"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            ])
        );
        let rb = json(&d.role_binding);
        assert_eq!(rb["subjects"][0]["name"], "orders-jobmanager");
        assert_eq!(rb["roleRef"]["name"], "orders-jobmanager");
        assert_eq!(
            json(&d.jobmanager)["spec"]["template"]["spec"]["serviceAccountName"],
            "orders-jobmanager"
        );
    }

    #[test]
    fn pods_get_replicas_args_resources_probes_and_secrets() {
        let d = desired(&job()).unwrap();
        let jm = json(&d.jobmanager);
        assert_eq!(jm["spec"]["replicas"], 2);
        let c = &jm["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"][0], "jobmanager");
        assert_eq!(c["args"][1], "/etc/weir/streamjob.yaml");
        assert!(
            c["args"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("--from-latest-checkpoint"))
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(c.get("livenessProbe").is_none());
        assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
        let env = c["env"].as_array().unwrap();
        let secret = env
            .iter()
            .find(|e| e["name"] == "AWS_SECRET_ACCESS_KEY")
            .unwrap();
        assert_eq!(secret["valueFrom"]["secretKeyRef"]["name"], "s3-creds");
        let tm = json(&d.taskmanager);
        assert_eq!(tm["spec"]["replicas"], 2);
        let c = &tm["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(args.windows(2).any(|w| w == ["--slots", "2"]), "{args:?}");
        assert!(args.contains(&"$(POD_IP):6121"), "{args:?}");
        let env = c["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e["name"] == "WEIR_JOBMANAGER_ADDRESS"
            && e["value"] == "orders-jobmanager-rpc.streams.svc:6123"));
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        // The manifest the pods read is the StreamJob's.
        let cm = json(&d.config);
        let m: StreamJob =
            serde_json::from_str(cm["data"]["streamjob.yaml"].as_str().unwrap()).unwrap();
        assert_eq!(m.spec, job().spec);
    }

    #[test]
    fn a_spec_change_changes_the_pod_templates_hash() {
        let a = desired(&job()).unwrap();
        let mut changed = job();
        changed.spec.job.parallelism = 3;
        let b = desired(&changed).unwrap();
        let hash = |d: &Desired| {
            json(&d.taskmanager)["spec"]["template"]["metadata"]["annotations"]
                [SPEC_HASH_ANNOTATION]
                .clone()
        };
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), json(&spec_hash(&job())));
    }

    #[test]
    fn a_suspended_job_runs_no_pod() {
        let mut j = job();
        j.spec.job.state = weir_api::JobTargetState::Suspended;
        let d = desired(&j).unwrap();
        assert_eq!(json(&d.jobmanager)["spec"]["replicas"], 0);
        assert_eq!(json(&d.taskmanager)["spec"]["replicas"], 0);
    }

    #[test]
    fn the_pod_template_is_merged_in() {
        let mut j = job();
        j.spec.task_manager.pod_template = Some(serde_json::json!({
            "metadata": {"labels": {"team": "payments"}},
            "spec": {
                "nodeSelector": {"disk": "ssd"},
                "containers": [
                    {"name": "taskmanager", "imagePullPolicy": "Always"},
                    {"name": "sidecar", "image": "busybox"},
                ],
            },
        }));
        let tm = json(&desired(&j).unwrap().taskmanager);
        let t = &tm["spec"]["template"];
        assert_eq!(t["metadata"]["labels"]["team"], "payments");
        assert_eq!(
            t["metadata"]["labels"]["app.kubernetes.io/component"],
            "taskmanager"
        );
        assert_eq!(t["spec"]["nodeSelector"]["disk"], "ssd");
        let containers = t["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["imagePullPolicy"], "Always");
        assert_eq!(containers[0]["args"][0], "taskmanager");
        assert_eq!(containers[1]["name"], "sidecar");
    }

    #[test]
    fn a_streamjob_not_read_from_the_server_is_refused() {
        let mut j = job();
        j.metadata.namespace = None;
        assert!(matches!(
            desired(&j),
            Err(BuildError::Missing("metadata.namespace"))
        ));
    }
}
