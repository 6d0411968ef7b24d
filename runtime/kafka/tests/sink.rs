//! The exactly-once sink's commit protocol driven directly, against a real broker: an epoch
//! committed before a failure is not committed again by the restore (the marker guard), an
//! epoch whose checkpoint completed but whose commit never ran is committed by the restore,
//! and the transaction timeout is checked against the broker maximum and the checkpointing.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod test_support;

use std::time::Duration;
use test_support::{Topics, read_committed};
use weir_core::sink::SinkContext;
use weir_core::{CheckpointConfig, Record, Sink};
use weir_kafka::{DeliveryGuarantee, KafkaSink};

fn values(topics: &Topics, topic: &str) -> Vec<String> {
    let mut v: Vec<String> = read_committed(&topics.bootstrap, topic)
        .into_iter()
        .map(|(_, _, v)| String::from_utf8(v).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn restore_commits_each_epoch_exactly_once() {
    let mut topics = Topics::new();
    let topic = topics.create("eo-sink", 2);
    let prefix = topics.unique("txn");
    topics.adopt(format!("{prefix}.commits"));
    let sink = KafkaSink::strings(topics.bootstrap.clone(), topic.clone()).guarantee(
        DeliveryGuarantee::ExactlyOnce {
            transactional_id_prefix: prefix,
        },
    );
    let ctx = SinkContext {
        subtask: 0,
        parallelism: 1,
        metrics: Default::default(),
    };
    let mut w = sink.create_writer(&ctx).unwrap();
    for i in 0..5 {
        w.write(Record::new(1_000 + i, format!("a{i}"))).unwrap();
    }
    let items1 = w.pre_commit(1).unwrap();
    assert_eq!(
        values(&topics, &topic),
        Vec::<String>::new(),
        "visible before commit"
    );
    w.commit(1).unwrap();
    assert_eq!(values(&topics, &topic).len(), 5);
    for i in 0..3 {
        w.write(Record::new(2_000 + i, format!("b{i}"))).unwrap();
    }
    let items2 = w.pre_commit(2).unwrap();
    // Checkpoint 2 completed, the job failed before commit(2) ran.
    drop(w);

    // Restore from checkpoint 1 after its commit: the guard skips the committed epoch.
    let mut w = sink.create_writer(&ctx).unwrap();
    w.restore(items1).unwrap();
    assert_eq!(values(&topics, &topic).len(), 5, "epoch 1 committed twice");
    drop(w);

    // Restore from checkpoint 2: epoch 2 is committed once, even when restored twice.
    for _ in 0..2 {
        let mut w = sink.create_writer(&ctx).unwrap();
        w.restore(items2.clone()).unwrap();
        drop(w);
    }
    let mut want: Vec<String> = (0..5)
        .map(|i| format!("a{i}"))
        .chain((0..3).map(|i| format!("b{i}")))
        .collect();
    want.sort();
    assert_eq!(values(&topics, &topic), want);
}

#[test]
fn transaction_timeout_is_validated() {
    let eo = DeliveryGuarantee::ExactlyOnce {
        transactional_id_prefix: "p".into(),
    };
    let too_long = KafkaSink::strings("127.0.0.1:1", "t")
        .guarantee(eo.clone())
        .transaction_timeout(Duration::from_secs(3_600));
    let e = too_long.validate().unwrap_err().to_string();
    assert!(e.contains("3600000") && e.contains("900000"), "{e}");
    let mut ckpt = CheckpointConfig::new("/unused");
    ckpt.interval = Duration::from_secs(60);
    ckpt.timeout = Duration::from_secs(600);
    let short = KafkaSink::strings("127.0.0.1:1", "t")
        .guarantee(eo)
        .transaction_timeout(Duration::from_secs(300))
        .checkpoint_config(&ckpt);
    let e = short.validate().unwrap_err().to_string();
    assert!(e.contains("300000") && e.contains("660000"), "{e}");
    assert!(
        KafkaSink::strings("127.0.0.1:1", "t")
            .checkpoint_config(&ckpt)
            .validate()
            .is_ok()
    );
}
