//! `stator-wordcount`: the example stateful app. It counts words over a deterministic, generated
//! input stream, keeping its counts in the Stator sidecar.
//!
//! Exactly-once: the input position is kept per key group (in value state `offsets`, under one
//! synthetic key per group) and written in the same atomic batch as the counts that input
//! produced. After a restart, a restore or a rescale, each key group resumes from its own
//! position, so no record is counted twice or lost, whichever replica owns the group now.
//!
//! Every replica reads the whole input and counts only the words it owns: the stand-in for a
//! keyed shuffle.
//!
//! Timers: record `i` happens at event time `i * 10` ms. Each word keeps an event-time timer at
//! its last occurrence plus `--idle-ms`; when the watermark passes it (the word went quiet), the
//! app appends `deadline:count` to the word's `idle` list and deletes the timer in the same
//! batch, so each quiet spell is reported exactly once. The watermark advances at the end of
//! every batch of `--batch` records (batches are aligned to multiples of it, so the result does
//! not depend on where a restart resumed), and to the maximum at the end of a bounded input,
//! which fires every remaining timer.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use stator_client::{Batch, Client, Error, ErrorCode, TimeDomain, key_group, proto};

const COUNTS: &str = "counts";
const OFFSETS: &str = "offsets";
/// Per word: the time of its pending idle timer.
const DEADLINES: &str = "deadlines";
/// Per word: every idle report, `deadline:count`.
const IDLE: &str = "idle";
const IDLE_TIMER: &str = "idle";
/// Event time between two records, in milliseconds.
const EVENT_MS_PER_RECORD: u64 = 10;
const VOCABULARY: u64 = 500;
const WORDS_PER_RECORD: u64 = 4;

#[derive(Parser)]
#[command(about = "Exactly-once keyed word count on the Stator sidecar")]
struct Args {
    /// The sidecar's socket.
    #[arg(
        long,
        env = "STATOR_SOCKET",
        global = true,
        default_value = "/var/run/stator/state.sock"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Count words of records [0, records) (0: forever), then idle until stopped.
    Run {
        /// How many input records to process; 0 means an endless stream.
        #[arg(long, env = "WORDCOUNT_RECORDS", default_value_t = 0)]
        records: u64,
        /// Records per atomic batch.
        #[arg(long, env = "WORDCOUNT_BATCH", default_value_t = 50)]
        batch: u64,
        /// Pause between batches in milliseconds (0: as fast as possible).
        #[arg(long, env = "WORDCOUNT_PAUSE_MS", default_value_t = 0)]
        pause_ms: u64,
        /// Exit when done instead of idling.
        #[arg(long)]
        exit_when_done: bool,
        /// Report a word once no record held it for this much event time.
        #[arg(long, env = "WORDCOUNT_IDLE_MS", default_value_t = 3000)]
        idle_ms: u64,
    },
    /// Write about MB megabytes of 1 KiB values (state for benchmarks), then idle until stopped.
    Fill {
        #[arg(long)]
        mb: u64,
        /// Then keep overwriting this many of the filled keys per second (a job whose state
        /// changes while it runs), until writes are refused or the app is stopped.
        #[arg(long, default_value_t = 0)]
        churn: u64,
    },
    /// Print this replica's counts and offsets as JSON.
    Report,
    /// Print the counts and idle reports that records [0, records) must produce, as JSON (no
    /// sidecar needed).
    Expect {
        #[arg(long)]
        records: u64,
        #[arg(long, env = "WORDCOUNT_BATCH", default_value_t = 50)]
        batch: u64,
        #[arg(long, env = "WORDCOUNT_IDLE_MS", default_value_t = 3000)]
        idle_ms: u64,
    },
}

fn word(i: u64) -> String {
    format!("w{i:03}")
}

/// The words of record `i`: a fixed function of `i`, the same in every run.
fn record(i: u64) -> impl Iterator<Item = String> {
    (0..WORDS_PER_RECORD).map(move |k| {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        word(x % VOCABULARY)
    })
}

/// A key that falls in key group `group`: where that group's input position is kept.
fn offset_key(group: u32, max_parallelism: u32) -> Bytes {
    (0u64..)
        .map(|n| format!("offset/{group}/{n}"))
        .find(|k| key_group(k.as_bytes(), max_parallelism) == group)
        .map(Bytes::from)
        .unwrap_or_default()
}

struct Replica {
    client: Client,
    groups: Vec<u32>,
    max_parallelism: u32,
    offset_keys: Vec<Bytes>,
}

