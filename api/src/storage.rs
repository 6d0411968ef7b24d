//! Checkpoint and savepoint storage locations: parsing the URI strings found
//! in `spec.checkpointing.storage` (and savepoint target directories) into a
//! typed location the runtime can open.
//!
//! Two schemes are supported:
//!
//! * `file:///absolute/path` — a local or mounted file system. A path without
//!   the leading slash (`file://relative/path`) is resolved against the
//!   working directory of the `weir` process, which is what local runs of the
//!   embedded mode want; RFC 8089 host names are therefore not supported.
//! * `s3://bucket/prefix` — an S3-compatible object store; the prefix may be
//!   empty.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The spec field that usually carries a storage URI; used in error messages.
pub const STORAGE_FIELD: &str = "spec.checkpointing.storage";

/// The fix offered for every malformed storage URI.
pub const STORAGE_FIX: &str = "use file:///absolute/path or s3://bucket/prefix";

/// A parsed checkpoint storage location.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckpointStorageUri {
    /// A directory on a file system; relative paths are relative to the
    /// working directory of the process.
    File {
        /// Directory path, absolute or relative.
        path: PathBuf,
    },
    /// A bucket and key prefix on an S3-compatible object store.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix without leading or trailing `/`; may be empty.
        prefix: String,
    },
}

/// A storage URI that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason} (found \"{uri}\"). Fix: {STORAGE_FIX}.")]
pub struct StorageUriError {
    /// The field the URI came from, e.g. `spec.checkpointing.storage`.
    pub field: String,
    /// The rejected URI.
    pub uri: String,
    /// What is wrong with it.
    pub reason: String,
}

impl CheckpointStorageUri {
    /// Parses a URI from `spec.checkpointing.storage`.
    pub fn parse(uri: &str) -> Result<Self, StorageUriError> {
        Self::parse_for_field(uri, STORAGE_FIELD)
    }

    /// Parses a URI, naming `field` in any error; use this for storage URIs
    /// that come from somewhere other than `spec.checkpointing.storage`, such
    /// as a savepoint target directory.
    pub fn parse_for_field(uri: &str, field: &str) -> Result<Self, StorageUriError> {
        let err = |reason: String| StorageUriError {
            field: field.to_owned(),
            uri: uri.to_owned(),
            reason,
        };
        if uri.trim().is_empty() {
            return Err(err("must not be empty".into()));
        }
        let Some((scheme, rest)) = uri.split_once("://") else {
            let reason = if uri.starts_with('/') {
                format!("missing scheme; did you mean file://{uri}?")
            } else {
                "missing scheme".to_owned()
            };
            return Err(err(reason));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if rest.is_empty() {
                    return Err(err("missing path after file://".into()));
                }
                Ok(CheckpointStorageUri::File {
                    path: PathBuf::from(rest),
                })
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(err("missing bucket name after s3://".into()));
                }
                if let Some(problem) = bucket_name_problem(bucket) {
                    return Err(err(format!(
                        "invalid S3 bucket name \"{bucket}\": {problem}"
                    )));
                }
                Ok(CheckpointStorageUri::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                })
            }
            other => Err(err(format!("unsupported scheme \"{other}\""))),
        }
    }

    /// The location of `segment` inside this one, e.g. a per-job or
    /// per-checkpoint subdirectory.
    pub fn child(&self, segment: &str) -> Self {
        let segment = segment.trim_matches('/');
        match self {
            CheckpointStorageUri::File { path } => CheckpointStorageUri::File {
                path: path.join(segment),
            },
            CheckpointStorageUri::S3 { bucket, prefix } => CheckpointStorageUri::S3 {
                bucket: bucket.clone(),
                prefix: if prefix.is_empty() {
                    segment.to_owned()
                } else {
                    format!("{prefix}/{segment}")
                },
            },
        }
    }
}

/// Applies the S3 bucket naming rules that matter for URI parsing; the store
/// itself has the final word.
fn bucket_name_problem(bucket: &str) -> Option<&'static str> {
    if !(3..=63).contains(&bucket.len()) {
        return Some("must be 3 to 63 characters long");
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Some("may contain only lowercase letters, digits, '.' and '-'");
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge_ok(bucket.bytes().next()) || !edge_ok(bucket.bytes().last()) {
        return Some("must start and end with a letter or digit");
    }
    None
}

impl FromStr for CheckpointStorageUri {
    type Err = StorageUriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for CheckpointStorageUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointStorageUri::File { path } => write!(f, "file://{}", path.display()),
            CheckpointStorageUri::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            CheckpointStorageUri::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_schemes() {
        assert_eq!(
            CheckpointStorageUri::parse("file:///var/weir/ckpt").unwrap(),
            CheckpointStorageUri::File {
                path: PathBuf::from("/var/weir/ckpt")
            }
        );
        assert_eq!(
            CheckpointStorageUri::parse("file://data/ckpt").unwrap(),
            CheckpointStorageUri::File {
                path: PathBuf::from("data/ckpt")
            }
        );
        assert_eq!(
            CheckpointStorageUri::parse("s3://my-bucket/jobs/orders/").unwrap(),
            CheckpointStorageUri::S3 {
                bucket: "my-bucket".into(),
                prefix: "jobs/orders".into()
            }
        );
        assert_eq!(
            CheckpointStorageUri::parse("s3://my-bucket").unwrap(),
            CheckpointStorageUri::S3 {
                bucket: "my-bucket".into(),
                prefix: String::new()
            }
        );
    }

    #[test]
    fn round_trips_through_display() {
        for uri in [
            "file:///var/weir",
            "file://rel/dir",
            "s3://bkt/a/b",
            "s3://bkt",
        ] {
            assert_eq!(CheckpointStorageUri::parse(uri).unwrap().to_string(), uri);
        }
    }

    #[test]
    fn child_appends_a_segment() {
        let s3 = CheckpointStorageUri::parse("s3://bkt").unwrap();
        assert_eq!(
            s3.child("job-1").child("chk-3").to_string(),
            "s3://bkt/job-1/chk-3"
        );
        let file = CheckpointStorageUri::parse("file:///tmp/x").unwrap();
        assert_eq!(file.child("chk-1").to_string(), "file:///tmp/x/chk-1");
    }

    #[test]
    fn rejects_bad_uris_with_field_and_fix() {
        for (uri, reason) in [
            ("hdfs://x", "unsupported scheme \"hdfs\""),
            ("/tmp/ckpt", "did you mean file:///tmp/ckpt?"),
            ("", "must not be empty"),
            ("file://", "missing path"),
            ("s3://", "missing bucket"),
            ("s3://My_Bucket/x", "invalid S3 bucket name"),
        ] {
            let err = CheckpointStorageUri::parse(uri).unwrap_err().to_string();
            assert!(err.starts_with("spec.checkpointing.storage: "), "{err}");
            assert!(err.contains(reason), "{err}");
            assert!(
                err.contains("Fix: use file:///absolute/path or s3://bucket/prefix"),
                "{err}"
            );
        }
    }
}
