//! What the built-in programs share: the `sink` argument and its sinks, and the numeric
//! arguments whose absence (or zero) means "no limit".

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use weir_connectors::CommittedFileSink;
use weir_connectors::file::{FileSink, StdoutSink};
use weir_core::sink::BlackholeSink;
use weir_core::{Data, DataStream, ProgramArgs, ProgramError};

/// Help text of the `sink` argument.
pub const SINK_HELP: &str = "stdout (JSON lines), blackhole, file:<dir> (JSON lines in \
                             <dir>/part-<subtask>.jsonl), or exactly-once-file:<dir> (JSON \
                             lines in part files that appear when the checkpoint covering them \
                             completes)";

/// Where a program writes its results (the `sink` argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// JSON lines on standard output.
    Stdout,
    /// Discard (benchmarks).
    Blackhole,
    /// JSON lines in `<dir>/part-<subtask>.jsonl`.
    File(PathBuf),
    /// JSON lines in part files committed with checkpoints (exactly-once).
    ExactlyOnceFile(PathBuf),
}

/// A `sink` argument that is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkSpecError {
    /// Neither `stdout`, `blackhole` nor `file:<dir>`.
    #[error("unknown sink {0:?}: use stdout, blackhole, file:<dir> or exactly-once-file:<dir>")]
    Unknown(String),
    /// `file:` without a directory.
    #[error("the file sink needs a directory: {0}<dir>")]
    MissingDir(&'static str),
}

impl FromStr for SinkSpec {
    type Err = SinkSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "stdout" => Ok(Self::Stdout),
            "blackhole" => Ok(Self::Blackhole),
            other => {
                let (prefix, make): (&'static str, fn(PathBuf) -> Self) =
                    if other.starts_with("exactly-once-file:") {
                        ("exactly-once-file:", Self::ExactlyOnceFile)
                    } else if other.starts_with("file:") {
                        ("file:", Self::File)
                    } else {
                        return Err(SinkSpecError::Unknown(other.to_string()));
                    };
                let dir = other[prefix.len()..].trim();
                if dir.is_empty() {
                    return Err(SinkSpecError::MissingDir(prefix));
                }
                Ok(make(PathBuf::from(dir)))
            }
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::Blackhole => f.write_str("blackhole"),
            Self::File(dir) => write!(f, "file:{}", dir.display()),
            Self::ExactlyOnceFile(dir) => write!(f, "exactly-once-file:{}", dir.display()),
        }
    }
}

impl SinkSpec {
    /// The `sink` argument, or `default` when absent.
    pub fn from_args(args: &ProgramArgs, default: SinkSpec) -> Result<Self, ProgramError> {
        match args.get_str("sink") {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|e: SinkSpecError| ProgramError::BadArgument {
                    name: "sink".into(),
                    message: e.to_string(),
                }),
        }
    }

    /// Writes `stream` to this sink, naming the sink vertex `name` and giving it `uid`.
    pub fn attach<T: Data + Serialize>(
        &self,
        stream: &DataStream<T>,
        name: &str,
        uid: &str,
    ) -> DataStream<()> {
        let sink = match self {
            Self::Stdout => stream.sink(name, StdoutSink::<T>::json()),
            Self::Blackhole => stream.sink(name, BlackholeSink),
            Self::File(dir) => stream.sink(name, FileSink::<T>::json(dir.clone())),
            Self::ExactlyOnceFile(dir) => {
                stream.sink(name, CommittedFileSink::<T>::json(dir.clone()))
            }
        };
        sink.uid(uid)
    }
}

/// A count-like argument where absence or `0` means "unlimited".
pub fn optional_u64(args: &ProgramArgs, name: &str) -> Result<Option<u64>, ProgramError> {
    Ok(Some(args.get_or::<u64>(name, 0)?).filter(|&n| n > 0))
}

/// A rate argument (records per second over the whole job) with a default; `0` means
/// "as fast as possible".
pub fn rate(args: &ProgramArgs, default: Option<u64>) -> Result<Option<u64>, ProgramError> {
    Ok(Some(args.get_or::<u64>("rate", default.unwrap_or(0))?).filter(|&n| n > 0))
}

/// A positive integer argument.
pub fn positive_u64(args: &ProgramArgs, name: &str, default: u64) -> Result<u64, ProgramError> {
    let v = args.get_or::<u64>(name, default)?;
    if v == 0 {
        return Err(ProgramError::BadArgument {
            name: name.into(),
            message: "must be at least 1".into(),
        });
    }
    Ok(v)
}

/// A finite, non-negative number argument.
pub fn non_negative_f64(args: &ProgramArgs, name: &str, default: f64) -> Result<f64, ProgramError> {
    let v = args.get_or::<f64>(name, default)?;
    if !v.is_finite() || v < 0.0 {
        return Err(ProgramError::BadArgument {
            name: name.into(),
            message: format!("must be a finite number ≥ 0, not {v}"),
        });
    }
    Ok(v)
}

/// A duration argument that must not be zero.
pub fn positive_duration(
    args: &ProgramArgs,
    name: &str,
    default: std::time::Duration,
) -> Result<std::time::Duration, ProgramError> {
    let d = args.get_duration_or(name, default)?;
    if d.as_millis() == 0 {
        return Err(ProgramError::BadArgument {
            name: name.into(),
            message: "must be at least 1ms".into(),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn args(pairs: &[(&str, &str)]) -> ProgramArgs {
        ProgramArgs::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn sink_specs_parse_and_print() {
        for s in [
            "stdout",
            "blackhole",
            "file:out/summaries",
            "exactly-once-file:out/summaries",
        ] {
            assert_eq!(s.parse::<SinkSpec>().unwrap().to_string(), s);
        }
        assert_eq!(
            "file:".parse::<SinkSpec>(),
            Err(SinkSpecError::MissingDir("file:"))
        );
        assert_eq!(
            "exactly-once-file: ".parse::<SinkSpec>(),
            Err(SinkSpecError::MissingDir("exactly-once-file:"))
        );
        assert!(matches!(
            "kafka".parse::<SinkSpec>(),
            Err(SinkSpecError::Unknown(_))
        ));
        let e = SinkSpec::from_args(&args(&[("sink", "nope")]), SinkSpec::Stdout).unwrap_err();
        assert!(e.to_string().starts_with("spec.job.args.sink:"), "{e}");
        assert_eq!(
            SinkSpec::from_args(&args(&[]), SinkSpec::Blackhole).unwrap(),
            SinkSpec::Blackhole
        );
    }

    #[test]
    fn zero_means_unlimited() {
        assert_eq!(rate(&args(&[("rate", "0")]), Some(5)).unwrap(), None);
        assert_eq!(rate(&args(&[]), Some(5)).unwrap(), Some(5));
        assert_eq!(
            optional_u64(&args(&[("count", "7")]), "count").unwrap(),
            Some(7)
        );
        assert_eq!(optional_u64(&args(&[]), "count").unwrap(), None);
        assert!(positive_u64(&args(&[("keys", "0")]), "keys", 1).is_err());
        assert!(non_negative_f64(&args(&[("t", "-1")]), "t", 1.0).is_err());
    }
}
