//! Restore at start-up: from an explicit location, else from this replica's latest complete
//! checkpoint, else empty. Every file is checked against the manifest's size and SHA-256.
//!
//! An explicit location is a savepoint directory (`<dir>/replica-{i}-of-{P}/manifest.json` for
//! every i) or a checkpoint set: a job's state location, or its `checkpoints/` directory, whose
//! newest complete set of `replica-{i}-of-{P}` directories is used (the latest checkpoint of each
//! replica). Either may have been taken at another parallelism: replica j then takes every source
//! whose key groups overlap its own, opens the biggest overlap as its database, range-deletes
//! what is outside its range, and ingests the rest as sorted SST files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use stator_core::keygroup::KeyGroupRange;
use stator_core::manifest::{
    self, FileEntry, MANIFEST_FILE, Manifest, checkpoint_dir, parse_replica_dir, replica_dir,
};
use stator_storage::{Location, S3Options, StorageError};

use super::coordinator::list_checkpoints;
use super::{from_manifest_operator_state, from_manifest_state};
use crate::metrics::Metrics;
use crate::store::{
    OperatorStateDecl, Placement, Redistribution, RocksOptions, StateDecl, Store, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "nothing to restore at {0}: no savepoint (replica-*-of-*/manifest.json) and no checkpoints (checkpoints/replica-*-of-*/chk-*/manifest.json)"
    )]
    NothingThere(String),
    #[error(
        "the savepoint at {location} is incomplete: replicas {missing:?} of {parallelism} have no manifest"
    )]
    Incomplete {
        location: String,
        parallelism: u32,
        missing: Vec<u32>,
    },
    #[error(
        "{url} was taken with maxParallelism {found}; this job has maxParallelism {expected}, which is fixed for the life of its state"
    )]
    MaxParallelism {
        url: String,
        found: u32,
        expected: u32,
    },
    #[error("{url} is corrupt: {reason}")]
    Corrupt { url: String, reason: String },
    /// Written by a newer sidecar: not corrupt, and an older checkpoint would step back in time.
    #[error("{url}: {source}; run a sidecar that reads it")]
    UnsupportedManifest {
        url: String,
        source: manifest::ManifestError,
    },
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("every checkpoint in {0} is missing files or corrupt; refusing to start empty")]
    AllCorrupt(String),
    #[error(
        "local file {}: {source}; this is a problem of this machine (disk full, permissions), not of the stored snapshot",
        path.display()
    )]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "opening the store failed: {0}; this is a problem of this machine or of the configuration, not of the stored snapshot (every file matched its checksum)"
    )]
    Store(#[from] StoreError),
    #[error("internal task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl RestoreError {
    /// Evidence that the stored snapshot itself is bad (a missing object, a checksum mismatch, an
    /// unreadable manifest): only these fall back to an older checkpoint. Everything else proves
    /// nothing about the snapshot (the store unreachable or refusing access, a full or read-only
    /// disk, RocksDB failing to open verified files) and fails the start instead: an older
    /// checkpoint would silently step back in time while the newest may be fine.
    fn is_snapshot_problem(&self) -> bool {
        match self {
            RestoreError::Corrupt { .. } => true,
            RestoreError::Storage(e) => e.is_not_found(),
            _ => false,
        }
    }
}

fn local(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Local {
        path: path.to_owned(),
        source,
    }
}

/// What the sidecar starts from.
#[derive(Clone, Copy)]
pub struct RestoreRequest<'a> {
    pub placement: Placement,
    pub data_dir: &'a Path,
    pub state_location: Option<&'a Location>,
    pub restore_from: Option<&'a str>,
    pub s3: &'a S3Options,
    pub local_recovery: bool,
    pub concurrency: usize,
    pub rocks: &'a RocksOptions,
    pub states: &'a [StateDecl],
    pub operator_states: &'a [OperatorStateDecl],
}

pub struct Restored {
    pub store: Arc<Store>,
    /// The checkpoint of this replica's own directory the store came from, if it did.
    pub own_checkpoint: Option<Manifest>,
    /// savepoint, checkpoint, local, fallback, empty or none (no state location).
    pub source: &'static str,
}

/// One replica's snapshot to restore from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The replica's directory (the manifest's `object` names are relative to it).
    pub dir: Location,
    pub manifest: Manifest,
}

