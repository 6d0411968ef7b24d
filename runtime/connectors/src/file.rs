//! Line-oriented sinks: [`StdoutSink`] prints one line per record, [`FileSink`] writes one
//! file per subtask, and [`LineFormat`] decides what a line looks like (JSON, `Display`, or a
//! custom function).
//!
//! Both sinks buffer in memory and hand whole buffers to the operating system, so a line is
//! never split between subtasks and writing costs no system call per record. What is buffered
//! becomes visible on `flush()`, which the engine calls every few milliseconds.

use serde::Serialize;
use std::fmt::Display;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_core::error::OperatorError;
use weir_core::sink::SinkContext;
use weir_core::{Record, Sink, SinkWriter};

/// Bytes a stdout writer buffers before it writes them even without a flush.
const STDOUT_BUFFER: usize = 64 * 1024;

/// Capacity of a file writer's buffer.
const FILE_BUFFER: usize = 256 * 1024;

/// Why a line sink could not write.
#[derive(Debug, thiserror::Error)]
pub enum LineSinkError {
    /// The output directory could not be created.
    #[error("cannot create output directory {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A part file could not be created.
    #[error("cannot create {}: {source}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing or flushing a part file failed.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing to standard output failed (for example, a closed pipe).
    #[error("cannot write to standard output: {0}")]
    Stdout(#[source] io::Error),
    /// A record could not be formatted.
    #[error("cannot format a record as a line: {0}")]
    Format(String),
}

impl LineSinkError {
    fn kind(&self) -> io::ErrorKind {
        match self {
            Self::CreateDir { source, .. }
            | Self::Open { source, .. }
            | Self::Write { source, .. }
            | Self::Stdout(source) => source.kind(),
            Self::Format(_) => io::ErrorKind::InvalidData,
        }
    }
}

impl From<LineSinkError> for OperatorError {
    fn from(e: LineSinkError) -> Self {
        // The io::Error wrapper keeps the message that names the path.
        OperatorError::Sink(io::Error::new(e.kind(), e))
    }
}

type WriteLine<T> = dyn Fn(&T, &mut Vec<u8>) -> Result<(), LineSinkError> + Send + Sync;

/// Turns a record into one line of text.
pub struct LineFormat<T> {
    write: Arc<WriteLine<T>>,
    extension: &'static str,
}

impl<T> Clone for LineFormat<T> {
    fn clone(&self) -> Self {
        Self {
            write: self.write.clone(),
            extension: self.extension,
        }
    }
}

impl<T> std::fmt::Debug for LineFormat<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineFormat")
            .field("extension", &self.extension)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + 'static> LineFormat<T> {
    /// One JSON document per line (JSON Lines); files get the `jsonl` extension.
    pub fn json() -> Self {
        Self {
            write: Arc::new(|v: &T, buf: &mut Vec<u8>| {
                serde_json::to_writer(&mut *buf, v)
                    .map_err(|e| LineSinkError::Format(e.to_string()))
            }),
            extension: "jsonl",
        }
    }
}

impl<T: Display + 'static> LineFormat<T> {
    /// The value's `Display` form; files get the `txt` extension.
    pub fn display() -> Self {
        Self {
            write: Arc::new(|v: &T, buf: &mut Vec<u8>| {
                write!(buf, "{v}").map_err(|e| LineSinkError::Format(e.to_string()))
            }),
            extension: "txt",
        }
    }
}

impl<T: 'static> LineFormat<T> {
    /// Lines made by `f` (which should not contain newlines); files get the `txt` extension.
    pub fn custom(f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        Self {
            write: Arc::new(move |v: &T, buf: &mut Vec<u8>| {
                buf.extend_from_slice(f(v).as_bytes());
                Ok(())
            }),
            extension: "txt",
        }
    }
}

impl<T> LineFormat<T> {
    /// File name extension of part files in this format.
    pub fn extension(&self) -> &'static str {
        self.extension
    }

    /// Appends the line for `value`, with its newline, to `buf`.
    pub fn write_line(&self, value: &T, buf: &mut Vec<u8>) -> Result<(), LineSinkError> {
        (self.write)(value, buf)?;
        buf.push(b'\n');
        Ok(())
    }

    /// The line for `value`, without a newline.
    pub fn line(&self, value: &T) -> Result<String, LineSinkError> {
        let mut buf = Vec::new();
        (self.write)(value, &mut buf)?;
        String::from_utf8(buf).map_err(|e| LineSinkError::Format(e.to_string()))
    }
}

/// Prints every record as a line on standard output.
///
/// With [`StdoutSink::with_subtask_prefix`], lines start with `N> ` (the 1-based subtask)
/// when the sink runs with more than one subtask, as Flink's print sink does.
pub struct StdoutSink<T> {
    format: LineFormat<T>,
    prefix: bool,
}