impl Replica {
    async fn connect(socket: &PathBuf) -> anyhow::Result<Self> {
        // The sidecar may restore for long (or, a warm handover's standby, wait to be promoted):
        // wait for its socket as long as it takes, saying so every 10 s.
        let mut waited = 0u64;
        let mut client = loop {
            match Client::connect_waiting(socket, Duration::from_secs(10)).await {
                Ok(c) => break c,
                Err(e) if e.is_not_up_yet() => {
                    waited += 10;
                    let why = std::error::Error::source(&e).map(ToString::to_string);
                    eprintln!(
                        "wordcount: waiting for the sidecar at {} ({waited} s): {}",
                        socket.display(),
                        why.unwrap_or_else(|| e.to_string())
                    );
                }
                Err(e) => return Err(e.into()),
            }
        };
        client
            .declare(
                vec![
                    stator_client::state(COUNTS, proto::StateKind::Value, 0),
                    stator_client::state(OFFSETS, proto::StateKind::Value, 0),
                    stator_client::state(DEADLINES, proto::StateKind::Value, 0),
                    stator_client::state(IDLE, proto::StateKind::List, 0),
                ],
                vec![],
            )
            .await?;
        let hello = client.hello().clone();
        let groups: Vec<u32> = (hello.key_group_start..=hello.key_group_end).collect();
        let offset_keys = groups
            .iter()
            .map(|&g| offset_key(g, hello.max_parallelism))
            .collect();
        Ok(Self {
            client,
            groups,
            max_parallelism: hello.max_parallelism,
            offset_keys,
        })
    }

    async fn offsets(&mut self) -> anyhow::Result<Vec<u64>> {
        let values = self
            .client
            .multi_get(OFFSETS, self.offset_keys.clone())
            .await?;
        values
            .into_iter()
            .map(|v| match v {
                None => Ok(0),
                Some(b) => Ok(std::str::from_utf8(&b)?.parse()?),
            })
            .collect()
    }

    fn owns(&self, w: &str) -> Option<usize> {
        let g = key_group(w.as_bytes(), self.max_parallelism);
        self.groups.iter().position(|&x| x == g)
    }