pub async fn restore(req: RestoreRequest<'_>, metrics: &Metrics) -> Result<Restored, RestoreError> {
    let restored = restore_inner(req, metrics).await;
    metrics
        .restored_bytes
        .inc_by(RESTORED_BYTES.swap(0, Ordering::Relaxed));
    metrics
        .restore_downloaded_bytes
        .inc_by(DOWNLOADED_BYTES.swap(0, Ordering::Relaxed));
    restored
}

async fn restore_inner(
    req: RestoreRequest<'_>,
    metrics: &Metrics,
) -> Result<Restored, RestoreError> {
    let db_dir = req.data_dir.join("db");
    let p = req.placement;
    let own = req.state_location.map(|l| {
        l.child("checkpoints")
            .child(&replica_dir(p.replica, p.layout.parallelism()))
    });
    if let Some(from) = req.restore_from {
        let location = Location::parse(from, req.s3).await?;
        let (kind, sources) = find_sources(&location).await?;
        check_max_parallelism(&sources, p.layout.max_parallelism())?;
        // A replica that already checkpointed after restoring from this location (a pod
        // restarted with the same restore setting) continues from its own newer checkpoints;
        // the location is where that lineage started, so it is also where a lineage whose newer
        // checkpoints are all proven corrupt falls back to.
        let mut fell_back = false;
        if let Some(own) = &own
            && sources.iter().all(|s| s.dir.url() != own.url())
        {
            let floor = sources
                .iter()
                .map(|s| s.manifest.created_at_ms)
                .max()
                .unwrap_or(0);
            match restore_own(&req, own, Some(floor), metrics).await? {
                Own::Restored(restored) => return Ok(*restored),
                Own::NoneNewer { fell_back: f } => fell_back = f,
            }
        }
        tracing::info!(
            location = from,
            kind,
            replicas = sources.len(),
            "restoring from an explicit location"
        );
        let (store, reused_all) = build(&req, &sources).await?;
        let own_checkpoint = match (&own, kind) {
            (Some(own), "checkpoint") => sources
                .iter()
                .find(|s| s.dir.url() == own.url())
                .map(|s| s.manifest.clone()),
            _ => None,
        };
        let source = match (fell_back, reused_all) {
            (true, _) => "fallback",
            (false, true) => "local",
            (false, false) => kind,
        };
        metrics.restored_from(source);
        return Ok(Restored {
            store,
            own_checkpoint,
            source,
        });
    }
    let Some(own) = own else {
        let store = open(&req, &db_dir)?;
        return Ok(Restored {
            store,
            own_checkpoint: None,
            source: "none",
        });
    };
    restore_latest(&req, own, metrics).await
}

/// This replica's newest usable checkpoint, falling back past missing or corrupt ones; empty
/// when it has none.
async fn restore_latest(
    req: &RestoreRequest<'_>,
    own: Location,
    metrics: &Metrics,
) -> Result<Restored, RestoreError> {
    match restore_own(req, &own, None, metrics).await? {
        Own::Restored(restored) => Ok(*restored),
        Own::NoneNewer { fell_back: true } => Err(RestoreError::AllCorrupt(own.url())),
        Own::NoneNewer { fell_back: false } => {
            tracing::info!(location = %own.url(), "no checkpoint of this replica exists and no restore location was given: starting empty");
            let db_dir = req.data_dir.join("db");
            remove_dir(&db_dir)?;
            let store = open(req, &db_dir)?;
            metrics.restored_from("empty");
            Ok(Restored {
                store,
                own_checkpoint: None,
                source: "empty",
            })
        }
    }
}

enum Own {
    Restored(Box<Restored>),
    /// No usable checkpoint newer than the floor; `fell_back`: some were proven corrupt.
    NoneNewer {
        fell_back: bool,
    },
}