impl<T> Clone for StdoutSink<T> {
    fn clone(&self) -> Self {
        Self {
            format: self.format.clone(),
            prefix: self.prefix,
        }
    }
}

impl<T> std::fmt::Debug for StdoutSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("format", &self.format)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl<T: Serialize + 'static> StdoutSink<T> {
    /// Prints JSON lines.
    pub fn json() -> Self {
        Self::with_format(LineFormat::json())
    }
}

impl<T: Display + 'static> StdoutSink<T> {
    /// Prints the values' `Display` form.
    pub fn display() -> Self {
        Self::with_format(LineFormat::display())
    }
}

impl<T> StdoutSink<T> {
    /// Prints lines in `format`.
    pub fn with_format(format: LineFormat<T>) -> Self {
        Self {
            format,
            prefix: false,
        }
    }

    /// Whether to start lines with the subtask number when there are several subtasks.
    pub fn with_subtask_prefix(mut self, prefix: bool) -> Self {
        self.prefix = prefix;
        self
    }
}

impl<T: Send + 'static> Sink<T> for StdoutSink<T> {
    fn create_writer(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        let prefix = (self.prefix && ctx.parallelism > 1)
            .then(|| format!("{}> ", ctx.subtask + 1).into_bytes());
        Ok(Box::new(StdoutWriter {
            format: self.format.clone(),
            prefix,
            buf: Vec::new(),
        }))
    }
}

struct StdoutWriter<T> {
    format: LineFormat<T>,
    prefix: Option<Vec<u8>>,
    buf: Vec<u8>,
}

impl<T> StdoutWriter<T> {
    fn drain(&mut self, flush: bool) -> Result<(), LineSinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        out.write_all(&self.buf).map_err(LineSinkError::Stdout)?;
        if flush {
            out.flush().map_err(LineSinkError::Stdout)?;
        }
        self.buf.clear();
        Ok(())
    }
}

impl<T: Send> SinkWriter<T> for StdoutWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        if let Some(p) = &self.prefix {
            self.buf.extend_from_slice(p);
        }
        self.format.write_line(&rec.value, &mut self.buf)?;
        if self.buf.len() >= STDOUT_BUFFER {
            self.drain(false)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OperatorError> {
        Ok(self.drain(true)?)
    }
}

/// Writes every record as a line to `dir/part-<subtask>.<ext>` (`jsonl` for JSON), one file
/// per subtask, creating `dir` if needed. Existing part files are replaced.
pub struct FileSink<T> {
    dir: PathBuf,
    format: LineFormat<T>,
}

impl<T> Clone for FileSink<T> {
    fn clone(&self) -> Self {
        Self {
            dir: self.dir.clone(),
            format: self.format.clone(),
        }
    }
}

impl<T> std::fmt::Debug for FileSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("dir", &self.dir)
            .field("format", &self.format)
            .finish()
    }
}

impl<T: Serialize + 'static> FileSink<T> {
    /// JSON lines into `dir/part-<subtask>.jsonl`.
    pub fn json(dir: impl Into<PathBuf>) -> Self {
        Self::with_format(dir, LineFormat::json())
    }
}

impl<T: Display + 'static> FileSink<T> {
    /// `Display` lines into `dir/part-<subtask>.txt`.
    pub fn display(dir: impl Into<PathBuf>) -> Self {
        Self::with_format(dir, LineFormat::display())
    }
}

impl<T> FileSink<T> {
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

    /// The file subtask `subtask` writes.
    pub fn part_path(&self, subtask: u32) -> PathBuf {
        self.dir
            .join(format!("part-{subtask}.{}", self.format.extension()))
    }
}

impl<T: Send + 'static> Sink<T> for FileSink<T> {
    fn create_writer(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| LineSinkError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.part_path(ctx.subtask);
        let file = File::create(&path).map_err(|source| LineSinkError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Box::new(FileWriter {
            format: self.format.clone(),
            out: BufWriter::with_capacity(FILE_BUFFER, file),
            path,
            line: Vec::new(),
        }))
    }
}

struct FileWriter<T> {
    format: LineFormat<T>,
    out: BufWriter<File>,
    path: PathBuf,
    line: Vec<u8>,
}

impl<T> FileWriter<T> {
    fn io_error(&self, source: io::Error) -> LineSinkError {
        LineSinkError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

impl<T: Send> SinkWriter<T> for FileWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        self.line.clear();
        self.format.write_line(&rec.value, &mut self.line)?;
        self.out
            .write_all(&self.line)
            .map_err(|e| self.io_error(e))?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OperatorError> {
        self.out.flush().map_err(|e| self.io_error(e))?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), OperatorError> {
        self.flush()?;
        // At the end of a bounded job the files are complete: make them durable too.
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| self.io_error(e))?;
        Ok(())
    }
}
