//! The on-storage format of snapshots: one state file per operator subtask (bincode, with a
//! magic header and a CRC-32 so a truncated or corrupted file is detected, never half-read),
//! and `_metadata` (JSON, so a person can inspect a checkpoint) listing every file.
//!
//! The format is canonical — keyed state is stored per key group as (state, key, value)
//! entries — so the same files restore at any parallelism and, later, into any state backend.

use super::{KeyedStateSnapshot, NativeState, SharedFileRef, SnapshotKind};
use serde::{Deserialize, Serialize};

/// Files written before native backend snapshots existed; still read.
const MAGIC_V1: &[u8; 8] = b"WEIRSNP1";
const MAGIC: &[u8; 8] = b"WEIRSNP2";

/// Version of `_metadata`.
pub const METADATA_VERSION: u32 = 1;

/// The state of one operator subtask.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubtaskState {
    /// Operator uid.
    pub uid: String,
    /// Subtask index when written.
    pub subtask: u32,
    /// Keyed state by key group.
    pub keyed: KeyedStateSnapshot,
    /// Operator state items.
    pub operator: Vec<Vec<u8>>,
    /// In-flight records persisted by an unaligned checkpoint (bincode `Vec<Record<T>>`).
    pub channel: Vec<u8>,
    /// The state backend's native snapshot (incremental checkpoints), if it took one.
    pub native: Option<NativeState>,
}

/// [`SubtaskState`] as `WEIRSNP1` files hold it.
#[derive(Deserialize)]
struct SubtaskStateV1 {
    uid: String,
    subtask: u32,
    keyed: KeyedStateSnapshot,
    operator: Vec<Vec<u8>>,
    channel: Vec<u8>,
}

/// A file of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileMeta {
    /// Subtask that wrote it.
    pub subtask: u32,
    /// File name in the snapshot directory.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 of the whole file.
    pub crc32: u32,
    /// Files in the shared area this subtask's state references (incremental checkpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<SharedFileRef>,
}

/// One operator in `_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorMeta {
    /// Operator uid.
    pub uid: String,
    /// Display name.
    pub name: String,
    /// Parallelism when written.
    pub parallelism: u32,
    /// One file per subtask.
    pub files: Vec<FileMeta>,
}

/// `_metadata`: what makes a snapshot complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMetadata {
    /// Format version.
    pub version: u32,
    /// Checkpoint id.
    pub id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Job name.
    pub job_name: String,
    /// Trigger time (ms since epoch).
    pub timestamp_ms: i64,
    /// Completion time (ms since epoch).
    pub completed_ms: i64,
    /// Number of key groups (must match on restore).
    pub max_parallelism: u32,
    /// Operators.
    pub operators: Vec<OperatorMeta>,
}

impl SnapshotMetadata {
    /// Total bytes of state files, shared files included (what a restore reads).
    pub fn size(&self) -> u64 {
        self.operators
            .iter()
            .flat_map(|o| &o.files)
            .map(|f| f.size + f.shared.iter().map(|s| s.size).sum::<u64>())
            .sum()
    }

    /// The shared files this snapshot references, each once.
    pub fn shared_files(&self) -> std::collections::BTreeSet<SharedFileRef> {
        self.operators
            .iter()
            .flat_map(|o| &o.files)
            .flat_map(|f| f.shared.iter().cloned())
            .collect()
    }
}

/// Why a snapshot file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not a snapshot file, or truncated.
    #[error("{file}: not a Weir snapshot file or truncated")]
    BadHeader {
        /// File name.
        file: String,
    },
    /// The checksum does not match.
    #[error(
        "{file}: checksum mismatch (expected {expected:08x}, found {found:08x}); the file is corrupt"
    )]
    Checksum {
        /// File name.
        file: String,
        /// From `_metadata`.
        expected: u32,
        /// Computed.
        found: u32,
    },
    /// The content does not decode.
    #[error("{file}: cannot decode: {message}")]
    Decode {
        /// File name.
        file: String,
        /// Why.
        message: String,
    },
}

/// Encodes a subtask's state file.
pub fn encode_subtask(state: &SubtaskState) -> Result<Vec<u8>, FormatError> {
    let body = bincode::serialize(state).map_err(|e| FormatError::Decode {
        file: state.uid.clone(),
        message: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    Ok(out)
}

/// CRC-32 of a whole file, as recorded in `_metadata`.
pub fn file_crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Decodes a subtask's state file, checking its integrity.
pub fn decode_subtask(
    file: &str,
    bytes: &[u8],
    expected_crc: u32,
) -> Result<SubtaskState, FormatError> {
    let found = crc32fast::hash(bytes);
    if found != expected_crc {
        return Err(FormatError::Checksum {
            file: file.to_string(),
            expected: expected_crc,
            found,
        });
    }
    if bytes.len() < 12 || (&bytes[..8] != MAGIC && &bytes[..8] != MAGIC_V1) {
        return Err(FormatError::BadHeader {
            file: file.to_string(),
        });
    }
    let body = &bytes[8..bytes.len() - 4];
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[bytes.len() - 4..]);
    if crc32fast::hash(body) != u32::from_le_bytes(crc) {
        return Err(FormatError::BadHeader {
            file: file.to_string(),
        });
    }
    let decode_err = |e: bincode::Error| FormatError::Decode {
        file: file.to_string(),
        message: e.to_string(),
    };
    if &bytes[..8] == MAGIC_V1 {
        let v1: SubtaskStateV1 = bincode::deserialize(body).map_err(decode_err)?;
        return Ok(SubtaskState {
            uid: v1.uid,
            subtask: v1.subtask,
            keyed: v1.keyed,
            operator: v1.operator,
            channel: v1.channel,
            native: None,
        });
    }
    bincode::deserialize(body).map_err(decode_err)
}