/// Restores this replica's newest usable checkpoint created after `floor` (epoch ms; `None`: any),
/// newest first. A checkpoint proven bad (see [`RestoreError::is_snapshot_problem`]) falls back to
/// the previous one, with an ERROR line and the fallback metric; any other error fails.
async fn restore_own(
    req: &RestoreRequest<'_>,
    own: &Location,
    floor: Option<u64>,
    metrics: &Metrics,
) -> Result<Own, RestoreError> {
    let p = req.placement;
    let ids = list_checkpoints(own).await?;
    let mut fell_back = false;
    for id in ids.iter().rev() {
        let attempt = async {
            let manifest = read_checkpoint(own, *id).await?;
            if floor.is_some_and(|floor| manifest.created_at_ms <= floor) {
                return Ok(None);
            }
            let sources = vec![Source {
                dir: own.clone(),
                manifest,
            }];
            check_max_parallelism(&sources, p.layout.max_parallelism())?;
            let (store, reused_all) = build(req, &sources).await?;
            Ok::<_, RestoreError>(Some((store, reused_all, sources)))
        }
        .await;
        match attempt {
            Ok(Some((store, reused_all, mut sources))) => {
                let source = match (fell_back, reused_all) {
                    (true, _) => "fallback",
                    (false, true) => "local",
                    (false, false) => "checkpoint",
                };
                metrics.restored_from(source);
                if floor.is_some() {
                    tracing::info!(
                        checkpoint = id,
                        source,
                        "this replica has a checkpoint newer than the restore location: restored from its latest usable checkpoint"
                    );
                } else {
                    tracing::info!(
                        checkpoint = id,
                        source,
                        "restored from this replica's latest usable checkpoint"
                    );
                }
                return Ok(Own::Restored(Box::new(Restored {
                    store,
                    own_checkpoint: sources.pop().map(|s| s.manifest),
                    source,
                })));
            }
            Ok(None) => break,
            Err(e) if e.is_snapshot_problem() => {
                metrics.restore_fallbacks.inc();
                fell_back = true;
                let previous = if floor.is_some() {
                    "the previous checkpoint, or the restore location"
                } else {
                    "the previous checkpoint"
                };
                tracing::error!(checkpoint = id, error = %e, "checkpoint is missing files or corrupt; falling back to {previous}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Own::NoneNewer { fell_back })
}

/// Checkpoint `id`'s manifest in replica directory `dir`: a missing or unreadable one is
/// [`RestoreError::Corrupt`] (it was listed), a failed read a storage error.
async fn read_checkpoint(dir: &Location, id: u64) -> Result<Manifest, RestoreError> {
    let name = format!("{}/{MANIFEST_FILE}", checkpoint_dir(id));
    let bytes = dir.get(&name).await.map_err(|e| match e {
        StorageError::NotFound { url } => RestoreError::Corrupt {
            url,
            reason: "the manifest is missing (it was listed a moment ago)".into(),
        },
        other => other.into(),
    })?;
    parse_at(dir.url_of(&name), &bytes)
}

fn parse_at(url: String, bytes: &[u8]) -> Result<Manifest, RestoreError> {
    Manifest::parse(bytes).map_err(|e| match e {
        e @ manifest::ManifestError::Version { .. } => {
            RestoreError::UnsupportedManifest { url, source: e }
        }
        e => RestoreError::Corrupt {
            url,
            reason: e.to_string(),
        },
    })
}

fn open(req: &RestoreRequest<'_>, db_dir: &Path) -> Result<Arc<Store>, RestoreError> {
    Ok(Store::open(
        db_dir,
        req.placement,
        req.rocks,
        req.states,
        req.operator_states,
    )?)
}

fn remove_dir(dir: &Path) -> Result<(), RestoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(local(dir)(e)),
    }
}

fn check_max_parallelism(sources: &[Source], expected: u32) -> Result<(), RestoreError> {
    for s in sources {
        if s.manifest.max_parallelism != expected {
            return Err(RestoreError::MaxParallelism {
                url: s.dir.url(),
                found: s.manifest.max_parallelism,
                expected,
            });
        }
    }
    Ok(())
}

/// The replica snapshots at an explicit location: a savepoint directory, or a checkpoint set.
pub async fn find_sources(
    location: &Location,
) -> Result<(&'static str, Vec<Source>), RestoreError> {
    let mut base = location.clone();
    let mut dirs = replica_dirs(&base).await?;
    if dirs.is_empty() {
        base = location.child("checkpoints");
        dirs = replica_dirs(&base).await?;
    }
    let Some(first) = dirs.first() else {
        return Err(RestoreError::NothingThere(location.url()));
    };
    if base
        .exists(&format!(
            "{}/{MANIFEST_FILE}",
            replica_dir(first.0, first.1)
        ))
        .await?
    {
        // A savepoint: one parallelism, every replica's manifest.
        let parallelism = dirs.iter().map(|d| d.1).max().unwrap_or(1);
        let mut sources = Vec::new();
        let mut missing = Vec::new();
        for i in 0..parallelism {
            let dir = base.child(&replica_dir(i, parallelism));
            match dir.get(MANIFEST_FILE).await {
                Ok(bytes) => {
                    let manifest = parse(&dir, &bytes)?;
                    sources.push(Source { dir, manifest });
                }
                Err(e) if e.is_not_found() => missing.push(i),
                Err(e) => return Err(e.into()),
            }
        }
        if !missing.is_empty() {
            return Err(RestoreError::Incomplete {
                location: base.url(),
                parallelism,
                missing,
            });
        }
        return Ok(("savepoint", sources));
    }
    // A checkpoint set: per parallelism, the latest checkpoint of every replica; the set whose
    // newest checkpoint is the most recent wins.
    let mut by_parallelism: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (i, p) in &dirs {
        by_parallelism.entry(*p).or_default().push(*i);
    }
    let mut best: Option<(u64, Vec<Source>)> = None;
    for (p, replicas) in by_parallelism {
        if replicas.len() != p as usize {
            continue;
        }
        let mut sources = Vec::new();
        for i in 0..p {
            let dir = base.child(&replica_dir(i, p));
            let Some(id) = list_checkpoints(&dir).await?.last().copied() else {
                break;
            };
            let manifest = read_checkpoint(&dir, id).await?;
            sources.push(Source { dir, manifest });
        }
        if sources.len() != p as usize {
            continue;
        }
        let newest = sources
            .iter()
            .map(|s| s.manifest.created_at_ms)
            .max()
            .unwrap_or(0);
        if best.as_ref().is_none_or(|(t, _)| newest > *t) {
            best = Some((newest, sources));
        }
    }
    best.map(|(_, s)| ("checkpoint", s))
        .ok_or_else(|| RestoreError::NothingThere(location.url()))
}

async fn replica_dirs(base: &Location) -> Result<Vec<(u32, u32)>, RestoreError> {
    let mut dirs: Vec<(u32, u32)> = base
        .list_dirs("")
        .await?
        .iter()
        .filter_map(|d| parse_replica_dir(d))
        .filter(|(i, p)| i < p)
        .collect();
    dirs.sort_by_key(|(i, p)| (*p, *i));
    Ok(dirs)
}

fn parse(dir: &Location, bytes: &[u8]) -> Result<Manifest, RestoreError> {
    parse_at(dir.url_of(MANIFEST_FILE), bytes)
}

/// What [`download`] fetched.
struct Downloaded<'s> {
    /// The sources overlapping this replica's key groups, biggest overlap first: source `k`'s
    /// files are in `<restore dir>/src-k/`.
    overlapping: Vec<(&'s Source, u32)>,
    restore_dir: PathBuf,
    files: usize,
    reused: usize,
    total: u64,
}

/// Downloads (or reuses locally) and verifies the files of the sources overlapping this
/// replica's key groups into `<data dir>/restore/src-k/`. Every download is also kept under
/// `restore/verified/` by content (and its identity recorded in the file hash index), so that a
/// later restore that needs the same bytes reuses it without reading it again.
async fn download<'s>(
    req: &RestoreRequest<'_>,
    sources: &'s [Source],
) -> Result<Downloaded<'s>, RestoreError> {
    let mine = req.placement.range;
    let mut overlapping: Vec<(&Source, u32)> = sources
        .iter()
        .filter_map(|s| s.manifest.key_groups.intersect(&mine).map(|r| (s, r.len())))
        .collect();
    // The biggest overlap becomes the database; the others are ingested into it.
    overlapping.sort_by_key(|(s, len)| (std::cmp::Reverse(*len), s.manifest.replica_index));
    let restore_dir = req.data_dir.join("restore");
    // Files an earlier attempt (a fallback, or a process that failed to start) downloaded and
    // verified are kept, by content, so they are not fetched again; the rest is rebuilt.
    let verified = restore_dir.join(VERIFIED_DIR);
    clear_except(&restore_dir, VERIFIED_DIR)?;
    std::fs::create_dir_all(&verified).map_err(local(&verified))?;
    let jobs: Vec<(Location, FileEntry, PathBuf)> = overlapping
        .iter()
        .enumerate()
        .flat_map(|(k, (s, _))| {
            let dir = restore_dir.join(format!("src-{k}"));
            s.manifest
                .files
                .iter()
                .map(move |f| (s.dir.clone(), f.clone(), dir.join(&f.name)))
        })
        .collect();
    let fallbacks = sources_of(jobs.iter().map(|(dir, f, _)| (dir, f)), req.s3).await?;
    for k in 0..overlapping.len() {
        let dir = restore_dir.join(format!("src-{k}"));
        std::fs::create_dir_all(&dir).map_err(local(&dir))?;
    }
    let total: u64 = jobs.iter().map(|(_, f, _)| f.size).sum();
    let progress = Arc::new(Progress::default());
    let (candidates, known) = if req.local_recovery {
        (
            local_candidates(req.data_dir),
            super::file_hashes::load(req.data_dir),
        )
    } else {
        (BTreeMap::new(), Default::default())
    };
    let known = Arc::new(known);
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                tracing::info!(
                    restored_bytes = progress.bytes.load(Ordering::Relaxed),
                    total_bytes = total,
                    seconds = started.elapsed().as_secs(),
                    "restore in progress"
                );
            }
        })
    };
    let files = jobs.len();
    let fetched = stator_storage::parallel(
        jobs.into_iter()
            .zip(fallbacks)
            .map(|((dir, f, path), source)| Fetch {
                dir,
                file: f,
                source,
                path,
                candidates: candidates.clone(),
                known: known.clone(),
                verified: Some(verified.clone()),
                progress: progress.clone(),
            })
            .collect(),
        req.concurrency,
        fetch_one,
    )
    .await;
    ticker.abort();
    let reused = fetched?.iter().filter(|r| **r).count();
    tracing::info!(
        files,
        reused_locally = reused,
        bytes = total,
        "restore files verified"
    );
    Ok(Downloaded {
        overlapping,
        restore_dir,
        files,
        reused,
        total,
    })
}

