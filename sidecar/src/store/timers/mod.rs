//! Per-key timers and the replica's event-time watermark.
//!
//! Timers live in the `__timers` column family under keys that start with the key's group, like
//! every keyed state, so a checkpoint, a restore and a rescale (range delete plus ingest) carry
//! them with no special case:
//!
//! `[group u16 BE][domain u8][time u64 BE][key len u32 BE][key][name]` -> empty
//!
//! Within one group and domain they sort by time, so the due timers of a group are one forward
//! scan. The watermark is one 8-byte big-endian value in `__meta`, moved by a max merge operator
//! so it never goes back (concurrent batches cannot reorder it); on a rescale a replica starts
//! from the minimum of its sources' watermarks (see [`Store::ingest_range_from`]).
//!
//! Finding the earliest timers across a replica's groups (up to 32768) without a seek per group
//! is the job of [`TimerIndex`]: a lower bound of each group's earliest timer, per domain, kept
//! in memory and built on first use (one seek per non-empty group and domain). A registration lowers its group's bound after it commits; a
//! deletion leaves the bound where it was (still a lower bound); a read that visits a group sets
//! its bound to what it found. The read holds the index lock across its scan, and writers note
//! their registrations under the same lock after their commit, so a bound is never raised past a
//! timer that a concurrent batch has just written.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options};
use stator_core::keygroup::KeyGroupRange;
use stator_core::limits::{DEFAULT_PAGE_ENTRIES, MAX_PAGE_ENTRIES};

use super::encoding::{GROUP_BYTES, group_prefix, now_ms};
use super::{Db, META_CF, Store, StoreError};

mod index;
pub use index::{DomainIndex, TimerIndex};

pub const TIMERS_CF: &str = "__timers";
/// The watermark's key in `__meta`.
pub const WATERMARK_KEY: &[u8] = b"timers/watermark";
/// An answer stops adding timers at this many bytes of keys and names (it always holds one), so
/// every page fits a frame whatever the keys' sizes.
pub const TIMER_PAGE_BYTES: usize = 4 << 20;
/// What one timer costs in an answer besides its key and name (an upper bound of the protobuf
/// framing of its fields).
const TIMER_OVERHEAD_BYTES: usize = 32;

/// The clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// Due once the replica's watermark reaches the timer's time.
    Event,
    /// Due once the sidecar's wall clock (ms since the epoch) reaches it.
    Processing,
}

impl Domain {
    pub const ALL: [Domain; 2] = [Domain::Event, Domain::Processing];

    fn byte(self) -> u8 {
        match self {
            Domain::Event => 1,
            Domain::Processing => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Domain::Event),
            2 => Some(Domain::Processing),
            _ => None,
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Domain::Event => "event",
            Domain::Processing => "processing",
        })
    }
}

/// One timer. Ordered as answers list them: by time, then key group, key and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    pub domain: Domain,
    pub time: u64,
    pub key_group: u32,
    pub key: Vec<u8>,
    pub name: Vec<u8>,
}

impl Timer {
    fn answer_bytes(&self) -> usize {
        self.key.len() + self.name.len() + TIMER_OVERHEAD_BYTES
    }
}

/// A stored timer, borrowed from the store's iterator until it is kept.
#[derive(Debug, Clone, Copy)]
pub struct TimerRef<'a> {
    pub domain: Domain,
    pub time: u64,
    pub key_group: u32,
    pub key: &'a [u8],
    pub name: &'a [u8],
}

impl TimerRef<'_> {
    pub fn to_timer(self) -> Timer {
        Timer {
            domain: self.domain,
            time: self.time,
            key_group: self.key_group,
            key: self.key.to_vec(),
            name: self.name.to_vec(),
        }
    }

    /// What answers are ordered by (the domain is one per answer).
    fn order(&self) -> (u64, u32, &[u8], &[u8]) {
        (self.time, self.key_group, self.key, self.name)
    }
}

impl Timer {
    fn order(&self) -> (u64, u32, &[u8], &[u8]) {
        (self.time, self.key_group, &self.key, &self.name)
    }
}

/// The stored key of a timer.
pub fn timer_key(group: u32, domain: Domain, time: u64, key: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(GROUP_BYTES + 1 + 8 + 4 + key.len() + name.len());
    out.extend_from_slice(&group_prefix(group));
    out.push(domain.byte());
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(name);
    out
}

/// The prefix of every timer of one group and domain.
fn group_domain_prefix(group: u32, domain: Domain) -> [u8; GROUP_BYTES + 1] {
    let [a, b] = group_prefix(group);
    [a, b, domain.byte()]
}

/// Decodes a stored timer key; `None` if it is not one of ours.
pub fn decode_timer_key(stored: &[u8]) -> Option<Timer> {
    decode_timer_ref(stored).map(TimerRef::to_timer)
}

