//! Reads and atomic write batches. A batch is validated whole before anything is written, so a
//! batch that fails changes nothing.

use bytes::Bytes;
use rocksdb::{ReadOptions, WriteBatch};
use stator_core::keygroup::owner_of_group;
use stator_core::limits::{
    DEFAULT_PAGE_ENTRIES, MAX_BATCH_OPS, MAX_KEY_BYTES, MAX_PAGE_ENTRIES, MAX_VALUE_BYTES,
};

use super::encoding::{
    self, decode_value, encode_list, encode_value, expiry_for, is_live, list_elements,
    map_entry_key, map_prefix, now_ms, plain_key, prefix_successor,
};
use super::{Catalog, Kind, StateDecl, Store, StoreError, cf_name};

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
    /// The declaration of `name`, checked to be of `kind`.
    fn decl(&self, catalog: &Catalog, name: &str, kind: Kind) -> Result<StateDecl, StoreError> {
        let decl = catalog
            .states
            .get(name)
            .ok_or_else(|| StoreError::UnknownState(name.to_owned()))?;
        if decl.kind != kind {
            return Err(StoreError::WrongKind {
                name: name.to_owned(),
                actual: decl.kind,
                expected: kind,
            });
        }
        Ok(decl.clone())
    }

    fn state(&self, name: &str, kind: Kind) -> Result<StateDecl, StoreError> {
        let catalog = self.catalog.read().map_err(|_| StoreError::Poisoned)?;
        self.decl(&catalog, name, kind)
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

    fn cf(
        &self,
        decl: &StateDecl,
    ) -> Result<std::sync::Arc<rocksdb::BoundColumnFamily<'_>>, StoreError> {
        self.db.cf_handle(&cf_name(decl)).ok_or_else(|| {
            StoreError::Corrupt(format!("column family of state {:?} is missing", decl.name))
        })
    }

    pub fn get(&self, state: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let decl = self.state(state, Kind::Value)?;
        let group = self.group(key)?;
        let stored = self
            .db
            .get_pinned_cf(&self.cf(&decl)?, plain_key(group, key))?;
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
        let cf = self.cf(&decl)?;
        let now = now_ms();
        self.db
            .batched_multi_get_cf(&cf, &stored_keys, false)
            .into_iter()
            .map(|r| Ok(r?.and_then(|s| live_payload(&s, now))))
            .collect()
    }

    pub fn list_get(&self, state: &str, key: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let decl = self.state(state, Kind::List)?;
        let group = self.group(key)?;
        let Some(stored) = self
            .db
            .get_pinned_cf(&self.cf(&decl)?, plain_key(group, key))?
        else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        Ok(list_elements(&stored)
            .filter(|(expiry, _)| is_live(*expiry, now))
            .map(|(_, v)| v.to_vec())
            .collect())
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
            .get_pinned_cf(&self.cf(&decl)?, map_entry_key(group, key, map_key))?;
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
        let mut read_opts = ReadOptions::default();
        if let Some(upper) = prefix_successor(&prefix) {
            read_opts.set_iterate_upper_bound(upper);
        }
        let cf = self.cf(&decl)?;
        let mut it = self.db.raw_iterator_cf_opt(&cf, read_opts);
        let mut start = prefix.clone();
        start.extend_from_slice(after);
        it.seek(&start);
        let now = now_ms();
        let mut page = MapPage::default();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let map_key = &k[prefix.len()..];
            if !inclusive && map_key == after && k.len() == start.len() {
                it.next();
                continue;
            }
            if let Some(value) = live_payload(v, now) {
                if page.entries.len() == limit {
                    page.has_more = true;
                    break;
                }
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
        let whole = |source| BatchError {
            index: None,
            source,
        };
        if ops.len() > MAX_BATCH_OPS as usize {
            return Err(whole(StoreError::TooMany {
                what: "write batch",
                len: ops.len(),
                max: MAX_BATCH_OPS,
            }));
        }
        let now = now_ms();
        let mut batch = WriteBatch::default();
        {
            let catalog = self
                .catalog
                .read()
                .map_err(|_| whole(StoreError::Poisoned))?;
            for (i, op) in ops.iter().enumerate() {
                self.add(&catalog, &mut batch, op, now)
                    .map_err(|source| BatchError {
                        index: Some(i),
                        source,
                    })?;
            }
        }
        // Fencing and checkpoint cuts take the gate exclusively, so no batch is applied after a
        // fence, and a cut never splits a batch.
        let _gate = self.gate.read().map_err(|_| whole(StoreError::Poisoned))?;
        if self.is_fenced() {
            return Err(whole(StoreError::Suspended));
        }
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| whole(e.into()))?;
        Ok(ops.len())
    }

    fn add(
        &self,
        catalog: &Catalog,
        batch: &mut WriteBatch,
        op: &WriteOp,
        now: u64,
    ) -> Result<(), StoreError> {
        match op {
            WriteOp::ValuePut { state, key, value } => {
                let decl = self.decl(catalog, state, Kind::Value)?;
                let group = self.group(key)?;
                check_value(value)?;
                batch.put_cf(
                    &self.cf(&decl)?,
                    plain_key(group, key),
                    encode_value(expiry_for(now, decl.ttl_ms), value),
                );
            }
            WriteOp::ValueClear { state, key } => {
                let decl = self.decl(catalog, state, Kind::Value)?;
                let group = self.group(key)?;
                batch.delete_cf(&self.cf(&decl)?, plain_key(group, key));
            }
            WriteOp::ListAppend { state, key, values }
            | WriteOp::ListSet { state, key, values } => {
                let decl = self.decl(catalog, state, Kind::List)?;
                let group = self.group(key)?;
                let mut encoded = Vec::new();
                for v in values {
                    check_value(v)?;
                }
                encode_list(
                    expiry_for(now, decl.ttl_ms),
                    values.iter().map(|v| &v[..]),
                    &mut encoded,
                );
                if encoded.len() > MAX_VALUE_BYTES as usize * 2 {
                    return Err(StoreError::TooLarge {
                        what: "list update",
                        len: encoded.len(),
                        max: MAX_VALUE_BYTES * 2,
                    });
                }
                let cf = self.cf(&decl)?;
                if matches!(op, WriteOp::ListAppend { .. }) {
                    batch.merge_cf(&cf, plain_key(group, key), encoded);
                } else if values.is_empty() {
                    batch.delete_cf(&cf, plain_key(group, key));
                } else {
                    batch.put_cf(&cf, plain_key(group, key), encoded);
                }
            }
            WriteOp::ListClear { state, key } => {
                let decl = self.decl(catalog, state, Kind::List)?;
                let group = self.group(key)?;
                batch.delete_cf(&self.cf(&decl)?, plain_key(group, key));
            }
            WriteOp::MapPut {
                state,
                key,
                map_key,
                value,
            } => {
                let decl = self.decl(catalog, state, Kind::Map)?;
                let group = self.group(key)?;
                check_key(map_key, "map key")?;
                check_value(value)?;
                batch.put_cf(
                    &self.cf(&decl)?,
                    map_entry_key(group, key, map_key),
                    encode_value(expiry_for(now, decl.ttl_ms), value),
                );
            }
            WriteOp::MapRemove {
                state,
                key,
                map_key,
            } => {
                let decl = self.decl(catalog, state, Kind::Map)?;
                let group = self.group(key)?;
                check_key(map_key, "map key")?;
                batch.delete_cf(&self.cf(&decl)?, map_entry_key(group, key, map_key));
            }
            WriteOp::MapClear { state, key } => {
                let decl = self.decl(catalog, state, Kind::Map)?;
                let group = self.group(key)?;
                let prefix = map_prefix(group, key);
                // A map prefix always ends in the key's length or bytes; the group prefix is at
                // most 0x7fff, so a successor always exists.
                let end = prefix_successor(&prefix)
                    .ok_or_else(|| StoreError::Invalid("map key prefix has no successor".into()))?;
                batch.delete_range_cf(&self.cf(&decl)?, prefix, end);
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
                batch.put_cf(&self.operator_cf()?, name.as_bytes(), encoded);
            }
        }
        Ok(())
    }
}

fn live_payload(stored: &[u8], now: u64) -> Option<Vec<u8>> {
    let (expiry, payload) = decode_value(stored)?;
    is_live(expiry, now).then(|| payload.to_vec())
}
