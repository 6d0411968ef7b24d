//! Keyed state of every kind, with TTL, on RocksDB: the same hand-computed expectations as on
//! the heap, map entries in user-key order whatever their encoding, and snapshots in the
//! canonical format byte for byte equal to the heap's, restorable in both directions.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::{rocks, temp_dir};
use weir_core::checkpoint::{KeyedSnapshotWriter, SnapshotContext, SnapshotKind, StateEntry};
use weir_core::state::{KeyedStateBackend, KvBackend, KvScope, KvStoreFactory, StateAccess};
use weir_core::{ListState, MapState, TtlConfig, ValueState};

const MAXP: u32 = 128;

struct At<'a> {
    backend: &'a mut KeyedStateBackend<String>,
    key: String,
    now: i64,
}

impl StateAccess<String> for At<'_> {
    fn state_parts(&mut self) -> (&mut KeyedStateBackend<String>, &String, i64) {
        (self.backend, &self.key, self.now)
    }
}

fn at<'a>(backend: &'a mut KeyedStateBackend<String>, key: &str, now: i64) -> At<'a> {
    At {
        backend,
        key: key.into(),
        now,
    }
}

/// A RocksDB-backed keyed state backend owning all key groups.
fn rocksdb() -> KeyedStateBackend<String> {
    let dir = temp_dir("state");
    let factory = rocks(&dir, false, false, 16 << 20);
    let store = factory
        .open(&KvScope {
            job: "state",
            uid: "op",
            subtask: 0,
            max_parallelism: MAXP,
            key_groups: 0..MAXP,
            restore: &[],
            storage: None,
            metrics: &Default::default(),
        })
        .unwrap();
    KeyedStateBackend::Kv(KvBackend::new(store, MAXP, 0..MAXP, &[]))
}

fn backends() -> Vec<(&'static str, KeyedStateBackend<String>)> {
    vec![("heap", KeyedStateBackend::new()), ("rocksdb", rocksdb())]
}

#[test]
fn value_state_ttl_on_create_and_write_and_on_read() {
    for (name, mut b) in backends() {
        let s = ValueState::<f64>::new("last").with_ttl(TtlConfig::new(Duration::from_secs(3600)));
        s.set(&mut at(&mut b, "k", 0), 1.0).unwrap();
        assert_eq!(
            s.get(&mut at(&mut b, "k", 3_599_999)).unwrap(),
            Some(1.0),
            "{name}"
        );
        assert_eq!(
            s.get(&mut at(&mut b, "k", 3_600_000)).unwrap(),
            None,
            "{name}"
        );
        s.set(&mut at(&mut b, "k", 4_000_000), 2.0).unwrap();
        assert_eq!(
            s.get(&mut at(&mut b, "k", 7_599_999)).unwrap(),
            Some(2.0),
            "{name}"
        );
        assert_eq!(s.get(&mut at(&mut b, "other", 0)).unwrap(), None, "{name}");

        let r = ValueState::<u32>::new("v")
            .with_ttl(TtlConfig::new(Duration::from_millis(100)).refresh_on_read());
        r.set(&mut at(&mut b, "k", 0), 7).unwrap();
        assert_eq!(r.get(&mut at(&mut b, "k", 99)).unwrap(), Some(7), "{name}");
        assert_eq!(r.get(&mut at(&mut b, "k", 198)).unwrap(), Some(7), "{name}");
        assert_eq!(r.get(&mut at(&mut b, "k", 298)).unwrap(), None, "{name}");

        let c = ValueState::<u64>::new("count");
        c.set(&mut at(&mut b, "k", 0), 5).unwrap();
        assert_eq!(
            c.get(&mut at(&mut b, "k", i64::MAX - 1)).unwrap(),
            Some(5),
            "{name}"
        );
        c.clear(&mut at(&mut b, "k", 0)).unwrap();
        assert_eq!(c.get(&mut at(&mut b, "k", 0)).unwrap(), None, "{name}");
    }
}

