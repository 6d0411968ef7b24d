//! A stand-in for the kubelet and kube-proxy, for tests only: the test control plane has no
//! nodes, so pods would never run. [`Kubelet`] registers a Node, binds the pods of one namespace
//! to it, runs each pod's first container as a local process of a given binary (the container's
//! image is ignored: every image is "the `weir` binary"), and reflects the processes into pod
//! status — pod IP, readiness from the container's HTTP readiness probe, restarts. Deleting a pod
//! stops its process (SIGTERM, then SIGKILL after 5 s).
//!
//! Networking on one machine: every pod gets its own loopback address `127.2.x.y` (Linux routes
//! all of 127.0.0.0/8 to loopback), and binds to `0.0.0.0:` in container arguments are rewritten
//! to it, so pods can use the same ports. Every Service with a cluster IP gets a stable address
//! `127.1.x.y` with a TCP proxy per port to a ready pod behind it (what kube-proxy does), and
//! `<service>.<namespace>.svc` in environment values resolves to it ([`Kubelet::resolve`]).
//! Volumes: ConfigMaps are written as files, emptyDirs are directories; mount paths in arguments
//! and environment values are rewritten to them. Environment: values with `$(VAR)` expansion,
//! `fieldRef` (name, namespace, pod IP) and `secretKeyRef`.
//!
//! Images: a container whose image names `weir-operator` runs the `weir-operator` binary next to
//! the given one. Identity: a pod with a `serviceAccountName` gets a token of that ServiceAccount
//! (TokenRequest, as the kubelet projects one) in a kubeconfig of its own (`KUBECONFIG`), so it
//! acts with exactly the rights its RBAC grants; other pods inherit the test's kubeconfig.

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Node pods are bound to.
pub const NODE: &str = "weir-test-node";

struct Proc {
    child: Option<Child>,
    ip: String,
    restarts: i32,
    ready: bool,
    exited_at: Option<Instant>,
    started: String,
    deleting_since: Option<Instant>,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Proc>,
    /// Service name → (stable address, proxied ports).
    services: HashMap<String, (String, Vec<u16>)>,
}

/// Addresses handed out in this process: every stand-in (tests run in parallel) gets its own.
static POD_ADDRESSES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static SERVICE_ADDRESSES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The next loopback address of a range: `127.<base + n / 250>.<n % 250 + 1>` — pods from
/// 127.2.0.1, Services from 127.1.0.1, clear of 127.0.0.1 where everything else listens.
fn next_address(counter: &std::sync::atomic::AtomicU32, base: u32) -> String {
    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "127.{}.{}.{}",
        base + n / 62_500,
        (n / 250) % 250,
        n % 250 + 1
    )
}

/// The running stand-in; stops (and kills every process) when dropped.
pub struct Kubelet {
    namespace: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Kubelet {
    /// Starts running the pods of `namespace` as processes of `binary`, with their files under
    /// `dir`.
    pub async fn start(client: Client, namespace: &str, binary: PathBuf, dir: PathBuf) -> Self {
        ensure_node(&client).await;
        let state = Arc::new(Mutex::new(State::default()));
        let (s, ns) = (state.clone(), namespace.to_string());
        let task = tokio::spawn(async move {
            let nodes: Api<Node> = Api::all(client.clone());
            let mut beat = Instant::now();
            loop {
                if let Err(e) = sync(&client, &ns, &binary, &dir, &s).await {
                    eprintln!("kubelet stand-in: {e}");
                }
                // Without heartbeats the node lifecycle controller declares the Node lost after
                // its grace period and marks every pod on it not ready.
                if beat.elapsed() > Duration::from_secs(10) {
                    heartbeat(&nodes).await;
                    beat = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            namespace: namespace.to_string(),
            state,
            task,
        }
    }

    /// The stable address of `<service>.<namespace>.svc` (or `<service>`), once the Service is
    /// known.
    pub fn resolve(&self, host: &str) -> Option<String> {
        let name = host
            .strip_suffix(&format!(".{}.svc", self.namespace))
            .unwrap_or(host);
        lock(&self.state).services.get(name).map(|(a, _)| a.clone())
    }

    /// A resolver for the operator's REST calls.
    pub fn resolver(&self) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
        let (state, ns) = (self.state.clone(), self.namespace.clone());
        move |host: &str| {
            let name = host.strip_suffix(&format!(".{ns}.svc")).unwrap_or(host);
            lock(&state).services.get(name).map(|(a, _)| a.clone())
        }
    }

    /// The process id of a running pod, to kill it from a test.
    pub fn pid(&self, pod: &str) -> Option<u32> {
        lock(&self.state)
            .pods
            .get(pod)
            .and_then(|p| p.child.as_ref().map(Child::id))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        for (_, p) in lock(&self.state).pods.iter_mut() {
            if let Some(c) = &mut p.child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

async fn ensure_node(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(NODE).await.ok().flatten().is_none() {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }))
        .unwrap_or_default();
        let _ = nodes.create(&PostParams::default(), &node).await;
    }
    heartbeat(&nodes).await;
}

async fn heartbeat(nodes: &Api<Node>) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let _ = nodes
        .patch_status(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "the test kubelet stand-in runs pods as local processes",
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}})),
        )
        .await;
}

