//! Async Rust client for the Stator state sidecar.
//!
//! A [`Client`] owns one Unix-socket connection ([`Client::connect_waiting`] waits for the
//! sidecar's socket, which appears only once the state is restored). Each call is one round trip; to pipeline, queue
//! requests with [`Client::send`], then [`Client::flush`] and [`Client::recv`] the answers (they
//! come in request order), or hand a list to [`Client::pipeline`]. Writes go in atomic
//! [`Batch`]es. For concurrency, open one client per task: connections are cheap.
//!
//! Routing: [`owner`] tells which replica holds a key, with the published key-group hash.
//!
//! Timers: register and delete them in batches ([`Batch::timer_register`],
//! [`Batch::timer_delete`]), advance the watermark ([`Batch::watermark_advance`]), and ask for
//! the due ones ([`Client::timers_due`], [`Client::wait_processing_timers`]).

mod batch;
mod client;
mod error;
mod timers;

pub use batch::Batch;
pub use client::{Client, ListPage, MapPage};
pub use error::{Error, ServerError};
pub use stator_core::keygroup::{KeyGroupRange, key_group, owner, range_for_replica};
pub use stator_core::proto;
pub use stator_core::proto::ErrorCode;
pub use timers::{TimeDomain, Timer, TimerPage, TimerStatus};

/// A state to declare: name, kind and TTL in milliseconds (0: never expires).
pub fn state(name: &str, kind: proto::StateKind, ttl_ms: u64) -> proto::StateDecl {
    proto::StateDecl {
        name: name.to_owned(),
        kind: kind as i32,
        ttl_ms,
    }
}

/// An operator state to declare.
pub fn operator_state(
    name: &str,
    redistribution: proto::Redistribution,
) -> proto::OperatorStateDecl {
    proto::OperatorStateDecl {
        name: name.to_owned(),
        redistribution: redistribution as i32,
    }
}
