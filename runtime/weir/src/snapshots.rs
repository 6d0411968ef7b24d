//! `weir checkpoints list`: what is in a checkpoint storage root, a savepoint directory or a
//! single snapshot directory, and whether each snapshot can be restored — on a local
//! filesystem or on S3 (`s3://bucket/prefix`, reached through the AWS chain, e.g.
//! `AWS_ENDPOINT_URL`).
//!
//! Every snapshot is loaded the way a restore loads it ([`RestoredJob::load`] reads every state
//! file and verifies its checksum), so `ok` means a restore would find nothing wrong with the
//! files; whether the job accepts the state (maxParallelism, operator uids) is checked only when
//! it starts.

use std::path::{Path, PathBuf};

use weir_core::checkpoint::format::SnapshotMetadata;
use weir_core::checkpoint::restore::RestoredJob;
use weir_core::checkpoint::storage::{CheckpointStorage, LocalFsStorage, METADATA_FILE};
use weir_s3::{S3Settings, S3Storage};

use crate::error::CliError;
use crate::progress::{human_bytes, iso8601_utc};

/// Whether a snapshot can be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// Every file is present and its checksum matches.
    Ok,
    /// `_metadata` or a state file is unreadable or does not match its checksum.
    Corrupt(String),
    /// No `_metadata`: the snapshot never completed (or is being written).
    Incomplete,
}

/// One snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Directory name, e.g. `chk-12` or `savepoint-7-1772359207000`.
    pub name: String,
    /// The directory: a path, or an `s3://` URI.
    pub path: String,
    /// Its `_metadata`, when readable.
    pub metadata: Option<SnapshotMetadata>,
    /// Whether it can be restored.
    pub status: SnapshotStatus,
    /// The newest restorable snapshot of the listing.
    pub latest: bool,
}

impl SnapshotEntry {
    /// The id from the metadata, else from the directory name.
    fn id(&self) -> Option<u64> {
        self.metadata.as_ref().map(|m| m.id).or_else(|| {
            let rest = self
                .name
                .strip_prefix("chk-")
                .or_else(|| self.name.strip_prefix("savepoint-"))?;
            rest.split('-').next()?.parse().ok()
        })
    }

    /// Order of the listing: by id, then (savepoints with the same id) by name, which ends
    /// with the timestamp.
    fn order(&self) -> (u64, usize, String) {
        (self.id().unwrap_or(0), self.name.len(), self.name.clone())
    }
}

/// The snapshots found under `path`, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// What was listed: a path, or an `s3://` URI.
    pub root: String,
    /// Newest first.
    pub entries: Vec<SnapshotEntry>,
    /// A `savepoints` directory under the root, which `weir savepoint` uses by default.
    pub savepoints_dir: Option<String>,
}

fn is_snapshot_name(name: &str) -> bool {
    name.strip_prefix("chk-")
        .is_some_and(|id| id.parse::<u64>().is_ok())
        || name.starts_with("savepoint-")
}

/// The last segment of a path or URI.
fn name_of(location: &str) -> String {
    location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Lists `path`: a checkpoint storage root (its `chk-*` directories), a directory of savepoints
/// (`savepoint-*`), or one snapshot directory (or its `_metadata` file). `file://` and `s3://`
/// URIs are accepted too.
pub fn list(path: &str) -> Result<Listing, CliError> {
    if path
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("s3://"))
    {
        return list_s3(path);
    }
    let root = PathBuf::from(path.strip_prefix("file://").unwrap_or(path));
    if !root.exists() {
        return Err(CliError::NoSuchPath(root));
    }
    let root = if root.is_file() && root.file_name().is_some_and(|n| n == METADATA_FILE) {
        root.parent()
            .map_or_else(|| root.clone(), Path::to_path_buf)
    } else {
        root
    };
    if !root.is_dir() {
        return Err(CliError::ReadPath {
            source: std::io::Error::other(
                "not a directory; pass a checkpoint storage root, a savepoint directory or a \
                 snapshot directory",
            ),
            path: root,
        });
    }
    let location = root.display().to_string();
    let single = root.join(METADATA_FILE).exists() || is_snapshot_name(&name_of(&location));
    let mut dirs = Vec::new();
    if !single {
        let read = std::fs::read_dir(&root).map_err(|source| CliError::ReadPath {
            path: root.clone(),
            source,
        })?;
        dirs = read
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    }
    let storage = LocalFsStorage::new(&location).map_err(|e| storage_error(&location, e))?;
    Ok(listing(&storage, location, single, dirs))
}

