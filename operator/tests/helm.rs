//! The operator as users install it: `charts/weir-operator` rendered by Helm (Helm's Go SDK,
//! the one `.ci/helm.sh` installs) and applied to the real kube-apiserver; the kubelet
//! stand-in of `weir-kube-test` (test-only: the control plane has no nodes) runs its pod as the
//! `weir-operator` binary with a token of the chart's ServiceAccount, so it acts with exactly the
//! rights the chart's RBAC grants. A StreamJob applied in the watched namespace runs, is upgraded
//! through a savepoint, and is deleted — all by that operator pod.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{running, status_until, weir_binary};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use kube::{Client, CustomResourceExt};
use std::path::PathBuf;
use std::time::Duration;
use weir_api::StreamJob;
use weir_kube_test::TestNamespace;
use weir_kube_test::kubelet::Kubelet;

/// Renders the chart with `values` through Helm's Go SDK in the CI's Python environment.
fn render(release: &str, namespace: &str, values: &serde_json::Value) -> Vec<serde_json::Value> {
    let cache = std::env::var("WEIR_CI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/weir-ci"));
    let python = cache.join("helm/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: install Helm's SDK with `bash .ci/helm.sh`",
        python.display()
    );
    let script = r#"
import json, sys, yaml
import helm_python as helm
chart = helm.Chart.load(sys.argv[1])
out = chart.render(json.loads(sys.argv[2]), name=sys.argv[3], namespace=sys.argv[4], is_install=True)
docs = [d for p, t in sorted(out.items()) if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
print(json.dumps(docs))
"#;
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/weir-operator");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            script,
            chart.to_str().unwrap(),
            &values.to_string(),
            release,
            namespace,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Server-side applies one rendered object.
async fn apply(client: &Client, doc: &serde_json::Value) {
    let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            doc["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, doc["kind"].as_str().unwrap());
    let (resource, caps) = pinned_kind(client, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            doc["metadata"]["namespace"].as_str().unwrap(),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        doc["metadata"]["name"].as_str().unwrap(),
        &PatchParams::apply("helm-test").force(),
        &Patch::Apply(doc),
    )
    .await
    .unwrap();
}

/// Deletes the chart's cluster-scoped objects, which outlive the namespace.
struct ClusterObjects(Client, Vec<serde_json::Value>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        let (client, docs) = (self.0.clone(), std::mem::take(&mut self.1));
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Runtime::new() else {
                return;
            };
            rt.block_on(async {
                use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
                for d in docs {
                    let name = d["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    match d["kind"].as_str() {
                        Some("ClusterRole") => {
                            let _ = Api::<ClusterRole>::all(client.clone())
                                .delete(&name, &DeleteParams::default())
                                .await;
                        }
                        Some("ClusterRoleBinding") => {
                            let _ = Api::<ClusterRoleBinding>::all(client.clone())
                                .delete(&name, &DeleteParams::default())
                                .await;
                        }
                        _ => {}
                    }
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_helm_installed_operator_runs_and_upgrades_a_streamjob_with_its_own_rights() {
    let ns = TestNamespace::create("op-helm").await;
    let client = ns.client();
    weir_kube_test::install_crd(&client, StreamJob::crd()).await;
    let test_dir = common::TestDir::new("weir-op-helm", &ns);
    let dir = test_dir.0.clone();

    // The chart as a user installs it into this namespace, watching it.
    let release = format!("h{}", std::process::id());
    let docs = render(
        &release,
        ns.name(),
        &serde_json::json!({
            "image": {"repository": "example.org/weir-operator", "tag": "test"},
            "watchNamespaces": [ns.name()],
            "logLevel": "info",
        }),
    );
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"Deployment") && kinds.contains(&"ClusterRole"),
        "{kinds:?}"
    );
    let _cluster = ClusterObjects(
        client.clone(),
        docs.iter()
            .filter(|d| d["metadata"]["namespace"].is_null())
            .cloned()
            .collect(),
    );
    // RBAC and the ServiceAccount first, as Helm orders them.
    let order = |d: &serde_json::Value| match d["kind"].as_str() {
        Some("ServiceAccount") => 0,
        Some("ClusterRole" | "Role") => 1,
        Some("ClusterRoleBinding" | "RoleBinding") => 2,
        _ => 3,
    };
    let mut sorted = docs.clone();
    sorted.sort_by_key(order);
    for d in &sorted {
        apply(&client, d).await;
    }

    let kubelet = Kubelet::start(client.clone(), ns.name(), weir_binary(), dir.join("pods")).await;
    let job = common::orders_job(&dir, serde_json::json!({}));
    let jobs: Api<StreamJob> = ns.api();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let first = status_until(&jobs, "running", Duration::from_secs(180), |s| {
        running(s) && s.last_completed_checkpoint.is_some()
    })
    .await;

    // Upgraded through a savepoint by the operator pod.
    common::patch(&jobs, serde_json::json!({"image": "weir:v2"})).await;
    let old = first.job_status.as_ref().and_then(|j| j.job_id.clone());
    common::upgraded_from_savepoint(&jobs, "the upgrade", old, Duration::from_secs(180)).await;

    // Deleted with a final savepoint; the finalizer released by the operator pod.
    common::delete_until_gone(&jobs, Duration::from_secs(120)).await;
    drop(kubelet);
}
