//! Prometheus metrics: operations by kind, errors by code, a latency histogram, RocksDB sizes.
//!
//! Per-request counters are created once at start-up, so the hot path only bumps atomics.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use stator_core::proto::{ErrorCode, request::Op};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Hello,
    Declare,
    Get,
    MultiGet,
    Write,
    ListGet,
    MapGet,
    MapContains,
    MapIter,
    OperatorStateGet,
    Ping,
    TimersDue,
    TimerStatus,
}

const OP_KINDS: [(OpKind, &str); 13] = [
    (OpKind::Hello, "hello"),
    (OpKind::Declare, "declare"),
    (OpKind::Get, "get"),
    (OpKind::MultiGet, "multi_get"),
    (OpKind::Write, "write"),
    (OpKind::ListGet, "list_get"),
    (OpKind::MapGet, "map_get"),
    (OpKind::MapContains, "map_contains"),
    (OpKind::MapIter, "map_iter"),
    (OpKind::OperatorStateGet, "operator_state_get"),
    (OpKind::Ping, "ping"),
    (OpKind::TimersDue, "timers_due"),
    (OpKind::TimerStatus, "timer_status"),
];

impl OpKind {
    pub fn of(op: &Op) -> Self {
        match op {
            Op::Hello(_) => OpKind::Hello,
            Op::Declare(_) => OpKind::Declare,
            Op::Get(_) => OpKind::Get,
            Op::MultiGet(_) => OpKind::MultiGet,
            Op::Write(_) => OpKind::Write,
            Op::ListGet(_) => OpKind::ListGet,
            Op::MapGet(_) => OpKind::MapGet,
            Op::MapContains(_) => OpKind::MapContains,
            Op::MapIter(_) => OpKind::MapIter,
            Op::OperatorStateGet(_) => OpKind::OperatorStateGet,
            Op::Ping(_) => OpKind::Ping,
            Op::TimersDue(_) => OpKind::TimersDue,
            Op::TimerStatus(_) => OpKind::TimerStatus,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PropertyLabel {
    property: &'static str,
}

pub struct Metrics {
    registry: Registry,
    ops: Vec<Counter>,
    errors: Family<CodeLabel, Counter>,
    latency: Histogram,
    pub connections: Gauge,
    pub frame_errors: Counter,
    pub refused_connections: Counter,
    pub idle_closed: Counter,
    rocksdb: Family<PropertyLabel, Gauge<u64, AtomicU64>>,
    checkpoints: Family<OutcomeLabel, Counter>,
    savepoints: Family<OutcomeLabel, Counter>,
    pub checkpoint_duration: Histogram,
    pub write_pause: Histogram,
    uploaded_bytes: Family<KindLabel, Counter>,
    restores: Family<SourceLabel, Counter>,
    pub restore_fallbacks: Counter,
    pub restored_bytes: Counter,
    pub restore_downloaded_bytes: Counter,
    /// Downloaded by a warm standby before its promotion (not part of any pause).
    pub warm_downloaded_bytes: Counter,
    pub latest_checkpoint_id: Gauge,
}

/// RocksDB properties exported as gauges, summed over all column families.
pub const ROCKSDB_PROPERTIES: [(&str, &str); 6] = [
    ("rocksdb.num-running-compactions", "running_compactions"),
    ("rocksdb.compaction-pending", "compaction_pending"),
    ("rocksdb.total-sst-files-size", "sst_bytes"),
    ("rocksdb.cur-size-all-mem-tables", "memtable_bytes"),
    ("rocksdb.estimate-num-keys", "estimated_keys"),
    ("rocksdb.estimate-live-data-size", "live_data_bytes"),
];

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("stator_sidecar");
        let op_family = Family::<OpLabel, Counter>::default();
        let ops = OP_KINDS
            .iter()
            .map(|(_, name)| op_family.get_or_create(&OpLabel { op: name }).clone())
            .collect();
        registry.register(
            "operations",
            "State protocol requests handled, by operation",
            op_family,
        );
        let errors = Family::<CodeLabel, Counter>::default();
        registry.register(
            "errors",
            "Requests answered with an error, by error code",
            errors.clone(),
        );
        // 2 us to ~1 s.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            2e-6, 2.5, 15,
        ));
        registry.register(
            "request_duration_seconds",
            "Time to handle one request inside the sidecar",
            latency.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open state protocol connections",
            connections.clone(),
        );
        let frame_errors = Counter::default();
        registry.register(
            "frame_errors",
            "Connections closed for a malformed, truncated or oversized frame",
            frame_errors.clone(),
        );
        let refused_connections = Counter::default();
        registry.register(
            "refused_connections",
            "State connections refused at the connection limit (--max-connections)",
            refused_connections.clone(),
        );
        let idle_closed = Counter::default();
        registry.register(
            "idle_connections_closed",
            "State connections closed after the idle timeout (--idle-timeout-secs)",
            idle_closed.clone(),
        );
        let rocksdb = Family::<PropertyLabel, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "rocksdb",
            "RocksDB size properties, summed over column families",
            rocksdb.clone(),
        );
        let checkpoints = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "checkpoints",
            "Checkpoints by outcome (completed, failed)",
            checkpoints.clone(),
        );
        let savepoints = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "savepoints",
            "Savepoints by outcome (completed, failed)",
            savepoints.clone(),
        );
        // 10 ms to ~40 min.
        let checkpoint_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 18),
        );
        registry.register(
            "checkpoint_duration_seconds",
            "Time from cut to committed manifest",
            checkpoint_duration.clone(),
        );
        // 50 us to ~1.6 s.
        let write_pause = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(5e-5, 2.0, 16),
        );
        registry.register(
            "snapshot_write_pause_seconds",
            "How long writes waited for the local cut of a checkpoint or savepoint",
            write_pause.clone(),
        );
        let uploaded_bytes = Family::<KindLabel, Counter>::default();
        registry.register(
            "uploaded_bytes",
            "Bytes uploaded, by snapshot kind (checkpoint, savepoint)",
            uploaded_bytes.clone(),
        );
        let restores = Family::<SourceLabel, Counter>::default();
        registry.register(
            "restores",
            "Start-up restores by source (savepoint, checkpoint, local, fallback, empty)",
            restores.clone(),
        );
        let restore_fallbacks = Counter::default();
        registry.register(
            "restore_fallbacks",
            "Checkpoints skipped at restore because they were missing or corrupt",
            restore_fallbacks.clone(),
        );
        let restored_bytes = Counter::default();
        registry.register(
            "restored_bytes",
            "Bytes of snapshot files restored (downloaded or reused locally)",
            restored_bytes.clone(),
        );
        let restore_downloaded_bytes = Counter::default();
        registry.register(
            "restore_downloaded_bytes",
            "Bytes of snapshot files downloaded at restore (the rest of restored_bytes was reused from the volume)",
            restore_downloaded_bytes.clone(),
        );
        let warm_downloaded_bytes = Counter::default();
        registry.register(
            "warm_downloaded_bytes",
            "Bytes a warm standby downloaded before it was promoted (its restore after the promotion counts in restore_downloaded_bytes)",
            warm_downloaded_bytes.clone(),
        );
        let latest_checkpoint_id = Gauge::default();
        registry.register(
            "latest_checkpoint_id",
            "Id of the latest confirmed checkpoint",
            latest_checkpoint_id.clone(),
        );
        Arc::new(Self {
            checkpoints,
            savepoints,
            checkpoint_duration,
            write_pause,
            uploaded_bytes,
            restores,
            restore_fallbacks,
            restored_bytes,
            restore_downloaded_bytes,
            warm_downloaded_bytes,
            latest_checkpoint_id,
            registry,
            ops,
            errors,
            latency,
            connections,
            frame_errors,
            refused_connections,
            idle_closed,
            rocksdb,
        })
    }

    pub fn observe(&self, kind: OpKind, elapsed: Duration) {
        if let Some(i) = OP_KINDS.iter().position(|(k, _)| *k == kind) {
            self.ops[i].inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str_name().to_owned(),
            })
            .inc();
    }

    pub fn set_rocksdb(&self, property: &'static str, value: u64) {
        self.rocksdb
            .get_or_create(&PropertyLabel { property })
            .set(value);
    }

    pub fn checkpoint(&self, outcome: &'static str) {
        self.checkpoints
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn savepoint(&self, outcome: &'static str) {
        self.savepoints
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn uploaded(&self, kind: &'static str, bytes: u64) {
        self.uploaded_bytes
            .get_or_create(&KindLabel { kind })
            .inc_by(bytes);
    }

    pub fn restored_from(&self, source: &'static str) {
        self.restores.get_or_create(&SourceLabel { source }).inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
