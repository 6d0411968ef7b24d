//! `spec.state` as the engine's keyed state backend: the heap (no factory), or RocksDB with its
//! memory budget, local directory, incremental checkpoints and local recovery.
//!
//! The memory budget follows Flink's managed memory: a fraction of the TaskManager's memory
//! (`spec.taskManager.resources.memory`) goes to RocksDB's block cache and write buffers,
//! shared by every operator subtask of the job.

use crate::error::CliError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_api::{StateBackend, StreamJobSpec};
use weir_core::state::StateBackendFactory;
use weir_rocksdb::{RocksDbConfig, RocksDbFactory};

/// The share of the TaskManager's memory RocksDB may use (Flink's
/// `taskmanager.memory.managed.fraction`).
pub const MANAGED_FRACTION: f64 = 0.4;

/// The smallest budget RocksDB runs well with.
const MIN_BUDGET: u64 = 32 << 20;

/// Environment variable naming the directory for RocksDB's working files (default: the
/// system's temporary directory); it must be on local disk.
pub const STATE_DIR_ENV: &str = "WEIR_STATE_DIR";

/// Bytes of a Kubernetes memory quantity (`512Mi`, `1Gi`, `2G`, `1000000`).
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// The directory RocksDB works in: `$WEIR_STATE_DIR`, else `<tmp>/weir-state`.
pub fn local_dir() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("weir-state"))
}

/// The RocksDB settings of a spec with `state.backend: rocksdb`; `path` is the manifest, for
/// messages naming the field and the fix.
pub fn rocksdb_config(path: &Path, spec: &StreamJobSpec) -> Result<RocksDbConfig, CliError> {
    let memory = &spec.task_manager.resources.memory;
    let total = quantity_bytes(memory).ok_or_else(|| CliError::StateBackend {
        path: path.to_path_buf(),
        field: "spec.taskManager.resources.memory",
        message: format!("{memory:?} is not a memory quantity"),
        fix: "write it like 1Gi or 512Mi; RocksDB gets 40 % of it".into(),
    })?;
    let budget = (total as f64 * MANAGED_FRACTION) as u64;
    if budget < MIN_BUDGET {
        return Err(CliError::StateBackend {
            path: path.to_path_buf(),
            field: "spec.taskManager.resources.memory",
            message: format!(
                "{memory} leaves RocksDB (spec.state.backend: rocksdb) {} MiB, less than the {} MiB it needs",
                budget >> 20,
                MIN_BUDGET >> 20
            ),
            fix: "give the TaskManager at least 128Mi, or use spec.state.backend: heap".into(),
        });
    }
    let dir = local_dir();
    std::fs::create_dir_all(&dir).map_err(|e| CliError::StateBackend {
        path: path.to_path_buf(),
        field: "spec.state.backend",
        message: format!(
            "rocksdb cannot use its local directory {}: {e}",
            dir.display()
        ),
        fix: format!("set {STATE_DIR_ENV} to a writable directory on local disk"),
    })?;
    let mut config = RocksDbConfig::new(dir);
    config.memory_budget = usize::try_from(budget).unwrap_or(usize::MAX);
    config.incremental = spec.checkpointing.as_ref().is_some_and(|c| c.incremental);
    config.local_recovery = spec.state.local_recovery;
    Ok(config)
}

/// The keyed state backend of `spec.state`: `None` for the heap.
pub fn backend(path: &Path, spec: &StreamJobSpec) -> Result<Option<StateBackendFactory>, CliError> {
    match spec.state.backend {
        StateBackend::Heap => Ok(None),
        StateBackend::RocksDb => {
            let factory: StateBackendFactory =
                Arc::new(RocksDbFactory::new(rocksdb_config(path, spec)?));
            Ok(Some(factory))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("2G"), Some(2_000_000_000));
        assert_eq!(quantity_bytes("1000"), Some(1000));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("lots"), None);
    }

    #[test]
    fn rocksdb_budget_is_the_managed_fraction_and_too_little_memory_is_named() {
        let mut spec = StreamJobSpec::for_program("orders");
        spec.state.backend = StateBackend::RocksDb;
        spec.task_manager.resources.memory = "1Gi".into();
        let c = rocksdb_config(Path::new("job.yaml"), &spec).unwrap();
        assert_eq!(c.memory_budget as u64, ((1u64 << 30) as f64 * 0.4) as u64);
        assert!(!c.incremental && !c.local_recovery);
        spec.task_manager.resources.memory = "64Mi".into();
        let e = rocksdb_config(Path::new("job.yaml"), &spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.taskManager.resources.memory"), "{e}");
        assert!(e.contains("Fix:"), "{e}");
    }
}
