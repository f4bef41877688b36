//! `file:///path`: objects as files under a root directory. Writes go to a temporary file that is
//! renamed (or, for [`ObjectStore::put_if_absent`], hard-linked, which fails if the target
//! exists) into place, so a reader never sees a partial object.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::Digest;

use crate::{ObjectMeta, ObjectStore, StorageError};

const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl FileStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn temp_beside(path: &Path) -> PathBuf {
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{TEMP_PREFIX}{}-{n}-{}",
            std::process::id(),
            path.file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("object")
        );
        path.with_file_name(name)
    }

    fn write_temp(path: &Path, data: &[u8]) -> Result<PathBuf, StorageError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(StorageError::io("cannot create", parent))?;
        }
        let temp = Self::temp_beside(path);
        let mut file =
            std::fs::File::create(&temp).map_err(StorageError::io("cannot create", &temp))?;
        file.write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(StorageError::io("cannot write", &temp))?;
        Ok(temp)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Remote {
            op: "run",
            url: String::new(),
            message: e.to_string(),
            transient: false,
        })?
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let meta = entry.metadata()?;
        let path = entry.path();
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(ObjectMeta {
                key: rel.to_string_lossy().into_owned(),
                size: meta.len(),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FileStore {
    fn url(&self, key: &str) -> String {
        format!("file://{}", self.path(key).display())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key);
        blocking(move || {
            let temp = Self::write_temp(&path, &data)?;
            std::fs::rename(&temp, &path).map_err(StorageError::io("cannot rename into", &path))
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key);
        let url = self.url(key);
        blocking(move || {
            let temp = Self::write_temp(&path, &data)?;
            let linked = std::fs::hard_link(&temp, &path);
            let _ = std::fs::remove_file(&temp);
            match linked {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(StorageError::AlreadyExists { url })
                }
                Err(e) => Err(StorageError::io("cannot link into", &path)(e)),
            }
        })
        .await
    }

    async fn put_file(
        &self,
        key: &str,
        source: &Path,
        _sha256: Option<&str>,
    ) -> Result<u64, StorageError> {
        let path = self.path(key);
        let source = source.to_owned();
        blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(StorageError::io("cannot create", parent))?;
            }
            let temp = Self::temp_beside(&path);
            let size =
                std::fs::copy(&source, &temp).map_err(StorageError::io("cannot copy", &source))?;
            std::fs::File::open(&temp)
                .and_then(|f| f.sync_all())
                .map_err(StorageError::io("cannot sync", &temp))?;
            std::fs::rename(&temp, &path).map_err(StorageError::io("cannot rename into", &path))?;
            Ok(size)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path(key);
        let url = self.url(key);
        blocking(move || match std::fs::read(&path) {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound { url })
            }
            Err(e) => Err(StorageError::io("cannot read", &path)(e)),
        })
        .await
    }

    async fn get_to_file(&self, key: &str, target: &Path) -> Result<(u64, String), StorageError> {
        let path = self.path(key);
        let url = self.url(key);
        let target = target.to_owned();
        blocking(move || {
            let mut input = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound { url });
                }
                Err(e) => return Err(StorageError::io("cannot open", &path)(e)),
            };
            let mut output = std::fs::File::create(&target)
                .map_err(StorageError::io("cannot create", &target))?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = input
                    .read(&mut buf)
                    .map_err(StorageError::io("cannot read", &path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                output
                    .write_all(&buf[..n])
                    .map_err(StorageError::io("cannot write", &target))?;
                size += n as u64;
            }
            Ok((size, hex::encode(hasher.finalize())))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = self.root.clone();
        // Walk from the deepest directory the prefix names, then filter by the whole prefix.
        let dir = match prefix.rfind('/') {
            Some(i) => root.join(&prefix[..i]),
            None => root.clone(),
        };
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &dir, &mut out).map_err(StorageError::io("cannot list", &dir))?;
            out.retain(|o| o.key.starts_with(&prefix));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let dir = self.path(prefix.trim_end_matches('/'));
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(StorageError::io("cannot list", &dir)(e)),
            };
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry.map_err(StorageError::io("cannot list", &dir))?;
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("cannot delete", &path)(e)),
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<u64, StorageError> {
        let (from, to) = (self.path(from), self.path(to));
        blocking(move || {
            let size = std::fs::metadata(&from)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => StorageError::NotFound {
                        url: format!("file://{}", from.display()),
                    },
                    _ => StorageError::io("cannot read", &from)(e),
                })?
                .len();
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(StorageError::io("cannot create", parent))?;
            }
            // Objects are immutable: a second name for the same inode is a copy.
            let temp = Self::temp_beside(&to);
            if std::fs::hard_link(&from, &temp).is_err() {
                std::fs::copy(&from, &temp).map_err(StorageError::io("cannot copy", &from))?;
                std::fs::File::open(&temp)
                    .and_then(|f| f.sync_all())
                    .map_err(StorageError::io("cannot sync", &temp))?;
            }
            std::fs::rename(&temp, &to).map_err(StorageError::io("cannot rename into", &to))?;
            Ok(size)
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.path(key);
        blocking(move || Ok(path.is_file())).await
    }
}