/// Records the identity of every verified download, by its SHA-256 (its name), in the file
/// hash index.
fn record_verified(data_dir: &Path, verified: &Path) {
    let Ok(entries) = std::fs::read_dir(verified) else {
        return;
    };
    let downloads = entries.flatten().filter_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        (!name.starts_with('.')).then(|| (e.path(), name))
    });
    super::file_hashes::add(data_dir, downloads);
}

/// A warm standby's first restore: downloads and verifies what `req.restore_from` holds for this
/// replica, without opening a store. The restore that follows (of a savepoint taken since) finds
/// these bytes by content and downloads only what the savepoint added. Returns the bytes
/// fetched.
pub async fn prefetch(req: RestoreRequest<'_>, metrics: &Metrics) -> Result<u64, RestoreError> {
    let from = req.restore_from.unwrap_or_default();
    let location = Location::parse(from, req.s3).await?;
    let (kind, sources) = find_sources(&location).await?;
    check_max_parallelism(&sources, req.placement.layout.max_parallelism())?;
    tracing::info!(
        location = from,
        kind,
        replicas = sources.len(),
        "warming up: fetching the state to be promoted from"
    );
    let fetched = download(&req, &sources).await;
    metrics
        .warm_downloaded_bytes
        .inc_by(DOWNLOADED_BYTES.swap(0, Ordering::Relaxed));
    let d = fetched?;
    record_verified(req.data_dir, &d.restore_dir.join(VERIFIED_DIR));
    Ok(d.total)
}

