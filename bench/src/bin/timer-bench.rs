//! `stator-timer-bench`: the sidecar's timers against what an app does without them, in the same
//! sidecar and the same run: a time-ordered map state (one map whose map keys are the big-endian
//! time and the key), paged from its start and cleared by removes. Both hold the same entries and
//! are written and drained in the same batch sizes, so the ratio is the cost of timers (key-group
//! placement, the in-memory index, the answer) over a plain ordered scan. Rows: registering,
//! firing every timer (ask for a page, delete it in one batch), asking when nothing is due, and
//! the first ask after a restart (timers build their index then). Each at maxParallelism 128 and
//! 32768 with one replica, so every key group is this replica's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use stator_client::{Batch, Client, TimeDomain};

#[derive(Parser, Debug)]
#[command(about = "Timers against a time-ordered map state in the same sidecar")]
struct Args {
    /// Timers (and map entries) per row.
    #[arg(long, default_value_t = 200_000)]
    timers: u64,
    /// Ops per write batch, and timers or entries per page.
    #[arg(long, default_value_t = 1000)]
    page: u32,
    /// Requests per "nothing due" measurement.
    #[arg(long, default_value_t = 20_000)]
    asks: u64,
    /// maxParallelism values to measure.
    #[arg(long, value_delimiter = ',', default_value = "128,32768")]
    max_parallelism: Vec<u32>,
    /// The sidecar binary (default: next to this program).
    #[arg(long)]
    sidecar_bin: Option<PathBuf>,
}

const QUEUE: &str = "queue";
const QUEUE_KEY: &str = "timers";
const NAME: &str = "t";

struct Sidecar {
    child: Child,
    socket: PathBuf,
}

