//! Reading a snapshot back: loading `_metadata` and the state files (verifying checksums),
//! finding the latest restorable checkpoint (falling back past corrupt ones), and handing each
//! operator subtask its share of the state — the key groups it owns at the new parallelism and
//! its operator-state items.
//!
//! Only a damaged checkpoint — a missing or corrupt file — is skipped in favour of an older
//! one. A storage that fails (unreachable, refusing access) fails the restore instead: falling
//! back then would silently replay from an older state, or from none.

use super::format::{FormatError, SnapshotMetadata, SubtaskState, decode_subtask};
use super::storage::{CheckpointStorage, METADATA_FILE, StorageError};
use super::{RestoredState, StateEntry};
use crate::key::key_group_range;
use std::collections::{BTreeMap, BTreeSet};

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Storage failed.
    #[error("reading snapshot: {0}")]
    Storage(#[from] StorageError),
    /// `_metadata` is missing or unreadable.
    #[error(
        "{location}: no readable {METADATA_FILE} ({message}); this is not a complete checkpoint or savepoint"
    )]
    Metadata {
        /// Snapshot directory.
        location: String,
        /// Why.
        message: String,
    },
    /// A state file listed in `_metadata` is missing.
    #[error("{location}: state file {file} is missing")]
    MissingFile {
        /// Snapshot directory.
        location: String,
        /// The file.
        file: String,
    },
    /// A state file is corrupt.
    #[error("{location}: {source}")]
    Corrupt {
        /// Snapshot directory.
        location: String,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// The number of key groups changed.
    #[error(
        "snapshot was taken with maxParallelism {found}, the job has {expected}: key groups cannot be \
         split differently; set spec.job.maxParallelism to {found}"
    )]
    MaxParallelism {
        /// In the snapshot.
        found: u32,
        /// In the job.
        expected: u32,
    },
    /// State of operators the job does not have.
    #[error(
        "snapshot has state for operators the job does not have: {uids}; give those operators the \
         same uid, or set spec.job.allowNonRestoredState: true to drop that state"
    )]
    Unmapped {
        /// The uids.
        uids: String,
    },
    /// Keyed state does not decode.
    #[error("restoring keyed state: {0}")]
    State(String),
    /// A source's positions belong to its subtasks.
    #[error(
        "source {uid} had parallelism {from} in the snapshot and has {to} now; source positions \
         belong to their subtasks: keep the source at parallelism {from} (set it on the source) \
         and rescale the operators after it"
    )]
    SourceRescale {
        /// Source uid.
        uid: String,
        /// Old parallelism.
        from: u32,
        /// New parallelism.
        to: u32,
    },
    /// In-flight data cannot be redistributed.
    #[error(
        "operator {uid} has in-flight data from an unaligned checkpoint and its parallelism changed \
         ({from} -> {to}); rescale from a savepoint (always aligned) instead"
    )]
    RescaleInFlight {
        /// Operator.
        uid: String,
        /// Old parallelism.
        from: u32,
        /// New parallelism.
        to: u32,
    },
}

impl RestoreError {
    /// Whether the snapshot itself is damaged (a missing or corrupt file), so that a restore
    /// may fall back to an older one; not for a storage that fails.
    pub fn is_damaged(&self) -> bool {
        matches!(
            self,
            Self::Metadata { .. } | Self::MissingFile { .. } | Self::Corrupt { .. }
        )
    }
}

/// A snapshot loaded into memory, ready to be handed out to operator subtasks.
#[derive(Debug)]
pub struct RestoredJob {
    /// The snapshot's metadata.
    pub metadata: SnapshotMetadata,
    /// Where it was read from.
    pub location: String,
    operators: BTreeMap<String, Vec<SubtaskState>>,
}

impl RestoredJob {
    /// Loads the snapshot in `location`, verifying every file.
    pub fn load(storage: &dyn CheckpointStorage, location: &str) -> Result<Self, RestoreError> {
        let location = location
            .trim_end_matches('/')
            .trim_end_matches(METADATA_FILE)
            .trim_end_matches('/');
        let meta_bytes = storage
            .read_file(location, METADATA_FILE)
            .map_err(|e| match e {
                e if e.is_not_found() => RestoreError::Metadata {
                    location: location.to_string(),
                    message: e.to_string(),
                },
                e => RestoreError::Storage(e),
            })?;
        let metadata: SnapshotMetadata =
            serde_json::from_slice(&meta_bytes).map_err(|e| RestoreError::Metadata {
                location: location.to_string(),
                message: e.to_string(),
            })?;
        let mut operators = BTreeMap::new();
        for op in &metadata.operators {
            let mut states = Vec::with_capacity(op.files.len());
            for f in &op.files {
                let bytes = storage.read_file(location, &f.file).map_err(|e| {
                    if e.is_not_found() {
                        RestoreError::MissingFile {
                            location: location.to_string(),
                            file: f.file.clone(),
                        }
                    } else {
                        RestoreError::Storage(e)
                    }
                })?;
                let st = decode_subtask(&f.file, &bytes, f.crc32).map_err(|source| {
                    RestoreError::Corrupt {
                        location: location.to_string(),
                        source,
                    }
                })?;
                states.push(st);
            }
            states.sort_by_key(|s| s.subtask);
            operators.insert(op.uid.clone(), states);
        }
        Ok(Self {
            metadata,
            location: location.to_string(),
            operators,
        })
    }

