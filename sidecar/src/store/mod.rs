//! The keyed-state store: value, list and map state with TTL, and operator state, in RocksDB.
//!
//! One column family per state, named `<kind letter>:<state name>` so that each family's options
//! (merge operator, compaction filter) are known before the database opens. Declarations (with
//! TTLs) are persisted in the `__meta` family; operator-state lists live in `__operator`; timers
//! in `__timers` (see [`timers`]). Every read and write checks that the key's group is in this
//! replica's range.

pub mod encoding;
mod error;
mod ops;
mod snapshot;
pub mod timers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, DBWithThreadMode,
    MultiThreaded, Options, ReadOptions, WriteBufferManager, WriteOptions,
    compaction_filter::Decision,
};
use stator_core::keygroup::{KeyGroupRange, Layout};

pub use error::StoreError;
pub use ops::{BatchError, ListPage, MapPage, WriteOp};
pub use snapshot::{Cut, DumpEntry, dump_state};
pub use timers::{Domain, Timer, TimerPage, TimerStatus, dump_timers};

pub(crate) use encoding::now_ms;
use encoding::{decode_value, is_live, list_elements};

pub type Db = DBWithThreadMode<MultiThreaded>;

const META_CF: &str = "__meta";
const OPERATOR_CF: &str = "__operator";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Value,
    List,
    Map,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::Value => 'v',
            Kind::List => 'l',
            Kind::Map => 'm',
        }
    }

    fn from_letter(c: char) -> Option<Self> {
        match c {
            'v' => Some(Kind::Value),
            'l' => Some(Kind::List),
            'm' => Some(Kind::Map),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Value => "value",
            Kind::List => "list",
            Kind::Map => "map",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateDecl {
    pub name: String,
    pub kind: Kind,
    #[serde(default)]
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Redistribution {
    Split,
    Union,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorStateDecl {
    pub name: String,
    pub redistribution: Redistribution,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

/// How each SST file's index and bloom filter are laid out in the block cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexFilters {
    /// Cut into 4 KiB partitions under a small pinned top level: a get loads only the
    /// partitions it needs, so a state whose indexes and filters exceed the block cache still
    /// reads a few KiB per miss. The default.
    Partitioned,
    /// One index block and one filter per file: a get skips the top level's search and a cache
    /// lookup per level (4-11% more point reads in docs/BENCHMARKS.md), but a file's whole
    /// filter and index (about 2 MiB per million keys of small values) are read again after
    /// an eviction. For states whose indexes and filters stay in the block cache.
    Whole,
}

/// RocksDB tuning a user may set.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    pub block_cache_bytes: usize,
    pub compression: Compression,
    pub index_filters: IndexFilters,
    pub write_buffer_bytes: usize,
    /// The memory all families' memtables share (one WriteBufferManager); writes wait while
    /// flushes bring it back under.
    pub memtable_budget_bytes: usize,
    /// Write the RocksDB WAL. Without it, a crash loses writes since the last flush; restoring
    /// from the latest checkpoint is then the only recovery.
    pub wal: bool,
    /// Fault injection for tests: no flush or compaction threads (writes stall once the
    /// memtable budget is spent).
    pub stop_background_work: bool,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 << 20,
            compression: Compression::Lz4,
            index_filters: IndexFilters::Partitioned,
            write_buffer_bytes: 64 << 20,
            memtable_budget_bytes: 128 << 20,
            wal: true,
            stop_background_work: false,
        }
    }
}

/// Where this replica sits in the job.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub layout: Layout,
    pub replica: u32,
    pub range: KeyGroupRange,
}

impl Placement {
    pub fn new(layout: Layout, replica: u32) -> Result<Self, stator_core::keygroup::LayoutError> {
        Ok(Self {
            layout,
            replica,
            range: layout.range(replica)?,
        })
    }
}

/// A declared state and its column family's name.
struct StateEntry {
    decl: StateDecl,
    cf: String,
}

impl StateEntry {
    fn new(decl: StateDecl) -> Arc<Self> {
        Arc::new(Self {
            cf: cf_name(&decl),
            decl,
        })
    }
}

#[derive(Default)]
struct Catalog {
    states: HashMap<String, Arc<StateEntry>>,
    operator_states: HashMap<String, OperatorStateDecl>,
}

