//! Snapshots of the store for checkpoints and savepoints, and rebuilding a store from snapshots
//! taken at another parallelism.
//!
//! A cut is a RocksDB checkpoint (hard links plus a copied MANIFEST and WAL) that falls between
//! batches: see [`Store::cut`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rocksdb::{ColumnFamilyDescriptor, IngestExternalFileOptions, Options, SstFileWriter};

use super::encoding::{self, now_ms};
use super::{Db, META_CF, OPERATOR_CF, OperatorStateDecl, StateDecl, Store, StoreError};

/// Up to this much WAL goes into a checkpoint as is; beyond it the checkpoint flushes memtables.
pub const WAL_BYTES_BEFORE_FLUSH: u64 = 16 << 20;

/// A local snapshot, ready to upload.
#[derive(Debug)]
pub struct Cut {
    /// How long writes were held back.
    pub pause: Duration,
    pub created_at_ms: u64,
    pub states: Vec<StateDecl>,
    pub operator_states: Vec<OperatorStateDecl>,
    /// Every operator-state list at the cut.
    pub operator_state: BTreeMap<String, Vec<Vec<u8>>>,
}

/// Families whose keys start with a key group: keyed state (named `<kind letter>:<name>`) and
/// timers (`__timers`), which rescaling clips and ingests alike.
fn is_state_family(name: &str) -> bool {
    !matches!(name, "default" | META_CF | OPERATOR_CF)
}

impl Store {
    /// Writes a consistent snapshot into `dir` (which must not exist), on the same file system
    /// as the store.
    ///
    /// With the WAL on, RocksDB's checkpoint links the SST files and copies the live WAL up to a
    /// record boundary; every batch is one WAL record, so the snapshot holds whole batches and
    /// writes are never held back. Memtables are flushed only once the WAL reaches
    /// [`WAL_BYTES_BEFORE_FLUSH`]: flushing at every checkpoint would make many small files and,
    /// through the compactions they trigger, rewrite (and re-upload) much of the state.
    /// With the WAL off the checkpoint must flush, and a batch may span families, so writes are
    /// held (the gate) for the flush.
    pub fn cut(&self, dir: &Path) -> Result<Cut, StoreError> {
        self.cut_flushed(dir, false)
    }

    /// [`Store::cut`], flushing the memtables first whatever the WAL's size when `flush`: the
    /// first phase of a savepoint, so that the fenced cut after it holds only a short WAL.
    pub fn cut_flushed(&self, dir: &Path, flush: bool) -> Result<Cut, StoreError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        let start = Instant::now();
        let pause = if self.wal {
            if flush || self.wal_bytes() >= WAL_BYTES_BEFORE_FLUSH {
                self.flush()?;
            }
            checkpoint.create_checkpoint_with_log_size(dir, u64::MAX)?;
            Duration::ZERO
        } else {
            // Flushing first leaves little for the flush under the gate.
            self.flush()?;
            let gate = self.gate.write().map_err(|_| StoreError::Poisoned)?;
            checkpoint.create_checkpoint(dir)?;
            drop(gate);
            start.elapsed()
        };
        let operator_states = self.operator_states();
        // Read from the snapshot itself, so the manifest's lists are exactly the snapshot's.
        let operator_state = self.read_operator_state(dir, &operator_states)?;
        Ok(Cut {
            pause,
            created_at_ms: now_ms(),
            states: self.states(),
            operator_states,
            operator_state,
        })
    }

    /// The size of the live WAL files.
    fn wal_bytes(&self) -> u64 {
        std::fs::read_dir(&self.path)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    fn read_operator_state(
        &self,
        dir: &Path,
        decls: &[OperatorStateDecl],
    ) -> Result<BTreeMap<String, Vec<Vec<u8>>>, StoreError> {
        let mut out = BTreeMap::new();
        if decls.is_empty() {
            return Ok(out);
        }
        let names = Db::list_cf(&Options::default(), dir)?;
        let descriptors: Vec<_> = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, self.cf_options.for_family(n)))
            .collect();
        let db = Db::open_cf_descriptors_read_only(&self.cf_options.base, dir, descriptors, false)?;
        let Some(cf) = db.cf_handle(OPERATOR_CF) else {
            return Ok(out);
        };
        for decl in decls {
            let stored = db.get_pinned_cf(&cf, decl.name.as_bytes())?;
            out.insert(
                decl.name.clone(),
                stored
                    .map(|s| encoding::decode_operator_list(&s))
                    .unwrap_or_default(),
            );
        }
        Ok(out)
    }

    /// Deletes every keyed entry outside this replica's key-group range (after opening a snapshot
    /// of a replica whose range was wider or elsewhere).
    pub fn clip_to_range(&self) -> Result<(), StoreError> {
        let range = self.placement.range;
        for name in self.family_names().iter().filter(|n| is_state_family(n)) {
            let cf = self.cf_handle(name)?;
            if range.start > 0 {
                self.db
                    .delete_range_cf(&cf, [0u8, 0u8], encoding::group_prefix(range.start))?;
            }
            // Groups are below 32768, so every key sorts below [0xff, 0xff].
            self.db
                .delete_range_cf(&cf, encoding::group_prefix(range.end + 1), [0xffu8, 0xff])?;
        }
        self.reset_timer_index();
        Ok(())
    }

    /// Copies the entries of this replica's range from another replica's snapshot in
    /// `source` into this store: one sorted SST per state, ingested (no per-key writes).
    /// The states must already be declared here. The watermark becomes the lower of this store's
    /// and the source's (see [`Store::merge_watermark_from`]). Returns the entries copied.
    pub fn ingest_range_from(&self, source: &Path, scratch: &Path) -> Result<u64, StoreError> {
        let names = Db::list_cf(&Options::default(), source)?;
        let descriptors: Vec<_> = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, self.cf_options.for_family(n)))
            .collect();
        let source_db =
            Db::open_cf_descriptors_read_only(&self.cf_options.base, source, descriptors, false)?;
        std::fs::create_dir_all(scratch).map_err(|e| StoreError::Io {
            path: scratch.to_owned(),
            source: e,
        })?;
        let range = self.placement.range;
        let mut copied = 0;
        for (i, name) in names.iter().filter(|n| is_state_family(n)).enumerate() {
            let Some(source_cf) = source_db.cf_handle(name) else {
                continue;
            };
            let opts = self.cf_options.for_family(name);
            let sst = scratch.join(format!("ingest-{i}.sst"));
            let mut writer = SstFileWriter::create(&opts);
            writer.open(&sst)?;
            let mut read = super::scan_options();
            read.set_iterate_lower_bound(encoding::group_prefix(range.start).to_vec());
            read.set_iterate_upper_bound(encoding::group_prefix(range.end + 1).to_vec());
            let mut it = source_db.raw_iterator_cf_opt(&source_cf, read);
            it.seek_to_first();
            let mut n = 0u64;
            while it.valid() {
                if let (Some(k), Some(v)) = (it.key(), it.value()) {
                    writer.put(k, v)?;
                    n += 1;
                }
                it.next();
            }
            it.status()?;
            if n == 0 {
                drop(writer);
                let _ = std::fs::remove_file(&sst);
                continue;
            }
            writer.finish()?;
            let cf = self.cf_handle(name)?;
            let mut ingest = IngestExternalFileOptions::default();
            ingest.set_move_files(true);
            self.db
                .ingest_external_file_cf_opts(&cf, &ingest, vec![&sst])?;
            copied += n;
        }
        self.merge_watermark_from(&source_db)?;
        self.reset_timer_index();
        Ok(copied)
    }

    /// Replaces operator-state lists (after redistribution on rescale).
    pub fn set_operator_state(
        &self,
        lists: &BTreeMap<String, Vec<Vec<u8>>>,
    ) -> Result<(), StoreError> {
        let cf = self.operator_cf()?;
        for (name, values) in lists {
            self.db
                .put_cf(&cf, name.as_bytes(), encoding::encode_operator_list(values))?;
        }
        Ok(())
    }

    fn cf_handle(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<rocksdb::BoundColumnFamily<'_>>, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("column family {name:?} is missing")))
    }
}

