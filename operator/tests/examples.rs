//! The operator examples (`examples/operator/*.yaml`) are valid StreamJobs and deploy: each
//! parses, validates, and builds its objects.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;

#[test]
fn operator_examples_validate_and_build() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/operator");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "savepoints.yaml",
            "upgrade-last-state.yaml",
            "upgrade-savepoint.yaml"
        ]
    );
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        let mut job = weir_api::parse_manifest(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Err(e) = job.spec.validate() {
            panic!("{name}: {e}");
        }
        job.metadata.namespace = Some("default".into());
        weir_operator::resources::desired(&job).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