/// Downloads (or reuses locally) and verifies the overlapping sources, then builds and opens the
/// store. Returns the store and whether every file was reused locally.
async fn build(
    req: &RestoreRequest<'_>,
    sources: &[Source],
) -> Result<(Arc<Store>, bool), RestoreError> {
    let mine = req.placement.range;
    let Downloaded {
        overlapping,
        restore_dir,
        files,
        reused,
        total,
    } = download(req, sources).await?;
    let phase = Instant::now();

    let db_dir = req.data_dir.join("db");
    remove_dir(&db_dir)?;
    let base_dir = restore_dir.join("src-0");
    std::fs::rename(&base_dir, &db_dir).map_err(local(&base_dir))?;
    record_placed(req.data_dir, &db_dir, &overlapping[0].0.manifest);
    let store = open(req, &db_dir)?;
    let (base, _) = overlapping[0];
    let same_shape = base.manifest.key_groups == mine
        && base.manifest.parallelism == req.placement.layout.parallelism()
        && base.manifest.replica_index == req.placement.replica;
    // Declarations of every source (a state may exist only in some).
    let mut states = Vec::new();
    let mut operator_states = Vec::new();
    for s in sources {
        states.extend(s.manifest.states.iter().filter_map(from_manifest_state));
        operator_states.extend(
            s.manifest
                .operator_states
                .iter()
                .filter_map(from_manifest_operator_state),
        );
    }
    states.dedup_by(|a, b| a.name == b.name);
    operator_states.sort_by(|a, b| a.name.cmp(&b.name));
    operator_states.dedup_by(|a, b| a.name == b.name);
    let base_range = base.manifest.key_groups;
    let store_for_build = store.clone();
    let others: Vec<PathBuf> = (1..overlapping.len())
        .map(|k| restore_dir.join(format!("src-{k}")))
        .collect();
    let scratch = restore_dir.join("ingest");
    let operator_lists =
        (!same_shape).then(|| redistribute(sources, &operator_states, req.placement));
    tokio::task::spawn_blocking(move || -> Result<(), RestoreError> {
        if !same_shape {
            store_for_build.declare(&states, &operator_states)?;
            if !(mine.start <= base_range.start && base_range.end <= mine.end) {
                store_for_build.clip_to_range()?;
                tracing::info!(ms = phase.elapsed().as_millis() as u64, "clipped to this replica's key groups");
            }
            for (k, dir) in others.iter().enumerate() {
                let copied = store_for_build.ingest_range_from(dir, &scratch.join(k.to_string()))?;
                tracing::info!(source = %dir.display(), entries = copied, ms = phase.elapsed().as_millis() as u64, "ingested a source's share");
            }
            if let Some(lists) = operator_lists {
                store_for_build.set_operator_state(&lists)?;
            }
        }
        Ok(())
    })
    .await??;
    remove_dir(&restore_dir)?;
    RESTORED_BYTES.fetch_add(total, Ordering::Relaxed);
    Ok((store, reused == files && files > 0))
}