fn matches(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.labels();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The container port a Service's target port (number or name) means on `pod`.
fn target_port(pod: &Pod, target: &Value, port: u16) -> u16 {
    match target {
        Value::Number(n) => n.as_u64().map_or(port, |n| n as u16),
        Value::String(name) => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.ports.as_ref())
            .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some(name)))
            .map_or(port, |p| p.container_port as u16),
        _ => port,
    }
}

/// Forwards connections to `listen` to a ready pod selected by `service` in `ns`.
async fn proxy(client: Client, ns: String, service: String, listen: String, port: u16) {
    let Ok(listener) = tokio::net::TcpListener::bind(&listen).await else {
        eprintln!("kubelet stand-in: cannot bind {listen} for Service {service}");
        return;
    };
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let (client, ns, service) = (client.clone(), ns.clone(), service.clone());
        tokio::spawn(async move {
            let svc: Option<Service> = Api::<Service>::namespaced(client.clone(), &ns)
                .get_opt(&service)
                .await
                .ok()
                .flatten();
            let Some(spec) = svc.and_then(|s| s.spec) else {
                return;
            };
            let selector = spec.selector.clone().unwrap_or_default();
            let target = spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .find(|p| p.port as u16 == port)
                .and_then(|p| p.target_port)
                .map_or(Value::Null, |t| {
                    serde_json::to_value(t).unwrap_or(Value::Null)
                });
            let pods = Api::<Pod>::namespaced(client, &ns)
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            let not_ready_too = spec.publish_not_ready_addresses == Some(true);
            let candidates: Vec<Pod> = pods
                .into_iter()
                .filter(|p| {
                    matches(&selector, p)
                        && p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().is_some_and(|s| {
                            s.pod_ip.is_some()
                                && (not_ready_too
                                    || s.conditions
                                        .as_deref()
                                        .unwrap_or_default()
                                        .iter()
                                        .any(|c| c.type_ == "Ready" && c.status == "True"))
                        })
                })
                .collect();
            if candidates.is_empty() {
                return;
            }
            // Round robin, so that a client retrying reaches every candidate.
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % candidates.len();
            let pod = candidates[i].clone();
            let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
                return;
            };
            let to = format!("{ip}:{}", target_port(&pod, &target, port));
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// What every step of the loop works with.
struct Host<'a> {
    client: &'a Client,
    ns: &'a str,
    binary: &'a Path,
    dir: &'a Path,
    state: &'a Arc<Mutex<State>>,
}

async fn sync(
    client: &Client,
    ns: &str,
    binary: &Path,
    dir: &Path,
    state: &Arc<Mutex<State>>,
) -> Result<(), kube::Error> {
    let host = Host {
        client,
        ns,
        binary,
        dir,
        state,
    };
    // Services: a stable address and a proxy per port.
    let services = Api::<Service>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await?;
    for svc in services.items {
        let name = svc.name_any();
        let Some(spec) = &svc.spec else { continue };
        if spec.cluster_ip.as_deref() == Some("None") {
            continue;
        }
        let ports: Vec<u16> = spec
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|p| p.port as u16)
            .collect();
        let mut g = lock(state);
        if g.services.contains_key(&name) {
            continue;
        }
        let address = next_address(&SERVICE_ADDRESSES, 1);
        g.services
            .insert(name.clone(), (address.clone(), ports.clone()));
        drop(g);
        for port in ports {
            tokio::spawn(proxy(
                client.clone(),
                ns.to_string(),
                name.clone(),
                format!("{address}:{port}"),
                port,
            ));
        }
    }

    let pods_api = Api::<Pod>::namespaced(client.clone(), ns);
    let pods = pods_api.list(&Default::default()).await?;
    let names: Vec<String> = pods.items.iter().map(ResourceExt::name_any).collect();
    // Processes of pods that are gone.
    {
        let mut g = lock(state);
        let gone: Vec<String> = g
            .pods
            .keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(mut p) = g.pods.remove(&k)
                && let Some(c) = &mut p.child
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    for pod in pods.items {
        let name = pod.name_any();
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            stop(&pods_api, state, &name).await;
            continue;
        }
        match bound.as_deref() {
            None => {
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
                });
                let _ = pods_api
                    .create_subresource::<Value, Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await;
            }
            Some(NODE) => {
                let running = lock(state).pods.contains_key(&name);
                if !running {
                    start(&host, &pod).await?;
                }
                supervise(&host, &pod).await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn stop(pods: &Api<Pod>, state: &Arc<Mutex<State>>, name: &str) {
    let done = {
        let mut g = lock(state);
        match g.pods.get_mut(name) {
            None => true,
            Some(p) => {
                let since = *p.deleting_since.get_or_insert_with(Instant::now);
                match &mut p.child {
                    None => true,
                    Some(c) => {
                        if matches!(c.try_wait(), Ok(Some(_))) {
                            true
                        } else {
                            let sig = if since.elapsed() > Duration::from_secs(5) {
                                "-KILL"
                            } else {
                                "-TERM"
                            };
                            let _ = Command::new("kill")
                                .args([sig, &c.id().to_string()])
                                .status();
                            false
                        }
                    }
                }
            }
        }
    };
    if done {
        lock(state).pods.remove(name);
        let _ = pods
            .delete(name, &DeleteParams::default().grace_period(0))
            .await;
    }
}

/// Environment, expanded arguments and the local files of a pod's first container.
async fn prepare(
    h: &Host<'_>,
    pod: &Pod,
    ip: &str,
) -> Result<(Vec<(String, String)>, Vec<String>), kube::Error> {
    let (client, ns, dir, state) = (h.client, h.ns, h.dir, h.state);
    let name = pod.name_any();
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(container) = spec.containers.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let root = dir.join(&name);
    let _ = std::fs::create_dir_all(&root);
    // Volumes → local directories.
    let mut volumes: HashMap<String, PathBuf> = HashMap::new();
    for v in spec.volumes.as_deref().unwrap_or_default() {
        let path = root.join(&v.name);
        let _ = std::fs::create_dir_all(&path);
        if let Some(cm) = &v.config_map {
            let data = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(&cm.name)
                .await?
                .data
                .unwrap_or_default();
            for (file, content) in data {
                let _ = std::fs::write(path.join(file), content);
            }
        }
        volumes.insert(v.name.clone(), path);
    }
    let mounts: Vec<(String, String)> = container
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            Some((
                m.mount_path.clone(),
                volumes.get(&m.name)?.display().to_string(),
            ))
        })
        .collect();
    let services: Vec<(String, String)> = lock(state)
        .services
        .iter()
        .map(|(n, (a, _))| (format!("{n}.{ns}.svc"), a.clone()))
        .collect();
    let localize = |s: &str| {
        let mut s = s.to_string();
        for (host, address) in &services {
            s = s.replace(host, address);
        }
        for (mount, local) in &mounts {
            s = s.replace(mount, local);
        }
        s
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container.env.as_deref().unwrap_or_default() {
        let value = if let Some(v) = &e.value {
            v.clone()
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.name" => name.clone(),
                    "metadata.namespace" => ns.to_string(),
                    "status.podIP" => ip.to_string(),
                    _ => String::new(),
                }
            } else if let Some(s) = &from.secret_key_ref {
                Api::<Secret>::namespaced(client.clone(), ns)
                    .get(&s.name)
                    .await?
                    .data
                    .unwrap_or_default()
                    .get(&s.key)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.push((
            e.name.clone(),
            localize(&value).replace("0.0.0.0:", &format!("{ip}:")),
        ));
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        let path = root.join("kubeconfig");
        let _ = std::fs::write(&path, service_account_kubeconfig(client, ns, sa).await?);
        env.push(("KUBECONFIG".into(), path.display().to_string()));
    }
    let expand = |s: &str| {
        let mut s = s.to_string();
        for (k, v) in &env {
            s = s.replace(&format!("$({k})"), v);
        }
        localize(&s).replace("0.0.0.0:", &format!("{ip}:"))
    };
    let args: Vec<String> = container
        .args
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|a| expand(a))
        .collect();
    Ok((env, args))
}

