//! The committed CRD must match the Rust types and be a structural schema
//! the Kubernetes API server accepts.

use kube::CustomResourceExt;
use serde_json::Value;
use weir_api::StreamJob;

const DRIFT: &str =
    "CRD drift: run `cargo run -p weir-api --bin weir-crdgen > crds/streamjob.yaml`";

#[test]
fn committed_crd_matches_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/streamjob.yaml");
    // A missing file is drift too; read at run time so it fails this test
    // with the fix instead of failing compilation.
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = weir_api::crd::crd_yaml().unwrap();
    assert!(generated == committed, "{DRIFT}");
}

#[test]
fn crd_generation_is_deterministic() {
    assert_eq!(
        weir_api::crd::crd_yaml().unwrap(),
        weir_api::crd::crd_yaml().unwrap()
    );
}

#[test]
fn crd_names_and_columns() {
    let crd = StreamJob::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("streamjobs.weir.dev"));
    assert_eq!(crd.spec.group, "weir.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["sj".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<(&str, &str, &str)> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Lifecycle", "string", ".status.lifecycleState"),
            ("Job State", "string", ".status.jobStatus.state"),
            (
                "Last Checkpoint",
                "date",
                ".status.lastCompletedCheckpoint.time"
            ),
            ("Restarts", "integer", ".status.restartCount"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
}

fn schema() -> Value {
    let crd = StreamJob::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).expect("the schema serializes")
}

/// Applies the structural-schema rules that derived schemas tend to break:
/// every node declares a type (or opts out with preserve-unknown-fields /
/// int-or-string), and `anyOf`/`oneOf`/`allOf` never replace a type.
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    let has_type = obj.contains_key("type");
    let opted_out = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    for key in ["anyOf", "oneOf", "allOf"] {
        if obj.contains_key(key) && !has_type {
            problems.push(format!("{path}: `{key}` without a sibling `type`"));
        }
    }
    if !has_type && !opted_out {
        problems.push(format!("{path}: no `type`"));
    }
    for key in ["$ref", "const", "definitions", "$defs"] {
        if obj.contains_key(key) {
            problems.push(format!("{path}: `{key}` is not allowed"));
        }
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (name, prop) in props {
            check_structural(prop, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), problems);
    }
    if let Some(additional @ Value::Object(_)) = obj.get("additionalProperties") {
        check_structural(additional, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn schema_is_structural() {
    let schema = schema();
    let mut problems = Vec::new();
    check_structural(&schema, "openAPIV3Schema", &mut problems);
    assert!(
        problems.is_empty(),
        "non-structural schema:\n{}",
        problems.join("\n")
    );
}

#[test]
fn schema_special_cases() {
    let schema = schema();
    let spec = &schema["properties"]["spec"]["properties"];
    for manager in ["jobManager", "taskManager"] {
        let template = &spec[manager]["properties"]["podTemplate"];
        assert_eq!(template["type"], "object");
        assert_eq!(template["x-kubernetes-preserve-unknown-fields"], true);
    }
    let restart = &spec["restartStrategy"];
    assert_eq!(restart["type"], "object");
    assert_eq!(restart["required"], serde_json::json!(["type"]));
    assert_eq!(
        restart["properties"]["type"]["enum"],
        serde_json::json!(["none", "fixedDelay", "exponentialDelay", "failureRate"])
    );
    for param in [
        "attempts",
        "delay",
        "initialBackoff",
        "multiplier",
        "failureRateInterval",
    ] {
        let prop = &restart["properties"][param];
        assert!(prop.get("type").is_some(), "{param}");
        // A schema default here would be applied to every strategy type.
        assert!(prop.get("default").is_none(), "{param}");
    }
    let interval = &spec["checkpointing"]["properties"]["interval"];
    assert_eq!(interval["type"], "string");
    assert_eq!(interval["default"], "10s");
    assert!(interval["pattern"].is_string());
    assert_eq!(spec["job"]["required"], serde_json::json!(["program"]));
    assert_eq!(
        spec["checkpointing"]["required"],
        serde_json::json!(["storage"])
    );
    assert_eq!(
        schema["properties"]["status"]["properties"]["jobStatus"]["properties"]["state"]["enum"][1],
        "RUNNING"
    );
    // Every field is documented, because descriptions are what `kubectl
    // explain` shows.
    fn check_described(node: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(Value::Object(props)) = node.get("properties") {
            for (name, prop) in props {
                let p = format!("{path}.{name}");
                if prop.get("description").is_none() {
                    missing.push(p.clone());
                }
                check_described(prop, &p, missing);
            }
        }
        if let Some(items) = node.get("items") {
            check_described(items, path, missing);
        }
    }
    let mut missing = Vec::new();
    check_described(&schema["properties"]["spec"], "spec", &mut missing);
    check_described(&schema["properties"]["status"], "status", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without description: {missing:?}"
    );
}