/// Records the identity of the verified files now in the database directory (a local recovery
/// after a restart then reuses them without hashing them again).
fn record_placed(data_dir: &Path, db_dir: &Path, manifest: &Manifest) {
    let placed = manifest
        .files
        .iter()
        .map(|f| (db_dir.join(&f.name), f.sha256.clone()));
    super::file_hashes::add(data_dir, placed);
}

/// For a savepoint not yet self-contained: where each file's bytes are until it is copied (its
/// `source`, which must be in the savepoint's own store).
async fn sources_of<'a>(
    files: impl Iterator<Item = (&'a Location, &'a FileEntry)>,
    s3: &S3Options,
) -> Result<Vec<Option<(Location, String)>>, RestoreError> {
    let mut dirs = stator_storage::Directories::default();
    let mut out = Vec::new();
    for (dir, f) in files {
        let Some(url) = &f.source else {
            out.push(None);
            continue;
        };
        let (src, name) = dirs.object(url, s3).await?;
        if src.store().url("") != dir.store().url("") {
            return Err(RestoreError::Corrupt {
                url: dir.url_of(&f.object),
                reason: format!("its source {url} is not in the savepoint's own store"),
            });
        }
        out.push(Some((src, name)));
    }
    Ok(out)
}

/// Under the restore directory: downloads already verified, named by SHA-256.
const VERIFIED_DIR: &str = "verified";

