//! A crash-and-restart loop: the sidecar, under write load and checkpoint uploads to a real S3
//! server (moto), is killed with SIGKILL at random points and restarted, on its own data directory
//! or on an empty one (the restore then comes from S3, not from local recovery). After every
//! restart the state must be exactly one committed cut of the writes (every batch whole, none
//! missing before the newest one it holds) and never older than the last checkpoint the admin API
//! reported complete before the kill.
//!
//! The seed is printed; `STATOR_CRASH_SEED=<seed>` replays its choices (kill points, delays,
//! batches; the timing of the processes is not replayed). `STATOR_CRASH_ITERATIONS=<n>` sets the
//! number of kills (default 12, the CI variant); `STATOR_LONG=1` runs 150.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Sidecar;
use common::s3::S3Server;
use common::snapshots::{self, json, value};
use stator_client::{Batch, Client};
use stator_storage::Location;

const KEYS: u32 = 2000;
const LEN: usize = 200;
const REPLICA_DIR: &str = "checkpoints/replica-0-of-1";

/// splitmix64: small, seedable, good enough to choose kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }

    /// Below 512 ms, short delays as likely as long ones: a checkpoint here takes 50-300 ms, and
    /// its cut, hashing and first uploads are in its first milliseconds.
    fn log_millis(&mut self) -> Duration {
        let bound = 2 << self.below(9);
        Duration::from_millis(self.below(bound))
    }
}

/// The writes of the current lineage, which the restored state must be a prefix of. Rounds are
/// unique and increase across restarts; a restore cuts the lineage back to the round it holds.
struct History {
    /// Per key, the round of its value in the state the last restore produced.
    base: Vec<u32>,
    /// The newest round in `base`.
    base_round: u32,
    /// Batches sent since (also those whose reply never came), in order: (round, keys).
    sent: Vec<(u32, Vec<u32>)>,
    /// The newest round the sidecar acknowledged.
    acked: u32,
    next_round: u32,
}

impl History {
    fn last_sent(&self) -> u32 {
        self.sent.last().map_or(self.base_round, |(r, _)| *r)
    }

    /// The state after every batch up to and including `round`, if `round` is in the lineage.
    fn state_at(&self, round: u32) -> Option<Vec<u32>> {
        if round != self.base_round && !self.sent.iter().any(|(r, _)| *r == round) {
            return None;
        }
        let mut state = self.base.clone();
        for (r, keys) in self.sent.iter().take_while(|(r, _)| *r <= round) {
            for k in keys {
                state[*k as usize] = *r;
            }
        }
        Some(state)
    }

    /// The lineage continues from the state restored, `state` of round `round`.
    fn restored(&mut self, state: Vec<u32>, round: u32) {
        self.base = state;
        self.base_round = round;
        self.sent.clear();
        self.acked = round;
    }
}

/// Where in the sidecar's work the kill falls.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// A random delay after a checkpoint trigger: during the cut, hashing, upload or commit.
    AfterTrigger(Duration),
    /// Once this many new files of the triggered checkpoint are in S3 (before its manifest).
    MidUpload(usize),
    /// With the writer stopped after an acknowledged batch: no write in flight.
    BetweenBatches,
    /// At a random moment of the write load, a batch most likely in flight.
    WritesInFlight(Duration),
    /// A random delay after the triggered checkpoint was reported complete.
    AfterConfirmed(Duration),
}

impl KillAt {
    fn choose(rng: &mut Rng) -> Self {
        match rng.below(5) {
            0 => Self::AfterTrigger(rng.log_millis()),
            1 => Self::MidUpload(1 + rng.below(3) as usize),
            2 => Self::BetweenBatches,
            3 => Self::WritesInFlight(rng.millis(300)),
            _ => Self::AfterConfirmed(rng.millis(100)),
        }
    }
}

/// What the test knows of a checkpoint it triggered.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Acknowledged before the trigger: the cut holds this round.
    low: u32,
    /// Last sent when the completion was seen (or at the kill): the cut holds nothing newer.
    high: Option<u32>,
}

