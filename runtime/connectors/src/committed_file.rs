//! [`CommittedFileSink`]: exactly-once line files, Flink's `FileSink` protocol.
//!
//! Each sink subtask writes into a hidden in-progress part file. At a checkpoint barrier the
//! part is flushed, synced and closed, and its name goes into the checkpoint as pending; when
//! that checkpoint completes the part is renamed to its visible name, `part-<subtask>-<n>`.
//! A restore renames the pending parts of the restored (completed) checkpoint that were not
//! renamed before the failure, and deletes the subtask's in-progress parts written after it —
//! their records are replayed. Readers that take only visible parts see every record exactly
//! once. Without checkpointing, parts become visible at the end of the input only.

use crate::file::{LineFormat, LineSinkError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use weir_core::checkpoint::{decode, encode};
use weir_core::error::OperatorError;
use weir_core::sink::SinkContext;
use weir_core::{Record, Sink, SinkWriter};

const BUFFER: usize = 256 * 1024;

/// Exactly-once line files in a directory (see the module docs).
pub struct CommittedFileSink<T> {
    dir: PathBuf,
    format: LineFormat<T>,
}

impl<T> Clone for CommittedFileSink<T> {
    fn clone(&self) -> Self {
        Self {
            dir: self.dir.clone(),
            format: self.format.clone(),
        }
    }
}

impl<T> std::fmt::Debug for CommittedFileSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommittedFileSink")
            .field("dir", &self.dir)
            .field("format", &self.format)
            .finish()
    }
}

impl<T: Serialize + 'static> CommittedFileSink<T> {
    /// JSON lines.
    pub fn json(dir: impl Into<PathBuf>) -> Self {
        Self::with_format(dir, LineFormat::json())
    }
}

impl<T> CommittedFileSink<T> {
    /// Lines in `format` into `dir`.
    pub fn with_format(dir: impl Into<PathBuf>, format: LineFormat<T>) -> Self {
        Self {
            dir: dir.into(),
            format,
        }
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Every visible line under `dir`, in part-file order: what a downstream reader sees.
pub fn read_committed(dir: &Path) -> io::Result<Vec<String>> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-"))
        })
        .collect();
    parts.sort();
    let mut lines = Vec::new();
    for p in parts {
        lines.extend(std::fs::read_to_string(&p)?.lines().map(str::to_string));
    }
    Ok(lines)
}

impl<T: Send + 'static> Sink<T> for CommittedFileSink<T> {
    fn create_writer(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| LineSinkError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        // Part names must not collide with those of an earlier run or attempt: the time of
        // opening, in ms, orders them and tells them apart.
        let run = weir_core::time::now_ms();
        Ok(Box::new(CommittedFileWriter {
            dir: self.dir.clone(),
            format: self.format.clone(),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism,
            run,
            next: 0,
            current: None,
            pending: BTreeMap::new(),
            line: Vec::new(),
        }))
    }
}

struct Part {
    name: String,
    out: BufWriter<File>,
}

struct CommittedFileWriter<T> {
    dir: PathBuf,
    format: LineFormat<T>,
    subtask: u32,
    parallelism: u32,
    run: i64,
    next: u64,
    current: Option<Part>,
    /// Closed parts (visible paths) per checkpoint, waiting for it to complete.
    pending: BTreeMap<u64, Vec<PathBuf>>,
    line: Vec<u8>,
}

fn hidden(name: &str) -> String {
    format!(".{name}.inprogress")
}

impl<T> CommittedFileWriter<T> {
    fn write_error(&self, name: &str, source: io::Error) -> LineSinkError {
        LineSinkError::Write {
            path: self.dir.join(hidden(name)),
            source,
        }
    }

    fn part(&mut self) -> Result<&mut Part, LineSinkError> {
        if self.current.is_none() {
            let name = format!(
                "part-{:04}-{:013}-{:06}.{}",
                self.subtask,
                self.run,
                self.next,
                self.format.extension()
            );
            self.next += 1;
            let path = self.dir.join(hidden(&name));
            let file =
                File::create(&path).map_err(|source| LineSinkError::Open { path, source })?;
            self.current = Some(Part {
                name,
                out: BufWriter::with_capacity(BUFFER, file),
            });
        }
        self.current
            .as_mut()
            .ok_or_else(|| LineSinkError::Format("no part file".into()))
    }

    /// Flushes, syncs and closes the current part; its visible path, if it had one.
    fn close(&mut self) -> Result<Option<PathBuf>, LineSinkError> {
        let Some(mut p) = self.current.take() else {
            return Ok(None);
        };
        p.out.flush().map_err(|e| self.write_error(&p.name, e))?;
        p.out
            .get_ref()
            .sync_all()
            .map_err(|e| self.write_error(&p.name, e))?;
        Ok(Some(self.dir.join(p.name)))
    }

