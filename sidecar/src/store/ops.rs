//! Reads and atomic write batches. A batch is validated whole before anything is written, so a
//! batch that fails changes nothing.

use bytes::Bytes;
use rocksdb::WriteBatch;
use stator_core::keygroup::owner_of_group;
use stator_core::limits::{
    DEFAULT_PAGE_ENTRIES, LIST_ELEMENT_OVERHEAD, MAX_ANSWER_BYTES, MAX_BATCH_OPS, MAX_KEY_BYTES,
    MAX_LIST_BYTES, MAX_PAGE_BYTES, MAX_PAGE_ENTRIES, MAX_VALUE_BYTES,
};

use super::encoding::{
    self, decode_value, encode_list, encode_value, expiry_for, is_live, list_elements,
    map_entry_key, map_prefix, now_ms, plain_key, prefix_successor,
};
use std::sync::Arc;

use super::timers::{self, Domain, Registered};
use super::{Catalog, Kind, StateEntry, Store, StoreError};

/// Keys read per RocksDB MultiGet of one multi-get request.
const MULTI_GET_CHUNK: usize = 64;

/// One write in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    ValuePut {
        state: String,
        key: Bytes,
        value: Bytes,
    },
    ValueClear {
        state: String,
        key: Bytes,
    },
    ListAppend {
        state: String,
        key: Bytes,
        values: Vec<Bytes>,
    },
    ListSet {
        state: String,
        key: Bytes,
        values: Vec<Bytes>,
    },
    ListClear {
        state: String,
        key: Bytes,
    },
    MapPut {
        state: String,
        key: Bytes,
        map_key: Bytes,
        value: Bytes,
    },
    MapRemove {
        state: String,
        key: Bytes,
        map_key: Bytes,
    },
    MapClear {
        state: String,
        key: Bytes,
    },
    OperatorStateSet {
        name: String,
        values: Vec<Bytes>,
    },
    /// Registers a timer (idempotent).
    TimerRegister {
        domain: Domain,
        key: Bytes,
        name: Bytes,
        time: u64,
    },
    /// Deletes a timer (idempotent): fires it, in the batch of its handler's writes.
    TimerDelete {
        domain: Domain,
        key: Bytes,
        name: Bytes,
        time: u64,
    },
    /// Moves the event-time watermark up to `watermark` (never back).
    WatermarkAdvance {
        watermark: u64,
    },
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    pub values: Vec<Vec<u8>>,
    pub has_more: bool,
    /// The offset to continue from.
    pub next_offset: u32,
}

/// One page of a map iteration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapPage {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub has_more: bool,
    pub next_after: Vec<u8>,
}

/// A batch failure: which op failed (if one did), and why.
#[derive(Debug, thiserror::Error)]
#[error("{}{source}", .index.map(|i| format!("op {i}: ")).unwrap_or_default())]
pub struct BatchError {
    pub index: Option<usize>,
    #[source]
    pub source: StoreError,
}

