//! `stator-bench`: measures the sidecar's state protocol against Redis on a Unix socket, on the
//! same machine, in the same run, with the same keys, values and pipeline depths, and prints one
//! table with the ratios. Both peers are driven by the same load loop over raw sockets (framed
//! protobuf for the sidecar, RESP for Redis), so the comparison is server against server.

mod peer;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use peer::{Peer, Protocol, Workload};

#[derive(Parser, Debug)]
#[command(
    about = "Sidecar vs Redis on a Unix socket: ops/s and latency for get, put and a 50/50 mix"
)]
struct Args {
    /// Number of distinct keys, loaded before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Seconds measured per row, peer and round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds per row: each round measures both peers (alternating which goes first), and the
    /// table gives the median of the rounds' ratios and their range, so that one noisy cell on a
    /// shared machine does not decide a row.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Pipeline depths to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    depths: Vec<usize>,
    /// Workloads to measure, in this order: get, put, mix (the 50/50 mix).
    #[arg(long, value_delimiter = ',', default_value = "get,put,mix")]
    workloads: Vec<Workload>,
    /// Connection counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    connections: Vec<usize>,
    /// The sidecar binary (default: next to this program).
    #[arg(long)]
    sidecar_bin: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Use an already running sidecar at this socket (declared with a value state `bench`), for
    /// example one under a profiler, instead of starting one.
    #[arg(long)]
    sidecar_socket: Option<PathBuf>,
    /// Keys of the rows whose working set exceeds the sidecar's block cache (0: no such rows):
    /// values of random bytes that do not compress.
    #[arg(long, default_value_t = 300_000)]
    cold_keys: u64,
    /// Value size of those rows, in bytes.
    #[arg(long, default_value_t = 1000)]
    cold_value_size: usize,
    /// The sidecar's block cache in MiB (its --block-cache-mb), for the table's heading.
    #[arg(long, default_value_t = 64)]
    block_cache_mb: u64,
    /// Extra flags for the sidecar, e.g. "--disable-wal".
    #[arg(long, allow_hyphen_values = true)]
    sidecar_flag: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct RowResult {
    ops: u64,
    elapsed: Duration,
    latencies: Vec<u32>,
    errors: u64,
}

impl RowResult {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    /// Adds another round's counts and latencies to these.
    fn absorb(&mut self, other: RowResult) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }
    fn percentile_us(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies[i]) / 1000.0
    }
}

/// Xorshift: the same key sequence for both peers, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The keys a set of rows reads and writes, and their values.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: &'static str,
    keys: u64,
    value_size: usize,
    /// Values of random bytes, different for every key: nothing compresses, so the stored state
    /// is as large as the values. Otherwise every value is the same repeated byte.
    random: bool,
}

impl Keyspace {
    pub fn key(&self, i: u64) -> Vec<u8> {
        format!("{}{i:010}", self.prefix).into_bytes()
    }

