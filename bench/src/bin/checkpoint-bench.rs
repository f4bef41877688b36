//! `stator-checkpoint-bench`: checkpoints and restores of the sidecar against s3s-fs, with the
//! peers measured in the same run: the write pause of a checkpoint, the bytes an incremental
//! checkpoint uploads after 1% of the keys change (against the full size), restore time against
//! a plain parallel download of the same objects from the same server, and rescale restore time
//! against plain restore. Prints one table per state size.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::Value;
use stator_client::{Batch, Client};
use stator_core::manifest::Manifest;
use stator_storage::{Location, S3Options};

#[derive(Parser, Debug)]
#[command(
    about = "Checkpoint pause, incremental upload, restore and rescale restore against s3s-fs"
)]
struct Args {
    /// State sizes in MB (keys of 1 KiB random values).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    sizes_mb: Vec<u64>,
    /// Checkpoints measured for the write pause (while a writer keeps writing).
    #[arg(long, default_value_t = 20)]
    pause_samples: usize,
    /// Parallel transfers (the sidecar's --transfer-concurrency and the plain download's).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The sidecar binary (default: next to this program).
    #[arg(long)]
    sidecar_bin: Option<PathBuf>,
    /// s3s-fs (default: $STATOR_S3S_FS).
    #[arg(long, env = "STATOR_S3S_FS")]
    s3s_fs: PathBuf,
    /// Where to put data (needs about 6x the largest size free).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

const VALUE: usize = 1024;
const BUCKET: &str = "bench";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((
        code,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    ))
}

struct Env {
    sidecar_bin: PathBuf,
    s3: S3Options,
    creds: PathBuf,
    endpoint: String,
    token: PathBuf,
    concurrency: usize,
}

struct Sidecar {
    _proc: Proc,
    admin: SocketAddr,
    socket: PathBuf,
}

