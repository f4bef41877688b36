//! `stator-sidecar`: the state store that runs beside each app container.
//!
//! It serves keyed state (value, list and map state with TTL, partitioned into key groups) from
//! RocksDB over a Unix socket ([`server`], [`protocol`]), with an admin HTTP endpoint ([`admin`]).
//! The store ([`store`]) knows nothing of sockets or protobuf; the protocol edge turns requests
//! into store calls.

pub mod admin;
pub mod checkpoint;
pub mod config;
pub mod inspect;
pub mod metrics;
pub mod protocol;
pub mod run;
pub mod server;
pub mod standby;
pub mod store;
