//! Line sinks: formats, part files per subtask, and errors that name the path.

use serde::Serialize;
use std::path::PathBuf;
use weir_connectors::file::{FileSink, LineFormat, StdoutSink};
use weir_core::sink::SinkContext;
use weir_core::source::VecSource;
use weir_core::{EnvConfig, Record, Sink, StreamEnv, WatermarkStrategy};

#[derive(Debug, Clone, Serialize)]
struct Row {
    id: u64,
    name: String,
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-connectors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn formats() {
    let row = Row {
        id: 7,
        name: "a\"b".into(),
    };
    assert_eq!(
        LineFormat::json().line(&row).unwrap(),
        r#"{"id":7,"name":"a\"b"}"#
    );
    assert_eq!(LineFormat::display().line(&42u32).unwrap(), "42");
    let f = LineFormat::custom(|r: &Row| format!("{}:{}", r.id, r.name));
    let mut buf = Vec::new();
    f.write_line(&row, &mut buf).unwrap();
    assert_eq!(buf, b"7:a\"b\n");
}

#[test]
fn file_sink_writes_json_lines_per_subtask() {
    let dir = temp_dir("direct");
    let sink = FileSink::json(dir.join("nested"));
    let mut w = sink
        .create_writer(&SinkContext {
            subtask: 2,
            parallelism: 3,
            metrics: Default::default(),
        })
        .unwrap();
    for id in 0..3 {
        w.write(Record::new(
            0,
            Row {
                id,
                name: format!("r{id}"),
            },
        ))
        .unwrap();
    }
    w.finish().unwrap();
    let text = std::fs::read_to_string(dir.join("nested/part-2.jsonl")).unwrap();
    assert_eq!(
        text,
        "{\"id\":0,\"name\":\"r0\"}\n{\"id\":1,\"name\":\"r1\"}\n{\"id\":2,\"name\":\"r2\"}\n"
    );
    assert_eq!(sink.part_path(2), dir.join("nested/part-2.jsonl"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_sink_in_a_job_writes_every_record_once() {
    let dir = temp_dir("job");
    let env = StreamEnv::new(EnvConfig {
        parallelism: 2,
        ..Default::default()
    });
    env.source(
        "numbers",
        VecSource::new((0..100u64).map(|i| (0, i))),
        WatermarkStrategy::none(),
    )
    .sink("files", FileSink::<u64>::display(&dir));
    env.execute().unwrap();
    let mut all: Vec<u64> = (0..2)
        .flat_map(|s| {
            let text = std::fs::read_to_string(dir.join(format!("part-{s}.txt"))).unwrap();
            text.lines()
                .map(|l| l.parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_sink_errors_name_the_path() {
    let dir = temp_dir("blocked");
    std::fs::create_dir_all(&dir).unwrap();
    // A file where the output directory should be.
    let blocker = dir.join("out");
    std::fs::write(&blocker, b"").unwrap();
    let sink = FileSink::<u64>::display(&blocker);
    let e = sink
        .create_writer(&SinkContext {
            subtask: 0,
            parallelism: 1,
            metrics: Default::default(),
        })
        .err()
        .unwrap();
    assert!(
        e.to_string().contains(&blocker.display().to_string()),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stdout_sink_runs_in_a_job() {
    let env = StreamEnv::new(EnvConfig {
        parallelism: 2,
        ..Default::default()
    });
    env.source(
        "numbers",
        VecSource::new((0..4u64).map(|i| (0, i))),
        WatermarkStrategy::none(),
    )
    .sink("print", StdoutSink::<u64>::json().with_subtask_prefix(true));
    env.execute().unwrap();
}
