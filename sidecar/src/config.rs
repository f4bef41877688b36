//! Command-line flags and environment variables. Every flag has an env twin (`STATOR_*`), which is
//! how the operator configures the sidecar container.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;

use crate::store::{
    Compression, IndexFilters, Kind, OperatorStateDecl, Redistribution, RocksOptions, StateDecl,
};

#[derive(Debug, Parser)]
#[command(
    name = "stator-sidecar",
    version,
    about = "Stator's state store: keyed state in RocksDB over a Unix socket"
)]
pub struct Args {
    /// Path of the Unix socket the app connects to.
    #[arg(long, env = "STATOR_SOCKET")]
    pub socket: PathBuf,
    /// Directory for the RocksDB files (the replica's volume).
    #[arg(long, env = "STATOR_DATA_DIR")]
    pub data_dir: PathBuf,
    /// This replica's index, 0 to parallelism - 1.
    #[arg(long, env = "STATOR_REPLICA_INDEX", default_value_t = 0)]
    pub replica_index: u32,
    /// Number of replicas of the job.
    #[arg(long, env = "STATOR_PARALLELISM", default_value_t = 1)]
    pub parallelism: u32,
    /// Number of key groups; fixed for the life of the job's state.
    #[arg(long, env = "STATOR_MAX_PARALLELISM", default_value_t = stator_core::keygroup::DEFAULT_MAX_PARALLELISM)]
    pub max_parallelism: u32,
    /// A keyed state to declare at start-up, as NAME:KIND[:TTL_MS] (KIND: value, list or map).
    /// Repeat the flag, or separate with commas in the env variable. Apps may also declare states
    /// at run time over the socket.
    #[arg(long = "state", env = "STATOR_STATES", value_delimiter = ',')]
    pub states: Vec<StateArg>,
    /// An operator state to declare at start-up, as NAME:split or NAME:union.
    #[arg(
        long = "operator-state",
        env = "STATOR_OPERATOR_STATES",
        value_delimiter = ','
    )]
    pub operator_states: Vec<OperatorStateArg>,
    /// Address of the admin HTTP endpoint (health, readiness, metrics, admin API).
    #[arg(long, env = "STATOR_ADMIN_ADDR", default_value = "127.0.0.1:9601")]
    pub admin_addr: SocketAddr,
    /// File holding the bearer token for the admin API. Without it the admin API refuses all
    /// requests; /healthz, /readyz and /metrics stay open.
    #[arg(long, env = "STATOR_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// RocksDB block cache size in MiB, shared by all states.
    #[arg(long, env = "STATOR_BLOCK_CACHE_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub block_cache_mb: u64,
    /// RocksDB memtable size per state in MiB: the most one state buffers before a flush.
    #[arg(long, env = "STATOR_WRITE_BUFFER_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_buffer_mb: u64,
    /// The memory all states' memtables share, in MiB (one RocksDB WriteBufferManager): past
    /// it the largest memtables are flushed, and writes wait while flushes catch up, so memory
    /// does not grow with the number of states.
    #[arg(long, env = "STATOR_MEMTABLE_BUDGET_MB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub memtable_budget_mb: u64,
    /// Fault injection for tests: start RocksDB with no flush or compaction threads, so writes
    /// stall once the memtable budget is spent. Never use it in production.
    #[arg(
        long,
        env = "STATOR_FAULT_STOP_BACKGROUND_WORK",
        default_value_t = false,
        hide = true
    )]
    pub fault_stop_background_work: bool,
    /// Fault injection for tests: never make a savepoint self-contained (as if every copy were
    /// still in progress or the sidecar had died before it). Never use it in production.
    #[arg(
        long,
        env = "STATOR_FAULT_SKIP_SAVEPOINT_COPIES",
        default_value_t = false,
        hide = true
    )]
    pub fault_skip_savepoint_copies: bool,
    /// Compression of RocksDB files: none, lz4 or zstd.
    #[arg(long, env = "STATOR_COMPRESSION", default_value = "lz4", value_parser = parse_compression)]
    pub compression: Compression,
    /// The layout of each RocksDB file's index and bloom filter: `partitioned` (4 KiB pieces
    /// loaded as needed; for states whose indexes and filters may exceed the block cache) or
    /// `whole` (one block each; 4-11% more point reads when they stay cached).
    #[arg(long, env = "STATOR_INDEX_FILTERS", default_value = "partitioned", value_parser = parse_index_filters)]
    pub index_filters: IndexFilters,
    /// Disable the RocksDB write-ahead log (faster writes; a crash loses writes since the last
    /// flush, and the replica recovers from its latest checkpoint).
    #[arg(long, env = "STATOR_DISABLE_WAL", default_value_t = false)]
    pub disable_wal: bool,
    /// The job's base location for checkpoints: `s3://bucket/prefix` or `file:///path`. Without
    /// it there are no checkpoints: the store is purely local.
    #[arg(long, env = "STATOR_STATE_LOCATION")]
    pub state_location: Option<String>,
    /// The incarnation of the job this replica belongs to (the operator passes the StreamJob's
    /// UID); recorded in every checkpoint and savepoint manifest.
    #[arg(long, env = "STATOR_JOB_ID")]
    pub job_id: Option<String>,
    /// Seconds between periodic checkpoints; 0 disables them (the admin API can still trigger).
    #[arg(long, env = "STATOR_CHECKPOINT_INTERVAL_SECS", default_value_t = 60)]
    pub checkpoint_interval_secs: u64,
    /// How many complete checkpoints to keep; older ones and unreferenced files are deleted.
    #[arg(long, env = "STATOR_RETAINED_CHECKPOINTS", default_value_t = 3)]
    pub retained_checkpoints: usize,
    /// Restore from this location at start-up: a savepoint directory, or a checkpoint set (a
    /// state location or its `checkpoints/` directory). Missing or corrupt: exit non-zero.
    #[arg(long, env = "STATOR_RESTORE_FROM")]
    pub restore_from: Option<String>,
    /// Start as a warm standby (a warm handover's new pod): fetch the state at this location (the
    /// running version's checkpoints) while the old version still serves, then wait until the
    /// operator promotes this sidecar (`POST /v1/promote`), and only then restore
    /// `--restore-from`, downloading just what it adds to what was fetched, and serve.
    #[arg(long, env = "STATOR_WARM_FROM", requires = "restore_from")]
    pub warm_from: Option<String>,
    /// S3-compatible endpoint URL (e.g. http://127.0.0.1:9000); AWS when unset.
    #[arg(long, env = "STATOR_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "STATOR_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Path-style S3 addressing (endpoint/bucket/key), as most S3-compatible stores need.
    #[arg(long, env = "STATOR_S3_PATH_STYLE", default_value_t = false)]
    pub s3_path_style: bool,
    /// A directory (a mounted Secret) with files AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
    /// otherwise the standard AWS credential chain.
    #[arg(long, env = "STATOR_S3_CREDENTIALS_DIR")]
    pub s3_credentials_dir: Option<PathBuf>,
    /// Reuse files on the replica's volume that match the manifest's checksums instead of
    /// downloading them (`--local-recovery false` to turn off).
    #[arg(long, env = "STATOR_LOCAL_RECOVERY", default_value_t = true, action = clap::ArgAction::Set)]
    pub local_recovery: bool,
    /// Parallel transfers per checkpoint, savepoint or restore.
    #[arg(long, env = "STATOR_TRANSFER_CONCURRENCY", default_value_t = 4)]
    pub transfer_concurrency: usize,
    /// The most state protocol connections open at once. One more is answered with an
    /// UNAVAILABLE error (id 0) and closed; the open ones carry on.
    #[arg(long, env = "STATOR_MAX_CONNECTIONS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Close a state connection that sent nothing for this many seconds, after an UNAVAILABLE
    /// error (id 0) saying so; 0 never does. Off by default: the socket is private to the pod, an
    /// app may wait long between records, and the clients do not reconnect on their own.
    #[arg(long, env = "STATOR_IDLE_TIMEOUT_SECS", default_value_t = 0)]
    pub idle_timeout_secs: u64,
    /// glibc malloc arenas (`M_ARENA_MAX`). With glibc's default (8 per core) each thread's arena
    /// keeps what it freed, and connection, RocksDB and transfer threads together hold ~100 MiB
    /// beyond the budget; 2 keeps the freed memory reusable by every thread. 0 leaves glibc's
    /// default; `MALLOC_ARENA_MAX` in the environment wins over this flag.
    #[arg(long, env = "STATOR_MALLOC_ARENAS", default_value_t = 2)]
    pub malloc_arenas: u32,
    /// Log format: json or text.
    #[arg(long, env = "STATOR_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "none" => Ok(Compression::None),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        other => Err(format!(
            "unknown compression {other:?}; use none, lz4 or zstd"
        )),
    }
}

