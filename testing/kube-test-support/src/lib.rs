//! Test support for tests that run against the real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager) that `.ci/kube.sh` starts on 127.0.0.1: a
//! [`kube::Client`] built from its kubeconfig, and a namespace of its own for every test, deleted
//! when the test ends (also when it panics).
//!
//! A test that needs the server fails — it does not skip — when the server cannot be reached,
//! with a message saying how to start it ([`START_HINT`]).
//!
//! ```no_run
//! # async fn t() {
//! let ns = weir_kube_test::TestNamespace::create("leases").await;
//! let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> = ns.api();
//! // ... the namespace is deleted when `ns` is dropped
//! # }
//! ```

pub mod kubelet;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The variable naming the test server's kubeconfig (`.ci/kube.sh env` prints it).
pub const KUBECONFIG_VAR: &str = "WEIR_KUBECONFIG";

/// How to start the test server, quoted in every failure to reach it.
pub const START_HINT: &str = "start the test API server with `bash .ci/kube.sh start` (and \
     `eval \"$(bash .ci/kube.sh env)\"` when WEIR_KUBE_DIR is not the default)";

/// Installs (server-side applies) `crd` and waits until the API server serves it.
pub async fn install_crd(
    client: &Client,
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    if let Err(e) = crds
        .patch(
            &name,
            &kube::api::PatchParams::apply("weir-tests").force(),
            &kube::api::Patch::Apply(&crd),
        )
        .await
    {
        panic!("installing the CRD {name}: {e}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let established = crds
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.status?.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CRD {name} was not established"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The label every test namespace carries, so leftovers of killed test runs can be found:
/// `bash .ci/kube.sh kubectl delete ns -l weir.dev/test=true`.
pub const TEST_LABEL: (&str, &str) = ("weir.dev/test", "true");

/// How long a test waits for the server to answer before failing.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong reaching the test server.
#[derive(Debug, thiserror::Error)]
pub enum KubeTestError {
    /// The kubeconfig is missing or unreadable.
    #[error("cannot read the test kubeconfig {path}: {source}; {hint}", hint = START_HINT)]
    Kubeconfig {
        /// Where it was looked for.
        path: PathBuf,
        /// Why it could not be read.
        source: kube::config::KubeconfigError,
    },
    /// A client could not be built from the kubeconfig.
    #[error("cannot build a client from {path}: {source}")]
    Client {
        /// The kubeconfig.
        path: PathBuf,
        /// Why.
        source: kube::Error,
    },
    /// The server did not answer.
    #[error("the test Kubernetes API server in {path} is not reachable: {message}; {hint}", hint = START_HINT)]
    Unreachable {
        /// The kubeconfig naming the server.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// A test namespace could not be created.
    #[error("cannot create the test namespace {name}: {source}")]
    Namespace {
        /// Its name.
        name: String,
        /// Why.
        source: kube::Error,
    },
}

/// The kubeconfig of the test server: `$WEIR_KUBECONFIG`, else where `.ci/kube.sh` writes it by
/// default (`${TMPDIR:-/tmp}/weir-kube/kubeconfig`). `KUBECONFIG` is deliberately not read, so a
/// developer's own cluster is never used by a test.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os(KUBECONFIG_VAR) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::temp_dir().join("weir-kube").join("kubeconfig"),
    }
}

/// A client for the test server, checked to answer; the error says how to start the server.
pub async fn try_client() -> Result<Client, KubeTestError> {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|source| KubeTestError::Kubeconfig {
        path: path.clone(),
        source,
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| KubeTestError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    let client = Client::try_from(config).map_err(|source| KubeTestError::Client {
        path: path.clone(),
        source,
    })?;
    match tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(KubeTestError::Unreachable {
            path,
            message: e.to_string(),
        }),
        Err(_) => Err(KubeTestError::Unreachable {
            path,
            message: format!("no answer within {REACH_TIMEOUT:?}"),
        }),
    }
}

/// A client for the test server; panics (failing the test) with how to start it when it cannot
/// be reached.
pub async fn client() -> Client {
    match try_client().await {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

/// A namespace created for one test and deleted when dropped, so tests never see each other's
/// objects and may run in parallel.
pub struct TestNamespace {
    client: Client,
    name: String,
}

impl TestNamespace {
    /// Creates a uniquely named namespace starting with `weir-test-{prefix}`; panics (failing
    /// the test) when the server cannot be reached.
    pub async fn create(prefix: &str) -> Self {
        match Self::try_create(client().await, prefix).await {
            Ok(ns) => ns,
            Err(e) => panic!("{e}"),
        }
    }

    /// Creates a uniquely named namespace with `client`.
    pub async fn try_create(client: Client, prefix: &str) -> Result<Self, KubeTestError> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| KubeTestError::Namespace {
                name: name.clone(),
                source,
            })?;
        Ok(Self { client, name })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it was created with.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An API for namespaced objects of kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down (or be a current-thread
        // runtime blocked right here): delete from a thread with a runtime and a client of its
        // own. The API server then deletes the namespace's objects in the background.
        let name = std::mem::take(&mut self.name);
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = try_client().await.map_err(|e| e.to_string())?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("deleting namespace {name}: {e}"))
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test namespace left behind: {e}"),
            Err(_) => {
                eprintln!("warning: test namespace left behind: the deleting thread panicked")
            }
        }
    }
}

/// `weir-test-{prefix}-{pid}-{n}-{time}`, a valid namespace name (a DNS label of at most 63
/// characters) unique across processes and runs.
fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(20)
        .collect();
    let prefix = prefix.trim_matches('-');
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "weir-test-{prefix}-{:x}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_and_unique() {
        let a = unique_name("Lease_Election/With A Long Prefix That Goes On");
        let b = unique_name("Lease_Election/With A Long Prefix That Goes On");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.ends_with('-') && n.starts_with("weir-test-"), "{n}");
        }
    }
}