    /// The newest checkpoint under the storage root that loads cleanly; damaged ones (a
    /// missing or corrupt file) are skipped and reported in the returned warnings, each naming
    /// the checkpoint and why. Where the storage keeps a latest pointer, checkpoints newer than
    /// the one it names were never completed (their writer failed or was deposed right after
    /// writing `_metadata`) and are skipped too.
    pub fn latest(
        storage: &dyn CheckpointStorage,
    ) -> Result<(Option<Self>, Vec<String>), RestoreError> {
        let mut warnings = Vec::new();
        let recorded = if storage.supports_latest_pointer() {
            storage
                .read_latest()?
                .and_then(|v| v.pointer.checkpoint_id())
        } else {
            None
        };
        for (id, loc) in storage.list_checkpoints()?.into_iter().rev() {
            if let Some(newest) = recorded
                && id > newest
            {
                warnings.push(format!(
                    "checkpoint {id} is not restored: the latest pointer names checkpoint \
                     {newest}, so {id} never completed"
                ));
                continue;
            }
            match Self::load(storage, &loc) {
                Ok(job) => return Ok((Some(job), warnings)),
                Err(e) if e.is_damaged() => warnings.push(format!(
                    "checkpoint {id} is not restorable, falling back: {e}"
                )),
                Err(e) => return Err(e),
            }
        }
        Ok((None, warnings))
    }

    /// Checks that the job can take this state.
    pub fn check(
        &self,
        job_uids: &[String],
        max_parallelism: u32,
        allow_non_restored: bool,
        sources: &[(String, u32)],
    ) -> Result<(), RestoreError> {
        for (uid, par) in sources {
            if let Some(old) = self.parallelism_of(uid)
                && old != *par
                && self
                    .operators
                    .get(uid)
                    .is_some_and(|s| s.iter().any(has_state))
            {
                return Err(RestoreError::SourceRescale {
                    uid: uid.clone(),
                    from: old,
                    to: *par,
                });
            }
        }
        if self.metadata.max_parallelism != max_parallelism {
            return Err(RestoreError::MaxParallelism {
                found: self.metadata.max_parallelism,
                expected: max_parallelism,
            });
        }
        let have: BTreeSet<&String> = job_uids.iter().collect();
        let unmapped: Vec<&str> = self
            .operators
            .iter()
            .filter(|(uid, states)| !have.contains(uid) && states.iter().any(has_state))
            .map(|(uid, _)| uid.as_str())
            .collect();
        if !unmapped.is_empty() && !allow_non_restored {
            return Err(RestoreError::Unmapped {
                uids: unmapped.join(", "),
            });
        }
        Ok(())
    }

    /// The operator state items of every subtask of operator `uid` (a source that redistributes
    /// its positions, restored at another parallelism), for each new subtask to take its part.
    pub fn state_of_all_subtasks(&self, uid: &str) -> Option<RestoredState> {
        let states = self.operators.get(uid)?;
        Some(RestoredState {
            keyed: Vec::new(),
            operator: states
                .iter()
                .flat_map(|s| s.operator.iter().cloned())
                .collect(),
            native: Vec::new(),
            all_subtasks: true,
        })
    }

    /// The parallelism operator `uid` had when the snapshot was taken.
    pub fn parallelism_of(&self, uid: &str) -> Option<u32> {
        self.operators.get(uid).map(|s| s.len() as u32)
    }

    /// The state of subtask `subtask` of `parallelism` for operator `uid`.
    pub fn state_for(
        &self,
        uid: &str,
        subtask: u32,
        parallelism: u32,
    ) -> Result<Option<RestoredState>, RestoreError> {
        let Some(states) = self.operators.get(uid) else {
            return Ok(None);
        };
        let maxp = self.metadata.max_parallelism;
        let old_p = states.len() as u32;
        let range = key_group_range(subtask, maxp, parallelism);
        let mut keyed: Vec<StateEntry> = Vec::new();
        let mut native = Vec::new();
        for st in states {
            keyed.extend(
                st.keyed
                    .entries(range.clone())
                    .map_err(|e| RestoreError::State(e.to_string()))?,
            );
            // A native snapshot is handed to every new subtask whose key groups it overlaps;
            // the backend takes its own key groups out of it.
            if let Some(n) = &st.native
                && n.key_groups.0 < range.end
                && range.start < n.key_groups.1
            {
                native.push(n.clone());
            }
        }
        let operator = if old_p == parallelism {
            states
                .get(subtask as usize)
                .map(|s| s.operator.clone())
                .unwrap_or_default()
        } else {
            states
                .iter()
                .flat_map(|s| s.operator.iter())
                .enumerate()
                .filter(|(i, _)| (*i as u32) % parallelism == subtask)
                .map(|(_, item)| item.clone())
                .collect()
        };
        Ok(Some(RestoredState {
            keyed,
            operator,
            native,
            all_subtasks: false,
        }))
    }

    /// The in-flight records persisted for subtask `subtask` of operator `uid`.
    pub fn channel_state_for(
        &self,
        uid: &str,
        subtask: u32,
        parallelism: u32,
    ) -> Result<Option<&[u8]>, RestoreError> {
        let Some(states) = self.operators.get(uid) else {
            return Ok(None);
        };
        let old_p = states.len() as u32;
        if old_p != parallelism {
            if states.iter().any(|s| !s.channel.is_empty()) {
                return Err(RestoreError::RescaleInFlight {
                    uid: uid.to_string(),
                    from: old_p,
                    to: parallelism,
                });
            }
            return Ok(None);
        }
        Ok(states
            .get(subtask as usize)
            .map(|s| s.channel.as_slice())
            .filter(|c| !c.is_empty()))
    }
}

fn has_state(s: &SubtaskState) -> bool {
    !s.keyed.is_empty() || !s.operator.is_empty() || !s.channel.is_empty() || s.native.is_some()
}