fn parse_index_filters(s: &str) -> Result<IndexFilters, String> {
    match s {
        "partitioned" => Ok(IndexFilters::Partitioned),
        "whole" => Ok(IndexFilters::Whole),
        other => Err(format!(
            "unknown index and filter layout {other:?}; use partitioned or whole"
        )),
    }
}

impl Args {
    pub fn s3_options(&self) -> stator_storage::S3Options {
        stator_storage::S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            credentials_dir: self.s3_credentials_dir.clone(),
            ..Default::default()
        }
    }

    pub fn rocks_options(&self) -> RocksOptions {
        RocksOptions {
            block_cache_bytes: (self.block_cache_mb as usize) << 20,
            compression: self.compression,
            index_filters: self.index_filters,
            write_buffer_bytes: (self.write_buffer_mb as usize) << 20,
            memtable_budget_bytes: (self.memtable_budget_mb as usize) << 20,
            wal: !self.disable_wal,
            stop_background_work: self.fault_stop_background_work,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StateArg(pub StateDecl);

impl FromStr for StateArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split(':');
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            return Err(format!("state {s:?} must look like NAME:KIND[:TTL_MS]"));
        };
        let kind = match kind {
            "value" => Kind::Value,
            "list" => Kind::List,
            "map" => Kind::Map,
            other => {
                return Err(format!(
                    "state {name:?}: unknown kind {other:?}; use value, list or map"
                ));
            }
        };
        let ttl_ms = match parts.next() {
            None => 0,
            Some(t) => t.parse().map_err(|_| {
                format!("state {name:?}: TTL {t:?} is not a number of milliseconds")
            })?,
        };
        if parts.next().is_some() {
            return Err(format!("state {s:?} must look like NAME:KIND[:TTL_MS]"));
        }
        Ok(Self(StateDecl {
            name: name.to_owned(),
            kind,
            ttl_ms,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct OperatorStateArg(pub OperatorStateDecl);

impl FromStr for OperatorStateArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, mode) = s.trim().split_once(':').ok_or_else(|| {
            format!("operator state {s:?} must look like NAME:split or NAME:union")
        })?;
        let redistribution = match mode {
            "split" => Redistribution::Split,
            "union" => Redistribution::Union,
            other => {
                return Err(format!(
                    "operator state {name:?}: unknown redistribution {other:?}; use split or union"
                ));
            }
        };
        Ok(Self(OperatorStateDecl {
            name: name.to_owned(),
            redistribution,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_declarations() {
        let s: StateArg = "counts:map:60000".parse().unwrap();
        assert_eq!(
            s.0,
            StateDecl {
                name: "counts".into(),
                kind: Kind::Map,
                ttl_ms: 60_000
            }
        );
        assert!("counts".parse::<StateArg>().is_err());
        assert!(
            "counts:set"
                .parse::<StateArg>()
                .unwrap_err()
                .contains("unknown kind")
        );
        assert!("counts:value:soon".parse::<StateArg>().is_err());
        let o: OperatorStateArg = "offsets:union".parse().unwrap();
        assert_eq!(o.0.redistribution, Redistribution::Union);
    }
}
