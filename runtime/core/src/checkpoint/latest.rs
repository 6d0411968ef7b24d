//! The job's latest-checkpoint pointer and its fencing rules.
//!
//! Next to its `chk-<id>/` directories a storage may keep one small pointer per checkpoint root
//! naming the newest completed checkpoint. The coordinator advances it right after `_metadata`
//! is written, with a conditional write (on S3: `If-Match` on the ETag it read,
//! `If-None-Match: *` when there is none), so of two writers racing on it only one wins.
//!
//! Every writer holds a **fencing epoch**. It claims one the first time it records a checkpoint
//! (one more than the pointer's, written back conditionally), so the newest instance of a job
//! holds the highest epoch. A writer that finds a higher epoch in the pointer was deposed and
//! gets [`StorageError::Fenced`]: its checkpoint is not recorded, so its sinks never commit
//! it, and restores ignore checkpoints newer than the pointer names.
//!
//! The pointer is never deleted, not even when checkpoints are: epochs must keep increasing,
//! or a deposed writer could start over on an empty pointer.

use super::storage::{CheckpointStorage, StorageError};
use serde::{Deserialize, Serialize};

/// How often a conditional write that lost is retried after reading the pointer again.
const CONFLICT_RETRIES: usize = 16;

/// The content of the pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestPointer {
    /// Fencing epoch of the writer that wrote it.
    pub epoch: u64,
    /// That writer's identity: tells a writer whether a write whose answer it never got went
    /// through.
    pub writer: String,
    /// The newest completed checkpoint; `None` until the first one is recorded.
    pub checkpoint: Option<PointedCheckpoint>,
}

/// A checkpoint the pointer names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointedCheckpoint {
    /// Checkpoint id.
    pub id: u64,
    /// Its directory.
    pub location: String,
}

impl LatestPointer {
    /// The id of the checkpoint it names.
    pub fn checkpoint_id(&self) -> Option<u64> {
        self.checkpoint.as_ref().map(|c| c.id)
    }

    /// JSON, so a person can read it.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of integers and strings always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses the JSON written by [`LatestPointer::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a latest pointer: {e}"))
    }
}

/// The pointer as read, with the version a conditional write must name (an ETag on S3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedPointer {
    /// The content.
    pub pointer: LatestPointer,
    /// Its version.
    pub version: String,
}

/// The epoch a writer holds, and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fencing {
    /// The epoch.
    pub epoch: u64,
    /// The writer's identity, as written into the pointer.
    pub writer: String,
}

/// A writer identity unique enough to tell two processes (or two jobs in one process) apart.
pub fn new_writer_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn pointer_location(storage: &dyn CheckpointStorage) -> String {
    format!(
        "{}/{}",
        storage.root().trim_end_matches('/'),
        super::storage::LATEST_POINTER
    )
}

/// Claims the next fencing epoch for `writer`: one more than the pointer's (1 without a
/// pointer), keeping the checkpoint it names. Every older writer is deposed from then on.
pub fn claim_epoch(storage: &dyn CheckpointStorage, writer: &str) -> Result<Fencing, StorageError> {
    let mut last_conflict = None;
    for _ in 0..CONFLICT_RETRIES {
        let current = storage.read_latest()?;
        if let (Some(c), Some(tried)) = (&current, &last_conflict)
            && c.pointer.writer == writer
            && c.pointer.epoch == *tried
        {
            // The write that "lost" went through; only its answer did not arrive.
            return Ok(Fencing {
                epoch: *tried,
                writer: writer.to_string(),
            });
        }
        let epoch = current.as_ref().map_or(1, |c| c.pointer.epoch + 1);
        let pointer = LatestPointer {
            epoch,
            writer: writer.to_string(),
            checkpoint: current.as_ref().and_then(|c| c.pointer.checkpoint.clone()),
        };
        match storage.write_latest(current.as_ref().map(|c| c.version.as_str()), &pointer) {
            Ok(_) => {
                return Ok(Fencing {
                    epoch,
                    writer: writer.to_string(),
                });
            }
            Err(StorageError::Conflict { .. }) => last_conflict = Some(epoch),
            Err(e) => return Err(e),
        }
    }
    Err(StorageError::Conflict {
        location: pointer_location(storage),
        message: format!("could not claim an epoch in {CONFLICT_RETRIES} tries"),
    })
}

