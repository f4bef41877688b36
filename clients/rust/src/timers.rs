//! Timers: per-key event-time and processing-time timers kept by the sidecar with the state.
//!
//! Fire a timer exactly once by deleting it ([`crate::Batch::timer_delete`]) in the same batch as
//! the state its handler writes: a crash before that batch fires it again, a committed handler
//! never fires twice.

use std::time::{Duration, Instant};

use bytes::Bytes;
use stator_core::proto::{self, request::Op, response::Result as R};

pub use stator_core::proto::TimeDomain;

use crate::client::unexpected;
use crate::{Client, Error};

/// A timer, as [`Client::timers_due`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub domain: TimeDomain,
    pub key: Bytes,
    pub name: Bytes,
    pub time: u64,
    pub key_group: u32,
}

impl Timer {
    fn from_proto(t: proto::Timer) -> Self {
        Self {
            domain: TimeDomain::try_from(t.domain).unwrap_or(TimeDomain::Unspecified),
            key: t.key,
            name: t.name,
            time: t.time,
            key_group: t.key_group,
        }
    }
}

/// Due timers, earliest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerPage {
    pub timers: Vec<Timer>,
    /// More are due than this page holds; ask again after deleting these.
    pub has_more: bool,
    /// What timers were due up to: the watermark, or the sidecar's clock (processing time).
    pub up_to: Option<u64>,
    /// The earliest timer of the domain not in this page: due when `has_more`, else the next
    /// to become due.
    pub next_time: Option<u64>,
}

/// The watermark, the earliest timer of each domain, and the sidecar's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerStatus {
    pub watermark: Option<u64>,
    pub next_event_time: Option<u64>,
    pub next_processing_time: Option<u64>,
    pub now_ms: u64,
}

impl Client {
    /// The due timers of `domain` (event: at or below the watermark; processing: at or below
    /// the sidecar's clock), at most `limit` (0: the server default), earliest first. Reading
    /// changes nothing: a timer stays until a batch deletes it.
    pub async fn timers_due(&mut self, domain: TimeDomain, limit: u32) -> Result<TimerPage, Error> {
        let req = proto::TimersDueRequest {
            domain: domain as i32,
            limit,
        };
        match self.call(Op::TimersDue(req)).await? {
            R::TimersDue(p) => Ok(TimerPage {
                timers: p.timers.into_iter().map(Timer::from_proto).collect(),
                has_more: p.has_more,
                up_to: p.up_to,
                next_time: p.next_time,
            }),
            other => Err(unexpected("timers_due", &other)),
        }
    }

    /// The due processing-time timers, waiting up to `max_wait` for the first to become due.
    /// Sleeps until the earliest timer's time (as the sidecar said) rather than polling; a timer
    /// registered meanwhile on another connection is seen when it wakes. Returns an empty page
    /// when none became due in time.
    pub async fn wait_processing_timers(
        &mut self,
        limit: u32,
        max_wait: Duration,
    ) -> Result<TimerPage, Error> {
        let deadline = Instant::now() + max_wait;
        loop {
            let page = self.timers_due(TimeDomain::Processing, limit).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !page.timers.is_empty() || left.is_zero() {
                return Ok(page);
            }
            let until_next = match (page.next_time, page.up_to) {
                (Some(next), Some(now)) => Duration::from_millis(next.saturating_sub(now)),
                _ => left,
            };
            tokio::time::sleep(until_next.clamp(Duration::from_millis(1), left)).await;
        }
    }

    /// The watermark and the earliest timer of each domain.
    pub async fn timer_status(&mut self) -> Result<TimerStatus, Error> {
        match self
            .call(Op::TimerStatus(proto::TimerStatusRequest {}))
            .await?
        {
            R::TimerStatus(s) => Ok(TimerStatus {
                watermark: s.watermark,
                next_event_time: s.next_event_time,
                next_processing_time: s.next_processing_time,
                now_ms: s.now_ms,
            }),
            other => Err(unexpected("timer_status", &other)),
        }
    }
}