/// Empties `dir` (creating it if needed) except for its entry `keep`.
fn clear_except(dir: &Path, keep: &str) -> Result<(), RestoreError> {
    std::fs::create_dir_all(dir).map_err(local(dir))?;
    for entry in std::fs::read_dir(dir).map_err(local(dir))? {
        let entry = entry.map_err(local(dir))?;
        if entry.file_name() == keep {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().map_err(local(&path))?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(local(&path))?;
    }
    Ok(())
}

/// Whether `path` holds exactly the file `f` describes.
fn holds(path: &Path, f: &FileEntry, known: &super::file_hashes::Index) -> bool {
    if !std::fs::metadata(path).is_ok_and(|m| m.len() == f.size) {
        return false;
    }
    // Hashed when this volume cut it, and unchanged since (same inode, size and time).
    if let Some(sha) = super::file_hashes::identity(path).and_then(|id| known.get(&id)) {
        return *sha == f.sha256;
    }
    stator_storage::sha256_file(path)
        .map(|(_, s)| s)
        .ok()
        .as_deref()
        == Some(f.sha256.as_str())
}

/// Puts the verified file `from` at `to`: SST files are immutable and can be shared (hard link);
/// the WAL and metadata files are copied, so the new database never writes into `from`.
fn place(from: &Path, to: &Path, f: &FileEntry) -> std::io::Result<()> {
    let immutable = f.name.ends_with(".sst") || f.name.ends_with(".blob");
    if immutable && std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map(|_| ())
}

static PARTIAL_SEQ: AtomicU64 = AtomicU64::new(0);

/// Bytes restored by this process, for the metric (read once the restore is done).
static RESTORED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Of those, the bytes downloaded (the rest were reused from the volume).
static DOWNLOADED_BYTES: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
struct Progress {
    bytes: AtomicU64,
}

/// Files in the local checkpoints (any file: they are never modified) and the SST files of the
/// old database, by name, for local recovery. Checksums decide whether one is used.
fn local_candidates(data_dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut dirs = vec![(data_dir.join("db"), true)];
    if let Ok(entries) = std::fs::read_dir(data_dir.join("checkpoints")) {
        dirs.extend(entries.flatten().map(|e| (e.path(), false)));
    }
    for (dir, sst_only) in dirs {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !sst_only || name.ends_with(".sst") || name.ends_with(".blob") {
                    out.entry(name).or_default().push(e.path());
                }
            }
        }
    }
    out
}

/// One file to restore.
struct Fetch {
    dir: Location,
    file: FileEntry,
    /// Where the bytes are while `file.object` has not been copied yet (a two-phase savepoint).
    source: Option<(Location, String)>,
    path: PathBuf,
    /// Local files by name that may hold it (local recovery).
    candidates: BTreeMap<String, Vec<PathBuf>>,
    /// Hashes of local files this volume already computed, by file identity.
    known: Arc<super::file_hashes::Index>,
    /// Where verified downloads are kept by content, if they are.
    verified: Option<PathBuf>,
    progress: Arc<Progress>,
}

/// Fetches one file into `path`, reusing a local copy or an earlier verified download whose
/// checksum matches. Returns whether it was reused.
async fn fetch_one(job: Fetch) -> Result<bool, RestoreError> {
    let Fetch {
        dir,
        file: f,
        source,
        path,
        candidates,
        known,
        verified,
        progress,
    } = job;
    let mut local_copies: Vec<PathBuf> = candidates.get(&f.name).cloned().unwrap_or_default();
    let cached = verified.as_ref().map(|v| v.join(&f.sha256));
    local_copies.extend(cached.clone());
    if !local_copies.is_empty() {
        let (target, f2, known) = (path.clone(), f.clone(), known.clone());
        let reused = tokio::task::spawn_blocking(move || {
            local_copies
                .iter()
                .any(|c| holds(c, &f2, &known) && place(c, &target, &f2).is_ok())
        })
        .await?;
        if reused {
            progress.bytes.fetch_add(f.size, Ordering::Relaxed);
            return Ok(true);
        }
    }
    let url = dir.url_of(&f.object);
    // Downloads into the verified directory first (under a name no reader takes), so that a
    // file verified once survives a failed restore.
    let download = match &verified {
        Some(v) => v.join(format!(
            ".partial-{}-{}",
            std::process::id(),
            PARTIAL_SEQ.fetch_add(1, Ordering::Relaxed)
        )),
        None => path.clone(),
    };
    let fetched = match dir.get_to_file(&f.object, &download).await {
        Err(e) if e.is_not_found() => match &source {
            Some((src, name)) => src.get_to_file(name, &download).await,
            None => Err(e),
        },
        other => other,
    };
    let (size, sha) = fetched.map_err(|e| match e {
        StorageError::NotFound { url } => RestoreError::Corrupt {
            url,
            reason: "the object is missing".into(),
        },
        StorageError::Io { path, source, .. } => RestoreError::Local { path, source },
        other => other.into(),
    })?;
    if size != f.size || sha != f.sha256 {
        let _ = std::fs::remove_file(&download);
        return Err(RestoreError::Corrupt {
            url,
            reason: format!(
                "expected {} bytes with SHA-256 {}, got {size} bytes with SHA-256 {sha}",
                f.size, f.sha256
            ),
        });
    }
    if let Some(cached) = cached {
        std::fs::rename(&download, &cached).map_err(local(&cached))?;
        place(&cached, &path, &f).map_err(local(&path))?;
    }
    progress.bytes.fetch_add(size, Ordering::Relaxed);
    DOWNLOADED_BYTES.fetch_add(size, Ordering::Relaxed);
    Ok(false)
}