/// Records checkpoint `id` at `location` as the newest, if `fencing` still holds: refused with
/// [`StorageError::Fenced`] when the pointer carries a higher epoch (or the same epoch written
/// by another writer). A pointer that already names `id` or a newer checkpoint of this writer
/// is left as it is: the pointer never moves back.
pub fn advance_latest(
    storage: &dyn CheckpointStorage,
    fencing: &Fencing,
    id: u64,
    location: &str,
) -> Result<(), StorageError> {
    for _ in 0..CONFLICT_RETRIES {
        let current = storage.read_latest()?;
        if let Some(c) = &current {
            let theirs = &c.pointer;
            if theirs.epoch > fencing.epoch
                || (theirs.epoch == fencing.epoch && theirs.writer != fencing.writer)
            {
                return Err(StorageError::Fenced {
                    location: pointer_location(storage),
                    writer_epoch: fencing.epoch,
                    pointer_epoch: theirs.epoch,
                    pointer_writer: theirs.writer.clone(),
                });
            }
            if theirs.epoch == fencing.epoch && theirs.checkpoint_id().is_some_and(|n| n >= id) {
                return Ok(());
            }
        }
        let pointer = LatestPointer {
            epoch: fencing.epoch,
            writer: fencing.writer.clone(),
            checkpoint: Some(PointedCheckpoint {
                id,
                location: location.to_string(),
            }),
        };
        match storage.write_latest(current.as_ref().map(|c| c.version.as_str()), &pointer) {
            Ok(_) => return Ok(()),
            // Read again: a lost answer to our own write, or a newer writer, decides there.
            Err(StorageError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(StorageError::Conflict {
        location: pointer_location(storage),
        message: format!("could not advance it in {CONFLICT_RETRIES} tries"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::storage::LocalFsStorage;
    use std::sync::{Arc, Barrier};

    fn storage(name: &str) -> (LocalFsStorage, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("weir-latest-{name}-{}", new_writer_id()));
        (
            LocalFsStorage::new(&dir.display().to_string()).unwrap(),
            dir,
        )
    }

    fn pointer(epoch: u64, id: Option<u64>) -> LatestPointer {
        LatestPointer {
            epoch,
            writer: "w".into(),
            checkpoint: id.map(|id| PointedCheckpoint {
                id,
                location: format!("chk-{id}"),
            }),
        }
    }

    #[test]
    fn local_conditional_writes_compare_versions() {
        let (s, dir) = storage("cas");
        assert_eq!(s.read_latest().unwrap(), None);
        let v1 = s.write_latest(None, &pointer(1, None)).unwrap();
        // Only if absent: a second create loses.
        assert!(matches!(
            s.write_latest(None, &pointer(1, Some(1))),
            Err(StorageError::Conflict { .. })
        ));
        let v2 = s.write_latest(Some(&v1), &pointer(1, Some(1))).unwrap();
        // A stale version loses, also once its successor's predecessor was cleaned up.
        assert!(matches!(
            s.write_latest(Some(&v1), &pointer(1, Some(2))),
            Err(StorageError::Conflict { .. })
        ));
        let v3 = s.write_latest(Some(&v2), &pointer(1, Some(3))).unwrap();
        let v4 = s.write_latest(Some(&v3), &pointer(1, Some(4))).unwrap();
        assert!(matches!(
            s.write_latest(Some(&v1), &pointer(9, Some(9))),
            Err(StorageError::Conflict { .. })
        ));
        assert!(matches!(
            s.write_latest(None, &pointer(9, Some(9))),
            Err(StorageError::Conflict { .. })
        ));
        let read = s.read_latest().unwrap().unwrap();
        assert_eq!(read.version, v4);
        assert_eq!(read.pointer, pointer(1, Some(4)));
        // Old versions are cleaned up: the newest two remain.
        assert_eq!(std::fs::read_dir(dir.join("_latest")).unwrap().count(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn racing_writers_on_one_version_only_one_wins() {
        let (s, dir) = storage("race");
        let v = s.write_latest(None, &pointer(1, None)).unwrap();
        for round in 0..20u64 {
            let s = Arc::new(s.clone());
            let go = Arc::new(Barrier::new(4));
            let current = s.read_latest().unwrap().unwrap().version;
            let wins: usize = (0..4)
                .map(|i| {
                    let (s, go, current) = (s.clone(), go.clone(), current.clone());
                    std::thread::spawn(move || {
                        go.wait();
                        s.write_latest(Some(&current), &pointer(1, Some(round * 10 + i)))
                            .is_ok()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| usize::from(t.join().unwrap()))
                .sum();
            assert_eq!(wins, 1, "round {round}");
        }
        assert_ne!(s.read_latest().unwrap().unwrap().version, v);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn epochs_fence_older_writers() {
        let (s, dir) = storage("fence");
        let a = claim_epoch(&s, "a").unwrap();
        assert_eq!(a.epoch, 1);
        advance_latest(&s, &a, 1, "chk-1").unwrap();
        advance_latest(&s, &a, 2, "chk-2").unwrap();
        // Never backwards.
        advance_latest(&s, &a, 1, "chk-1").unwrap();
        assert_eq!(
            s.read_latest().unwrap().unwrap().pointer.checkpoint_id(),
            Some(2)
        );
        // A new writer claims the next epoch and keeps the checkpoint the pointer names.
        let b = claim_epoch(&s, "b").unwrap();
        assert_eq!(b.epoch, 2);
        assert_eq!(
            s.read_latest().unwrap().unwrap().pointer.checkpoint_id(),
            Some(2)
        );
        let err = advance_latest(&s, &a, 3, "chk-3").unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Fenced {
                    writer_epoch: 1,
                    pointer_epoch: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("deposed"), "{err}");
        advance_latest(&s, &b, 3, "chk-3").unwrap();
        // The same epoch held by someone else is no licence either.
        let impostor = Fencing {
            epoch: 2,
            writer: "c".into(),
        };
        assert!(matches!(
            advance_latest(&s, &impostor, 4, "chk-4"),
            Err(StorageError::Fenced { .. })
        ));
        let p = s.read_latest().unwrap().unwrap().pointer;
        assert_eq!(
            (p.epoch, p.writer.as_str(), p.checkpoint_id()),
            (2, "b", Some(3))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