fn check_key(key: &[u8], what: &'static str) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_BYTES as usize {
        return Err(StoreError::TooLarge {
            what,
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES as usize {
        return Err(StoreError::TooLarge {
            what: "value",
            len: value.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

impl Store {
    /// The state `name`, checked to be of `kind`.
    fn entry(
        &self,
        catalog: &Catalog,
        name: &str,
        kind: Kind,
    ) -> Result<Arc<StateEntry>, StoreError> {
        let entry = catalog
            .states
            .get(name)
            .ok_or_else(|| StoreError::UnknownState(name.to_owned()))?;
        if entry.decl.kind != kind {
            return Err(StoreError::WrongKind {
                name: name.to_owned(),
                actual: entry.decl.kind,
                expected: kind,
            });
        }
        Ok(entry.clone())
    }

    fn state(&self, name: &str, kind: Kind) -> Result<Arc<StateEntry>, StoreError> {
        let catalog = self.catalog.read().map_err(|_| StoreError::Poisoned)?;
        self.entry(&catalog, name, kind)
    }

    /// The key group of `key`, if this replica owns it.
    fn group(&self, key: &[u8]) -> Result<u32, StoreError> {
        check_key(key, "key")?;
        let p = &self.placement;
        let group = p.layout.key_group(key);
        if !p.range.contains(group) {
            return Err(StoreError::WrongKeyGroup {
                group,
                owner: owner_of_group(group, p.layout.parallelism(), p.layout.max_parallelism()),
                replica: p.replica,
                range: p.range,
            });
        }
        Ok(group)
    }

    fn cf(&self, name: &str) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("column family {name:?} is missing")))
    }

    pub fn get(&self, state: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let decl = self.state(state, Kind::Value)?;
        let group = self.group(key)?;
        let stored = self
            .db
            .get_pinned_cf(&self.cf(&decl.cf)?, plain_key(group, key))?;
        Ok(stored.and_then(|s| live_payload(&s, now_ms())))
    }

    pub fn multi_get(
        &self,
        state: &str,
        keys: &[Bytes],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.len() > MAX_BATCH_OPS as usize {
            return Err(StoreError::TooMany {
                what: "multi-get",
                len: keys.len(),
                max: MAX_BATCH_OPS,
            });
        }
        let decl = self.state(state, Kind::Value)?;
        let stored_keys = keys
            .iter()
            .map(|k| Ok(plain_key(self.group(k)?, k)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let cf = self.cf(&decl.cf)?;
        let now = now_ms();
        // In chunks, so that an answer too large for a frame is refused before it all is read.
        let mut out = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for chunk in stored_keys.chunks(MULTI_GET_CHUNK) {
            for r in self.db.batched_multi_get_cf(&cf, chunk, false) {
                let value = r?.and_then(|s| live_payload(&s, now));
                bytes += value.as_ref().map_or(0, Vec::len);
                if bytes > MAX_ANSWER_BYTES {
                    return Err(StoreError::TooLarge {
                        what: "multi-get answer (ask for fewer keys)",
                        len: bytes,
                        max: MAX_ANSWER_BYTES as u32,
                    });
                }
                out.push(value);
            }
        }
        Ok(out)
    }

    /// The whole live list of `key`, if it fits in one answer ([`MAX_ANSWER_BYTES`]); a longer
    /// one is refused with `TooLarge` and is read with [`Store::list_page`].
    pub fn list_get(&self, state: &str, key: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let Some(stored) = self.pinned_list(state, key)? else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        let bytes: usize = live_elements(&stored, now).map(<[u8]>::len).sum();
        if bytes > MAX_ANSWER_BYTES {
            return Err(StoreError::TooLarge {
                what: "list for one answer (read it in pages: list_get with a limit)",
                len: bytes,
                max: MAX_ANSWER_BYTES as u32,
            });
        }
        Ok(live_elements(&stored, now).map(<[u8]>::to_vec).collect())
    }

    /// At most `limit` live elements of the list of `key` from index `offset` (0: the default
    /// page size), and at most [`MAX_PAGE_BYTES`] of them (always at least one).
    pub fn list_page(
        &self,
        state: &str,
        key: &[u8],
        offset: u32,
        limit: u32,
    ) -> Result<ListPage, StoreError> {
        let limit = match limit {
            0 => DEFAULT_PAGE_ENTRIES,
            n => n.min(MAX_PAGE_ENTRIES),
        } as usize;
        let Some(stored) = self.pinned_list(state, key)? else {
            return Ok(ListPage::default());
        };
        let mut page = ListPage {
            next_offset: offset,
            ..Default::default()
        };
        let mut bytes = 0;
        let live = live_elements(&stored, now_ms()).enumerate();
        for (index, value) in live.skip(offset as usize) {
            if page.values.len() == limit
                || (!page.values.is_empty() && bytes + value.len() > MAX_PAGE_BYTES)
            {
                page.has_more = true;
                break;
            }
            bytes += value.len();
            page.values.push(value.to_vec());
            page.next_offset = (index + 1) as u32;
        }
        Ok(page)
    }

    /// The stored list of `key` in the list state `state`, if it has one.
    fn pinned_list(
        &self,
        state: &str,
        key: &[u8],
    ) -> Result<Option<rocksdb::DBPinnableSlice<'_>>, StoreError> {
        let decl = self.state(state, Kind::List)?;
        let group = self.group(key)?;
        Ok(self
            .db
            .get_pinned_cf(&self.cf(&decl.cf)?, plain_key(group, key))?)
    }

    /// The stored size of the live elements of a list (0 when there is none).
    fn list_stored_bytes(
        &self,
        cf: &str,
        stored_key: &[u8],
        now: u64,
    ) -> Result<usize, StoreError> {
        let Some(stored) = self.db.get_pinned_cf(&self.cf(cf)?, stored_key)? else {
            return Ok(0);
        };
        Ok(live_elements(&stored, now)
            .map(|v| v.len() + LIST_ELEMENT_OVERHEAD)
            .sum())
    }

    pub fn map_get(
        &self,
        state: &str,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let decl = self.state(state, Kind::Map)?;
        let group = self.group(key)?;
        check_key(map_key, "map key")?;
        let stored = self
            .db
            .get_pinned_cf(&self.cf(&decl.cf)?, map_entry_key(group, key, map_key))?;
        Ok(stored.and_then(|s| live_payload(&s, now_ms())))
    }

    pub fn map_contains(
        &self,
        state: &str,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self.map_get(state, key, map_key)?.is_some())
    }

    /// Up to `limit` live entries of one map with map keys after `after` (or from it, if
    /// `inclusive`), in map-key byte order.
    pub fn map_iter(
        &self,
        state: &str,
        key: &[u8],
        after: &[u8],
        inclusive: bool,
        limit: u32,
    ) -> Result<MapPage, StoreError> {
        let decl = self.state(state, Kind::Map)?;
        let group = self.group(key)?;
        check_key(after, "map key")?;
        let limit = match limit {
            0 => DEFAULT_PAGE_ENTRIES,
            n => n.min(MAX_PAGE_ENTRIES),
        } as usize;
        let prefix = map_prefix(group, key);
        let mut read_opts = super::scan_options();
        if let Some(upper) = prefix_successor(&prefix) {
            read_opts.set_iterate_upper_bound(upper);
        }
        let cf = self.cf(&decl.cf)?;
        let mut it = self.db.raw_iterator_cf_opt(&cf, read_opts);
        let mut start = prefix.clone();
        start.extend_from_slice(after);
        it.seek(&start);
        let now = now_ms();
        let mut page = MapPage::default();
        let mut bytes = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let map_key = &k[prefix.len()..];
            if !inclusive && map_key == after && k.len() == start.len() {
                it.next();
                continue;
            }
            if let Some(value) = live_payload(v, now) {
                if page.entries.len() == limit || bytes >= MAX_PAGE_BYTES {
                    page.has_more = true;
                    break;
                }
                bytes += map_key.len() + value.len();
                page.entries.push((map_key.to_vec(), value));
            }
            it.next();
        }
        it.status()?;
        if let Some((last, _)) = page.entries.last() {
            page.next_after = last.clone();
        }
        Ok(page)
    }

    pub fn operator_state_get(&self, name: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        {
            let catalog = self.catalog.read().map_err(|_| StoreError::Poisoned)?;
            if !catalog.operator_states.contains_key(name) {
                return Err(StoreError::UnknownState(name.to_owned()));
            }
        }
        let stored = self
            .db
            .get_pinned_cf(&self.operator_cf()?, name.as_bytes())?;
        Ok(stored
            .map(|s| encoding::decode_operator_list(&s))
            .unwrap_or_default())
    }

    /// Applies `ops` atomically: all of them, or none when any is invalid.
    pub fn write(&self, ops: &[WriteOp]) -> Result<usize, BatchError> {
        self.write_many(&[ops]).pop().unwrap_or(Ok(0))
    }

    /// Applies several independent atomic batches with one RocksDB write (group commit). Each
    /// batch is validated whole first; an invalid batch fails alone and writes nothing, the valid
    /// ones commit together. Results are in the order of `batches`.
    pub fn write_many(&self, batches: &[&[WriteOp]]) -> Vec<Result<usize, BatchError>> {
        let whole = |source| BatchError {
            index: None,
            source,
        };
        let now = now_ms();
        let mut results: Vec<Result<usize, BatchError>> = Vec::with_capacity(batches.len());
        let mut resolved: Vec<Resolved> = Vec::new();
        let mut lists = ListSizes::default();
        match self.catalog.read() {
            Ok(catalog) => {
                for ops in batches {
                    let result = self.resolve_batch(&catalog, ops, now, &mut lists, &mut resolved);
                    results.push(result);
                }
            }
            Err(_) => {
                return batches
                    .iter()
                    .map(|_| Err(whole(StoreError::Poisoned)))
                    .collect();
            }
        }
        if resolved.is_empty() {
            return results;
        }
        let registered: Vec<Registered> = resolved.iter().filter_map(|r| r.registered).collect();
        // Fencing and checkpoint cuts take the gate exclusively, so no batch is applied after a
        // fence, and a cut never splits a batch.
        let outcome = match self.gate.read() {
            Err(_) => Err(StoreError::Poisoned),
            Ok(_gate) if self.is_fenced() => Err(StoreError::Suspended),
            Ok(_gate) => self.commit(resolved),
        };
        // After the commit, never before: see the timers module on the index's invariant.
        if outcome.is_ok() {
            self.note_timers(&registered);
        }
        if let Err(e) = outcome {
            let message = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                let source = match e {
                    StoreError::Suspended => StoreError::Suspended,
                    _ => StoreError::WriteFailed(message.clone()),
                };
                *r = Err(whole(source));
            }
        }
        results
    }

    fn resolve_batch(
        &self,
        catalog: &Catalog,
        ops: &[WriteOp],
        now: u64,
        lists: &mut ListSizes,
        out: &mut Vec<Resolved>,
    ) -> Result<usize, BatchError> {
        if ops.len() > MAX_BATCH_OPS as usize {
            return Err(BatchError {
                index: None,
                source: StoreError::TooMany {
                    what: "write batch",
                    len: ops.len(),
                    max: MAX_BATCH_OPS,
                },
            });
        }
        let start = out.len();
        // List sizes this batch changes; kept for the batches after it only if it is valid.
        let mut batch_lists = ListSizes::default();
        for (i, op) in ops.iter().enumerate() {
            match self.resolve(catalog, op, now, (&*lists, &mut batch_lists)) {
                Ok(r) => out.push(r),
                Err(source) => {
                    out.truncate(start);
                    return Err(BatchError {
                        index: Some(i),
                        source,
                    });
                }
            }
        }
        lists.extend(batch_lists);
        Ok(ops.len())
    }

    fn commit(&self, resolved: Vec<Resolved>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let operator_cf = self.operator_cf()?;
        let meta_cf = self.meta_cf()?;
        let timers_cf = self.cf(timers::TIMERS_CF)?;
        for r in resolved {
            let state_cf;
            let cf = match &r.target {
                Target::State(entry) => {
                    state_cf = self.cf(&entry.cf)?;
                    &state_cf
                }
                Target::Operator => &operator_cf,
                Target::Meta => &meta_cf,
                Target::Timers => &timers_cf,
            };
            match r.action {
                Action::Put(k, v) => batch.put_cf(cf, k, v),
                Action::Merge(k, v) => batch.merge_cf(cf, k, v),
                Action::Delete(k) => batch.delete_cf(cf, k),
                Action::DeleteRange(a, b) => batch.delete_range_cf(cf, a, b),
            }
        }
        self.db.write_opt(batch, &self.write_options)?;
        Ok(())
    }

    /// Validates one op and encodes what it writes.
    fn resolve(
        &self,
        catalog: &Catalog,
        op: &WriteOp,
        now: u64,
        (earlier, lists): (&ListSizes, &mut ListSizes),
    ) -> Result<Resolved, StoreError> {
        let state = |name: &str, kind| self.entry(catalog, name, kind);
        let expiry = |e: &StateEntry| expiry_for(now, e.decl.ttl_ms);
        Ok(match op {
            WriteOp::ValuePut {
                state: name,
                key,
                value,
            } => {
                let e = state(name, Kind::Value)?;
                let group = self.group(key)?;
                check_value(value)?;
                let v = encode_value(expiry(&e), value);
                Resolved::state(e, Action::Put(plain_key(group, key), v))
            }
            WriteOp::ValueClear { state: name, key } => {
                let e = state(name, Kind::Value)?;
                Resolved::state(e, Action::Delete(plain_key(self.group(key)?, key)))
            }
            WriteOp::ListAppend {
                state: name,
                key,
                values,
            }
            | WriteOp::ListSet {
                state: name,
                key,
                values,
            } => {
                let e = state(name, Kind::List)?;
                let group = self.group(key)?;
                for v in values {
                    check_value(v)?;
                }
                let mut encoded = Vec::new();
                encode_list(expiry(&e), values.iter().map(|v| &v[..]), &mut encoded);
                if encoded.len() > MAX_VALUE_BYTES as usize * 2 {
                    return Err(StoreError::TooLarge {
                        what: "list update",
                        len: encoded.len(),
                        max: MAX_VALUE_BYTES * 2,
                    });
                }
                let k = plain_key(group, key);
                let append = matches!(op, WriteOp::ListAppend { .. });
                let slot = (e.cf.clone(), k.clone());
                let before = match (append, lists.get(&slot).or_else(|| earlier.get(&slot))) {
                    (false, _) => 0,
                    (true, Some(size)) => *size,
                    (true, None) => self.list_stored_bytes(&e.cf, &k, now)?,
                };
                let after = before + encoded.len();
                if after > MAX_LIST_BYTES {
                    return Err(StoreError::TooLarge {
                        what: "list after this append (clear or set it, or spread it over keys)",
                        len: after,
                        max: MAX_LIST_BYTES as u32,
                    });
                }
                lists.insert(slot, after);
                let action = if append {
                    Action::Merge(k, encoded)
                } else if values.is_empty() {
                    Action::Delete(k)
                } else {
                    Action::Put(k, encoded)
                };
                Resolved::state(e, action)
            }
            WriteOp::ListClear { state: name, key } => {
                let e = state(name, Kind::List)?;
                let k = plain_key(self.group(key)?, key);
                lists.insert((e.cf.clone(), k.clone()), 0);
                Resolved::state(e, Action::Delete(k))
            }
            WriteOp::MapPut {
                state: name,
                key,
                map_key,
                value,
            } => {
                let e = state(name, Kind::Map)?;
                let group = self.group(key)?;
                check_key(map_key, "map key")?;
                check_value(value)?;
                let v = encode_value(expiry(&e), value);
                Resolved::state(e, Action::Put(map_entry_key(group, key, map_key), v))
            }
            WriteOp::MapRemove {
                state: name,
                key,
                map_key,
            } => {
                let e = state(name, Kind::Map)?;
                let group = self.group(key)?;
                check_key(map_key, "map key")?;
                Resolved::state(e, Action::Delete(map_entry_key(group, key, map_key)))
            }
            WriteOp::MapClear { state: name, key } => {
                let e = state(name, Kind::Map)?;
                let prefix = map_prefix(self.group(key)?, key);
                // The group prefix is at most 0x7fff, so a successor always exists.
                let end = prefix_successor(&prefix)
                    .ok_or_else(|| StoreError::Invalid("map key prefix has no successor".into()))?;
                Resolved::state(e, Action::DeleteRange(prefix, end))
            }
            WriteOp::OperatorStateSet { name, values } => {
                if !catalog.operator_states.contains_key(name) {
                    return Err(StoreError::UnknownState(name.clone()));
                }
                for v in values {
                    check_value(v)?;
                }
                let encoded = encoding::encode_operator_list(values);
                if encoded.len() > MAX_VALUE_BYTES as usize * 2 {
                    return Err(StoreError::TooLarge {
                        what: "operator state list",
                        len: encoded.len(),
                        max: MAX_VALUE_BYTES * 2,
                    });
                }
                Resolved::new(
                    Target::Operator,
                    Action::Put(name.as_bytes().to_vec(), encoded),
                )
            }
            WriteOp::TimerRegister {
                domain,
                key,
                name,
                time,
            } => {
                let group = self.group(key)?;
                check_key(name, "timer name")?;
                let k = timers::timer_key(group, *domain, *time, key, name);
                Resolved {
                    registered: Some(Registered {
                        group,
                        domain: *domain,
                        time: *time,
                    }),
                    ..Resolved::new(Target::Timers, Action::Put(k, Vec::new()))
                }
            }
            WriteOp::TimerDelete {
                domain,
                key,
                name,
                time,
            } => {
                let group = self.group(key)?;
                check_key(name, "timer name")?;
                let k = timers::timer_key(group, *domain, *time, key, name);
                Resolved::new(Target::Timers, Action::Delete(k))
            }
            WriteOp::WatermarkAdvance { watermark } => Resolved::new(
                Target::Meta,
                Action::Merge(
                    timers::WATERMARK_KEY.to_vec(),
                    watermark.to_be_bytes().to_vec(),
                ),
            ),
        })
    }
}

/// The stored sizes of lists written by the batches of one group commit, by family and stored
/// key: an append is checked against the list as the batches before it leave it.
type ListSizes = std::collections::HashMap<(String, Vec<u8>), usize>;

/// A validated write, ready for the RocksDB batch.
struct Resolved {
    target: Target,
    action: Action,
    /// A timer registration, noted in the timer index once committed.
    registered: Option<Registered>,
}

/// The family a write goes to.
enum Target {
    State(Arc<StateEntry>),
    Operator,
    /// Declarations and the watermark.
    Meta,
    Timers,
}

impl Resolved {
    fn new(target: Target, action: Action) -> Self {
        Self {
            target,
            action,
            registered: None,
        }
    }

    fn state(entry: Arc<StateEntry>, action: Action) -> Self {
        Self::new(Target::State(entry), action)
    }
}

enum Action {
    Put(Vec<u8>, Vec<u8>),
    Merge(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// The elements of a stored list that have not expired at `now`.
fn live_elements(stored: &[u8], now: u64) -> impl Iterator<Item = &[u8]> {
    list_elements(stored)
        .filter(move |(expiry, _)| is_live(*expiry, now))
        .map(|(_, value)| value)
}

fn live_payload(stored: &[u8], now: u64) -> Option<Vec<u8>> {
    let (expiry, payload) = decode_value(stored)?;
    is_live(expiry, now).then(|| payload.to_vec())
}