/// A kubeconfig for the test server that authenticates as ServiceAccount `sa` with a fresh
/// token (an hour: longer than any test).
async fn service_account_kubeconfig(
    client: &Client,
    ns: &str,
    sa: &str,
) -> Result<String, kube::Error> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(
            sa,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: Vec::new(),
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?
        .status
        .map(|s| s.token)
        .unwrap_or_default();
    // The server and its CA come from the test's own kubeconfig.
    let cluster = kube::config::Kubeconfig::read_from(crate::kubeconfig_path())
        .ok()
        .and_then(|k| k.clusters.into_iter().next())
        .and_then(|c| serde_json::to_value(c.cluster).ok())
        .unwrap_or_default();
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": sa, "namespace": ns}}],
        "current-context": "test",
    });
    Ok(serde_json::to_string_pretty(&config).unwrap_or_default())
}

async fn start(h: &Host<'_>, pod: &Pod) -> Result<(), kube::Error> {
    let state = h.state;
    let ip = next_address(&POD_ADDRESSES, 2);
    let started = k8s_openapi::jiff::Timestamp::now().to_string();
    let child = launch(h, pod, &ip).await?;
    lock(state).pods.insert(
        pod.name_any(),
        Proc {
            child,
            ip,
            restarts: 0,
            ready: false,
            exited_at: None,
            started,
            deleting_since: None,
        },
    );
    Ok(())
}

