//! Parsing `s3://` and `file://` URLs into a store plus a key prefix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::{FileStore, ObjectMeta, ObjectStore, S3Store, StorageError};

/// How to reach S3 (ignored for `file://`).
#[derive(Debug, Clone)]
pub struct S3Options {
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000`; AWS when unset.
    pub endpoint: Option<String>,
    pub region: String,
    /// `http://endpoint/bucket/key` rather than `http://bucket.endpoint/key`.
    pub path_style: bool,
    /// A directory with files `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (a mounted
    /// Secret); the standard AWS chain (env, profile, web identity, instance role) when unset.
    pub credentials_dir: Option<PathBuf>,
    /// Credentials given directly (the operator reads them from the job's Secret); they win over
    /// `credentials_dir`. Never logged.
    pub static_credentials: Option<StaticCredentials>,
    /// Files at least this large go up in multipart uploads.
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Attempts per request, with exponential backoff between them.
    pub max_attempts: u32,
    /// Objects at least this large are copied in parts (UploadPartCopy): S3 refuses a single
    /// CopyObject of more than 5 GiB.
    pub copy_part_threshold: u64,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            credentials_dir: None,
            static_credentials: None,
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            max_attempts: 4,
            copy_part_threshold: 5 << 30,
        }
    }
}

/// An access key pair. `Debug` does not print the secret.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// For temporary credentials (`AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A directory-like place in an object store: the store and a key prefix.
#[derive(Debug, Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    /// No leading or trailing `/`; empty for the store's root.
    prefix: String,
}

impl Location {
    /// Parses `s3://bucket[/prefix]` or `file:///absolute/path`.
    pub async fn parse(url: &str, s3: &S3Options) -> Result<Self, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidLocation {
            location: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket"));
            }
            let store = S3Store::connect(bucket, s3).await?;
            Ok(Self::new(Arc::new(store), prefix))
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "a file location needs an absolute path: file:///path",
                ));
            }
            Ok(Self::new(Arc::new(FileStore::new("/")), path))
        } else {
            Err(invalid("use s3://bucket/prefix or file:///path"))
        }
    }

    /// A location on a local directory.
    pub fn local(dir: &Path) -> Self {
        Self::new(Arc::new(FileStore::new("/")), &dir.to_string_lossy())
    }

    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The location `name` below this one.
    pub fn child(&self, name: &str) -> Self {
        Self {
            store: self.store.clone(),
            prefix: self.key(name),
        }
    }

    /// The full key of `name` below this location.
    pub fn key(&self, name: &str) -> String {
        let name = name.trim_matches('/');
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => name.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{name}", self.prefix),
        }
    }

    /// The URL of this location.
    pub fn url(&self) -> String {
        self.store.url(&self.prefix)
    }

    pub fn url_of(&self, name: &str) -> String {
        self.store.url(&self.key(name))
    }

    fn dir_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    pub async fn put(&self, name: &str, data: Bytes) -> Result<(), StorageError> {
        self.store.put(&self.key(name), data).await
    }

    /// Writes `name` only if it does not exist yet (a commit point); succeeds also when it
    /// already holds exactly `data`: a retried put whose first reply was lost after the store
    /// applied it finds its own object there. Anything else there is
    /// [`StorageError::AlreadyExists`].
    pub async fn put_if_absent(&self, name: &str, data: Bytes) -> Result<(), StorageError> {
        let key = self.key(name);
        match self.store.put_if_absent(&key, data.clone()).await {
            Err(StorageError::AlreadyExists { url }) => match self.store.get(&key).await {
                Ok(existing) if existing == data => {
                    tracing::info!(url = %url, "a conditional put found its own object (an earlier reply was lost)");
                    Ok(())
                }
                Ok(_) => Err(StorageError::AlreadyExists { url }),
                Err(e) => Err(e),
            },
            other => other,
        }
    }

    pub async fn put_file(
        &self,
        name: &str,
        path: &Path,
        sha256: Option<&str>,
    ) -> Result<u64, StorageError> {
        self.store.put_file(&self.key(name), path, sha256).await
    }

    pub async fn get(&self, name: &str) -> Result<Bytes, StorageError> {
        self.store.get(&self.key(name)).await
    }

    pub async fn get_to_file(
        &self,
        name: &str,
        path: &Path,
    ) -> Result<(u64, String), StorageError> {
        self.store.get_to_file(&self.key(name), path).await
    }

    pub async fn exists(&self, name: &str) -> Result<bool, StorageError> {
        self.store.exists(&self.key(name)).await
    }

    pub async fn delete(&self, name: &str) -> Result<(), StorageError> {
        self.store.delete(&self.key(name)).await
    }

    /// Objects below this location whose relative names start with `prefix`; keys are relative
    /// to this location.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let base = self.dir_prefix();
        let mut out = self.store.list(&format!("{base}{prefix}")).await?;
        for o in &mut out {
            o.key = o.key[base.len()..].to_owned();
        }
        Ok(out)
    }

    /// The sub-directories directly below `dir` (relative; empty for this location).
    pub async fn list_dirs(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let dir = dir.trim_matches('/');
        let prefix = if dir.is_empty() {
            self.dir_prefix()
        } else {
            format!("{}{dir}/", self.dir_prefix())
        };
        self.store.list_dirs(&prefix).await
    }

    /// Copies `src_name` of `src` to `name` here, without moving the bytes through this process
    /// when both are in one store (S3 CopyObject, a link or copy on a file system); otherwise the
    /// bytes pass through a temporary file in `scratch`. Returns the bytes copied.
    pub async fn copy_from(
        &self,
        name: &str,
        src: &Location,
        src_name: &str,
        scratch: &Path,
    ) -> Result<u64, StorageError> {
        if self.store.url("") == src.store.url("") {
            return self.store.copy(&src.key(src_name), &self.key(name)).await;
        }
        let temp = scratch.join(format!(
            ".copy-{}-{}",
            std::process::id(),
            crate::sha256_bytes(self.key(name).as_bytes())
        ));
        let result = async {
            let (_, sha) = src.get_to_file(src_name, &temp).await?;
            self.put_file(name, &temp, Some(&sha)).await
        }
        .await;
        let _ = std::fs::remove_file(&temp);
        result
    }

    /// Deletes every object below this location (for example a savepoint the operator dropped
    /// from its history). Returns how many were deleted.
    pub async fn delete_all(&self, concurrency: usize) -> Result<usize, StorageError> {
        let objects = self.store.list(&self.dir_prefix()).await?;
        let n = objects.len();
        crate::parallel(objects, concurrency, |o| {
            let store = self.store.clone();
            async move { store.delete(&o.key).await }
        })
        .await?;
        Ok(n)
    }
}
