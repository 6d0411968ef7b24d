//! Every registered program builds with its default arguments, rejects unknown or malformed
//! arguments, and the `sink` argument selects a working sink.

use std::collections::BTreeMap;
use weir_core::{EnvConfig, ProgramArgs, ProgramError, StreamEnv};
use weir_programs::builtin_registry;
use weir_programs::orders::UserSummary;

fn args(pairs: &[(&str, &str)]) -> ProgramArgs {
    ProgramArgs::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn env() -> StreamEnv {
    StreamEnv::new(EnvConfig::default())
}

#[test]
fn registry_has_the_builtin_programs() {
    assert_eq!(
        builtin_registry().names(),
        vec!["nexmark-q5", "orders", "sensor-anomaly", "window-bench"]
    );
}

#[test]
fn every_program_builds_with_default_arguments() {
    for p in builtin_registry().programs() {
        let env = env();
        p.build(&env, &args(&[]))
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        let graph = env.describe();
        assert!(
            graph.iter().any(|v| v.contains("Sink")),
            "{}: {graph:?}",
            p.name
        );
        assert!(!p.description.is_empty() && !p.description.contains('\n'));
    }
}

#[test]
fn every_program_accepts_a_blackhole_sink() {
    for p in builtin_registry().programs() {
        p.build(&env(), &args(&[("sink", "blackhole")]))
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
}

#[test]
fn unknown_arguments_are_rejected() {
    for p in builtin_registry().programs() {
        let e = p.build(&env(), &args(&[("no-such-arg", "1")])).unwrap_err();
        assert!(
            matches!(e, ProgramError::UnknownArgument { .. }),
            "{}: {e}",
            p.name
        );
    }
}

#[test]
fn malformed_arguments_are_rejected_by_name() {
    let r = builtin_registry();
    let cases = [
        ("orders", "event-time", "tomorrow"),
        ("orders", "users", "0"),
        ("orders", "rate", "fast"),
        ("orders", "sink", "kafka"),
        ("orders", "sink", "file:"),
        ("sensor-anomaly", "threshold", "-1"),
        ("sensor-anomaly", "clear-after", "60"),
        ("sensor-anomaly", "sensors", "0"),
        ("window-bench", "keys", "0"),
        ("window-bench", "count", "-5"),
    ];
    for (program, name, value) in cases {
        let e = r
            .get(program)
            .unwrap()
            .build(&env(), &args(&[(name, value)]))
            .unwrap_err();
        assert!(
            matches!(&e, ProgramError::BadArgument { name: n, .. } if n == name),
            "{program} {name}={value}: {e}"
        );
    }
}

#[test]
fn orders_program_runs_bounded_into_a_file_sink() {
    let dir = std::env::temp_dir().join(format!("weir-programs-{}-orders", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let env = StreamEnv::new(EnvConfig {
        parallelism: 2,
        ..Default::default()
    });
    let sink = format!("file:{}", dir.display());
    builtin_registry()
        .get("orders")
        .unwrap()
        .build(
            &env,
            &args(&[("count", "3000"), ("rate", "0"), ("sink", &sink)]),
        )
        .unwrap();
    env.execute().unwrap();
    let mut orders = 0;
    for part in 0..2 {
        let text = std::fs::read_to_string(dir.join(format!("part-{part}.jsonl"))).unwrap();
        for line in text.lines() {
            let s: UserSummary = serde_json::from_str(line).unwrap();
            orders += s.order_count;
        }
    }
    assert_eq!(orders, 3_000);
    let _ = std::fs::remove_dir_all(&dir);
}