fn storage_error(location: &str, e: impl std::fmt::Display) -> CliError {
    CliError::ListStorage {
        location: location.to_string(),
        message: e.to_string(),
    }
}

/// Lists an `s3://` location, with settings from the AWS chain.
fn list_s3(uri: &str) -> Result<Listing, CliError> {
    let root = uri
        .trim_end_matches('/')
        .trim_end_matches(METADATA_FILE)
        .trim_end_matches('/')
        .to_string();
    let storage =
        S3Storage::open(&root, S3Settings::default()).map_err(|e| storage_error(&root, e))?;
    storage.check().map_err(|e| storage_error(&root, e))?;
    let single =
        is_snapshot_name(&name_of(&root)) || storage.read_file(&root, METADATA_FILE).is_ok();
    let dirs = if single {
        Vec::new()
    } else {
        storage
            .list_dirs(&root)
            .map_err(|e| storage_error(&root, e))?
    };
    Ok(listing(&storage, root, single, dirs))
}

/// The listing of `root` (one snapshot if `single`, else its directories named `dirs`).
fn listing(
    storage: &dyn CheckpointStorage,
    root: String,
    single: bool,
    dirs: Vec<String>,
) -> Listing {
    let child = |name: &str| format!("{}/{name}", root.trim_end_matches('/'));
    let mut entries: Vec<SnapshotEntry> = if single {
        vec![inspect(storage, name_of(&root), root.clone())]
    } else {
        dirs.iter()
            .filter(|d| is_snapshot_name(d))
            .map(|d| inspect(storage, d.clone(), child(d)))
            .collect()
    };
    entries.sort_by_key(|e| std::cmp::Reverse(e.order()));
    if let Some(e) = entries.iter_mut().find(|e| e.status == SnapshotStatus::Ok) {
        e.latest = true;
    }
    let savepoints_dir =
        (!single && dirs.iter().any(|d| d == "savepoints")).then(|| child("savepoints"));
    Listing {
        root,
        entries,
        savepoints_dir,
    }
}

/// Reads one snapshot directory's metadata and loads it as a restore would.
fn inspect(storage: &dyn CheckpointStorage, name: String, location: String) -> SnapshotEntry {
    let mut entry = SnapshotEntry {
        name,
        path: location.clone(),
        metadata: None,
        status: SnapshotStatus::Incomplete,
        latest: false,
    };
    // The metadata is read separately from the load so that a snapshot with a corrupt state
    // file still shows its id, kind and time.
    match storage.read_file(&location, METADATA_FILE) {
        Err(e) if e.is_not_found() => return entry,
        Err(e) => {
            entry.status = SnapshotStatus::Corrupt(e.to_string());
            return entry;
        }
        Ok(bytes) => entry.metadata = serde_json::from_slice(&bytes).ok(),
    }
    entry.status = match RestoredJob::load(storage, &location) {
        Ok(_) => SnapshotStatus::Ok,
        Err(e) => {
            // The engine's message starts with the location, which the listing shows already.
            let msg = e.to_string();
            let msg = msg
                .strip_prefix(&format!("{location}: "))
                .map_or(msg.clone(), str::to_string);
            SnapshotStatus::Corrupt(msg)
        }
    };
    entry
}

