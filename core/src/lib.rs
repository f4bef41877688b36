//! The contract every Stator part agrees on: how keys map to key groups and replicas, the state
//! protocol's messages (generated from `proto/stator/v1/state.proto`) and framing, the limits, the
//! rules for state names, and the checkpoint/savepoint manifest format.
//!
//! This crate must not depend on kube, RocksDB or an async runtime: clients in any setting, the
//! sidecar and the operator all link it.

pub mod frame;
pub mod keygroup;
pub mod limits;
pub mod manifest;
pub mod names;

/// Messages of the state protocol, generated from `proto/stator/v1/state.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/stator.v1.rs"));
}