    async fn run(
        &mut self,
        records: u64,
        batch_size: u64,
        idle_ms: u64,
        pause: Duration,
    ) -> anyhow::Result<()> {
        let mut offsets = self.offsets().await?;
        let mut next = offsets.iter().copied().min().unwrap_or(0);
        let mut fenced = false;
        eprintln!(
            "wordcount: key groups {}..={}, resuming at record {next}",
            self.groups[0],
            self.groups[self.groups.len() - 1]
        );
        loop {
            // Timers the last batch made due (also before a stop: a restarted app reports
            // those whose reports did not commit).
            if let Written::Fenced = self.fire_idle_timers().await? {
                fenced = self.wait_fenced(fenced, next).await;
                continue;
            }
            if records != 0 && next >= records {
                break;
            }
            // Batches end at multiples of the batch size, wherever the input resumed.
            let mut end = (next / batch_size + 1) * batch_size;
            if records != 0 {
                end = end.min(records);
            }
            // Words this replica owns in records [next, end) that its groups have not yet
            // counted, and the last record each was in.
            let mut delta: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for i in next..end {
                for w in record(i) {
                    if let Some(slot) = self.owns(&w)
                        && i >= offsets[slot]
                    {
                        let e = delta.entry(w).or_default();
                        e.0 += 1;
                        e.1 = i;
                    }
                }
            }
            let words: Vec<Bytes> = delta.keys().map(|w| Bytes::from(w.clone())).collect();
            let current = self.client.multi_get(COUNTS, words.clone()).await?;
            let deadlines = self.client.multi_get(DEADLINES, words).await?;
            let mut batch = Batch::new();
            for (((w, (add, last)), old), deadline) in delta.iter().zip(current).zip(deadlines) {
                batch.value_put(COUNTS, w.clone(), (number(old) + add).to_string());
                // The word's idle timer moves to its last occurrence plus the idle time.
                let new_deadline = last * EVENT_MS_PER_RECORD + idle_ms;
                if let Some(old) = deadline.map(|d| number(Some(d))) {
                    batch.timer_delete(TimeDomain::Event, w.clone(), IDLE_TIMER, old);
                }
                batch
                    .timer_register(TimeDomain::Event, w.clone(), IDLE_TIMER, new_deadline)
                    .value_put(DEADLINES, w.clone(), new_deadline.to_string());
            }
            for (slot, key) in self.offset_keys.iter().enumerate() {
                if offsets[slot] < end {
                    batch.value_put(OFFSETS, key.clone(), end.to_string());
                    offsets[slot] = end;
                }
            }
            // Every record before `end` is counted: the watermark is the last one's time, or
            // the end of time once a bounded input is done.
            batch.watermark_advance(if records != 0 && end == records {
                u64::MAX
            } else {
                (end - 1) * EVENT_MS_PER_RECORD
            });
            match self.write(batch).await? {
                Written::Yes => {}
                Written::Fenced => {
                    // The batch changed nothing, so it is safe to compute and try it again.
                    fenced = self.wait_fenced(fenced, next).await;
                    offsets = self.offsets().await?;
                    next = offsets.iter().copied().min().unwrap_or(0);
                    continue;
                }
            }
            if fenced {
                eprintln!("wordcount: writes accepted again at record {next}");
                fenced = false;
            }
            next = end;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        eprintln!("wordcount: processed records up to {next}");
        Ok(())
    }

    /// Writes `batch`; `Fenced` when writes are suspended for a savepoint (nothing was written).
    async fn write(&mut self, batch: Batch) -> anyhow::Result<Written> {
        match self.client.write(batch).await {
            Ok(_) => Ok(Written::Yes),
            Err(Error::Server(e)) if e.code == ErrorCode::Suspended => Ok(Written::Fenced),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes are fenced for a stop-with-savepoint: this replica is about to be stopped, or the
    /// fence is lifted if the savepoint is abandoned. Waits a little before the caller retries.
    async fn wait_fenced(&self, already: bool, next: u64) -> bool {
        if !already {
            eprintln!("wordcount: writes suspended for a savepoint at record {next}; waiting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        true
    }

    /// Reports every word whose idle timer is due: its report and the timer's deletion in one
    /// batch, so a report is written exactly once however the app is stopped.
    async fn fire_idle_timers(&mut self) -> anyhow::Result<Written> {
        loop {
            let page = self.client.timers_due(TimeDomain::Event, 500).await?;
            if page.timers.is_empty() {
                return Ok(Written::Yes);
            }
            let words: Vec<Bytes> = page.timers.iter().map(|t| t.key.clone()).collect();
            let counts = self.client.multi_get(COUNTS, words).await?;
            let mut batch = Batch::new();
            for (t, count) in page.timers.iter().zip(counts) {
                let report = format!("{}:{}", t.time, number(count));
                batch
                    .list_append(IDLE, t.key.clone(), [report])
                    .value_clear(DEADLINES, t.key.clone())
                    .timer_fired(t);
            }
            if let Written::Fenced = self.write(batch).await? {
                return Ok(Written::Fenced);
            }
            if !page.has_more {
                return Ok(Written::Yes);
            }
        }
    }

    /// Writes `mb` MiB of 1 KiB values under keys this replica owns.
    /// Writes `mb` MiB of incompressible values (unless a restored state holds them already)
    /// and returns the keys.
    async fn fill(&mut self, mb: u64) -> anyhow::Result<Vec<String>> {
        self.client
            .declare(
                vec![stator_client::state("blob", proto::StateKind::Value, 0)],
                vec![],
            )
            .await?;
        let target = mb * 1024;
        let replica = self.client.hello().replica_index;
        let mut keys = Vec::with_capacity(target as usize);
        let mut i = 0u64;
        while (keys.len() as u64) < target {
            let key = format!("blob/{replica}/{i}");
            i += 1;
            if self.owns(&key).is_some() {
                keys.push(key);
            }
        }
        let restored = match keys.last() {
            Some(last) => self.client.get("blob", last.clone()).await?.is_some(),
            None => true,
        };
        if restored {
            eprintln!("wordcount: filled {mb} MiB (restored)");
            return Ok(keys);
        }
        let mut value = random_values(replica);
        for chunk in keys.chunks(500) {
            let mut batch = Batch::new();
            for key in chunk {
                batch.value_put("blob", key.clone(), value());
            }
            self.client.write(batch).await?;
        }
        eprintln!("wordcount: filled {mb} MiB");
        Ok(keys)
    }

    /// Overwrites `per_second` of `keys` each second, in ten batches, in order and round again.
    async fn churn(&mut self, keys: &[String], per_second: u64) -> anyhow::Result<()> {
        let mut value = random_values(self.client.hello().replica_index ^ 0x5a5a);
        let per_tick = per_second.div_ceil(10).max(1) as usize;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut next = 0usize;
        let mut written = 0u64;
        loop {
            tick.tick().await;
            let mut batch = Batch::new();
            for _ in 0..per_tick {
                batch.value_put("blob", keys[next % keys.len()].clone(), value());
                next += 1;
            }
            if let Err(e) = self.client.write(batch).await {
                eprintln!("wordcount: churn stopped after {written} overwrites: {e}");
                return Ok(());
            }
            written += per_tick as u64;
        }
    }

    async fn report(&mut self) -> anyhow::Result<serde_json::Value> {
        let owned: Vec<String> = (0..VOCABULARY)
            .map(word)
            .filter(|w| self.owns(w).is_some())
            .collect();
        let values = self
            .client
            .multi_get(COUNTS, owned.iter().map(|w| Bytes::from(w.clone())))
            .await?;
        let mut counts = serde_json::Map::new();
        for (w, v) in owned.into_iter().zip(values) {
            if let Some(v) = v {
                counts.insert(
                    w,
                    serde_json::Value::from(String::from_utf8_lossy(&v).parse::<u64>()?),
                );
            }
        }
        let offsets = self.offsets().await?;
        Ok(serde_json::json!({
            "replica": self.client.hello().replica_index,
            "keyGroups": [self.groups[0], self.groups[self.groups.len() - 1]],
            "minOffset": offsets.iter().min(),
            "maxOffset": offsets.iter().max(),
            "counts": counts,
        }))
    }
}

enum Written {
    Yes,
    Fenced,
}

/// A stored decimal number (0 when absent).
fn number(v: Option<Bytes>) -> u64 {
    v.map(|b| String::from_utf8_lossy(&b).parse().unwrap_or(0))
        .unwrap_or(0)
}

/// What records [0, records) must produce, simulated directly: the counts, and each word's idle
/// reports (a word's deadline is its last occurrence in a batch plus `idle_ms`; at the end of
/// each batch every deadline at or below the watermark is reported with the word's count).
fn expected(records: u64, batch: u64, idle_ms: u64) -> serde_json::Value {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut deadlines: BTreeMap<String, u64> = BTreeMap::new();
    let mut idle: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut start = 0;
    while start < records {
        let end = (start + batch).min(records);
        for i in start..end {
            for w in record(i) {
                *counts.entry(w.clone()).or_default() += 1;
                deadlines.insert(w, i * EVENT_MS_PER_RECORD + idle_ms);
            }
        }
        let watermark = if end == records {
            u64::MAX
        } else {
            (end - 1) * EVENT_MS_PER_RECORD
        };
        deadlines.retain(|w, d| {
            let due = *d <= watermark;
            if due {
                idle.entry(w.clone())
                    .or_default()
                    .push(format!("{d}:{}", counts[w]));
            }
            !due
        });
        start = end;
    }
    let counts: BTreeMap<_, _> = counts.into_iter().collect();
    serde_json::json!({ "records": records, "counts": counts, "idle": idle })
}

/// Incompressible 1 KiB values, so the state's size on disk and in storage is what was asked.
fn random_values(seed: u32) -> impl FnMut() -> Bytes {
    let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(seed);
    move || {
        let mut v = Vec::with_capacity(1024);
        for _ in 0..128 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        Bytes::from(v)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Expect {
            records,
            batch,
            idle_ms,
        } => {
            if batch == 0 {
                bail!("--batch must be at least 1");
            }
            println!("{}", expected(records, batch, idle_ms))
        }
        Command::Fill { mb, churn } => {
            let mut replica = Replica::connect(&args.socket).await?;
            let keys = replica.fill(mb).await?;
            if churn > 0 {
                tokio::select! {
                    r = replica.churn(&keys, churn) => r?,
                    _ = terminated() => return Ok(()),
                }
            }
            terminated().await;
        }
        Command::Report => {
            let mut replica = Replica::connect(&args.socket).await?;
            println!("{}", replica.report().await?);
        }
        Command::Run {
            records,
            batch,
            pause_ms,
            exit_when_done,
            idle_ms,
        } => {
            if batch == 0 {
                bail!("--batch must be at least 1");
            }
            let mut replica = Replica::connect(&args.socket).await?;
            tokio::select! {
                r = replica.run(records, batch, idle_ms, Duration::from_millis(pause_ms)) => r?,
                _ = terminated() => return Ok(()),
            };
            if exit_when_done {
                return Ok(());
            }
            // A stream app does not exit on its own: idle until the pod is stopped.
            terminated().await;
        }
    }
    Ok(())
}

async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => std::future::pending().await,
    }
}