    /// The value loaded under key `i`.
    pub fn value(&self, i: u64) -> Vec<u8> {
        if !self.random {
            return vec![b'v'; self.value_size];
        }
        let mut rng = Rng(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut v = Vec::with_capacity(self.value_size + 8);
        while v.len() < self.value_size {
            v.extend_from_slice(&rng.next().to_le_bytes());
        }
        v.truncate(self.value_size);
        v
    }
}

async fn load(peer: &Peer, space: &Keyspace) -> anyhow::Result<()> {
    let keys = space.keys;
    let mut stream = UnixStream::connect(&peer.socket).await?;
    // About 1 MiB per request (a frame holds 16 MiB).
    let chunk = (1 << 20) / (space.value_size as u64 + 16).max(1);
    let chunk = chunk.clamp(1, 1000);
    let mut out = Vec::new();
    let mut input = bytes::BytesMut::new();
    let mut start = 0;
    let started = Instant::now();
    while start < keys {
        let end = (start + chunk).min(keys);
        out.clear();
        let n = peer.protocol.encode_load(space, start..end, &mut out);
        stream.write_all(&out).await?;
        let mut got = 0;
        while got < n {
            if stream.read_buf(&mut input).await? == 0 {
                bail!("{} closed the connection during load", peer.name);
            }
            while let Some(ok) = peer.protocol.decode(&mut input)? {
                if !ok {
                    bail!("{} refused a load write", peer.name);
                }
                got += 1;
            }
        }
        start = end;
        if start % 200_000 < chunk {
            eprintln!(
                "  {}: loaded {start}/{keys} keys ({:.1} s)",
                peer.name,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// One connection's sliding window of `depth` requests for `seconds`.
/// What one connection does during a measurement.
struct Load {
    socket: PathBuf,
    protocol: Protocol,
    workload: Workload,
    depth: usize,
    space: Keyspace,
}

async fn drive(load: Load, seed: u64, until: Instant) -> anyhow::Result<RowResult> {
    let Load {
        socket,
        protocol,
        workload,
        depth,
        space,
    } = load;
    let value = space.value(seed);
    let mut stream = UnixStream::connect(&socket).await?;
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut input = bytes::BytesMut::with_capacity(64 * 1024);
    let mut sent: std::collections::VecDeque<Instant> = Default::default();
    let mut result = RowResult::default();
    let started = Instant::now();
    let mut id = 0u64;
    loop {
        let now = Instant::now();
        if now < until {
            out.clear();
            while sent.len() < depth {
                let k = space.key(rng.next() % space.keys);
                let put = match workload {
                    Workload::Get => false,
                    Workload::Put => true,
                    Workload::Mix => rng.next().is_multiple_of(2),
                };
                id += 1;
                protocol.encode(id, put, &k, &value, &mut out);
                sent.push_back(now);
            }
            if !out.is_empty() {
                stream.write_all(&out).await?;
            }
        } else if sent.is_empty() {
            break;
        }
        if stream.read_buf(&mut input).await? == 0 {
            bail!("peer closed the connection");
        }
        let now = Instant::now();
        while let Some(ok) = protocol.decode(&mut input)? {
            let at = sent.pop_front().context("answer without a request")?;
            result
                .latencies
                .push(now.duration_since(at).as_nanos().min(u128::from(u32::MAX)) as u32);
            result.ops += 1;
            if !ok {
                result.errors += 1;
            }
        }
    }
    result.elapsed = started.elapsed();
    Ok(result)
}

async fn measure(
    peer: &Peer,
    workload: Workload,
    depth: usize,
    conns: usize,
    space: &Keyspace,
    seconds: f64,
) -> anyhow::Result<RowResult> {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let load = Load {
            socket: peer.socket.clone(),
            protocol: peer.protocol,
            workload,
            depth,
            space: space.clone(),
        };
        tasks.push(tokio::spawn(drive(
            load,
            0x5eed_0000 + c as u64 * 7919,
            until,
        )));
    }
    let mut total = RowResult::default();
    for t in tasks {
        let r = t.await??;
        total.ops += r.ops;
        total.errors += r.errors;
        total.elapsed = total.elapsed.max(r.elapsed);
        total.latencies.extend(r.latencies);
    }
    Ok(total)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Two worker threads: the load generator gets the same share of the machine for both peers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sidecar_bin = match &args.sidecar_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("stator-sidecar"),
    };
    let mut sidecar_flags = args.sidecar_flag.clone();
    sidecar_flags.extend(["--block-cache-mb".into(), args.block_cache_mb.to_string()]);
    let peers = [
        match &args.sidecar_socket {
            Some(socket) => Peer::external_sidecar(socket.clone()),
            None => Peer::start_sidecar(&sidecar_bin, dir.path(), &sidecar_flags).await?,
        },
        Peer::start_redis(&args.redis_server, dir.path()).await?,
    ];
    let hot = Keyspace {
        prefix: "key:",
        keys: args.keys,
        value_size: args.value_size,
        random: false,
    };
    let cold = Keyspace {
        prefix: "cold:",
        keys: args.cold_keys,
        value_size: args.cold_value_size,
        random: true,
    };
    for peer in &peers {
        eprintln!(
            "loading {} keys of {} bytes into {}",
            hot.keys, hot.value_size, peer.name
        );
        load(peer, &hot).await?;
    }
    println!(
        "stator-bench: {} keys, {}-byte values, {:.1} s per cell, {} rounds per row, uniform random keys; sidecar/redis ratios: ops/s >1 and latency <1 favour the sidecar; ops/s: the median round (ratio: the median of the rounds' ratios, and their range); latencies over all rounds; RSS after the row",
        args.keys, args.value_size, args.seconds, args.rounds
    );
    println!(
        "| workload | depth | conns | sidecar ops/s | redis ops/s | ops/s ratio | ratio range | sidecar p50 us | redis p50 us | p50 ratio | sidecar p99 us | redis p99 us | p99 ratio | sidecar RSS MiB | redis RSS MiB | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &workload in &args.workloads {
        for &depth in &args.depths {
            for &conns in &args.connections {
                row(&peers, workload, depth, conns, &hot, &args, "").await?;
            }
        }
    }
    if cold.keys > 0 {
        let mib = (cold.keys * cold.value_size as u64) >> 20;
        for peer in &peers {
            eprintln!(
                "loading {} random {}-byte values ({mib} MiB) into {}",
                cold.keys, cold.value_size, peer.name
            );
            load(peer, &cold).await?;
        }
        let label = format!(
            " (cold: {} keys, {mib} MiB of random values, {}x the {} MiB block cache)",
            cold.keys,
            mib / args.block_cache_mb.max(1),
            args.block_cache_mb
        );
        for workload in [Workload::Get, Workload::Mix] {
            for (depth, conns) in [(1, 1), (16, 4)] {
                row(&peers, workload, depth, conns, &cold, &args, &label).await?;
            }
        }
    }
    for peer in peers {
        peer.stop();
    }
    Ok(())
}

/// Measures one row on both peers, `args.rounds` times, and prints it.
async fn row(
    peers: &[Peer; 2],
    workload: Workload,
    depth: usize,
    conns: usize,
    space: &Keyspace,
    args: &Args,
    label: &str,
) -> anyhow::Result<()> {
    let (mut s, mut r) = (RowResult::default(), RowResult::default());
    let (mut s_ops, mut r_ops, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Alternate which peer goes first, so that a drift of the machine within a row (a
        // neighbour's load, the sidecar's compactions of the last row's writes) does not always
        // fall on the same peer.
        let (first, second) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        let a = measure(&peers[first], workload, depth, conns, space, args.seconds).await?;
        let b = measure(&peers[second], workload, depth, conns, space, args.seconds).await?;
        let (sr, rr) = if first == 0 { (a, b) } else { (b, a) };
        eprintln!(
            "{workload}{label} {depth} x {conns}, round {}/{}: sidecar {:.0} ops/s, redis {:.0} ops/s",
            round + 1,
            args.rounds,
            sr.ops_per_sec(),
            rr.ops_per_sec()
        );
        s_ops.push(sr.ops_per_sec());
        r_ops.push(rr.ops_per_sec());
        ratios.push(sr.ops_per_sec() / rr.ops_per_sec());
        s.absorb(sr);
        r.absorb(rr);
    }
    let (s50, r50, s99, r99) = (
        s.percentile_us(0.5),
        r.percentile_us(0.5),
        s.percentile_us(0.99),
        r.percentile_us(0.99),
    );
    let (lo, hi) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    println!(
        "| {workload}{label} | {depth} | {conns} | {:.0} | {:.0} | {:.2} | {lo:.2}-{hi:.2} | {s50:.1} | {r50:.1} | {:.2} | {s99:.1} | {r99:.1} | {:.2} | {:.0} | {:.0} | {} |",
        median(&mut s_ops),
        median(&mut r_ops),
        median(&mut ratios),
        s50 / r50,
        s99 / r99,
        peers[0].rss_mib(),
        peers[1].rss_mib(),
        s.errors + r.errors,
    );
    Ok(())
}

/// The median (the mean of the middle two of an even count).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}