/// Writes batches of random keys, each key's value carrying the batch's round, one batch at a
/// time, until `stop` is set or the sidecar dies (`killed` must be set by then).
async fn write_load(
    socket: PathBuf,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = Rng(seed);
    let mut client = Client::connect(&socket).await.unwrap();
    while !stop.load(Ordering::SeqCst) {
        let n = 1 + rng.below(150);
        let mut keys: Vec<u32> = (0..n).map(|_| rng.below(u64::from(KEYS)) as u32).collect();
        keys.sort_unstable();
        keys.dedup();
        let round = {
            let mut h = history.lock().unwrap();
            let round = h.next_round;
            h.next_round += 1;
            h.sent.push((round, keys.clone()));
            round
        };
        let mut batch = Batch::new();
        for k in &keys {
            batch.value_put("v", format!("k{k}"), value(*k, round, LEN));
        }
        match client.write(batch).await {
            Ok(_) => history.lock().unwrap().acked = round,
            Err(e) => {
                assert!(
                    killed.load(Ordering::SeqCst),
                    "the write of round {round} failed with the sidecar alive: {e}"
                );
                return;
            }
        }
        if rng.below(4) == 0 {
            tokio::time::sleep(rng.millis(3)).await;
        }
    }
}

/// The round of every key's value; panics on a value that is not exactly one a batch wrote.
async fn read_state(client: &mut Client, ctx: &str) -> Vec<u32> {
    let keys: Vec<u32> = (0..KEYS).collect();
    let mut state = Vec::with_capacity(KEYS as usize);
    for chunk in keys.chunks(500) {
        let got = client
            .multi_get("v", chunk.iter().map(|k| format!("k{k}")))
            .await
            .unwrap();
        for (k, v) in chunk.iter().zip(got) {
            let v = v.unwrap_or_else(|| panic!("{ctx}: key k{k} is missing"));
            let v = String::from_utf8_lossy(&v);
            let round: u32 = v
                .strip_prefix('r')
                .and_then(|s| s.split('-').next())
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("{ctx}: key k{k} holds {v:?}"));
            assert_eq!(v, value(*k, round, LEN), "{ctx}: key k{k} is intact");
            state.push(round);
        }
    }
    state
}