/// The listing as a table, newest first, e.g.
///
/// ```text
/// 2 snapshots in /tmp/weir/checkpoints/orders (newest first):
/// NAME    ID  KIND        COMPLETED             SIZE   OPERATORS                   STATUS
/// chk-12  12  checkpoint  2026-03-01T10:00:07Z  1.2MB  orders-source:2,orders-sink:2  ok (latest)
/// chk-11  11  checkpoint  2026-03-01T09:59:57Z  1.2MB  orders-source:2,orders-sink:2  ok
/// ```
pub fn format_listing(l: &Listing) -> String {
    let mut out = String::new();
    let n = l.entries.len();
    if n == 0 {
        out.push_str(&format!(
            "no checkpoints or savepoints in {} (looked for chk-* and savepoint-* directories)\n",
            l.root
        ));
    } else {
        out.push_str(&format!(
            "{n} snapshot{} in {} (newest first):\n",
            if n == 1 { "" } else { "s" },
            l.root
        ));
        let header = [
            "NAME",
            "ID",
            "KIND",
            "COMPLETED",
            "SIZE",
            "OPERATORS",
            "STATUS",
        ]
        .map(String::from);
        let rows: Vec<[String; 7]> = l.entries.iter().map(row).collect();
        let mut widths = header.clone().map(|h| h.len());
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.len());
            }
        }
        for r in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    if let Some(sp) = &l.savepoints_dir {
        out.push_str(&format!(
            "savepoints are listed separately: weir checkpoints list {sp}\n"
        ));
    }
    out
}

fn row(e: &SnapshotEntry) -> [String; 7] {
    let dash = || "-".to_string();
    let (id, kind, completed, size, operators) = match &e.metadata {
        Some(m) => (
            m.id.to_string(),
            if m.kind.is_savepoint() {
                "savepoint"
            } else {
                "checkpoint"
            }
            .to_string(),
            iso8601_utc(m.completed_ms),
            human_bytes(m.size()),
            m.operators
                .iter()
                .map(|o| format!("{}:{}", o.uid, o.parallelism))
                .collect::<Vec<_>>()
                .join(","),
        ),
        None => (
            e.id().map_or_else(dash, |id| id.to_string()),
            dash(),
            dash(),
            dash(),
            dash(),
        ),
    };
    let status = match &e.status {
        SnapshotStatus::Ok if e.latest => "ok (latest)".to_string(),
        SnapshotStatus::Ok => "ok".to_string(),
        SnapshotStatus::Corrupt(why) => format!("CORRUPT: {why}"),
        SnapshotStatus::Incomplete => format!("incomplete (no {METADATA_FILE})"),
    };
    [e.name.clone(), id, kind, completed, size, operators, status]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_path_is_a_usage_error() {
        let e = list("/nonexistent/weir-checkpoints").unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
    }

    #[test]
    fn incomplete_and_corrupt_metadata_are_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("chk-3")).unwrap();
        std::fs::create_dir(dir.path().join("chk-4")).unwrap();
        std::fs::write(dir.path().join("chk-4").join(METADATA_FILE), "{not json").unwrap();
        std::fs::create_dir(dir.path().join("savepoints")).unwrap();
        std::fs::create_dir(dir.path().join("unrelated")).unwrap();
        let l = list(&format!("file://{}", dir.path().display())).unwrap();
        let names: Vec<&str> = l.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["chk-4", "chk-3"]);
        assert!(matches!(l.entries[0].status, SnapshotStatus::Corrupt(_)));
        assert_eq!(l.entries[1].status, SnapshotStatus::Incomplete);
        assert!(l.entries.iter().all(|e| !e.latest));
        let text = format_listing(&l);
        assert!(text.contains("chk-3  3   -"), "{text}");
        assert!(text.contains("incomplete (no _metadata)"), "{text}");
        assert!(text.contains("CORRUPT: "), "{text}");
        assert!(text.contains("weir checkpoints list "), "{text}");

        // A single snapshot directory lists just itself.
        let l = list(&dir.path().join("chk-3").display().to_string()).unwrap();
        assert_eq!(l.entries.len(), 1);
        let empty = list(&dir.path().join("unrelated").display().to_string()).unwrap();
        assert!(format_listing(&empty).starts_with("no checkpoints or savepoints in"));
    }
}
