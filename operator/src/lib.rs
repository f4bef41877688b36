//! `stator-operator`: the Kubernetes operator for `StreamJob` resources (`stator.dev/v1alpha1`).
//!
//! [`crd`] holds the API types (the CRD is generated from them), [`validate`] and [`objects`] are
//! pure (spec checks, and the pods, Service, Secret and claims a job runs on), [`lifecycle`] is
//! the state machine (a pure planner and its executor), [`controller`] wires a reconcile
//! (validate, the Secret and Service, the lifecycle, cleanup on delete) to the watches, [`stored`]
//! reaches a job's storage, and [`run`] wires the process: leader election, metrics, health
//! endpoints and graceful shutdown. It must not depend on RocksDB.

pub mod context;
pub mod controller;
pub mod crd;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod objects;
pub mod run;
pub mod sidecar_api;
pub mod status;
pub mod stored;
pub mod validate;

#[cfg(test)]
mod fixtures;