impl Env {
    /// Starts a sidecar and returns it with the time it took to become ready.
    fn sidecar(&self, dir: &Path, extra: &[String]) -> anyhow::Result<(Sidecar, Duration)> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let socket = dir.join("state.sock");
        let started = Instant::now();
        let child = Command::new(&self.sidecar_bin)
            .args(["--socket", &socket.display().to_string()])
            .args(["--data-dir", &dir.join("data").display().to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--admin-token-file", &self.token.display().to_string()])
            .args(["--state", "v:value", "--checkpoint-interval-secs", "0"])
            .args(["--s3-endpoint", &self.endpoint, "--s3-path-style"])
            .args(["--s3-credentials-dir", &self.creds.display().to_string()])
            .args(["--transfer-concurrency", &self.concurrency.to_string()])
            .args(["--log-format", "text"])
            .args(extra)
            .env(
                "STATOR_LOG",
                std::env::var("STATOR_BENCH_SIDECAR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .context("start stator-sidecar")?;
        let mut proc = Proc(child);
        loop {
            if let Some(status) = proc.0.try_wait()? {
                bail!("the sidecar exited during start-up: {status}");
            }
            if http(admin, "GET", "/readyz", "")
                .map(|(c, _)| c == 200)
                .unwrap_or(false)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let ready = started.elapsed();
        Ok((
            Sidecar {
                _proc: proc,
                admin,
                socket,
            },
            ready,
        ))
    }
}

impl Sidecar {
    /// Takes a checkpoint and returns its entry from GET /v1/checkpoints.
    fn checkpoint(&self) -> anyhow::Result<Value> {
        let (code, body) = http(self.admin, "POST", "/v1/checkpoints", "")?;
        if code != 202 {
            bail!("checkpoint trigger: {code} {body}");
        }
        let id = serde_json::from_str::<Value>(&body)?["id"]
            .as_u64()
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let v: Value =
                serde_json::from_str(&http(self.admin, "GET", "/v1/checkpoints", "")?.1)?;
            if let Some(c) = v["retained"]
                .as_array()
                .and_then(|r| r.iter().find(|c| c["id"] == id))
            {
                return Ok(c.clone());
            }
            if Instant::now() > deadline {
                bail!("checkpoint {id} did not complete");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn value(key: u64, round: u64) -> Vec<u8> {
    let mut x = (key << 20 ^ round).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(VALUE);
    while out.len() < VALUE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(VALUE);
    out
}

async fn load(socket: &Path, keys: impl Iterator<Item = u64>, round: u64) -> anyhow::Result<()> {
    let mut client = Client::connect(socket).await?;
    let keys: Vec<u64> = keys.collect();
    for chunk in keys.chunks(4000) {
        let mut batch = Batch::new();
        for k in chunk {
            batch.value_put("v", format!("key{k:012}"), value(*k, round));
        }
        client.write(batch).await?;
    }
    Ok(())
}

/// Waits until RocksDB runs and plans no compaction.
fn wait_for_compactions(admin: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, text) = http(admin, "GET", "/metrics", "")?;
        let busy = text.lines().any(|l| {
            (l.contains("property=\"running_compactions\"")
                || l.contains("property=\"compaction_pending\""))
                && !l.ends_with(" 0")
        });
        if !busy || Instant::now() > deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Downloads every object of `manifest` from `dir` with `concurrency` transfers at once.
async fn plain_download(
    dir: &Location,
    manifest: &Manifest,
    target: &Path,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    std::fs::create_dir_all(target)?;
    let started = Instant::now();
    let jobs: Vec<_> = manifest
        .files
        .iter()
        .map(|f| (dir.clone(), f.object.clone(), target.join(&f.name)))
        .collect();
    stator_storage::parallel(jobs, concurrency, |(d, o, p)| async move {
        d.get_to_file(&o, &p).await
    })
    .await?;
    let took = started.elapsed();
    std::fs::remove_dir_all(target)?;
    Ok(took)
}

async fn run_size(
    env: &Env,
    work: &Path,
    mb: u64,
    pause_samples: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let keys = mb * 1_000_000 / VALUE as u64;
    let mut rows = Vec::new();
    let base = work.join(format!("size-{mb}"));
    std::fs::create_dir_all(&base)?;
    let url = format!("s3://{BUCKET}/size-{mb}/p1");
    let location = Location::parse(&url, &env.s3).await?;

    // Load and take the first (full) checkpoint.
    let dir = base.join("writer");
    std::fs::create_dir_all(&dir)?;
    let (sidecar, _) = env.sidecar(&dir, &["--state-location".into(), url.clone()])?;
    let t = Instant::now();
    load(&sidecar.socket, 0..keys, 0).await?;
    eprintln!("  loaded {keys} keys in {:.1} s", t.elapsed().as_secs_f64());
    let full = sidecar.checkpoint()?;
    let total = full["totalBytes"].as_u64().unwrap_or(0);
    rows.push((
        "state (checkpoint total)".into(),
        format!("{:.1} MB in {} files", total as f64 / 1e6, full["files"]),
    ));

    // Loading leaves compactions behind; measure from a settled store.
    wait_for_compactions(sidecar.admin)?;
    // Write pause: one writer writes a small batch every millisecond; we take checkpoints one after
    // another, then let it run as long again without checkpoints, and compare the worst write of
    // each checkpoint's window with the worst write of equally long windows without.
    let socket = sidecar.socket.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut client = Client::connect(&socket).await?;
            let mut done: Vec<(Instant, Duration)> = Vec::new();
            let mut k = 0u64;
            // About 1000 writes a second: an app's steady stream, not a load test.
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let mut batch = Batch::new();
                batch.value_put("v", format!("key{:012}", k % keys), value(k % keys, 1));
                let t = Instant::now();
                client.write(batch).await?;
                done.push((Instant::now(), t.elapsed()));
                k = k.wrapping_add(7919);
            }
            anyhow::Ok(done)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut gate_pauses = Vec::new();
    let mut windows = Vec::new();
    for _ in 0..pause_samples {
        let t = Instant::now();
        let c = sidecar.checkpoint()?;
        windows.push((t, Instant::now()));
        gate_pauses.push(c["writePauseMs"].as_f64().unwrap_or(f64::NAN));
    }
    let mean = windows.iter().map(|(a, b)| *b - *a).sum::<Duration>() / pause_samples as u32;
    let quiet_start = Instant::now();
    tokio::time::sleep(mean * pause_samples as u32).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await??;
    let worst_in = |(a, b): (Instant, Instant)| {
        writes
            .iter()
            .filter(|(at, _)| *at >= a && *at <= b)
            .map(|(_, d)| d.as_secs_f64() * 1e3)
            .fold(0.0, f64::max)
    };
    let mut during: Vec<f64> = windows.iter().map(|w| worst_in(*w)).collect();
    let mut quiet: Vec<f64> = (0..pause_samples as u32)
        .map(|i| worst_in((quiet_start + mean * i, quiet_start + mean * (i + 1))))
        .collect();
    for v in [&mut gate_pauses, &mut during, &mut quiet] {
        v.sort_by(f64::total_cmp);
    }
    rows.push((
        format!("writes held by the checkpoint's cut, p50 / p99 ({pause_samples} checkpoints)"),
        format!(
            "{:.2} ms / {:.2} ms",
            percentile(&gate_pauses, 0.5),
            percentile(&gate_pauses, 0.99)
        ),
    ));
    rows.push((
        format!(
            "worst write per checkpoint window ({:.0} ms), p50 / p99",
            mean.as_secs_f64() * 1e3
        ),
        format!(
            "{:.2} ms / {:.2} ms",
            percentile(&during, 0.5),
            percentile(&during, 0.99)
        ),
    ));
    rows.push((
        "peer: worst write per equal window without checkpoints, p50 / p99".into(),
        format!(
            "{:.2} ms / {:.2} ms",
            percentile(&quiet, 0.5),
            percentile(&quiet, 0.99)
        ),
    ));

    // Incremental after changing 1% of the keys, from a settled store (a compaction that merges
    // new files into the bottom level rewrites the files it overlaps; the next checkpoint
    // uploads those whole, whatever triggered them).
    wait_for_compactions(sidecar.admin)?;
    sidecar.checkpoint()?;
    load(&sidecar.socket, (0..keys).step_by(100), 2).await?;
    let inc = sidecar.checkpoint()?;
    let uploaded = inc["uploadedBytes"].as_u64().unwrap_or(0);
    let inc_total = inc["totalBytes"].as_u64().unwrap_or(1);
    rows.push((
        "incremental checkpoint after changing 1% of keys: uploaded / full".into(),
        format!(
            "{:.1} MB / {:.1} MB = {:.1}%",
            uploaded as f64 / 1e6,
            inc_total as f64 / 1e6,
            100.0 * uploaded as f64 / inc_total as f64
        ),
    ));
    let latest_id = inc["id"].as_u64().unwrap_or(0);
    drop(sidecar);

    // Restore against a plain parallel download of the same objects.
    let replica = location.child("checkpoints/replica-0-of-1");
    let manifest = Manifest::parse(
        &replica
            .get(&format!("chk-{latest_id:020}/manifest.json"))
            .await?,
    )?;
    let plain = plain_download(&replica, &manifest, &base.join("plain"), env.concurrency).await?;
    let restore_dir = base.join("restore");
    let (restored, restore_time) = env.sidecar(
        &restore_dir,
        &[
            "--restore-from".into(),
            url.clone(),
            "--local-recovery".into(),
            "false".into(),
        ],
    )?;
    drop(restored);
    std::fs::remove_dir_all(&restore_dir)?;
    rows.push((
        "restore (start to ready) vs plain parallel download".into(),
        format!(
            "{:.2} s vs {:.2} s = {:.2}x",
            restore_time.as_secs_f64(),
            plain.as_secs_f64(),
            restore_time.as_secs_f64() / plain.as_secs_f64()
        ),
    ));

    // Rescale: 1 -> 2 (replica 0 takes half the groups of the one source) and 2 -> 1 (merge two
    // sources holding the same keys, loaded at parallelism 2).
    let up_dir = base.join("up");
    let (up, up_time) = env.sidecar(
        &up_dir,
        &[
            "--restore-from".into(),
            url.clone(),
            "--local-recovery".into(),
            "false".into(),
            "--parallelism".into(),
            "2".into(),
        ],
    )?;
    drop(up);
    std::fs::remove_dir_all(&up_dir)?;
    rows.push((
        "rescale restore 1->2 (replica 0) vs plain restore".into(),
        format!(
            "{:.2} s vs {:.2} s = {:.2}x",
            up_time.as_secs_f64(),
            restore_time.as_secs_f64(),
            up_time.as_secs_f64() / restore_time.as_secs_f64()
        ),
    ));
    let url2 = format!("s3://{BUCKET}/size-{mb}/p2");
    let mut halves = Vec::new();
    for i in 0..2u32 {
        let d = base.join(format!("p2-{i}"));
        let (s, _) = env.sidecar(
            &d,
            &[
                "--state-location".into(),
                url2.clone(),
                "--parallelism".into(),
                "2".into(),
                "--replica-index".into(),
                i.to_string(),
            ],
        )?;
        let mine = (0..keys).filter(|k| {
            stator_core::keygroup::owner(format!("key{k:012}").as_bytes(), 2, 128) == i
        });
        load(&s.socket, mine, 0).await?;
        s.checkpoint()?;
        halves.push((s, d));
    }
    drop(halves);
    let down_dir = base.join("down");
    let (down, down_time) = env.sidecar(
        &down_dir,
        &[
            "--restore-from".into(),
            url2.clone(),
            "--local-recovery".into(),
            "false".into(),
        ],
    )?;
    drop(down);
    std::fs::remove_dir_all(&down_dir)?;
    rows.push((
        "rescale restore 2->1 (merge) vs plain restore".into(),
        format!(
            "{:.2} s vs {:.2} s = {:.2}x",
            down_time.as_secs_f64(),
            restore_time.as_secs_f64(),
            down_time.as_secs_f64() / restore_time.as_secs_f64()
        ),
    ));
    std::fs::remove_dir_all(&base)?;
    Ok(rows)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sidecar_bin = match &args.sidecar_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("stator-sidecar"),
    };
    let work = tempfile::Builder::new()
        .prefix("stator-checkpoint-bench")
        .tempdir_in(args.work_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let creds = work.path().join("creds");
    std::fs::create_dir_all(&creds)?;
    std::fs::write(creds.join("AWS_ACCESS_KEY_ID"), "bench")?;
    std::fs::write(creds.join("AWS_SECRET_ACCESS_KEY"), "bench-secret")?;
    let token = work.path().join("token");
    std::fs::write(&token, "bench")?;
    let data = work.path().join("s3");
    std::fs::create_dir_all(data.join(BUCKET))?;
    let port = free_port()?;
    let _s3 = Proc(
        Command::new(&args.s3s_fs)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                "bench",
                "--secret-key",
                "bench-secret",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start s3s-fs")?,
    );
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = Env {
        sidecar_bin,
        s3: S3Options {
            endpoint: Some(endpoint.clone()),
            path_style: true,
            credentials_dir: Some(creds.clone()),
            ..Default::default()
        },
        creds,
        endpoint,
        token,
        concurrency: args.concurrency,
    };
    for mb in &args.sizes_mb {
        eprintln!("state of about {mb} MB ...");
        let rows = run_size(&env, work.path(), *mb, args.pause_samples).await?;
        println!(
            "\nstator-checkpoint-bench: about {mb} MB of state ({} keys, {VALUE}-byte random values), s3s-fs on loopback, {} parallel transfers",
            mb * 1_000_000 / VALUE as u64,
            args.concurrency
        );
        println!("| measure | result |\n|---|---|");
        for (k, v) in rows {
            println!("| {k} | {v} |");
        }
    }
    Ok(())
}
