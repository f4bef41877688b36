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