impl Sidecar {
    async fn start(bin: &Path, dir: &Path, max_parallelism: u32) -> anyhow::Result<Self> {
        let socket = dir.join("s.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(bin)
            .args(["--socket", &socket.display().to_string()])
            .args(["--data-dir", &dir.join("data").display().to_string()])
            .args(["--max-parallelism", &max_parallelism.to_string()])
            .args(["--admin-addr", "127.0.0.1:0", "--state", "queue:map"])
            .env("STATOR_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Client::connect(&socket).await.is_err() {
            if Instant::now() > deadline {
                bail!("the sidecar did not come up in 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child, socket })
    }

    fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i:09}"))
}

/// The map-state twin of timer `i`: ordered by time, then key.
fn queue_entry(time: u64, i: u64) -> Bytes {
    let mut out = time.to_be_bytes().to_vec();
    out.extend_from_slice(&key(i));
    Bytes::from(out)
}

/// Timer `i`'s time: a permutation of 0..n, so registration order is not time order.
fn time_of(i: u64, n: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9) % n
}

struct Row {
    what: String,
    timers: f64,
    map: f64,
    unit: &'static str,
}

async fn register(c: &mut Client, n: u64, page: u64, timers: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(page as usize) {
        let mut b = Batch::new();
        for &i in chunk {
            let t = time_of(i, n);
            if timers {
                b.timer_register(TimeDomain::Event, key(i), NAME, t);
            } else {
                b.map_put(QUEUE, QUEUE_KEY, queue_entry(t, i), key(i));
            }
        }
        c.write(b).await?;
    }
    Ok(started.elapsed())
}

/// Asks for a page of due entries and deletes it in one batch, until none is left.
async fn drain(c: &mut Client, n: u64, page: u32, timers: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut fired = 0;
    loop {
        let mut b = Batch::new();
        let more = if timers {
            let p = c.timers_due(TimeDomain::Event, page).await?;
            for t in &p.timers {
                b.timer_fired(t);
            }
            p.has_more
        } else {
            let p = c
                .map_page(QUEUE, QUEUE_KEY, Bytes::new(), false, page)
                .await?;
            for (mk, _) in &p.entries {
                b.map_remove(QUEUE, QUEUE_KEY, mk.clone());
            }
            p.has_more
        };
        fired += b.len() as u64;
        if !b.is_empty() {
            c.write(b).await?;
        }
        if !more {
            break;
        }
    }
    if fired != n {
        bail!("drained {fired} of {n}");
    }
    Ok(started.elapsed())
}

/// Asks `asks` times when nothing is due (the watermark is below every timer; the map's first
/// entry is later than the time asked for).
async fn ask_idle(c: &mut Client, asks: u64, timers: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..asks {
        if timers {
            let p = c.timers_due(TimeDomain::Event, 1).await?;
            if !p.timers.is_empty() {
                bail!("a timer was due");
            }
        } else {
            let p = c.map_page(QUEUE, QUEUE_KEY, Bytes::new(), false, 1).await?;
            if p.entries.is_empty() {
                bail!("the map is empty");
            }
        }
    }
    Ok(started.elapsed())
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn measure(bin: &Path, m: u32, args: &Args) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::Builder::new()
        .prefix("stator-timer-bench")
        .tempdir()?;
    let n = args.timers;
    let mut sidecar = Sidecar::start(bin, dir.path(), m).await?;
    let mut c = Client::connect(&sidecar.socket).await?;
    let mut rows = Vec::new();
    let reg_t = register(&mut c, n, u64::from(args.page), true).await?;
    let reg_m = register(&mut c, n, u64::from(args.page), false).await?;
    rows.push(Row {
        what: format!("register {n}, batches of {}", args.page),
        timers: per_sec(n, reg_t),
        map: per_sec(n, reg_m),
        unit: "entries/s",
    });
    // Nothing due: no watermark yet; the map peer asks for its first entry, which is not due.
    // One ask first, so the timers' index (built on first use) is not in the figure: the
    // restart row measures that.
    ask_idle(&mut c, 1, true).await?;
    let idle_t = ask_idle(&mut c, args.asks, true).await?;
    let idle_m = ask_idle(&mut c, args.asks, false).await?;
    rows.push(Row {
        what: format!("ask, {n} pending, none due"),
        timers: per_sec(args.asks, idle_t),
        map: per_sec(args.asks, idle_m),
        unit: "asks/s",
    });
    // After a restart: the timers' index is built by the first ask.
    drop(c);
    sidecar.stop();
    let sidecar = Sidecar::start(bin, dir.path(), m).await?;
    let mut c = Client::connect(&sidecar.socket).await?;
    let started = Instant::now();
    c.timers_due(TimeDomain::Event, 1).await?;
    let first_t = started.elapsed();
    let started = Instant::now();
    c.map_page(QUEUE, QUEUE_KEY, Bytes::new(), false, 1).await?;
    let first_m = started.elapsed();
    rows.push(Row {
        what: "first ask after a restart".into(),
        timers: first_t.as_secs_f64() * 1000.0,
        map: first_m.as_secs_f64() * 1000.0,
        unit: "ms",
    });
    let mut b = Batch::new();
    b.watermark_advance(u64::MAX);
    c.write(b).await?;
    let fire_t = drain(&mut c, n, args.page, true).await?;
    let fire_m = drain(&mut c, n, args.page, false).await?;
    rows.push(Row {
        what: format!("fire all {n}, pages of {}", args.page),
        timers: per_sec(n, fire_t),
        map: per_sec(n, fire_m),
        unit: "entries/s",
    });
    Ok(rows)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.sidecar_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("stator-sidecar"),
    };
    println!(
        "stator-timer-bench: {} timers, pages and batches of {}; peer: a time-ordered map state in the same sidecar; timers/map ratio >1 favours timers (for ms, <1 does)",
        args.timers, args.page
    );
    println!(
        "{:>8}  {:<34} {:>14} {:>14} {:>10}  unit",
        "M", "row", "timers", "map peer", "ratio"
    );
    for &m in &args.max_parallelism {
        for row in measure(&bin, m, &args).await? {
            println!(
                "{m:>8}  {:<34} {:>14.1} {:>14.1} {:>10.2}  {}",
                row.what,
                row.timers,
                row.map,
                row.timers / row.map,
                row.unit
            );
        }
    }
    Ok(())
}
