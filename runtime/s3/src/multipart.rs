//! Multipart upload of a large file: the parts go up several at once, each retried on its own
//! within the operation's deadline; the upload completes with the parts in order, or is
//! aborted so that no orphaned parts keep costing storage.

use crate::error::{Failure, FailureKind, S3Error, classify};
use crate::retry::retry;
use crate::settings::MIN_PART_SIZE;
use crate::{Inner, ObjectPath};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures_util::stream::{self, StreamExt, TryStreamExt};

/// Uploads `body` to `at` in parts of `settings.part_size` (at least 5 MiB).
pub(crate) async fn upload(
    inner: &Inner,
    at: &ObjectPath,
    body: bytes::Bytes,
) -> Result<(), S3Error> {
    // One deadline for the whole upload, all parts and the completion included.
    let policy = inner.policy();
    let op = "write";
    let created = retry(&policy, || {
        let req = inner
            .client
            .create_multipart_upload()
            .bucket(&at.bucket)
            .key(&at.key);
        async move { req.send().await.map_err(|e| classify(&e)) }
    })
    .await
    .map_err(|g| inner.error(op, at, g))?;
    let Some(upload_id) = created.upload_id().map(str::to_string) else {
        return Err(inner.error(
            op,
            at,
            crate::retry::GaveUp {
                last: Failure::new(FailureKind::Permanent, "the store returned no upload id"),
                attempts: 1,
                elapsed: std::time::Duration::ZERO,
            },
        ));
    };

    let part_size = inner.settings.part_size.max(MIN_PART_SIZE);
    let parts: Vec<(i32, bytes::Bytes)> = (0..body.len())
        .step_by(part_size)
        .zip(1i32..)
        .map(|(start, n)| (n, body.slice(start..(start + part_size).min(body.len()))))
        .collect();
    let uploaded: Result<Vec<CompletedPart>, _> = stream::iter(parts)
        .map(|(n, chunk)| {
            let upload_id = &upload_id;
            async move {
                let out = retry(&policy, || {
                    let req = inner
                        .client
                        .upload_part()
                        .bucket(&at.bucket)
                        .key(&at.key)
                        .upload_id(upload_id)
                        .part_number(n)
                        .body(ByteStream::from(chunk.clone()));
                    async move { req.send().await.map_err(|e| classify(&e)) }
                })
                .await?;
                Ok(CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build())
            }
        })
        .buffer_unordered(inner.settings.upload_concurrency.max(1))
        .try_collect()
        .await;
    let completed = match uploaded {
        Ok(mut parts) => {
            parts.sort_by_key(|p| p.part_number());
            let done = CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build();
            retry(&policy, || {
                let req = inner
                    .client
                    .complete_multipart_upload()
                    .bucket(&at.bucket)
                    .key(&at.key)
                    .upload_id(&upload_id)
                    .multipart_upload(done.clone());
                async move { req.send().await.map(|_| ()).map_err(|e| classify(&e)) }
            })
            .await
        }
        Err(g) => Err(g),
    };
    if let Err(g) = completed {
        abort(inner, at, &upload_id).await;
        return Err(inner.error(op, at, g));
    }
    inner
        .uploads_in_parts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Aborts an upload, best effort: it gets its own short deadline, since the upload's may be
/// spent, and a failure here is logged (the bucket's lifecycle rules are the backstop).
async fn abort(inner: &Inner, at: &ObjectPath, upload_id: &str) {
    let mut policy = inner.policy();
    policy.deadline = std::time::Instant::now()
        + inner
            .settings
            .operation_deadline
            .min(std::time::Duration::from_secs(10));
    let aborted = retry(&policy, || {
        let req = inner
            .client
            .abort_multipart_upload()
            .bucket(&at.bucket)
            .key(&at.key)
            .upload_id(upload_id);
        async move { req.send().await.map(|_| ()).map_err(|e| classify(&e)) }
    })
    .await;
    if let Err(g) = aborted {
        tracing::warn!(
            "could not abort the multipart upload {upload_id} of {}: {}",
            at.uri(),
            g.last.message
        );
    }
}