pub struct Store {
    db: Db,
    path: PathBuf,
    placement: Placement,
    catalog: RwLock<Catalog>,
    cf_options: CfOptions,
    write_options: WriteOptions,
    wal: bool,
    fenced: AtomicBool,
    /// Held shared by every write, exclusively by fencing and checkpoint cuts.
    gate: RwLock<()>,
    /// Where the earliest timers are; built on first use (see [`timers`]).
    timers: std::sync::Mutex<Option<timers::TimerIndex>>,
    /// Options of families created at run time. RocksDB keeps pointers to their merge operators
    /// and compaction filters, which these own, so they must outlive `db` (declared first, so
    /// dropped first).
    created_cf_options: std::sync::Mutex<Vec<Options>>,
    /// The names of every open family (RocksDB's own list is read from the MANIFEST on disk).
    families: RwLock<Vec<String>>,
    /// Held by a declaration while it creates families, so declarations apply one at a time.
    declaring: std::sync::Mutex<()>,
}

/// Shared per-family options: one block cache and one memtable budget for all families.
struct CfOptions {
    base: Options,
    write_buffer_bytes: usize,
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl CfOptions {
    fn new(rocks: &RocksOptions) -> Self {
        let mut table = BlockBasedOptions::default();
        // A clock cache: a get's lookup takes no shard mutex and moves nothing in an LRU list (the
        // LRU cache's lookups, list maintenance and mutex took 12% of a get-heavy profile).
        // Estimated entry charge 0: sized as entries come (RocksDB's AutoHyperClockCache).
        let cache = Cache::new_hyper_clock_cache(rocks.block_cache_bytes, 0);
        table.set_block_cache(&cache);
        let write_buffers =
            WriteBufferManager::new_write_buffer_manager(rocks.memtable_budget_bytes, true);
        table.set_bloom_filter(10.0, false);
        // Index and filter blocks live in the block cache, so the cache bounds them; L0's stay
        // pinned. Partitioned by default (see [`IndexFilters`]): with the LRU cache's 512 KiB
        // shards a whole file's filter (over 1 MiB for a million keys) did not fit a shard, so
        // nearly every get read it again once the cache was full (gets after a burst of writes
        // fell from 265k to 19k ops/s). The clock cache's shards are at least 32 MiB, so whole
        // blocks now fit; what partitions still buy is a small read per miss when a state's
        // indexes and filters exceed the cache. Each file records its own layout, so changing
        // this applies to new files and reads old ones as they are.
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        if rocks.index_filters == IndexFilters::Partitioned {
            table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
            table.set_partition_filters(true);
            table.set_metadata_block_size(4096);
            table.set_pin_top_level_index_and_filter(true);
        }
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut base = Options::default();
        base.set_block_based_table_factory(&table);
        base.set_write_buffer_manager(&write_buffers);
        // One memtable may not be larger than the budget they all share.
        let write_buffer_bytes = rocks.write_buffer_bytes.min(rocks.memtable_budget_bytes);
        base.set_write_buffer_size(write_buffer_bytes);
        // A whole-key bloom filter in the memtable lets point reads of flushed keys skip the
        // memtable's skiplist search.
        base.set_memtable_prefix_bloom_ratio(0.02);
        base.set_memtable_whole_key_filtering(true);
        // Concurrent memtable inserts need skiplist memtables, and value states have hash
        // memtables (below). Writes are group-committed by one leader anyway.
        base.set_allow_concurrent_memtable_write(false);
        base.set_compression_type(match rocks.compression {
            Compression::None => DBCompressionType::None,
            Compression::Lz4 => DBCompressionType::Lz4,
            Compression::Zstd => DBCompressionType::Zstd,
        });
        Self {
            base,
            write_buffer_bytes,
            cache,
            write_buffers,
        }
    }

    fn for_family(&self, cf_name: &str) -> Options {
        let mut opts = self.base.clone();
        if cf_name == META_CF {
            // Only the watermark is merged: it never moves back.
            opts.set_merge_operator_associative("stator-watermark-max", timers::merge_max);
        }
        match cf_name
            .split_once(':')
            .and_then(|(k, _)| k.chars().next())
            .and_then(Kind::from_letter)
        {
            Some(kind @ (Kind::Value | Kind::Map)) => {
                if kind == Kind::Value {
                    value_memtable(&mut opts, self.write_buffer_bytes);
                }
                opts.set_compaction_filter("stator-ttl", |_level, _key, value| match decode_value(
                    value,
                ) {
                    Some((expiry, _)) if !is_live(expiry, now_ms()) => Decision::Remove,
                    _ => Decision::Keep,
                });
            }
            Some(Kind::List) => {
                opts.set_merge_operator_associative("stator-list-append", merge_list);
                // Merge results never reach the filter, but the merge drops expired elements;
                // the list it leaves (possibly empty, which reads as absent) is a plain value
                // the next compaction removes once every element has expired.
                opts.set_compaction_filter("stator-ttl-list", |_level, _key, value| {
                    let now = now_ms();
                    if list_elements(value).all(|(e, _)| !is_live(e, now)) {
                        Decision::Remove
                    } else {
                        Decision::Keep
                    }
                });
            }
            None => {}
        }
        opts
    }
}

/// A value state is only ever read by whole key (gets and multi-gets), so its memtable is a hash
/// table of small skiplists keyed by the whole key (the no-op prefix extractor) instead of one
/// skiplist of every key: a get hashes to its bucket instead of searching about 20 levels of
/// pointers across the whole memtable (the skiplist search took 20-33% of a get-heavy profile).
/// Iterators over a value family must ask for a total-order seek ([`scan_options`]): in prefix
/// mode they would see only the key they seek.
fn value_memtable(opts: &mut Options, write_buffer_bytes: usize) {
    opts.set_prefix_extractor(rocksdb::SliceTransform::create_noop());
    opts.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
        // About one bucket per KiB of memtable: a few entries per bucket at typical value
        // sizes, and 8 bytes per KiB (under 1%) for the bucket array.
        bucket_count: (write_buffer_bytes / 1024).clamp(1024, 1 << 20),
        height: 4,
        branching_factor: 4,
    });
}

