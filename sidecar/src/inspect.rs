//! `stator-inspect`: read stored state offline. Lists checkpoints and savepoints at a location,
//! shows manifests, verifies every checksum, and dumps one state's entries, or the timers and
//! watermarks, as JSON lines.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stator_core::manifest::{MANIFEST_FILE, parse_replica_dir};
use stator_storage::{Location, S3Options};

use crate::checkpoint::from_manifest_state;
use crate::checkpoint::restore::{download_verified, sources_at};
use crate::store::{Domain, dump_state, dump_timers};

#[derive(Debug, Parser)]
#[command(
    name = "stator-inspect",
    version,
    about = "Inspect Stator checkpoints and savepoints offline"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[arg(long, env = "STATOR_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    #[arg(
        long,
        env = "STATOR_S3_REGION",
        default_value = "us-east-1",
        global = true
    )]
    pub s3_region: String,
    #[arg(
        long,
        env = "STATOR_S3_PATH_STYLE",
        default_value_t = false,
        global = true
    )]
    pub s3_path_style: bool,
    #[arg(long, env = "STATOR_S3_CREDENTIALS_DIR", global = true)]
    pub s3_credentials_dir: Option<PathBuf>,
    /// Parallel downloads.
    #[arg(long, default_value_t = 4, global = true)]
    pub concurrency: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the checkpoints (under `checkpoints/`) and savepoints (the location itself, or
    /// directories under `savepoints/`) at a state location.
    List { location: String },
    /// Print the manifest(s) at a location: a replica directory, a checkpoint directory, a
    /// savepoint or a checkpoint set.
    Show { location: String },
    /// Download every file and check its size and SHA-256. Exits 1 when any is wrong.
    Verify { location: String },
    /// Print one keyed state's live entries (--state NAME), or every timer and each replica's
    /// watermark (--timers), as JSON lines.
    Dump {
        location: String,
        #[arg(long, required_unless_present = "timers", conflicts_with = "timers")]
        state: Option<String>,
        #[arg(long)]
        timers: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<bool> {
    let s3 = S3Options {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        path_style: args.s3_path_style,
        credentials_dir: args.s3_credentials_dir.clone(),
        ..Default::default()
    };
    match args.command {
        Command::List { location } => {
            let loc = Location::parse(&location, &s3).await?;
            list(&loc).await?;
            Ok(true)
        }
        Command::Show { location } => {
            let loc = Location::parse(&location, &s3).await?;
            let (_, sources) = sources_at(&loc).await?;
            for s in sources {
                println!("{}", serde_json::to_string_pretty(&s.manifest)?);
            }
            Ok(true)
        }
        Command::Verify { location } => {
            let loc = Location::parse(&location, &s3).await?;
            let (kind, sources) = sources_at(&loc).await?;
            let temp = tempdir()?;
            let mut ok = true;
            for (k, s) in sources.iter().enumerate() {
                let name = format!(
                    "replica-{}-of-{}",
                    s.manifest.replica_index, s.manifest.parallelism
                );
                match download_verified(s, &temp.join(k.to_string()), args.concurrency, &s3).await {
                    Ok(bytes) => println!(
                        "ok       {kind} {name} checkpoint {} files {} bytes {bytes}",
                        s.manifest.checkpoint_id,
                        s.manifest.files.len()
                    ),
                    Err(e) => {
                        ok = false;
                        println!("CORRUPT  {kind} {name}: {e}");
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&temp);
            Ok(ok)
        }
        Command::Dump {
            location,
            state: None,
            ..
        } => {
            let loc = Location::parse(&location, &s3).await?;
            let (_, sources) = sources_at(&loc).await?;
            let temp = tempdir()?;
            for (k, s) in sources.iter().enumerate() {
                let dir = temp.join(k.to_string());
                download_verified(s, &dir, args.concurrency, &s3).await?;
                let (watermark, timers) =
                    tokio::task::spawn_blocking(move || dump_timers(&dir)).await??;
                let replica = s.manifest.replica_index;
                println!(
                    "{}",
                    serde_json::json!({"replica": replica, "watermark": watermark})
                );
                for t in timers {
                    println!(
                        "{}",
                        serde_json::json!({
                            "replica": replica,
                            "keyGroup": t.key_group,
                            "timer": match t.domain {
                                Domain::Event => "event",
                                Domain::Processing => "processing",
                            },
                            "time": t.time,
                            "key": text(&t.key),
                            "name": text(&t.name),
                        })
                    );
                }
            }
            let _ = std::fs::remove_dir_all(&temp);
            Ok(true)
        }
        Command::Dump {
            location,
            state: Some(state),
            ..
        } => {
            let loc = Location::parse(&location, &s3).await?;
            let (_, sources) = sources_at(&loc).await?;
            let temp = tempdir()?;
            for (k, s) in sources.iter().enumerate() {
                let Some(decl) = s
                    .manifest
                    .states
                    .iter()
                    .find(|d| d.name == state)
                    .and_then(from_manifest_state)
                else {
                    continue;
                };
                let dir = temp.join(k.to_string());
                download_verified(s, &dir, args.concurrency, &s3).await?;
                let entries =
                    tokio::task::spawn_blocking(move || dump_state(&dir, &decl)).await??;
                for e in entries {
                    let mut line = serde_json::json!({
                        "replica": s.manifest.replica_index,
                        "keyGroup": e.key_group,
                        "key": text(&e.key),
                    });
                    if let Some(mk) = &e.map_key {
                        line["mapKey"] = text(mk);
                    }
                    match decl_kind(&s.manifest, &state) {
                        Some("list") => line["values"] = e.values.iter().map(|v| text(v)).collect(),
                        _ => line["value"] = e.values.first().map(|v| text(v)).unwrap_or_default(),
                    }
                    if e.expires_at_ms != 0 {
                        line["expiresAtMs"] = e.expires_at_ms.into();
                    }
                    println!("{line}");
                }
            }
            let _ = std::fs::remove_dir_all(&temp);
            Ok(true)
        }
    }
}

fn decl_kind<'a>(m: &'a stator_core::manifest::Manifest, state: &str) -> Option<&'a str> {
    m.states
        .iter()
        .find(|d| d.name == state)
        .map(|d| d.kind.as_str())
}

/// UTF-8 as a string; other bytes as `{"hex": "..."}`.
fn text(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => serde_json::json!({"hex": stator_core::manifest::hex_encode(bytes)}),
    }
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("stator-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

async fn list(loc: &Location) -> anyhow::Result<()> {
    let checkpoints = loc.child("checkpoints");
    for dir in checkpoints.list_dirs("").await? {
        if parse_replica_dir(&dir).is_none() {
            continue;
        }
        let replica = checkpoints.child(&dir);
        for o in replica.list("chk-").await? {
            if let Some((chk, MANIFEST_FILE)) = o.key.split_once('/') {
                let (_, sources) = sources_at(&replica.child(chk)).await?;
                for s in sources {
                    println!(
                        "checkpoint {}/{dir}/{chk} created {} files {} bytes {}",
                        checkpoints.url(),
                        stator_core::manifest::rfc3339(s.manifest.created_at_ms),
                        s.manifest.files.len(),
                        s.manifest.total_bytes()
                    );
                }
            }
        }
    }
    let mut candidates = vec![loc.clone()];
    let savepoints = loc.child("savepoints");
    for dir in savepoints.list_dirs("").await? {
        candidates.push(savepoints.child(&dir));
    }
    for c in candidates {
        let dirs: Vec<(u32, u32)> = c
            .list_dirs("")
            .await?
            .iter()
            .filter_map(|d| parse_replica_dir(d))
            .collect();
        let Some(parallelism) = dirs.iter().map(|d| d.1).max() else {
            continue;
        };
        let mut present = 0;
        let mut bytes = 0;
        let mut created = 0;
        for i in 0..parallelism {
            if let Ok(b) = c
                .get(&format!("replica-{i}-of-{parallelism}/{MANIFEST_FILE}"))
                .await
                && let Ok(m) = stator_core::manifest::Manifest::parse(&b)
            {
                present += 1;
                bytes += m.total_bytes();
                created = created.max(m.created_at_ms);
            }
        }
        if present == 0 {
            continue;
        }
        let state = if present == parallelism {
            "complete"
        } else {
            "INCOMPLETE"
        };
        println!(
            "savepoint  {} {state} parallelism {parallelism} replicas {present} created {} bytes {bytes}",
            c.url(),
            stator_core::manifest::rfc3339(created)
        );
    }
    Ok(())
}