/// The ids of the committed checkpoints (those with a manifest) in the replica's directory.
async fn committed_ids(location: &Location) -> Vec<u64> {
    let mut ids: Vec<u64> = location
        .list(&format!("{REPLICA_DIR}/chk-"))
        .await
        .unwrap()
        .iter()
        .filter(|o| o.key.ends_with("/manifest.json"))
        .filter_map(|o| o.key.rsplit('/').nth(1)?.strip_prefix("chk-")?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

async fn shared_objects(location: &Location) -> usize {
    location
        .list(&format!("{REPLICA_DIR}/shared/"))
        .await
        .unwrap()
        .len()
}

fn latest_reported(sidecar: &Sidecar) -> Option<u64> {
    let (code, body) = sidecar.get("/v1/checkpoints");
    assert_eq!(code, 200, "{body}");
    json(&body)["latest"]["id"].as_u64()
}

/// One sidecar process's run between two kills.
struct Run<'a> {
    sidecar: &'a Sidecar,
    history: &'a Arc<Mutex<History>>,
    /// Checkpoints triggered in this run (an id that never committed may be used again later).
    triggered: BTreeMap<u64, Bounds>,
    /// The newest checkpoint reported complete, and the round its cut holds at least.
    confirmed: &'a mut (u64, u32),
}

impl Run<'_> {
    fn trigger(&mut self) -> u64 {
        let low = self.history.lock().unwrap().acked;
        let (code, body) = self.sidecar.post("/v1/checkpoints", "");
        assert_eq!(code, 202, "{body}");
        let id = json(&body)["id"].as_u64().unwrap();
        self.triggered.insert(id, Bounds { low, high: None });
        id
    }

    /// Asks the admin API for the newest complete checkpoint and notes what that proves.
    fn observe(&mut self) -> Option<u64> {
        let latest = latest_reported(self.sidecar)?;
        let last_sent = self.history.lock().unwrap().last_sent();
        if let Some(bounds) = self.triggered.get_mut(&latest) {
            bounds.high.get_or_insert(last_sent);
        }
        if latest > self.confirmed.0 {
            let low = self
                .triggered
                .get(&latest)
                .map_or(self.confirmed.1, |b| b.low);
            *self.confirmed = (latest, low.max(self.confirmed.1));
        }
        Some(latest)
    }

    async fn wait_complete(&mut self, id: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.observe().is_none_or(|l| l < id) {
            assert!(
                Instant::now() < deadline,
                "checkpoint {id} not complete in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_restores_a_whole_committed_cut_never_older_than_reported() {
    let seed = env_u64("STATOR_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let iterations = env_u64("STATOR_CRASH_ITERATIONS").unwrap_or(
        if std::env::var_os("STATOR_LONG").is_some_and(|v| !v.is_empty() && v != "0") {
            150
        } else {
            12
        },
    );
    eprintln!("crash loop: seed {seed}, {iterations} kills (replay with STATOR_CRASH_SEED={seed})");
    let started = Instant::now();
    let mut rng = Rng(seed);

    let s3 = S3Server::moto("stator");
    let url = "s3://stator/jobs/crash-loop";
    let location = Location::parse(url, &s3.options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Small memtables and one transfer at a time: a checkpoint uploads several files one by one.
    let mut args = snapshots::args(
        dir.path(),
        url,
        &["--write-buffer-mb", "1", "--transfer-concurrency", "1"],
    );
    args.extend(s3.sidecar_args(None));
    let mut sidecar = snapshots::start(dir.path(), &args);

    // Round 0 holds every key and is checkpoint 1, complete before the loop.
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    snapshots::write_values(&mut client, 0..KEYS, 0, LEN).await;
    drop(client);
    assert_eq!(snapshots::checkpoint(&sidecar), 1);
    let history = Arc::new(Mutex::new(History {
        base: vec![0; KEYS as usize],
        base_round: 0,
        sent: Vec::new(),
        acked: 0,
        next_round: 1,
    }));
    let mut confirmed = (1u64, 0u32);
    // Committed checkpoints: their bounds and the round a restore of them gave.
    let mut committed: BTreeMap<u64, (Bounds, Option<u32>)> = BTreeMap::from([(
        1,
        (
            Bounds {
                low: 0,
                high: Some(0),
            },
            Some(0),
        ),
    )]);
    let (mut fresh_restores, mut local_restores) = (0, 0);
    // Kills that fell inside a checkpoint: before its manifest, or after it but before the
    // admin API reported it.
    let (mut interrupted, mut committed_unreported) = (0, 0);

    for iteration in 1..=iterations {
        let kill_at = KillAt::choose(&mut rng);
        let fresh = rng.below(3) == 0;
        let ctx = format!("seed {seed}, iteration {iteration}, {kill_at:?}, fresh dir {fresh}");
        let stop = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_load(
            sidecar.socket.clone(),
            history.clone(),
            stop.clone(),
            killed.clone(),
            rng.next(),
        ));
        let mut run = Run {
            sidecar: &sidecar,
            history: &history,
            triggered: BTreeMap::new(),
            confirmed: &mut confirmed,
        };
        tokio::time::sleep(rng.millis(250)).await;
        for _ in 0..rng.below(3) {
            let id = run.trigger();
            run.wait_complete(id).await;
            tokio::time::sleep(rng.millis(100)).await;
        }
        let mut writer = Some(writer);
        match kill_at {
            KillAt::AfterTrigger(delay) => {
                run.trigger();
                tokio::time::sleep(delay).await;
            }
            KillAt::MidUpload(n) => {
                let before = shared_objects(&location).await;
                let id = run.trigger();
                let deadline = Instant::now() + Duration::from_secs(30);
                while shared_objects(&location).await < before + n
                    && run.observe().is_none_or(|l| l < id)
                {
                    assert!(Instant::now() < deadline, "{ctx}: no upload in 30 s");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            KillAt::BetweenBatches => {
                stop.store(true, Ordering::SeqCst);
                writer.take().unwrap().await.unwrap();
            }
            KillAt::WritesInFlight(delay) => tokio::time::sleep(delay).await,
            KillAt::AfterConfirmed(delay) => {
                let id = run.trigger();
                run.wait_complete(id).await;
                tokio::time::sleep(delay).await;
            }
        }
        let reported = run.observe();
        let mut triggered = run.triggered;
        // Checkpoints the kill may interrupt: triggered, not yet reported complete.
        let pending: Vec<u64> = triggered
            .keys()
            .copied()
            .filter(|id| reported.is_none_or(|l| *id > l))
            .collect();
        killed.store(true, Ordering::SeqCst);
        sidecar.kill9();
        if let Some(writer) = writer {
            writer.await.unwrap();
        }
        let last_sent = history.lock().unwrap().last_sent();
        for bounds in triggered.values_mut() {
            bounds.high.get_or_insert(last_sent);
        }

        if fresh {
            std::fs::remove_dir_all(&sidecar.data_dir).unwrap();
        }
        sidecar.spawn();
        sidecar.wait_ready();

        // Which checkpoints committed: a triggered id with a manifest now is one.
        let ids = committed_ids(&location).await;
        for id in &ids {
            if let Some(bounds) = triggered.get(id) {
                assert!(
                    !committed.contains_key(id),
                    "{ctx}: checkpoint {id} committed twice"
                );
                committed.insert(*id, (*bounds, None));
            }
        }
        for id in &pending {
            if ids.contains(id) {
                committed_unreported += 1;
            } else {
                interrupted += 1;
            }
        }
        let newest = *ids.last().expect("checkpoints are retained");
        let status = json(&sidecar.get("/v1/status").1);
        let restored_id = status["latestCheckpoint"]["id"].as_u64();
        assert_eq!(
            restored_id,
            Some(newest),
            "{ctx}: the restore takes the newest committed checkpoint (committed: {ids:?})"
        );
        assert!(
            newest >= confirmed.0,
            "{ctx}: restored checkpoint {newest} is older than checkpoint {} reported complete",
            confirmed.0
        );

        let mut client = Client::connect(&sidecar.socket).await.unwrap();
        let state = read_state(&mut client, &ctx).await;
        drop(client);
        let round = *state.iter().max().unwrap();
        let mut h = history.lock().unwrap();
        let expected = h.state_at(round).unwrap_or_else(|| {
            panic!(
                "{ctx}: the restored state's newest round {round} is not in the lineage \
                 (base round {}, last sent {})",
                h.base_round,
                h.last_sent()
            )
        });
        let mixed: Vec<String> = (0..KEYS as usize)
            .filter(|k| state[*k] != expected[*k])
            .take(10)
            .map(|k| {
                format!(
                    "k{k}: restored round {}, expected {}",
                    state[k], expected[k]
                )
            })
            .collect();
        assert!(
            mixed.is_empty(),
            "{ctx}: checkpoint {newest} restored a state that is no cut of the writes (newest \
             round {round}): {mixed:?}"
        );
        let (bounds, before) = committed
            .get_mut(&newest)
            .unwrap_or_else(|| panic!("{ctx}: checkpoint {newest} was never triggered"));
        assert!(
            bounds.low <= round && bounds.high.is_none_or(|high| round <= high),
            "{ctx}: checkpoint {newest} holds round {round}, outside the rounds its cut can hold \
             {bounds:?}"
        );
        assert!(
            round >= confirmed.1,
            "{ctx}: restored round {round} is older than round {} that checkpoint {} reported \
             complete holds",
            confirmed.1,
            confirmed.0
        );
        if let Some(before) = before {
            assert_eq!(
                *before, round,
                "{ctx}: checkpoint {newest} restored another state than before"
            );
        }
        *before = Some(round);
        h.restored(state, round);
        drop(h);
        // The restored checkpoint is the newest: the floor for the next run.
        confirmed = (newest, round);

        let local = sidecar.metric("stator_sidecar_restores_total{source=\"local\"}");
        if fresh {
            assert_eq!(
                local, 0.0,
                "{ctx}: an empty data directory restores from S3"
            );
            fresh_restores += 1;
        }
        local_restores += local as u32;
        eprintln!(
            "{iteration:>4} {kill_at:?} fresh={fresh}: in flight {pending:?}; restored \
             checkpoint {newest} (round {round}, committed {ids:?})"
        );
    }
    eprintln!(
        "crash loop: seed {seed}, {iterations} kills in {:.1} s: {interrupted} before a \
         checkpoint's manifest, {committed_unreported} after it but before it was reported; \
         {fresh_restores} restarts on an empty data directory, {local_restores} restores with \
         nothing downloaded",
        started.elapsed().as_secs_f64()
    );
    assert!(
        iterations < 100 || interrupted > 0,
        "seed {seed}: no kill fell inside a checkpoint; the loop tests too little"
    );
}