fn decode_timer_ref(stored: &[u8]) -> Option<TimerRef<'_>> {
    let (group, rest) = stored.split_at_checked(GROUP_BYTES)?;
    let (&domain, rest) = rest.split_first()?;
    let (time, rest) = rest.split_at_checked(8)?;
    let (len, rest) = rest.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    let (key, name) = rest.split_at_checked(len)?;
    Some(TimerRef {
        domain: Domain::from_byte(domain)?,
        time: u64::from_be_bytes(time.try_into().ok()?),
        key_group: u32::from(u16::from_be_bytes([group[0], group[1]])),
        key,
        name,
    })
}

fn malformed(key: &[u8]) -> StoreError {
    StoreError::Corrupt(format!(
        "a stored timer key of {} bytes is malformed",
        key.len()
    ))
}

/// The watermark's merge operator: the largest operand wins, so the watermark never moves back.
pub(super) fn merge_max(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    existing
        .into_iter()
        .chain(operands.iter())
        .filter_map(decode_watermark)
        .max()
        .map(|w| w.to_be_bytes().to_vec())
}

fn decode_watermark(stored: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(stored.try_into().ok()?))
}

/// A page of due timers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimerPage {
    pub timers: Vec<Timer>,
    /// More timers are due than the page holds.
    pub has_more: bool,
    /// What timers were due up to: the watermark or the clock. `None`: nothing is due (event
    /// time before any watermark).
    pub up_to: Option<u64>,
    /// The earliest timer of the domain not in the page: a due one when `has_more`, else the
    /// next to become due.
    pub next_time: Option<u64>,
}

/// The watermark, the earliest timer per domain, and the clock they are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerStatus {
    pub watermark: Option<u64>,
    pub next_event_time: Option<u64>,
    pub next_processing_time: Option<u64>,
    pub now_ms: u64,
}

/// A timer registration in a batch, noted in the index once the batch commits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Registered {
    pub group: u32,
    pub domain: Domain,
    pub time: u64,
}

fn read_watermark(db: &Db) -> Result<Option<u64>, StoreError> {
    let Some(meta) = db.cf_handle(META_CF) else {
        return Ok(None);
    };
    match db.get_pinned_cf(&meta, WATERMARK_KEY)? {
        None => Ok(None),
        Some(v) => decode_watermark(&v).map(Some).ok_or_else(|| {
            StoreError::Corrupt(format!("the watermark is {} bytes, not 8", v.len()))
        }),
    }
}

/// One iterator over the timer family, reused for every group a read visits (creating one per
/// group costs more than the seek).
struct Scan<'a> {
    it: rocksdb::DBRawIteratorWithThreadMode<'a, Db>,
}

impl<'a> Scan<'a> {
    fn new(db: &'a Db, cf: &Arc<rocksdb::BoundColumnFamily<'a>>) -> Self {
        Self {
            it: db.raw_iterator_cf(cf),
        }
    }

    /// Calls `visit` with `group`'s timers of `domain` in time order until it returns false.
    fn group(
        &mut self,
        group: u32,
        domain: Domain,
        visit: &mut dyn FnMut(TimerRef<'_>) -> bool,
    ) -> Result<(), StoreError> {
        let prefix = group_domain_prefix(group, domain);
        self.it.seek(prefix);
        while let Some(key) = self.it.key() {
            if !key.starts_with(&prefix) {
                break;
            }
            if !visit(decode_timer_ref(key).ok_or_else(|| malformed(key))?) {
                break;
            }
            self.it.next();
        }
        self.it.status()?;
        Ok(())
    }

    /// Every group's earliest timer per domain, seeking from one non-empty (group, domain) to
    /// the next, so empty groups cost nothing.
    fn heads(&mut self, range: KeyGroupRange, index: &mut TimerIndex) -> Result<(), StoreError> {
        let end = group_prefix(range.end + 1);
        let mut from = group_prefix(range.start).to_vec();
        loop {
            self.it.seek(&from);
            let Some(key) = self.it.key() else { break };
            if key >= &end[..] {
                break;
            }
            let t = decode_timer_ref(key).ok_or_else(|| malformed(key))?;
            index.domain(t.domain).set(t.key_group, Some(t.time));
            // Past every timer of this group and domain: domains are 1 and 2, so 3 is free.
            let mut next = group_domain_prefix(t.key_group, t.domain);
            next[GROUP_BYTES] += 1;
            from = next.to_vec();
        }
        self.it.status()?;
        Ok(())
    }
}

impl Store {
    fn timers_cf(&self) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, StoreError> {
        self.db
            .cf_handle(TIMERS_CF)
            .ok_or_else(|| StoreError::Corrupt(format!("the {TIMERS_CF} column family is missing")))
    }