#[test]
fn list_and_map_state_expire_per_element() {
    for (name, mut b) in backends() {
        let l = ListState::<u32>::new("l").with_ttl(TtlConfig::new(Duration::from_millis(100)));
        l.add(&mut at(&mut b, "k", 0), 1).unwrap();
        l.add(&mut at(&mut b, "k", 50), 2).unwrap();
        assert_eq!(
            l.get(&mut at(&mut b, "k", 99)).unwrap(),
            vec![1, 2],
            "{name}"
        );
        assert_eq!(l.get(&mut at(&mut b, "k", 120)).unwrap(), vec![2], "{name}");
        assert!(
            l.get(&mut at(&mut b, "k", 150)).unwrap().is_empty(),
            "{name}"
        );
        l.update(&mut at(&mut b, "k", 200), vec![4, 5]).unwrap();
        assert_eq!(
            l.get(&mut at(&mut b, "k", 210)).unwrap(),
            vec![4, 5],
            "{name}"
        );
        l.clear(&mut at(&mut b, "k", 210)).unwrap();
        assert!(
            l.get(&mut at(&mut b, "k", 210)).unwrap().is_empty(),
            "{name}"
        );

        let m =
            MapState::<String, u32>::new("m").with_ttl(TtlConfig::new(Duration::from_millis(100)));
        m.put(&mut at(&mut b, "k", 0), "x".into(), 1).unwrap();
        m.put(&mut at(&mut b, "k", 60), "y".into(), 2).unwrap();
        assert_eq!(
            m.get(&mut at(&mut b, "k", 99), &"x".to_string()).unwrap(),
            Some(1),
            "{name}"
        );
        assert_eq!(
            m.entries(&mut at(&mut b, "k", 130)).unwrap(),
            vec![("y".to_string(), 2)],
            "{name}"
        );
        assert!(
            !m.contains(&mut at(&mut b, "k", 100), &"x".to_string())
                .unwrap()
        );
        m.remove(&mut at(&mut b, "k", 130), &"y".to_string())
            .unwrap();
        assert!(
            m.entries(&mut at(&mut b, "k", 130)).unwrap().is_empty(),
            "{name}"
        );
    }
}

#[test]
fn map_entries_come_in_user_key_order_and_keys_do_not_mix() {
    for (name, mut b) in backends() {
        // Little-endian encodings sort 256 before 1; entries must still come in `Ord` order.
        let m = MapState::<u32, String>::new("m");
        for k in [256u32, 1, 65_536, 2] {
            m.put(&mut at(&mut b, "a", 0), k, format!("a{k}")).unwrap();
        }
        m.put(&mut at(&mut b, "ab", 0), 1, "ab1".into()).unwrap();
        let got: Vec<u32> = m
            .entries(&mut at(&mut b, "a", 0))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, vec![1, 2, 256, 65_536], "{name}");
        assert_eq!(
            m.entries(&mut at(&mut b, "ab", 0)).unwrap().len(),
            1,
            "{name}"
        );
        m.clear(&mut at(&mut b, "a", 0)).unwrap();
        assert!(
            m.entries(&mut at(&mut b, "a", 0)).unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(
            m.get(&mut at(&mut b, "ab", 0), &1).unwrap(),
            Some("ab1".into()),
            "{name}"
        );
    }
}

fn fill(b: &mut KeyedStateBackend<String>) {
    let v = ValueState::<(u64, String)>::new("value");
    let l = ListState::<u32>::new("list");
    let m = MapState::<u32, f64>::new("map").with_ttl(TtlConfig::new(Duration::from_secs(10)));
    for i in 0..300u32 {
        let key = format!("user-{i}");
        v.set(&mut at(b, &key, 5), (u64::from(i), format!("v{i}")))
            .unwrap();
        for j in 0..(i % 4) {
            l.add(&mut at(b, &key, 7), i * 10 + j).unwrap();
        }
        for j in 0..(i % 3) {
            m.put(&mut at(b, &key, 9), j * 1000 + i, f64::from(i) / 2.0)
                .unwrap();
        }
    }
}

