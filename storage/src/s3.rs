//! `s3://bucket/prefix` through aws-sdk-s3, also for S3-compatible stores (endpoint override,
//! path-style addressing). The SDK retries transient failures (network errors, 5xx, throttling)
//! with exponential backoff until a response's headers arrive; a body that breaks off after them
//! (a truncated body, a reset mid-transfer) is retried here, with the same attempts and backoff.
//! Large files go up in multipart uploads.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use crate::location::S3Options;
use crate::{ObjectMeta, ObjectStore, StorageError};

#[derive(Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    multipart_threshold: u64,
    part_size: u64,
    max_attempts: u32,
    copy_part_threshold: u64,
}

/// Backoff before attempt `attempt + 1` of a download whose body broke off: as the SDK's.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200)
        .saturating_mul(1 << attempt.min(5))
        .min(Duration::from_secs(5))
}

/// A failed download attempt: before the body (the SDK has retried already) or in it.
enum Attempt {
    Request(StorageError),
    Body(StorageError),
}

impl S3Store {
    pub async fn connect(bucket: &str, options: &S3Options) -> Result<Self, StorageError> {
        let retry = RetryConfig::standard()
            .with_max_attempts(options.max_attempts.max(1))
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(300))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(options.region.clone()))
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(c) = &options.static_credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "stator-static",
            ));
        } else if let Some(dir) = &options.credentials_dir {
            loader = loader.credentials_provider(read_credentials_dir(dir)?);
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.path_style)
            // We send our own SHA-256 where we know it; the SDK's streaming CRC trailers are not
            // understood by every S3-compatible store.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_owned(),
            multipart_threshold: options.multipart_threshold,
            part_size: options.part_size.max(5 << 20),
            max_attempts: options.max_attempts.max(1),
            copy_part_threshold: options.copy_part_threshold.max(5 << 20),
        })
    }

    fn remote<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError {
        let url = self.url(key);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        if status == Some(404) || matches!(code.as_deref(), Some("NoSuchKey" | "NotFound")) {
            return StorageError::NotFound { url };
        }
        if status == Some(412) || code.as_deref() == Some("PreconditionFailed") {
            return StorageError::AlreadyExists { url };
        }
        let transient = match &err {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            _ => {
                status.is_some_and(|s| s >= 500 || s == 429)
                    || matches!(
                        code.as_deref(),
                        Some(
                            "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout"
                        )
                    )
            }
        };
        let message = match (&code, err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            _ => format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(&err)
            ),
        };
        StorageError::Remote {
            op,
            url,
            message,
            transient,
        }
    }

    async fn multipart(&self, key: &str, path: &Path, size: u64) -> Result<(), StorageError> {
        let ops = PartOps {
            start: "start multipart upload of",
            part: "upload part of",
            complete: "complete multipart upload of",
        };
        self.in_parts(
            key,
            size,
            self.part_size,
            ops,
            |upload_id, number, offset, len| async move {
                let body = ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(Length::Exact(len))
                    .build()
                    .await
                    .map_err(|e| StorageError::Remote {
                        op: "read part for",
                        url: self.url(key),
                        message: e.to_string(),
                        transient: false,
                    })?;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(len as i64)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| self.remote(ops.part, key, e))?;
                Ok(part.e_tag().map(str::to_owned))
            },
        )
        .await
    }

    /// A multipart upload of `size` bytes to `key`, `part` bytes at a time: `send_part(upload
    /// id, part number, offset, length)` sends one part and returns its ETag. Completes the
    /// upload, or aborts it on any error. A completion whose reply was lost after the store
    /// applied it (the SDK's retry finds no upload) counts when the object has the size.
    async fn in_parts<F, Fut>(
        &self,
        key: &str,
        size: u64,
        part: u64,
        ops: PartOps,
        send_part: F,
    ) -> Result<(), StorageError>
    where
        F: Fn(String, i32, u64, u64) -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, StorageError>>,
    {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.remote(ops.start, key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = async {
            let mut parts = Vec::new();
            let (mut offset, mut number) = (0u64, 1i32);
            while offset < size {
                let len = part.min(size - offset);
                let e_tag = send_part(upload_id.clone(), number, offset, len).await?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(e_tag)
                        .build(),
                );
                offset += len;
                number += 1;
            }
            let completed = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await;
            match completed {
                Ok(_) => Ok(()),
                Err(e) => match self.remote(ops.complete, key, e) {
                    StorageError::NotFound { url } => {
                        if self.size_of(key).await? == Some(size) {
                            Ok(())
                        } else {
                            Err(StorageError::NotFound { url })
                        }
                    }
                    other => Err(other),
                },
            }
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

/// What the steps of a multipart upload are called in errors.
#[derive(Clone, Copy)]
struct PartOps {
    start: &'static str,
    part: &'static str,
    complete: &'static str,
}

/// `bucket/key` as the `x-amz-copy-source` header wants it: percent-encoded but for `/`.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    for b in format!("{bucket}/{key}").bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl S3Store {
    /// Copies an object in parts of at least the part size (at most 10,000 parts).
    async fn copy_in_parts(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        let ops = PartOps {
            start: "start multipart copy to",
            part: "copy a part to",
            complete: "complete multipart copy to",
        };
        let part = self.part_size.max(size.div_ceil(10_000));
        self.in_parts(
            to,
            size,
            part,
            ops,
            |upload_id, number, offset, len| async move {
                let copied = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(to)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(copy_source(&self.bucket, from))
                    .copy_source_range(format!("bytes={offset}-{}", offset + len - 1))
                    .send()
                    .await
                    .map_err(|e| self.remote(ops.part, to, e))?;
                Ok(copied
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .map(str::to_owned))
            },
        )
        .await
    }

    /// The size of `key`, or `None` when it does not exist.
    async fn size_of(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => match self.remote("check", key, e) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Runs a download `attempt` until it succeeds, fails before its body (already retried by
    /// the SDK), or its body has broken off `max_attempts` times.
    async fn retry_body<T, F, Fut>(&self, key: &str, mut attempt: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let mut n = 0;
        loop {
            n += 1;
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(Attempt::Request(e)) => return Err(e),
                Err(Attempt::Body(e)) if n >= self.max_attempts => return Err(e),
                Err(Attempt::Body(e)) => {
                    tracing::warn!(url = %self.url(key), attempt = n, error = %e, "download broke off; retrying");
                    tokio::time::sleep(backoff(n)).await;
                }
            }
        }
    }

    fn body_error(&self, key: &str, e: impl std::fmt::Display) -> Attempt {
        Attempt::Body(StorageError::Remote {
            op: "download",
            url: self.url(key),
            message: format!("the body broke off: {e}"),
            transient: true,
        })
    }
}

/// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN` from
/// files in `dir` (a mounted Kubernetes Secret).
fn read_credentials_dir(dir: &Path) -> Result<Credentials, StorageError> {
    let read = |name: &str| -> Result<Option<String>, StorageError> {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::Credentials(format!(
                "{}: {e}",
                dir.join(name).display()
            ))),
        }
    };
    let missing =
        |name: &str| StorageError::Credentials(format!("{} is missing", dir.join(name).display()));
    let key = read("AWS_ACCESS_KEY_ID")?.ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
    let secret = read("AWS_SECRET_ACCESS_KEY")?.ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
    let token = read("AWS_SESSION_TOKEN")?;
    Ok(Credentials::new(
        key,
        secret,
        token,
        None,
        "stator-credentials-dir",
    ))
}

