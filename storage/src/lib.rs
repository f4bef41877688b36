//! Stator's object stores: where checkpoints and savepoints live.
//!
//! A [`Location`] is a URL (`s3://bucket/prefix` or `file:///path`) resolved to an
//! [`ObjectStore`] plus a key prefix. Both the sidecar (upload, download, garbage collection) and
//! the operator (savepoint completeness, deleting savepoints) link this crate.
//!
//! This crate must not depend on RocksDB or kube: it moves bytes, and knows of their meaning only
//! the manifest format from `stator-core` (for [`savepoint_completeness`]).

mod error;
mod file;
mod location;
mod s3;
mod savepoint;
mod transfer;

pub use error::StorageError;
pub use file::FileStore;
pub use location::{Location, S3Options, StaticCredentials};
pub use s3::S3Store;
pub use savepoint::{
    Completion, Directories, SavepointCompleteness, complete_savepoint, complete_savepoint_all,
    read_savepoint_manifest, release_holds, savepoint_completeness,
};
pub use transfer::parallel;

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The full key in the store (including the location's prefix).
    pub key: String,
    pub size: u64,
}

/// A flat key space of immutable objects. Keys use `/` as a separator; no key starts with `/`.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// A URL naming `key`, for messages.
    fn url(&self, key: &str) -> String;
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError>;
    /// Writes `key` only if it does not exist yet (the commit point of a manifest); otherwise
    /// [`StorageError::AlreadyExists`]. Atomic under concurrent writers on S3 and on a local
    /// file system.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError>;
    /// Uploads a local file (multipart when large). `sha256` (hex), when given, is checked by
    /// stores that can check it.
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        sha256: Option<&str>,
    ) -> Result<u64, StorageError>;
    async fn get(&self, key: &str) -> Result<Bytes, StorageError>;
    /// Downloads `key` into `path` (replacing it) and returns its size and SHA-256 (hex).
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<(u64, String), StorageError>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;
    /// The "directories" directly under `prefix` (which ends with `/`), without the prefix and
    /// without the trailing slash.
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Deletes `key`; deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }
    async fn exists(&self, key: &str) -> Result<bool, StorageError>;
    /// Copies `from` to `to` within this store, the bytes never leaving it (S3 CopyObject, in
    /// parts past the copy threshold; a hard link or copy on a file system). Returns the size.
    async fn copy(&self, from: &str, to: &str) -> Result<u64, StorageError>;
}

/// The SHA-256 of a local file, hex-encoded, and its size.
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

pub fn sha256_bytes(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