fn check(name: &str, b: &mut KeyedStateBackend<String>) {
    let v = ValueState::<(u64, String)>::new("value");
    let l = ListState::<u32>::new("list");
    let m = MapState::<u32, f64>::new("map").with_ttl(TtlConfig::new(Duration::from_secs(10)));
    for i in 0..300u32 {
        let key = format!("user-{i}");
        assert_eq!(
            v.get(&mut at(b, &key, 100)).unwrap(),
            Some((u64::from(i), format!("v{i}"))),
            "{name} {key}"
        );
        let want: Vec<u32> = (0..(i % 4)).map(|j| i * 10 + j).collect();
        assert_eq!(l.get(&mut at(b, &key, 100)).unwrap(), want, "{name} {key}");
        let want: Vec<(u32, f64)> = (0..(i % 3))
            .map(|j| (j * 1000 + i, f64::from(i) / 2.0))
            .collect();
        assert_eq!(
            m.entries(&mut at(b, &key, 100)).unwrap(),
            want,
            "{name} {key}"
        );
    }
}

/// A savepoint's keyed state: canonical entries, sorted.
fn savepoint(b: &mut KeyedStateBackend<String>) -> Vec<StateEntry> {
    let ctx = SnapshotContext {
        checkpoint_id: 1,
        kind: SnapshotKind::Savepoint {
            target: "unused".into(),
        },
        max_parallelism: MAXP,
    };
    let f = b.snapshot(&ctx, 100).unwrap();
    let mut w = KeyedSnapshotWriter::new(MAXP);
    f(&mut w).unwrap();
    let mut entries = w.finish().entries(0..MAXP).unwrap();
    entries.sort_by(|a, b| (&a.state, &a.key).cmp(&(&b.state, &b.key)));
    entries
}

#[test]
fn savepoints_are_canonical_and_move_between_heap_and_rocksdb() {
    let mut heap = KeyedStateBackend::new();
    fill(&mut heap);
    let mut rocks = rocksdb();
    fill(&mut rocks);
    let from_heap = savepoint(&mut heap);
    let from_rocks = savepoint(&mut rocks);
    // Map entries carry their own stamps; the map's own stamp is the newest entry's on RocksDB
    // and the first write's on the heap, so compare maps decoded and everything else as bytes.
    let split = |v: &[StateEntry]| {
        let (maps, rest): (Vec<_>, Vec<_>) = v.iter().cloned().partition(|e| e.state == "map");
        let maps: BTreeMap<Vec<u8>, BTreeMap<u32, (f64, i64)>> = maps
            .into_iter()
            .map(|e| {
                let (m, _): (BTreeMap<u32, (f64, i64)>, i64) =
                    bincode::deserialize(&e.value).unwrap();
                (e.key, m)
            })
            .collect();
        (maps, rest)
    };
    assert_eq!(split(&from_heap), split(&from_rocks));
    assert!(from_heap.len() > 500, "{}", from_heap.len());

    // Heap savepoint into RocksDB, and RocksDB's back onto the heap.
    let mut rocks2 = rocksdb();
    rocks2.restore(from_heap.clone()).unwrap();
    check("heap -> rocksdb", &mut rocks2);
    let mut heap2 = KeyedStateBackend::new();
    heap2.restore(from_rocks).unwrap();
    check("rocksdb -> heap", &mut heap2);
    // A map restored into RocksDB and saved again before any handle touched it stays whole.
    let mut rocks3 = rocksdb();
    rocks3.restore(from_heap.clone()).unwrap();
    assert_eq!(split(&savepoint(&mut rocks3)), split(&from_heap));
}