/// Read options for an iterator over any state family: a total-order seek, which value
/// families need (see [`value_memtable`]) and costs the others nothing.
pub(crate) fn scan_options() -> ReadOptions {
    let mut read = ReadOptions::default();
    read.set_total_order_seek(true);
    read
}

/// List append: concatenation, dropping elements that have expired (the expiry is absolute, so
/// dropping them at any merge is safe and keeps appended lists from growing without bound).
fn merge_list(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let now = now_ms();
    let mut out = Vec::with_capacity(
        existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>(),
    );
    for part in existing.into_iter().chain(operands.iter()) {
        for (expiry, value) in list_elements(part) {
            if is_live(expiry, now) {
                encoding::encode_list(expiry, [value], &mut out);
            }
        }
    }
    Some(out)
}

fn cf_name(decl: &StateDecl) -> String {
    format!("{}:{}", decl.kind.letter(), decl.name)
}

impl Store {
    /// Opens (or creates) the store at `path` and declares `states` and `operator_states`.
    pub fn open(
        path: &Path,
        placement: Placement,
        rocks: &RocksOptions,
        states: &[StateDecl],
        operator_states: &[OperatorStateDecl],
    ) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        let cf_options = CfOptions::new(rocks);
        let mut db_opts = cf_options.base.clone();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        // A rarely written family (declarations) would otherwise keep every WAL file alive, and
        // checkpoints copy the live WAL.
        db_opts.set_max_total_wal_size(2 * rocks.write_buffer_bytes as u64);
        // A writer waiting for the group-commit leader blocks at once instead of spinning and
        // yielding for up to 100 us first: on the few cores a sidecar gets, the spinning took
        // the core the leader (or the app) needed. With 4 connections, p99 fell by 13-25% for
        // writes and the 50/50 mix (docs/BENCHMARKS.md), throughput unchanged at depth 16.
        db_opts.set_enable_write_thread_adaptive_yield(false);
        let mut names = Db::list_cf(&db_opts, path).unwrap_or_default();
        for fixed in ["default", META_CF, OPERATOR_CF, timers::TIMERS_CF] {
            if !names.iter().any(|n| n == fixed) {
                names.push(fixed.to_owned());
            }
        }
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, cf_options.for_family(n)));
        let db = Db::open_cf_descriptors(&db_opts, path, descriptors)?;
        if rocks.stop_background_work {
            // After the open, which raises the process-wide pools to what the options need.
            let mut env = rocksdb::Env::new()?;
            env.set_background_threads(0);
            env.set_high_priority_background_threads(0);
            tracing::warn!("fault injection: RocksDB runs with no flush or compaction threads");
        }
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(!rocks.wal);
        let store = Self {
            db,
            path: path.to_owned(),
            placement,
            catalog: RwLock::new(Catalog::default()),
            cf_options,
            write_options,
            wal: rocks.wal,
            fenced: AtomicBool::new(false),
            gate: RwLock::new(()),
            timers: Default::default(),
            created_cf_options: Default::default(),
            families: RwLock::new(names),
            declaring: Default::default(),
        };
        store.load_catalog()?;
        store.declare(states, operator_states)?;
        Ok(Arc::new(store))
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    fn load_catalog(&self) -> Result<(), StoreError> {
        let meta = self.meta_cf()?;
        let mut catalog = self.catalog.write().map_err(|_| StoreError::Poisoned)?;
        for item in self.db.iterator_cf(&meta, rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            if let Some(name) = key.strip_prefix(b"state/") {
                let decl: StateDecl = serde_json::from_slice(&value).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "state declaration {:?}: {e}",
                        String::from_utf8_lossy(name)
                    ))
                })?;
                catalog
                    .states
                    .insert(decl.name.clone(), StateEntry::new(decl));
            } else if let Some(name) = key.strip_prefix(b"operator/") {
                let decl: OperatorStateDecl = serde_json::from_slice(&value).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "operator state declaration {:?}: {e}",
                        String::from_utf8_lossy(name)
                    ))
                })?;
                catalog.operator_states.insert(decl.name.clone(), decl);
            }
        }
        Ok(())
    }

    fn meta_cf(&self) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, StoreError> {
        self.db
            .cf_handle(META_CF)
            .ok_or_else(|| StoreError::Corrupt("the __meta column family is missing".into()))
    }

    fn operator_cf(&self) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, StoreError> {
        self.db
            .cf_handle(OPERATOR_CF)
            .ok_or_else(|| StoreError::Corrupt("the __operator column family is missing".into()))
    }

    /// Declares states. Redeclaring with the same kind is allowed (a new TTL applies to later
    /// writes); another kind is a conflict. All declarations are checked before any applies.
    ///
    /// Declarations are serialized among themselves; the catalog is locked for writing only to
    /// insert the new entries, so reads and writes of other states carry on while RocksDB
    /// creates a new state's column family.
    pub fn declare(
        &self,
        states: &[StateDecl],
        operator_states: &[OperatorStateDecl],
    ) -> Result<(), StoreError> {
        let _serial = self.declaring.lock().map_err(|_| StoreError::Poisoned)?;
        let (new_states, new_operator_states) = {
            let catalog = self.catalog.read().map_err(|_| StoreError::Poisoned)?;
            Self::check_declarations(&catalog, states, operator_states)?;
            let new_states: Vec<&StateDecl> = states
                .iter()
                .filter(|d| catalog.states.get(&d.name).map(|e| &e.decl) != Some(*d))
                .collect();
            let new_operator_states: Vec<&OperatorStateDecl> = operator_states
                .iter()
                .filter(|d| catalog.operator_states.get(&d.name) != Some(*d))
                .collect();
            (new_states, new_operator_states)
        };
        if new_states.is_empty() && new_operator_states.is_empty() {
            return Ok(());
        }
        let meta = self.meta_cf()?;
        for decl in &new_states {
            let name = cf_name(decl);
            if self.db.cf_handle(&name).is_none() {
                let opts = self.cf_options.for_family(&name);
                self.db.create_cf(&name, &opts)?;
                self.created_cf_options
                    .lock()
                    .map_err(|_| StoreError::Poisoned)?
                    .push(opts);
                self.families
                    .write()
                    .map_err(|_| StoreError::Poisoned)?
                    .push(name.clone());
            }
            let encoded =
                serde_json::to_vec(decl).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.db
                .put_cf(&meta, format!("state/{}", decl.name), encoded)?;
        }
        for decl in &new_operator_states {
            let encoded =
                serde_json::to_vec(decl).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.db
                .put_cf(&meta, format!("operator/{}", decl.name), encoded)?;
        }
        let mut catalog = self.catalog.write().map_err(|_| StoreError::Poisoned)?;
        for decl in new_states {
            catalog
                .states
                .insert(decl.name.clone(), StateEntry::new(decl.clone()));
        }
        for decl in new_operator_states {
            catalog
                .operator_states
                .insert(decl.name.clone(), decl.clone());
        }
        Ok(())
    }

    fn check_declarations(
        catalog: &Catalog,
        states: &[StateDecl],
        operator_states: &[OperatorStateDecl],
    ) -> Result<(), StoreError> {
        for decl in states {
            validate_name(&decl.name)?;
            if let Some(existing) = catalog.states.get(&decl.name).map(|e| &e.decl)
                && existing.kind != decl.kind
            {
                return Err(StoreError::Conflict {
                    name: decl.name.clone(),
                    existing: existing.kind.to_string(),
                    requested: decl.kind.to_string(),
                });
            }
        }
        for decl in operator_states {
            validate_name(&decl.name)?;
            if let Some(existing) = catalog.operator_states.get(&decl.name)
                && existing.redistribution != decl.redistribution
            {
                return Err(StoreError::Conflict {
                    name: decl.name.clone(),
                    existing: format!("{:?}", existing.redistribution).to_lowercase(),
                    requested: format!("{:?}", decl.redistribution).to_lowercase(),
                });
            }
        }
        Ok(())
    }

    pub fn states(&self) -> Vec<StateDecl> {
        let Ok(catalog) = self.catalog.read() else {
            return Vec::new();
        };
        let mut out: Vec<_> = catalog.states.values().map(|e| e.decl.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn operator_states(&self) -> Vec<OperatorStateDecl> {
        let Ok(catalog) = self.catalog.read() else {
            return Vec::new();
        };
        let mut out: Vec<_> = catalog.operator_states.values().cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Refuses every later write with SUSPENDED (stop-with-savepoint).
    /// Waits for in-flight batches, so every write acknowledged before this returns is in the
    /// store and every later one is refused.
    pub fn fence(&self) {
        let _gate = self.gate.write();
        self.fenced.store(true, Ordering::SeqCst);
    }

    /// Lifts a fence (a stop-with-savepoint that failed: the replica keeps serving), and lets
    /// compactions run again.
    pub fn unfence(&self) {
        self.fenced.store(false, Ordering::SeqCst);
        self.set_auto_compactions(true);
    }

    /// Starts no new compaction and waits up to `wait` for the running ones to finish: a
    /// stop-with-savepoint does this before its first phase, so that no file compacted after that
    /// phase has to be uploaded while writes are fenced. [`Store::unfence`] undoes it.
    pub fn pause_compactions(&self, wait: std::time::Duration) {
        self.set_auto_compactions(false);
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline
            && self
                .db
                .property_int_value("rocksdb.num-running-compactions")
                .ok()
                .flatten()
                .unwrap_or(0)
                > 0
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn set_auto_compactions(&self, on: bool) {
        let value = if on { "false" } else { "true" };
        for name in self.family_names() {
            if let Some(cf) = self.db.cf_handle(&name)
                && let Err(e) = self
                    .db
                    .set_options_cf(&cf, &[("disable_auto_compactions", value)])
            {
                tracing::warn!(family = %name, error = %e, "cannot switch automatic compactions");
            }
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Flushes memtables so a clean shutdown leaves nothing only in the WAL.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut opts = rocksdb::FlushOptions::default();
        opts.set_wait(true);
        let names = self.family_names();
        let handles: Vec<_> = names.iter().filter_map(|n| self.db.cf_handle(n)).collect();
        self.db
            .flush_cfs_opt(&handles.iter().collect::<Vec<_>>(), &opts)?;
        Ok(())
    }

    fn family_names(&self) -> Vec<String> {
        self.families.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// Bytes held by the shared block cache and by all memtables, for metrics.
    pub fn memory_usage(&self) -> (usize, usize) {
        (
            self.cf_options.cache.get_usage(),
            self.cf_options.write_buffers.get_usage(),
        )
    }

    /// A RocksDB property summed over all families, for metrics.
    pub fn property_sum(&self, property: &str) -> u64 {
        self.family_names()
            .iter()
            .filter_map(|n| self.db.cf_handle(n))
            .filter_map(|cf| self.db.property_int_value_cf(&cf, property).ok().flatten())
            .sum()
    }
}

fn validate_name(name: &str) -> Result<(), StoreError> {
    stator_core::names::check_state_name(name).map_err(|e| StoreError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests;
