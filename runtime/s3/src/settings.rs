//! Settings of the S3 storage and the SDK client built from them: endpoint, region, path-style
//! addressing and credentials come from the standard AWS chain (environment, profile, web
//! identity, container and instance metadata) unless set here; multipart sizes, parallelism,
//! retries and deadlines have defaults that suit checkpoint files.

use crate::error::S3ErrorKind;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use std::time::Duration;

/// S3 forbids parts smaller than this (except the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Region used when neither the settings nor the AWS chain name one: S3-compatible stores
/// accept it, and AWS redirects nothing for it.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Static credentials, e.g. resolved from a Kubernetes Secret. Never printed.
#[derive(Clone)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key id is not secret, but it is all a log needs.
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// How the S3 storage connects and uploads.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; `None`: the AWS chain's
    /// (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile), else AWS itself.
    pub endpoint: Option<String>,
    /// Region; `None`: the AWS chain's (`AWS_REGION`, the profile), else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); `None`: on for a custom endpoint (most
    /// S3-compatible stores need it), off for AWS.
    pub path_style: Option<bool>,
    /// Credentials; `None`: the AWS chain's.
    pub credentials: Option<StaticCredentials>,
    /// Files at least this large are uploaded in parts.
    pub multipart_threshold: usize,
    /// Size of each part (at least 5 MiB).
    pub part_size: usize,
    /// Parts uploaded at once.
    pub upload_concurrency: usize,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled on every retry up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// Bound on one operation (a file's upload with all its parts, retries included).
    pub operation_deadline: Duration,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one attempt of one request.
    pub attempt_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            path_style: None,
            credentials: None,
            multipart_threshold: 8 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
            upload_concurrency: 4,
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            operation_deadline: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// A client and what messages need to know about it.
pub(crate) struct Built {
    pub client: aws_sdk_s3::Client,
    /// The endpoint, for messages: the URL, or `AWS S3 (<region>)`.
    pub endpoint: String,
    /// Whether the endpoint is a custom one.
    pub custom_endpoint: bool,
}

/// Builds the SDK client: the AWS chain first, then the settings on top.
pub(crate) async fn build_client(s: &S3Settings) -> Result<Built, S3ErrorKind> {
    // rustls with ring: the SDK's default client would compile aws-lc.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    // Retries are ours (bounded by the operation deadline, never for missing buckets or
    // refused credentials), so the SDK's are off.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(s.connect_timeout)
                .operation_attempt_timeout(s.attempt_timeout)
                .build(),
        );
    if let Some(region) = &s.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &s.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    if let Some(c) = &s.credentials {
        loader = loader.credentials_provider(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "weir-settings",
        ));
    }
    let sdk = loader.load().await;
    let region = sdk
        .region()
        .cloned()
        .unwrap_or_else(|| Region::new(DEFAULT_REGION));
    let endpoint_url = sdk.endpoint_url().map(str::to_string);
    if let Some(url) = &endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(S3ErrorKind::Config(format!(
            "endpoint {url:?} is not a URL. Fix: write it as http://host:port or https://host"
        )));
    }
    let custom_endpoint = endpoint_url.is_some();
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .region(region.clone())
        .force_path_style(s.path_style.unwrap_or(custom_endpoint))
        .build();
    Ok(Built {
        client: aws_sdk_s3::Client::from_conf(conf),
        endpoint: endpoint_url.unwrap_or_else(|| format!("AWS S3 ({region})")),
        custom_endpoint,
    })
}
