//! What can go wrong talking to S3, in terms a user can act on: which bucket is missing and how
//! to create it, which credentials were refused, which endpoint cannot be reached. Also the
//! classification of the SDK's errors into those kinds (and whether a retry can help), and
//! their mapping into the engine's [`StorageError`].

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::time::Duration;
use weir_core::checkpoint::storage::StorageError;

/// An S3 operation failed: what was attempted, where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{op} {location}: {kind}")]
pub struct S3Error {
    /// What was attempted, e.g. `write`.
    pub op: &'static str,
    /// The object or prefix, as an `s3://` URI.
    pub location: String,
    /// Why it failed.
    pub kind: S3ErrorKind,
}

/// Why an S3 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum S3ErrorKind {
    /// The bucket does not exist.
    #[error(
        "bucket {bucket} does not exist at {endpoint}. Fix: create it (for example \
         `aws s3 mb s3://{bucket}{endpoint_flag}`), or point the storage URI at an existing bucket"
    )]
    NoSuchBucket {
        /// The bucket.
        bucket: String,
        /// The endpoint asked.
        endpoint: String,
        /// ` --endpoint-url <endpoint>` for a custom endpoint, else empty.
        endpoint_flag: String,
    },
    /// The credentials were refused or are missing.
    #[error(
        "{endpoint} refused the credentials: {message}. Fix: check the credentials the AWS chain \
         finds (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity) or \
         spec.checkpointing.s3.credentialsSecret, and that they may read, write, list and delete \
         in the bucket"
    )]
    Credentials {
        /// The endpoint asked.
        endpoint: String,
        /// The store's answer.
        message: String,
    },
    /// The endpoint did not answer (connection refused, DNS, timeouts) within the deadline.
    #[error(
        "cannot reach the S3 endpoint {endpoint}: {message} (gave up after {attempts} attempts in \
         {elapsed:.1?}). Fix: check that the endpoint is up and reachable from here \
         (spec.checkpointing.s3.endpoint, AWS_ENDPOINT_URL)"
    )]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// The last failure.
        message: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
    },
    /// The object does not exist.
    #[error("no such object")]
    NotFound,
    /// A conditional write lost: the object changed (or appeared) since it was read.
    #[error("the object changed since it was read (conditional write refused)")]
    PreconditionFailed,
    /// Any other failure of the store, after retries where they could help.
    #[error("{endpoint} failed: {message}{}", retried_note(*attempts, *elapsed))]
    Service {
        /// The endpoint.
        endpoint: String,
        /// The store's answer.
        message: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
    },
    /// A storage URI that is not an S3 location.
    #[error("{0}")]
    Location(String),
    /// The client could not be configured.
    #[error("configuring the S3 client: {0}")]
    Config(String),
}

fn retried_note(attempts: u32, elapsed: Duration) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts in {elapsed:.1?})")
    } else {
        String::new()
    }
}

impl From<S3Error> for StorageError {
    fn from(e: S3Error) -> Self {
        match e.kind {
            S3ErrorKind::NotFound => StorageError::NotFound {
                location: e.location,
            },
            S3ErrorKind::PreconditionFailed => StorageError::Conflict {
                location: e.location,
                message: S3ErrorKind::PreconditionFailed.to_string(),
            },
            kind => StorageError::Remote {
                op: e.op,
                location: e.location,
                message: kind.to_string(),
            },
        }
    }
}

/// How a failed request is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The bucket does not exist.
    NoSuchBucket,
    /// No such object.
    NotFound,
    /// Credentials refused or missing.
    Credentials,
    /// A conditional write lost.
    PreconditionFailed,
    /// No answer: connection refused, timeouts. Retried.
    Unreachable,
    /// The store answered with a transient error (5xx, throttling). Retried.
    Transient,
    /// Anything else; not retried.
    Permanent,
}

impl FailureKind {
    pub(crate) fn retryable(self) -> bool {
        matches!(self, Self::Unreachable | Self::Transient)
    }
}

/// One failed request, classified.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

const CREDENTIAL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
];

const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
];

/// Classifies an SDK error.
pub(crate) fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = match (err.code(), err.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => DisplayErrorContext(err).to_string(),
    };
    let kind = match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => FailureKind::Unreachable,
        SdkError::ResponseError(_) => FailureKind::Transient,
        // Building the request failed: no credentials found, a bad endpoint URL.
        SdkError::ConstructionFailure(_) => {
            if message.to_ascii_lowercase().contains("credential") {
                FailureKind::Credentials
            } else {
                FailureKind::Permanent
            }
        }
        _ => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            match (err.code(), status) {
                (Some("NoSuchBucket"), _) => FailureKind::NoSuchBucket,
                (Some("NoSuchKey" | "NotFound"), _) | (None, Some(404)) => FailureKind::NotFound,
                (Some("PreconditionFailed" | "ConditionalRequestConflict"), _) | (_, Some(412)) => {
                    FailureKind::PreconditionFailed
                }
                (Some(code), _) if CREDENTIAL_CODES.contains(&code) => FailureKind::Credentials,
                (None, Some(401 | 403)) => FailureKind::Credentials,
                (Some(code), _) if TRANSIENT_CODES.contains(&code) => FailureKind::Transient,
                (_, Some(s)) if s >= 500 || s == 429 => FailureKind::Transient,
                _ => FailureKind::Permanent,
            }
        }
    };
    Failure { kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_into_storage_errors() {
        let e = S3Error {
            op: "read",
            location: "s3://b/k".into(),
            kind: S3ErrorKind::NotFound,
        };
        assert!(StorageError::from(e).is_not_found());
        let e = S3Error {
            op: "write",
            location: "s3://b/_latest".into(),
            kind: S3ErrorKind::PreconditionFailed,
        };
        assert!(matches!(
            StorageError::from(e),
            StorageError::Conflict { .. }
        ));
        let e = S3Error {
            op: "write",
            location: "s3://missing/chk-1/a".into(),
            kind: S3ErrorKind::NoSuchBucket {
                bucket: "missing".into(),
                endpoint: "http://127.0.0.1:1".into(),
                endpoint_flag: " --endpoint-url http://127.0.0.1:1".into(),
            },
        };
        let msg = StorageError::from(e).to_string();
        assert!(
            msg.starts_with("write s3://missing/chk-1/a: bucket missing does not exist"),
            "{msg}"
        );
        assert!(
            msg.contains("aws s3 mb s3://missing --endpoint-url http://127.0.0.1:1"),
            "{msg}"
        );
    }
}