/// One stored entry of a keyed state, decoded (for the offline inspect command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpEntry {
    pub key_group: u32,
    pub key: Vec<u8>,
    /// Map states only.
    pub map_key: Option<Vec<u8>>,
    /// One value for value and map states; the live elements for list states.
    pub values: Vec<Vec<u8>>,
    /// 0: never (for lists, the latest element expiry).
    pub expires_at_ms: u64,
}

/// Reads every live entry of `decl` from a snapshot directory (opened read-only), in key order.
pub fn dump_state(dir: &Path, decl: &StateDecl) -> Result<Vec<DumpEntry>, StoreError> {
    let cf_options = super::CfOptions::new(&super::RocksOptions::default());
    let names = Db::list_cf(&Options::default(), dir)?;
    let descriptors: Vec<_> = names
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(n, cf_options.for_family(n)))
        .collect();
    let db = Db::open_cf_descriptors_read_only(&cf_options.base, dir, descriptors, false)?;
    let name = super::cf_name(decl);
    let Some(cf) = db.cf_handle(&name) else {
        return Ok(Vec::new());
    };
    let now = now_ms();
    let mut out = Vec::new();
    let mut it = db.raw_iterator_cf_opt(&cf, super::scan_options());
    it.seek_to_first();
    while it.valid() {
        if let (Some(k), Some(v)) = (it.key(), it.value())
            && let Some((group, rest)) = k.split_at_checked(encoding::GROUP_BYTES)
        {
            let key_group = u32::from(u16::from_be_bytes([group[0], group[1]]));
            match decl.kind {
                super::Kind::Value => {
                    if let Some((expiry, payload)) = encoding::decode_value(v)
                        && encoding::is_live(expiry, now)
                    {
                        out.push(DumpEntry {
                            key_group,
                            key: rest.to_vec(),
                            map_key: None,
                            values: vec![payload.to_vec()],
                            expires_at_ms: expiry,
                        });
                    }
                }
                super::Kind::List => {
                    let live: Vec<_> = encoding::list_elements(v)
                        .filter(|(e, _)| encoding::is_live(*e, now))
                        .collect();
                    if !live.is_empty() {
                        out.push(DumpEntry {
                            key_group,
                            key: rest.to_vec(),
                            map_key: None,
                            expires_at_ms: live.iter().map(|(e, _)| *e).max().unwrap_or(0),
                            values: live.into_iter().map(|(_, v)| v.to_vec()).collect(),
                        });
                    }
                }
                super::Kind::Map => {
                    if let Some((len, tail)) = rest.split_at_checked(4) {
                        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                        if let Some((key, map_key)) = tail.split_at_checked(len)
                            && let Some((expiry, payload)) = encoding::decode_value(v)
                            && encoding::is_live(expiry, now)
                        {
                            out.push(DumpEntry {
                                key_group,
                                key: key.to_vec(),
                                map_key: Some(map_key.to_vec()),
                                values: vec![payload.to_vec()],
                                expires_at_ms: expiry,
                            });
                        }
                    }
                }
            }
        }
        it.next();
    }
    it.status()?;
    Ok(out)
}