async fn launch(h: &Host<'_>, pod: &Pod, ip: &str) -> Result<Option<Child>, kube::Error> {
    let (env, args) = prepare(h, pod, ip).await?;
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let operator = h.binary.with_file_name("weir-operator");
    let (binary, dir) = if image.contains("weir-operator") {
        (operator.as_path(), h.dir)
    } else {
        (h.binary, h.dir)
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{}.log", pod.name_any())))
        .ok();
    let mut cmd = Command::new(binary);
    cmd.args(&args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.map_or_else(Stdio::null, Stdio::from));
    Ok(cmd.spawn().ok())
}

/// Restarts exited processes, probes readiness and writes pod status.
async fn supervise(h: &Host<'_>, pod: &Pod) -> Result<(), kube::Error> {
    let (client, ns, state) = (h.client, h.ns, h.state);
    let name = pod.name_any();
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first().cloned());
    let (exited, ip, ready_before) = {
        let mut g = lock(state);
        let Some(p) = g.pods.get_mut(&name) else {
            return Ok(());
        };
        let exited = match &mut p.child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        };
        if exited && p.exited_at.is_none() {
            p.exited_at = Some(Instant::now());
            p.ready = false;
        }
        (exited, p.ip.clone(), p.ready)
    };
    if exited {
        let due = lock(state)
            .pods
            .get(&name)
            .and_then(|p| p.exited_at)
            .is_some_and(|t| t.elapsed() > Duration::from_secs(1));
        if due {
            let child = launch(h, pod, &ip).await?;
            if let Some(p) = lock(state).pods.get_mut(&name) {
                p.child = child;
                p.restarts += 1;
                p.exited_at = None;
            }
        }
    }
    // Readiness: the container's HTTP probe, on the pod's address.
    let probe = container.as_ref().and_then(|c| c.readiness_probe.clone());
    let ready = match probe.and_then(|p| p.http_get) {
        Some(h) if !exited => {
            let port = match &h.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => *n as u16,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => container
                    .as_ref()
                    .and_then(|c| c.ports.as_ref())
                    .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some(s)))
                    .map_or(0, |p| p.container_port as u16),
            };
            http_ok(&format!("{ip}:{port}"), h.path.as_deref().unwrap_or("/")).await
        }
        Some(_) => false,
        None => !exited,
    };
    let (restarts, started) = {
        let mut g = lock(state);
        let Some(p) = g.pods.get_mut(&name) else {
            return Ok(());
        };
        p.ready = ready;
        (p.restarts, p.started.clone())
    };
    let has_ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(ip.as_str());
    let restarts_shown = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.restart_count);
    if has_ip && ready == ready_before && restarts_shown == Some(restarts) {
        return Ok(());
    }
    let flag = if ready { "True" } else { "False" };
    let cname = container.map(|c| c.name).unwrap_or_default();
    let status = json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": flag},
            {"type": "Ready", "status": flag},
        ],
        "containerStatuses": [{
            "name": cname, "ready": ready, "restartCount": restarts, "started": !exited,
            "image": "weir", "imageID": "",
            "state": if exited { json!({"waiting": {"reason": "CrashLoopBackOff"}}) }
                     else { json!({"running": {"startedAt": started}}) },
        }],
    }});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

async fn http_ok(address: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(address).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf[..n]);
        Some(head.starts_with("HTTP/1.1 2"))
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
