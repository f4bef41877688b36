//! Checkpoints, savepoints and restore, on top of [`crate::store`] and [`stator_storage`].
//!
//! Layout under the job's state location (docs/checkpoints.md has the whole story):
//!
//! ```text
//! checkpoints/replica-{i}-of-{P}/shared/{sha256}-{file}      content-addressed, shared by checkpoints
//! checkpoints/replica-{i}-of-{P}/chk-{id:020}/manifest.json  the commit point of checkpoint {id}
//! <savepoint dir>/replica-{i}-of-{P}/files/{file}            a savepoint's own copies
//! <savepoint dir>/replica-{i}-of-{P}/manifest.json           written last
//! ```
//!
//! One snapshot (checkpoint or savepoint) runs at a time. Writes pause only for the local cut;
//! hashing and uploading happen while the replica keeps serving.

mod coordinator;
pub mod restore;

pub use coordinator::{
    CheckpointInfo, Coordinator, SavepointInfo, SavepointState, SnapshotConfig, TriggerError,
};

use stator_core::manifest::{OperatorStateDeclaration, StateDeclaration};

use crate::store::{Kind, OperatorStateDecl, Redistribution, StateDecl};

pub(crate) fn to_manifest_state(d: &StateDecl) -> StateDeclaration {
    StateDeclaration {
        name: d.name.clone(),
        kind: d.kind.to_string(),
        ttl_ms: d.ttl_ms,
    }
}

pub(crate) fn to_manifest_operator_state(d: &OperatorStateDecl) -> OperatorStateDeclaration {
    OperatorStateDeclaration {
        name: d.name.clone(),
        redistribution: match d.redistribution {
            Redistribution::Split => "split",
            Redistribution::Union => "union",
        }
        .into(),
    }
}

pub fn from_manifest_state(d: &StateDeclaration) -> Option<StateDecl> {
    Some(StateDecl {
        name: d.name.clone(),
        kind: match d.kind.as_str() {
            "value" => Kind::Value,
            "list" => Kind::List,
            "map" => Kind::Map,
            _ => return None,
        },
        ttl_ms: d.ttl_ms,
    })
}

pub(crate) fn from_manifest_operator_state(
    d: &OperatorStateDeclaration,
) -> Option<OperatorStateDecl> {
    Some(OperatorStateDecl {
        name: d.name.clone(),
        redistribution: match d.redistribution.as_str() {
            "split" => Redistribution::Split,
            "union" => Redistribution::Union,
            _ => return None,
        },
    })
}

/// SHA-256 of the immutable files on this replica's volume, by file identity (device, inode,
/// size, modification time), kept in `<data-dir>/file-hashes.json`: written after each cut, read
/// by local recovery so that a file this volume already hashed is reused without reading it
/// again. A file changed in any way has another identity and is hashed again.
pub mod file_hashes {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    const FILE: &str = "file-hashes.json";

    pub type Index = HashMap<String, String>;

    /// The identity of the file at `path`, if it can be read.
    pub fn identity(path: &Path) -> Option<String> {
        let m = std::fs::metadata(path).ok()?;
        Some(format!(
            "{}:{}:{}:{}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        ))
    }

    pub fn load(data_dir: &Path) -> Index {
        std::fs::read(data_dir.join(FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Adds the identities of the files at these paths, with their SHA-256, to the index.
    pub fn add(data_dir: &Path, files: impl IntoIterator<Item = (std::path::PathBuf, String)>) {
        let mut known = load(data_dir);
        for (path, sha) in files {
            if let Some(id) = identity(&path) {
                known.insert(id, sha);
            }
        }
        store(data_dir, &known);
    }

    /// Replaces the index with `entries` (written beside, then renamed: never half written).
    pub fn store(data_dir: &Path, entries: &Index) {
        let temp = data_dir.join(format!("{FILE}.tmp"));
        let written = serde_json::to_vec(entries)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&temp, b))
            .and_then(|()| std::fs::rename(&temp, data_dir.join(FILE)));
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot write the file hash index; local recovery will hash files again");
        }
    }
}