    /// This replica's event-time watermark (`None` before the first advance).
    pub fn watermark(&self) -> Result<Option<u64>, StoreError> {
        read_watermark(&self.db)
    }

    /// Runs `f` on the timer index, building it first if needed (one seek per non-empty group and
    /// domain).
    fn with_index<T>(
        &self,
        f: impl FnOnce(&mut TimerIndex, &Arc<rocksdb::BoundColumnFamily<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let cf = self.timers_cf()?;
        let mut guard = self.timers.lock().map_err(|_| StoreError::Poisoned)?;
        if guard.is_none() {
            let mut index = TimerIndex::default();
            Scan::new(&self.db, &cf).heads(self.placement.range, &mut index)?;
            *guard = Some(index);
        }
        match guard.as_mut() {
            Some(index) => f(index, &cf),
            None => Err(StoreError::Poisoned),
        }
    }

    /// Lowers the index bounds for timers a committed batch registered.
    pub(super) fn note_timers(&self, registered: &[Registered]) {
        if registered.is_empty() {
            return;
        }
        let Ok(mut guard) = self.timers.lock() else {
            return;
        };
        // Not built yet: the build scans after this commit and sees these timers.
        if let Some(index) = guard.as_mut() {
            for r in registered {
                index.domain(r.domain).note(r.group, r.time);
            }
        }
    }

    /// Forgets the index (the timer family was changed wholesale, by a restore).
    pub(super) fn reset_timer_index(&self) {
        if let Ok(mut guard) = self.timers.lock() {
            *guard = None;
        }
    }

    /// The due timers of `domain`, at most `limit` (0: the default page), earliest first.
    pub fn timers_due(&self, domain: Domain, limit: u32) -> Result<TimerPage, StoreError> {
        let limit = match limit {
            0 => DEFAULT_PAGE_ENTRIES,
            n => n.min(MAX_PAGE_ENTRIES),
        } as usize;
        let up_to = match domain {
            Domain::Event => self.watermark()?,
            Domain::Processing => Some(now_ms()),
        };
        self.with_index(|index, cf| {
            let mut scan = Scan::new(&self.db, cf);
            index
                .domain(domain)
                .select_due(up_to, limit, TIMER_PAGE_BYTES, |group, visit| {
                    scan.group(group, domain, visit)
                })
        })
    }

    /// The watermark and the earliest timer of each domain.
    pub fn timer_status(&self) -> Result<TimerStatus, StoreError> {
        let watermark = self.watermark()?;
        let mut next = [None; 2];
        self.with_index(|index, cf| {
            for (slot, domain) in next.iter_mut().zip(Domain::ALL) {
                let mut scan = Scan::new(&self.db, cf);
                *slot = index
                    .domain(domain)
                    .select_due(None, 1, TIMER_PAGE_BYTES, |group, visit| {
                        scan.group(group, domain, visit)
                    })?
                    .next_time;
            }
            Ok(())
        })?;
        Ok(TimerStatus {
            watermark,
            next_event_time: next[0],
            next_processing_time: next[1],
            now_ms: now_ms(),
        })
    }

    /// After ingesting another replica's share on a rescale: this replica's watermark becomes
    /// the lower of its own and `source`'s (absent if either is). A watermark promises that its
    /// replica has seen every event up to it; a replica made of several old ones' key groups
    /// can promise only what all of them did, so no event-time timer fires early.
    pub(super) fn merge_watermark_from(&self, source: &Db) -> Result<(), StoreError> {
        let merged = match (self.watermark()?, read_watermark(source)?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
        let meta = self.meta_cf()?;
        match merged {
            Some(w) => self.db.put_cf(&meta, WATERMARK_KEY, w.to_be_bytes())?,
            None => self.db.delete_cf(&meta, WATERMARK_KEY)?,
        }
        Ok(())
    }
}

/// Every timer in a snapshot directory (opened read-only), in stored order, and its watermark.
pub fn dump_timers(dir: &Path) -> Result<(Option<u64>, Vec<Timer>), StoreError> {
    let cf_options = super::CfOptions::new(&super::RocksOptions::default());
    let names = Db::list_cf(&Options::default(), dir)?;
    let descriptors: Vec<_> = names
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(n, cf_options.for_family(n)))
        .collect();
    let db = Db::open_cf_descriptors_read_only(&cf_options.base, dir, descriptors, false)?;
    let watermark = read_watermark(&db)?;
    let Some(cf) = db.cf_handle(TIMERS_CF) else {
        return Ok((watermark, Vec::new()));
    };
    let mut out = Vec::new();
    let mut it = db.raw_iterator_cf(&cf);
    it.seek_to_first();
    while let Some(key) = it.key() {
        out.push(decode_timer_key(key).ok_or_else(|| malformed(key))?);
        it.next();
    }
    it.status()?;
    Ok((watermark, out))
}

#[cfg(test)]
mod tests;