    /// Makes a part visible; idempotent, since a restore repeats what a failure interrupted.
    /// `part` is the visible path; the part is renamed in the directory it was written to, even
    /// when the sink writes elsewhere since.
    fn publish(&self, part: &Path) -> Result<(), LineSinkError> {
        let (Some(dir), Some(name)) = (part.parent(), part.file_name()) else {
            return Err(LineSinkError::Format(format!(
                "not a part file path: {}",
                part.display()
            )));
        };
        let from = dir.join(hidden(&name.to_string_lossy()));
        let to = part.to_path_buf();
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(_) if to.exists() => Ok(()),
            Err(source) if source.kind() == io::ErrorKind::NotFound => Err(LineSinkError::Write {
                path: from,
                source: io::Error::new(
                    source.kind(),
                    format!(
                        "this part of a completed checkpoint is gone and {} does not exist \
                             either: were files removed from the output directory while the job \
                             ran? Restore from a snapshot taken after that, or without state",
                        to.display()
                    ),
                ),
            }),
            Err(source) => Err(LineSinkError::Write { path: from, source }),
        }
    }
}

/// What a checkpoint holds per pending checkpoint: (checkpoint id, visible paths of the parts).
type PendingParts = (u64, Vec<PathBuf>);

impl<T: Send> SinkWriter<T> for CommittedFileWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        self.format.write_line(&rec.value, &mut line)?;
        let part = self.part()?;
        let r = part.out.write_all(&line);
        let name = part.name.clone();
        self.line = line;
        r.map_err(|e| self.write_error(&name, e))?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), OperatorError> {
        // End of input: everything written is final.
        if let Some(name) = self.close()? {
            self.pending.entry(u64::MAX).or_default().push(name);
        }
        for names in std::mem::take(&mut self.pending).values() {
            for n in names {
                self.publish(n)?;
            }
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Vec<Vec<u8>>, OperatorError> {
        if let Some(name) = self.close()? {
            self.pending.entry(checkpoint_id).or_default().push(name);
        }
        self.pending
            .iter()
            .map(|(id, names)| encode(&(*id, names)))
            .collect()
    }

    fn commit(&mut self, checkpoint_id: u64) -> Result<(), OperatorError> {
        let later = self.pending.split_off(&(checkpoint_id + 1));
        let due = std::mem::replace(&mut self.pending, later);
        for names in due.values() {
            for n in names {
                self.publish(n)?;
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: Vec<Vec<u8>>) -> Result<(), OperatorError> {
        // The restored checkpoint completed, so everything it holds as pending is committed.
        for item in state {
            let (_, names): PendingParts = decode("committed file sink", &item)?;
            for n in names {
                self.publish(&n)?;
            }
        }
        // In-progress parts of this subtask (and, from subtask 0, of subtasks a rescale
        // removed) hold records after the checkpoint, which the sources replay.
        let entries = std::fs::read_dir(&self.dir).map_err(|source| LineSinkError::Open {
            path: self.dir.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(".part-")
                .filter(|_| name.ends_with(".inprogress"))
            else {
                continue;
            };
            let owner: Option<u32> = rest.split('-').next().and_then(|s| s.parse().ok());
            let mine = owner == Some(self.subtask)
                || (self.subtask == 0 && owner.is_some_and(|o| o >= self.parallelism));
            if mine {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    fn ctx(subtask: u32) -> SinkContext {
        SinkContext {
            subtask,
            parallelism: 2,
            metrics: Arc::new(Default::default()),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weir-cfs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn parts_appear_when_their_checkpoint_completes() {
        let d = dir("visible");
        let sink = CommittedFileSink::<u32>::json(&d);
        let mut w = sink.create_writer(&ctx(0)).unwrap();
        w.write(Record::new(0, 1)).unwrap();
        w.write(Record::new(0, 2)).unwrap();
        let state = w.pre_commit(1).unwrap();
        assert_eq!(state.len(), 1);
        w.write(Record::new(0, 3)).unwrap();
        assert!(
            read_committed(&d).unwrap().is_empty(),
            "nothing before completion"
        );
        w.commit(1).unwrap();
        assert_eq!(read_committed(&d).unwrap(), ["1", "2"]);
        w.finish().unwrap();
        assert_eq!(read_committed(&d).unwrap(), ["1", "2", "3"]);
    }

    #[test]
    fn a_restore_commits_the_checkpoint_and_drops_what_came_after() {
        let d = dir("restore");
        let sink = CommittedFileSink::<u32>::json(&d);
        let mut w = sink.create_writer(&ctx(1)).unwrap();
        w.write(Record::new(0, 1)).unwrap();
        let state = w.pre_commit(7).unwrap();
        w.write(Record::new(0, 2)).unwrap();
        w.pre_commit(8).unwrap();
        w.write(Record::new(0, 3)).unwrap();
        w.flush().unwrap();
        // The process dies before checkpoint 7's completion reached the sink.
        drop(w);
        let mut w = sink.create_writer(&ctx(1)).unwrap();
        w.restore(state.clone()).unwrap();
        assert_eq!(read_committed(&d).unwrap(), ["1"]);
        // Restoring twice (a failure during the restore) changes nothing.
        w.restore(state).unwrap();
        w.write(Record::new(0, 2)).unwrap();
        w.finish().unwrap();
        assert_eq!(read_committed(&d).unwrap(), ["1", "2"]);
        let hidden = std::fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(hidden, 0, "no in-progress part is left behind");
    }
}
