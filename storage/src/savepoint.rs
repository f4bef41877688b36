//! Savepoints: is one complete, what do its manifests say, and making a two-phase savepoint
//! self-contained (for the sidecar and the operator alike).

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use stator_core::manifest::{MANIFEST_FILE, Manifest, parse_replica_dir, replica_dir};

use crate::{Location, S3Options, StorageError};

/// What making one savepoint replica directory self-contained did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    /// Files copied from their sources now (0 when it was self-contained already).
    pub copied: usize,
    pub bytes: u64,
}

impl std::ops::AddAssign for Completion {
    fn add_assign(&mut self, other: Self) {
        self.copied += other.copied;
        self.bytes += other.bytes;
    }
}

fn parse_manifest(dir: &Location, bytes: &[u8]) -> Result<Manifest, StorageError> {
    Manifest::parse(bytes).map_err(|e| StorageError::Remote {
        op: "parse",
        url: dir.url_of(MANIFEST_FILE),
        message: e.to_string(),
        transient: false,
    })
}

/// Opens the directories of `urls` once each (an S3 client per bucket, not per object).
#[derive(Default)]
pub struct Directories {
    open: HashMap<String, Location>,
}

impl Directories {
    /// The directory of the object at `url` and the object's name in it.
    pub async fn object(
        &mut self,
        url: &str,
        s3: &S3Options,
    ) -> Result<(Location, String), StorageError> {
        let (dir, name) = url
            .rsplit_once('/')
            .filter(|(_, n)| !n.is_empty())
            .ok_or_else(|| StorageError::InvalidLocation {
                location: url.to_owned(),
                reason: "not the URL of an object".into(),
            })?;
        if let Some(l) = self.open.get(dir) {
            return Ok((l.clone(), name.to_owned()));
        }
        let l = Location::parse(dir, s3).await?;
        self.open.insert(dir.to_owned(), l.clone());
        Ok((l, name.to_owned()))
    }
}

/// Makes one savepoint replica directory self-contained: copies every file that still has a
/// `source` into its own `files/` (server-side), writes the manifest again without sources, then
/// deletes the hold. Idempotent, and safe to run from two places at once (the sidecar that took
/// the savepoint, the operator): both write the same final manifest.
pub async fn complete_savepoint(
    dir: &Location,
    s3: &S3Options,
    concurrency: usize,
    scratch: &Path,
) -> Result<Completion, StorageError> {
    let bytes = dir.get(MANIFEST_FILE).await?;
    let mut m = parse_manifest(dir, &bytes)?;
    if m.is_self_contained() {
        return Ok(Completion::default());
    }
    let mut dirs = Directories::default();
    let mut jobs = Vec::new();
    for f in &m.files {
        if let Some(source) = &f.source {
            let (src, name) = dirs.object(source, s3).await?;
            jobs.push((src, name, f.object.clone(), f.size));
        }
    }
    let copied = crate::parallel(jobs, concurrency, |(src, name, object, size)| async move {
        if dir.exists(&object).await? {
            return Ok::<_, StorageError>(None);
        }
        dir.copy_from(&object, &src, &name, scratch).await?;
        Ok(Some(size))
    })
    .await?;
    let hold = m.hold.take();
    for f in &mut m.files {
        f.source = None;
    }
    dir.put(MANIFEST_FILE, Bytes::from(m.to_json())).await?;
    if let Some(hold) = hold {
        let (holds, name) = dirs.object(&hold, s3).await?;
        holds.delete(&name).await?;
    }
    let done: Vec<u64> = copied.into_iter().flatten().collect();
    Ok(Completion {
        copied: done.len(),
        bytes: done.iter().sum(),
    })
}

/// Makes every replica directory of the savepoint at `location` self-contained.
pub async fn complete_savepoint_all(
    location: &Location,
    s3: &S3Options,
    concurrency: usize,
    scratch: &Path,
) -> Result<Completion, StorageError> {
    let mut total = Completion::default();
    for d in location.list_dirs("").await? {
        if parse_replica_dir(&d).is_none() {
            continue;
        }
        let dir = location.child(&d);
        match complete_savepoint(&dir, s3, concurrency, scratch).await {
            Ok(c) => total += c,
            // A replica that never wrote its manifest has nothing to copy.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Deletes the holds that the savepoint at `location` still has (before the savepoint itself is
/// deleted), so that the checkpoint files they kept can be collected.
pub async fn release_holds(location: &Location, s3: &S3Options) -> Result<usize, StorageError> {
    let mut dirs = Directories::default();
    let mut released = 0;
    for d in location.list_dirs("").await? {
        if parse_replica_dir(&d).is_none() {
            continue;
        }
        let dir = location.child(&d);
        let bytes = match dir.get(MANIFEST_FILE).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        // An unreadable manifest holds nothing this can name.
        let Ok(m) = Manifest::parse(&bytes) else {
            continue;
        };
        if let Some(hold) = &m.hold {
            let (holds, name) = dirs.object(hold, s3).await?;
            holds.delete(&name).await?;
            released += 1;
        }
    }
    Ok(released)
}

/// Which replicas of a savepoint taken at `parallelism` have written their manifest. The
/// savepoint is complete when `missing` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavepointCompleteness {
    pub present: Vec<u32>,
    pub missing: Vec<u32>,
}

impl SavepointCompleteness {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Checks `<location>/replica-{i}-of-{parallelism}/manifest.json` for every replica.
pub async fn savepoint_completeness(
    location: &Location,
    parallelism: u32,
) -> Result<SavepointCompleteness, StorageError> {
    let mut out = SavepointCompleteness {
        present: Vec::new(),
        missing: Vec::new(),
    };
    for i in 0..parallelism {
        let key = format!("{}/{MANIFEST_FILE}", replica_dir(i, parallelism));
        if location.exists(&key).await? {
            out.present.push(i);
        } else {
            out.missing.push(i);
        }
    }
    Ok(out)
}

/// Reads one replica's savepoint manifest.
pub async fn read_savepoint_manifest(
    location: &Location,
    replica: u32,
    parallelism: u32,
) -> Result<Manifest, StorageError> {
    let key = format!("{}/{MANIFEST_FILE}", replica_dir(replica, parallelism));
    let bytes = location.get(&key).await?;
    Manifest::parse(&bytes).map_err(|e| StorageError::Remote {
        op: "parse",
        url: location.url_of(&key),
        message: e.to_string(),
        transient: false,
    })
}
