//! Helpers for the operator: is a savepoint complete, and what do its manifests say.

use stator_core::manifest::{MANIFEST_FILE, Manifest, replica_dir};

use crate::{Location, StorageError};

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