/// Operator-state lists for this replica from every source replica's lists (in replica order):
/// `union` gives everyone everything; `split` deals the concatenation out in contiguous shares.
fn redistribute(
    sources: &[Source],
    decls: &[OperatorStateDecl],
    placement: Placement,
) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut ordered: Vec<&Source> = sources.iter().collect();
    ordered.sort_by_key(|s| s.manifest.replica_index);
    let p = placement.layout.parallelism() as usize;
    let j = placement.replica as usize;
    let mut out = BTreeMap::new();
    for decl in decls {
        let all: Vec<Vec<u8>> = ordered
            .iter()
            .flat_map(|s| {
                s.manifest
                    .operator_state
                    .get(&decl.name)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|h| manifest::hex_decode(h))
            .collect();
        let mine = match decl.redistribution {
            Redistribution::Union => all,
            Redistribution::Split => {
                let n = all.len();
                all[n * j / p..n * (j + 1) / p].to_vec()
            }
        };
        out.insert(decl.name.clone(), mine);
    }
    out
}

/// The key groups covered by `sources` (for checks and the inspect command).
pub fn covered(sources: &[Source]) -> BTreeSet<u32> {
    sources
        .iter()
        .flat_map(|s| {
            let KeyGroupRange { start, end } = s.manifest.key_groups;
            start..=end
        })
        .collect()
}

/// Downloads and verifies every file of `source` into `dir` (for the inspect command).
pub async fn download_verified(
    source: &Source,
    dir: &Path,
    concurrency: usize,
    s3: &S3Options,
) -> Result<u64, RestoreError> {
    std::fs::create_dir_all(dir).map_err(local(dir))?;
    let progress = Arc::new(Progress::default());
    let fallbacks = sources_of(source.manifest.files.iter().map(|f| (&source.dir, f)), s3).await?;
    let jobs = source
        .manifest
        .files
        .iter()
        .zip(fallbacks)
        .map(|(f, fallback)| Fetch {
            dir: source.dir.clone(),
            file: f.clone(),
            source: fallback,
            path: dir.join(&f.name),
            candidates: BTreeMap::new(),
            known: Default::default(),
            verified: None,
            progress: progress.clone(),
        })
        .collect();
    stator_storage::parallel(jobs, concurrency, fetch_one).await?;
    Ok(progress.bytes.load(Ordering::Relaxed))
}

/// The snapshots at `location`: one replica directory holding `manifest.json`, one checkpoint
/// directory (`.../chk-N`), a savepoint, or a checkpoint set.
pub async fn sources_at(location: &Location) -> Result<(&'static str, Vec<Source>), RestoreError> {
    let bytes = match location.get(MANIFEST_FILE).await {
        Ok(bytes) => Some(bytes),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(bytes) = bytes {
        let manifest = parse(location, &bytes)?;
        let kind = match manifest.kind {
            manifest::SnapshotKind::Checkpoint => "checkpoint",
            manifest::SnapshotKind::Savepoint => "savepoint",
        };
        // A checkpoint's objects are named relative to its replica directory.
        let dir = if kind == "checkpoint" {
            parent(location)
        } else {
            location.clone()
        };
        return Ok((kind, vec![Source { dir, manifest }]));
    }
    find_sources(location).await
}

fn parent(location: &Location) -> Location {
    let key = location.key("");
    let up = key.rsplit_once('/').map_or("", |(p, _)| p);
    Location::new(location.store().clone(), up)
}