fn sha256_base64(hex_digest: &str) -> Option<String> {
    hex::decode(hex_digest)
        .ok()
        .map(aws_smithy_types::base64::encode)
}

#[async_trait]
impl ObjectStore for S3Store {
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let sha = sha256_base64(&crate::sha256_bytes(&data));
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_checksum_sha256(sha)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.remote("put", key, e))?;
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<u64, StorageError> {
        let size = self
            .size_of(from)
            .await?
            .ok_or_else(|| StorageError::NotFound {
                url: self.url(from),
            })?;
        if size >= self.copy_part_threshold {
            self.copy_in_parts(from, to, size).await?;
        } else {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(copy_source(&self.bucket, from))
                .send()
                .await
                .map_err(|e| self.remote("copy to", to, e))?;
        }
        Ok(size)
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let sha = sha256_base64(&crate::sha256_bytes(&data));
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .set_checksum_sha256(sha)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.remote("put", key, e))?;
        Ok(())
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        sha256: Option<&str>,
    ) -> Result<u64, StorageError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(StorageError::io("cannot read", path))?
            .len();
        if size >= self.multipart_threshold {
            self.multipart(key, path, size).await?;
            return Ok(size);
        }
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StorageError::Remote {
                op: "read for upload to",
                url: self.url(key),
                message: e.to_string(),
                transient: false,
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            .set_checksum_sha256(sha256.and_then(sha256_base64))
            .body(body)
            .send()
            .await
            .map_err(|e| self.remote("upload", key, e))?;
        Ok(size)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.retry_body(key, move || async move {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| Attempt::Request(self.remote("get", key, e)))?;
            let data = out
                .body
                .collect()
                .await
                .map_err(|e| self.body_error(key, e))?;
            Ok(data.into_bytes())
        })
        .await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<(u64, String), StorageError> {
        self.retry_body(key, move || async move {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| Attempt::Request(self.remote("download", key, e)))?;
            let mut body = out.body;
            // Each attempt starts the file over.
            let mut file = tokio::fs::File::create(path)
                .await
                .map_err(|e| Attempt::Request(StorageError::io("cannot create", path)(e)))?;
            let mut hasher = sha2::Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.try_next().await.map_err(|e| self.body_error(key, e))? {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Attempt::Request(StorageError::io("cannot write", path)(e)))?;
            }
            file.flush()
                .await
                .map_err(|e| Attempt::Request(StorageError::io("cannot write", path)(e)))?;
            Ok((size, hex::encode(hasher.finalize())))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.remote("list", prefix, e))?;
            for o in page.contents() {
                if let Some(key) = o.key() {
                    out.push(ObjectMeta {
                        key: key.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() || page.is_truncated() != Some(true) {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .delimiter("/")
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.remote("list", prefix, e))?;
            for p in page.common_prefixes() {
                if let Some(name) = p
                    .prefix()
                    .and_then(|p| p.strip_prefix(prefix))
                    .map(|p| p.trim_end_matches('/'))
                {
                    out.push(name.to_owned());
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() || page.is_truncated() != Some(true) {
                break;
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.remote("delete", key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match self.remote("check", key, e) {
                StorageError::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }
}
