//! Takes checkpoints and savepoints, keeps the retained checkpoints and collects garbage.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use stator_core::manifest::{
    self, FORMAT_VERSION, FileEntry, HOLDS_DIR, Hold, MANIFEST_FILE, Manifest, SnapshotKind,
    checkpoint_dir, parse_checkpoint_dir, parse_replica_dir, replica_dir,
};
use stator_storage::{Location, S3Options, StorageError};
use tokio_util::sync::CancellationToken;

use super::{to_manifest_operator_state, to_manifest_state};
use crate::metrics::Metrics;
use crate::store::{Cut, Store, StoreError};

/// Where snapshots go and how many to keep.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// The job's base location; `None`: no checkpoints.
    pub state_location: Option<Location>,
    pub s3: S3Options,
    pub retained: usize,
    /// Parallel transfers per snapshot.
    pub concurrency: usize,
    /// The replica's volume; local snapshots live under it.
    pub data_dir: PathBuf,
    /// The job's incarnation (StreamJob UID), recorded in every manifest when known.
    pub job_id: Option<String>,
    /// Fault injection: leave savepoints referencing their checkpoint's files.
    pub skip_copies: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the local cut failed: {0}")]
    Cut(#[from] StoreError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("local file {}: {source}", path.display())]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("internal task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("no state location is configured (--state-location), so there are no checkpoints")]
    NoStateLocation,
    #[error("{0}")]
    InvalidLocation(String),
    #[error("cannot check the savepoint location: {0}")]
    Storage(StorageError),
    #[error("the checkpoint could not start; see the sidecar's log")]
    NotStarted,
    /// The location belongs to another operation (or to nobody this request can prove).
    #[error(
        "savepoint location {location} already holds {holder}; a location belongs to one operation and this request is {request}. Use a new location for a new savepoint"
    )]
    Taken {
        location: String,
        holder: String,
        request: String,
    },
}

fn describe_operation(operation: Option<&str>) -> String {
    match operation {
        Some(op) => format!("for operation {op:?}"),
        None => "without an operationId".into(),
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointInfo {
    pub id: u64,
    pub created_at: String,
    pub created_at_ms: u64,
    pub files: usize,
    pub total_bytes: u64,
    /// Bytes this checkpoint uploaded (absent for checkpoints of an earlier process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_pause_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SavepointState {
    Pending,
    Complete,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointInfo {
    pub id: String,
    pub location: String,
    /// The operation the savepoint was requested for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    pub state: SavepointState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub stop: bool,
    /// The savepoint's size.
    pub bytes: u64,
    /// What it uploaded itself (the rest it references in the last checkpoint and copies
    /// server-side); with `stop`, what was uploaded while writes were fenced.
    pub uploaded_bytes: u64,
    /// Whether every file is in the savepoint's own directory. A complete savepoint that is not
    /// self-contained yet restores from its checkpoint's files, which a hold keeps; the copies
    /// follow (made by this sidecar, or by the operator after a stop).
    pub self_contained: bool,
    /// When writes were fenced for it (a stop-with-savepoint fences after its first phase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fenced_at: Option<String>,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

#[derive(Default)]
struct State {
    /// The last confirmed checkpoint of this replica's directory.
    last: Option<Manifest>,
    retained: Vec<CheckpointInfo>,
    /// SHA-256 of immutable SST files by (name, size), so unchanged files are not re-read.
    sha_cache: HashMap<(String, u64), String>,
    savepoints: Vec<SavepointInfo>,
}

pub struct Coordinator {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    config: SnapshotConfig,
    /// `checkpoints/replica-{i}-of-{P}` under the state location.
    own: Option<Location>,
    next_id: AtomicU64,
    /// One snapshot at a time; checkpoint ids are taken while holding it.
    snapshot_lock: tokio::sync::Mutex<()>,
    trigger_lock: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    /// Bumped whenever a savepoint ends (completes or fails).
    savepoint_ended: tokio::sync::watch::Sender<u64>,
}

fn local_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Local {
        path: path.to_owned(),
        source,
    }
}

impl Coordinator {
    /// Sets up after restore: finds this replica's checkpoint sequence and the last confirmed
    /// checkpoint (`restored`, when the restore used one of this directory's checkpoints).
    pub async fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        config: SnapshotConfig,
        restored: Option<Manifest>,
    ) -> Result<Arc<Self>, StorageError> {
        let p = *store.placement();
        let own = config.state_location.as_ref().map(|l| {
            l.child("checkpoints")
                .child(&replica_dir(p.replica, p.layout.parallelism()))
        });
        remove_savepoint_staging(&config.data_dir);
        let mut state = State::default();
        let mut next_id = 1;
        if let Some(own) = &own {
            let manifests = list_checkpoints(own).await?;
            next_id = manifests.last().map_or(1, |id| id + 1);
            for id in manifests.iter().rev().take(config.retained.max(1)) {
                if let Ok(m) = read_manifest(own, *id).await {
                    state.retained.push(info_of(&m, None, None));
                }
            }
            state.retained.reverse();
            // Incremental uploads build on the newest checkpoint of this directory, when the
            // store was restored from it; otherwise the next checkpoint uploads everything.
            if let Some(m) = restored.filter(|m| manifests.contains(&m.checkpoint_id)) {
                for f in &m.files {
                    state
                        .sha_cache
                        .insert((f.name.clone(), f.size), f.sha256.clone());
                }
                metrics.latest_checkpoint_id.set(m.checkpoint_id as i64);
                state.last = Some(m);
            }
        }
        Ok(Arc::new(Self {
            store,
            metrics,
            config,
            own,
            next_id: AtomicU64::new(next_id),
            snapshot_lock: Default::default(),
            trigger_lock: Default::default(),
            state: Mutex::new(state),
            savepoint_ended: tokio::sync::watch::Sender::new(0),
        }))
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn latest(&self) -> Option<CheckpointInfo> {
        self.lock_state().retained.last().cloned()
    }

    pub fn retained(&self) -> Vec<CheckpointInfo> {
        self.lock_state().retained.clone()
    }

    pub fn has_state_location(&self) -> bool {
        self.own.is_some()
    }

    /// Starts a checkpoint now and returns its id once it has one. Ids are taken under the
    /// snapshot lock, so they follow cut order; this waits for a snapshot already under way.
    pub async fn trigger_checkpoint(self: &Arc<Self>) -> Result<u64, TriggerError> {
        if self.own.is_none() {
            return Err(TriggerError::NoStateLocation);
        }
        let (id_tx, id_rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.checkpoint(Some(id_tx)).await;
        });
        id_rx.await.map_err(|_| TriggerError::NotStarted)
    }

    /// Takes a checkpoint every `interval` until `shutdown`.
    pub async fn run_periodic(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        if self.own.is_none() || interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let _ = self.checkpoint(None).await;
        }
    }

    /// Takes the next checkpoint: cut, upload what the last confirmed checkpoint lacks, commit the
    /// manifest, then apply retention. Its id is taken once no other snapshot runs (and sent to
    /// `on_id`), so a higher id is always a later cut.
    pub async fn checkpoint(
        self: &Arc<Self>,
        on_id: Option<tokio::sync::oneshot::Sender<u64>>,
    ) -> Result<CheckpointInfo, SnapshotError> {
        self.checkpoint_flushed(on_id, false).await
    }

    /// [`Coordinator::checkpoint`]; `flush` flushes the memtables before the cut.
    async fn checkpoint_flushed(
        self: &Arc<Self>,
        on_id: Option<tokio::sync::oneshot::Sender<u64>>,
        flush: bool,
    ) -> Result<CheckpointInfo, SnapshotError> {
        let Some(own) = self.own.clone() else {
            return Err(SnapshotError::Storage(StorageError::InvalidLocation {
                location: String::new(),
                reason: "no state location".into(),
            }));
        };
        let _one = self.snapshot_lock.lock().await;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        if let Some(on_id) = on_id {
            let _ = on_id.send(id);
        }
        let started = Instant::now();
        let local = self
            .config
            .data_dir
            .join("checkpoints")
            .join(checkpoint_dir(id));
        let result = self.checkpoint_inner(id, &own, &local, flush).await;
        self.metrics
            .checkpoint_duration
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(info) => {
                self.metrics.checkpoint("completed");
                self.metrics.latest_checkpoint_id.set(id as i64);
                tracing::info!(
                    id,
                    files = info.files,
                    total_bytes = info.total_bytes,
                    uploaded_bytes = info.uploaded_bytes,
                    write_pause_ms = info.write_pause_ms,
                    seconds = started.elapsed().as_secs_f64(),
                    "checkpoint complete"
                );
                self.keep_only_local(&local);
                if let Err(e) = self.retain(&own).await {
                    tracing::warn!(error = %e, "checkpoint retention and garbage collection failed; will retry after the next checkpoint");
                }
            }
            Err(e) => {
                self.metrics.checkpoint("failed");
                tracing::warn!(id, error = %e, "checkpoint failed; serving continues and the next one will retry");
                let _ = std::fs::remove_dir_all(&local);
            }
        }
        result
    }

    async fn checkpoint_inner(
        &self,
        id: u64,
        own: &Location,
        local: &Path,
        flush: bool,
    ) -> Result<CheckpointInfo, SnapshotError> {
        let (cut, files) = self.cut_and_hash(local, flush).await?;
        let already: HashSet<String> = self
            .lock_state()
            .last
            .as_ref()
            .map(|m| m.files.iter().map(|f| f.object.clone()).collect())
            .unwrap_or_default();
        let entries: Vec<FileEntry> = files
            .iter()
            .map(|(name, size, sha)| FileEntry {
                name: name.clone(),
                object: format!("shared/{sha}-{name}"),
                size: *size,
                sha256: sha.clone(),
                source: None,
            })
            .collect();
        let to_upload: Vec<FileEntry> = entries
            .iter()
            .filter(|e| !already.contains(&e.object))
            .cloned()
            .collect();
        let uploaded = self.upload(own, local, to_upload).await?;
        self.metrics.uploaded("checkpoint", uploaded);
        let m = self.manifest(SnapshotKind::Checkpoint, id, None, &cut, entries);
        own.put_if_absent(
            &format!("{}/{MANIFEST_FILE}", checkpoint_dir(id)),
            Bytes::from(m.to_json()),
        )
        .await?;
        let info = info_of(&m, Some(uploaded), Some(cut.pause));
        let mut state = self.lock_state();
        for f in &m.files {
            if f.name.ends_with(".sst") {
                state
                    .sha_cache
                    .insert((f.name.clone(), f.size), f.sha256.clone());
            }
        }
        state.last = Some(m);
        state.retained.push(info.clone());
        Ok(info)
    }

    /// Cuts into `local` and hashes every file (SSTs from the cache when known).
    async fn cut_and_hash(
        &self,
        local: &Path,
        flush: bool,
    ) -> Result<(Cut, Vec<(String, u64, String)>), SnapshotError> {
        if local.exists() {
            std::fs::remove_dir_all(local).map_err(local_err(local))?;
        }
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(local_err(parent))?;
        }
        let store = self.store.clone();
        let dir = local.to_owned();
        let cut = tokio::task::spawn_blocking(move || store.cut_flushed(&dir, flush)).await??;
        self.metrics.write_pause.observe(cut.pause.as_secs_f64());
        let cache: HashMap<(String, u64), String> = self.lock_state().sha_cache.clone();
        let dir = local.to_owned();
        let data_dir = self.config.data_dir.clone();
        let files = tokio::task::spawn_blocking(move || -> Result<_, SnapshotError> {
            let mut out = Vec::new();
            // Hard links of the database's files: the same identities local recovery sees.
            let mut known = super::file_hashes::Index::new();
            for entry in std::fs::read_dir(&dir).map_err(local_err(&dir))? {
                let entry = entry.map_err(local_err(&dir))?;
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let size = entry.metadata().map_err(local_err(&path))?.len();
                let sha = match cache.get(&(name.clone(), size)) {
                    Some(sha) if name.ends_with(".sst") => sha.clone(),
                    _ => {
                        stator_storage::sha256_file(&path)
                            .map_err(local_err(&path))?
                            .1
                    }
                };
                if (name.ends_with(".sst") || name.ends_with(".blob"))
                    && let Some(id) = super::file_hashes::identity(&path)
                {
                    known.insert(id, sha.clone());
                }
                out.push((name, size, sha));
            }
            out.sort();
            super::file_hashes::store(&data_dir, &known);
            Ok(out)
        })
        .await??;
        Ok((cut, files))
    }

    async fn upload(
        &self,
        to: &Location,
        local: &Path,
        files: Vec<FileEntry>,
    ) -> Result<u64, SnapshotError> {
        let jobs: Vec<_> = files
            .into_iter()
            .map(|f| (to.clone(), local.join(&f.name), f))
            .collect();
        let sizes = stator_storage::parallel(jobs, self.config.concurrency, upload_one).await?;
        Ok(sizes.iter().sum())
    }

    fn manifest(
        &self,
        kind: SnapshotKind,
        id: u64,
        savepoint_id: Option<String>,
        cut: &Cut,
        files: Vec<FileEntry>,
    ) -> Manifest {
        let p = self.store.placement();
        Manifest {
            format_version: FORMAT_VERSION,
            kind,
            checkpoint_id: id,
            savepoint_id,
            operation_id: None,
            job_id: self.config.job_id.clone(),
            replica_index: p.replica,
            parallelism: p.layout.parallelism(),
            max_parallelism: p.layout.max_parallelism(),
            key_groups: p.range,
            created_at_ms: cut.created_at_ms,
            states: cut.states.iter().map(to_manifest_state).collect(),
            operator_states: cut
                .operator_states
                .iter()
                .map(to_manifest_operator_state)
                .collect(),
            operator_state: cut
                .operator_state
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.iter().map(|b| manifest::hex_encode(b)).collect(),
                    )
                })
                .collect(),
            files,
            hold: None,
        }
    }

    /// Keeps only `keep` among the local checkpoints (the newest confirmed one, for local
    /// recovery).
    fn keep_only_local(&self, keep: &Path) {
        let dir = self.config.data_dir.join("checkpoints");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path() != keep {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Drops checkpoints beyond the newest N (manifest first), then deletes shared files that no
    /// remaining manifest references. Any manifest that cannot be read stops the collection.
    async fn retain(&self, own: &Location) -> Result<(), StorageError> {
        let ids = list_checkpoints(own).await?;
        let keep = self.config.retained.max(1);
        let cut_at = ids.len().saturating_sub(keep);
        let (dropped, kept) = ids.split_at(cut_at);
        for id in dropped {
            own.delete(&format!("{}/{MANIFEST_FILE}", checkpoint_dir(*id)))
                .await?;
        }
        let mut referenced = HashSet::new();
        for id in kept {
            let m = read_manifest(own, *id).await?;
            referenced.extend(m.files.into_iter().map(|f| f.object));
        }
        if let Some(last) = &self.lock_state().last {
            referenced.extend(last.files.iter().map(|f| f.object.clone()));
        }
        // Files that savepoints reference until their server-side copies are made.
        let now = crate::store::now_ms();
        for o in own.list(&format!("{HOLDS_DIR}/")).await? {
            let bytes = own.get(&o.key).await?;
            let hold = Hold::parse(&bytes).map_err(|e| StorageError::Remote {
                op: "parse",
                url: own.url_of(&o.key),
                message: e.to_string(),
                transient: false,
            })?;
            let old = hold.created_ms > 0
                && now.saturating_sub(hold.created_ms) > ORPHAN_HOLD_AFTER.as_millis() as u64;
            if old && !savepoint_committed(&hold, &self.config.s3).await? {
                tracing::warn!(
                    hold = %own.url_of(&o.key),
                    savepoint = %hold.savepoint,
                    "deleting a hold whose savepoint never completed (its sidecar stopped between the two)"
                );
                own.delete(&o.key).await?;
                continue;
            }
            referenced.extend(hold.objects);
        }
        let garbage: Vec<String> = own
            .list("shared/")
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !referenced.contains(k))
            .collect();
        let collected = garbage.len();
        stator_storage::parallel(garbage, self.config.concurrency, |k| async move {
            own.delete(&k).await
        })
        .await?;
        self.lock_state().retained.retain(|c| kept.contains(&c.id));
        if collected > 0 || !dropped.is_empty() {
            tracing::info!(
                dropped = dropped.len(),
                files_deleted = collected,
                "checkpoint garbage collected"
            );
        }
        Ok(())
    }

    pub fn savepoints(&self) -> Vec<SavepointInfo> {
        self.lock_state().savepoints.clone()
    }

    pub fn savepoint(&self, id: &str) -> Option<SavepointInfo> {
        self.lock_state()
            .savepoints
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }

    /// `info`'s savepoint once it has ended, or as it is after `wait`.
    pub async fn wait_savepoint(&self, info: SavepointInfo, wait: Duration) -> SavepointInfo {
        let mut ended = self.savepoint_ended.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now = self.savepoint(&info.id).unwrap_or_else(|| info.clone());
            if now.state != SavepointState::Pending {
                return now;
            }
            match tokio::time::timeout_at(deadline, ended.changed()).await {
                Ok(Ok(())) => {}
                _ => return now,
            }
        }
    }

    /// Starts a savepoint into `location` for `operation`, idempotent per operation: a second
    /// trigger of the same operation returns the first one's status, also from another process
    /// once the savepoint is complete (its manifest records the operation). A location that holds
    /// (or, in this process, is taking) another operation's savepoint, a savepoint without an
    /// operation id, or anything unreadable is [`TriggerError::Taken`]. Without an operation id
    /// only a location holding nothing is accepted.
    pub async fn trigger_savepoint(
        self: &Arc<Self>,
        location: &str,
        stop: bool,
        operation: Option<&str>,
    ) -> Result<SavepointInfo, TriggerError> {
        let location = location.trim_end_matches('/').to_owned();
        let taken = |holder: String| TriggerError::Taken {
            location: location.clone(),
            holder,
            request: describe_operation(operation),
        };
        let _one = self.trigger_lock.lock().await;
        if let Some(existing) = self
            .lock_state()
            .savepoints
            .iter()
            .find(|s| s.location == location)
        {
            if existing.operation_id.as_deref() == operation {
                return Ok(existing.clone());
            }
            return Err(taken(format!(
                "the savepoint this replica took {}",
                describe_operation(existing.operation_id.as_deref())
            )));
        }
        let base = Location::parse(&location, &self.config.s3)
            .await
            .map_err(|e| TriggerError::InvalidLocation(e.to_string()))?;
        let p = self.store.placement();
        let parallelism = p.layout.parallelism();
        // Another parallelism's replica directories would make the savepoint ambiguous.
        if let Some(other) = base
            .list_dirs("")
            .await
            .map_err(TriggerError::Storage)?
            .iter()
            .filter_map(|d| parse_replica_dir(d))
            .find(|(_, q)| *q != parallelism)
        {
            return Err(taken(format!(
                "replica directories of a savepoint at parallelism {} (this job runs {parallelism})",
                other.1
            )));
        }
        let target = base.child(&replica_dir(p.replica, parallelism));
        let id = format!(
            "sp-{}",
            &stator_storage::sha256_bytes(location.as_bytes())[..16]
        );
        let now = crate::store::encoding::now_ms();
        let mut info = SavepointInfo {
            id,
            location: location.clone(),
            operation_id: operation.map(str::to_owned),
            state: SavepointState::Pending,
            reason: None,
            stop,
            bytes: 0,
            uploaded_bytes: 0,
            self_contained: false,
            fenced_at: None,
            started_at: manifest::rfc3339(now),
            completed_at: None,
        };
        // A savepoint an earlier process completed for this operation (the operator retries
        // after restarts); anything else there is not this request's.
        match target.get(MANIFEST_FILE).await {
            Ok(bytes) => {
                let m = Manifest::parse(&bytes)
                    .map_err(|e| taken(format!("an unreadable manifest ({e})")))?;
                if let Some(holder) = self.foreign(&m, operation) {
                    return Err(taken(holder));
                }
                info.state = SavepointState::Complete;
                info.bytes = m.total_bytes();
                info.self_contained = m.is_self_contained();
                info.started_at = manifest::rfc3339(m.created_at_ms);
                info.completed_at = Some(info.started_at.clone());
                if stop {
                    let store = self.store.clone();
                    let _ = tokio::task::spawn_blocking(move || store.fence()).await;
                    info.fenced_at = Some(manifest::rfc3339(crate::store::encoding::now_ms()));
                }
                self.lock_state().savepoints.push(info.clone());
                return Ok(info);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(TriggerError::Storage(e)),
        }
        self.lock_state().savepoints.push(info.clone());
        let this = self.clone();
        let sp_id = info.id.clone();
        let operation = info.operation_id.clone();
        tokio::spawn(async move { this.run_savepoint(sp_id, operation, target, stop).await });
        Ok(info)
    }

    /// Why the complete snapshot `m` at a savepoint location is not the savepoint `operation`
    /// asks for, if it is not.
    fn foreign(&self, m: &Manifest, operation: Option<&str>) -> Option<String> {
        if m.kind != SnapshotKind::Savepoint {
            return Some("a checkpoint's manifest".into());
        }
        if let (Some(theirs), Some(ours)) = (&m.job_id, &self.config.job_id)
            && theirs != ours
        {
            return Some(format!(
                "a savepoint of job {theirs:?} (this is job {ours:?})"
            ));
        }
        match (&m.operation_id, operation) {
            (Some(theirs), Some(ours)) if theirs == ours => None,
            (theirs, _) => Some(format!(
                "a complete savepoint {}",
                describe_operation(theirs.as_deref())
            )),
        }
    }

    async fn run_savepoint(
        self: Arc<Self>,
        id: String,
        operation: Option<String>,
        target: Location,
        stop: bool,
    ) {
        if stop && self.own.is_some() {
            // Phase one, while writes go on: an incremental checkpoint uploads what changed since
            // the last one, so that the fenced phase uploads only what changed since this one.
            // No compaction starts from here on (it would make new files to upload while fenced).
            let started = Instant::now();
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                store.pause_compactions(Duration::from_secs(10))
            })
            .await;
            // Flushed, so that the fenced cut's WAL holds only the writes since.
            match self.checkpoint_flushed(None, true).await {
                Ok(c) => tracing::info!(
                    savepoint = %id,
                    checkpoint = c.id,
                    uploaded_bytes = c.uploaded_bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "savepoint phase one: checkpoint taken before the fence"
                ),
                Err(e) => tracing::warn!(
                    savepoint = %id,
                    error = %e,
                    "savepoint phase one failed; the fenced phase uploads whatever the last checkpoint lacks"
                ),
            }
        }
        // A checkpoint under way finishes first, while writes still go on.
        let one = self.snapshot_lock.lock().await;
        if stop {
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.fence()).await;
            let at = manifest::rfc3339(crate::store::encoding::now_ms());
            if let Some(info) = self.lock_state().savepoints.iter_mut().find(|s| s.id == id) {
                info.fenced_at = Some(at);
            }
            tracing::info!(savepoint = %id, "writes fenced for stop-with-savepoint");
        }
        let started = Instant::now();
        let local = self.config.data_dir.join("savepoints").join(&id);
        let result = self.savepoint_inner(&id, operation, &target, &local).await;
        drop(one);
        let _ = std::fs::remove_dir_all(&local);
        let now = manifest::rfc3339(crate::store::encoding::now_ms());
        let mut copy = false;
        {
            let mut state = self.lock_state();
            let Some(info) = state.savepoints.iter_mut().find(|s| s.id == id) else {
                return;
            };
            match result {
                Ok(done) => {
                    self.metrics.savepoint("completed");
                    info.state = SavepointState::Complete;
                    info.bytes = done.bytes;
                    info.uploaded_bytes = done.uploaded;
                    info.self_contained = !done.held;
                    info.completed_at = Some(now);
                    // After a stop the pod goes away at once; the operator makes the copies.
                    copy = done.held && !stop && !self.config.skip_copies;
                    tracing::info!(
                        savepoint = %id,
                        location = %target.url(),
                        bytes = done.bytes,
                        uploaded_bytes = done.uploaded,
                        self_contained = !done.held,
                        seconds = started.elapsed().as_secs_f64(),
                        stop,
                        "savepoint complete"
                    );
                }
                Err(e) => {
                    self.metrics.savepoint("failed");
                    info.state = SavepointState::Failed;
                    info.reason = Some(e.to_string());
                    info.completed_at = Some(now);
                    tracing::warn!(savepoint = %id, location = %target.url(), error = %e, "savepoint failed");
                    if stop {
                        // Nothing was lost: the replica keeps serving and the caller may retry.
                        self.store.unfence();
                    }
                }
            }
        }
        self.savepoint_ended.send_modify(|n| *n += 1);
        if copy {
            self.make_self_contained(&id, &target).await;
        }
    }

    /// Copies a savepoint's referenced files into its own directory, server-side.
    async fn make_self_contained(&self, id: &str, target: &Location) {
        let started = Instant::now();
        let scratch = self.config.data_dir.join("savepoints");
        let _ = std::fs::create_dir_all(&scratch);
        match stator_storage::complete_savepoint(
            target,
            &self.config.s3,
            self.config.concurrency,
            &scratch,
        )
        .await
        {
            Ok(c) => {
                if let Some(info) = self.lock_state().savepoints.iter_mut().find(|s| s.id == id) {
                    info.self_contained = true;
                }
                tracing::info!(savepoint = %id, files = c.copied, bytes = c.bytes, seconds = started.elapsed().as_secs_f64(), "savepoint self-contained (server-side copies)");
            }
            Err(e) => {
                tracing::warn!(savepoint = %id, error = %e, "savepoint copies failed; it stays restorable from its checkpoint's files, which its hold keeps, and the copies are retried by whoever completes it next")
            }
        }
    }

    /// Cuts and commits a savepoint: files the last checkpoint already uploaded are referenced
    /// (kept by a hold), the rest uploaded into the savepoint's own directory.
    async fn savepoint_inner(
        &self,
        id: &str,
        operation: Option<String>,
        target: &Location,
        local: &Path,
    ) -> Result<SavepointDone, SnapshotError> {
        let (cut, files) = self.cut_and_hash(local, false).await?;
        let in_checkpoint: HashSet<String> = self
            .lock_state()
            .last
            .as_ref()
            .map(|m| m.files.iter().map(|f| f.object.clone()).collect())
            .unwrap_or_default();
        let mut entries = Vec::with_capacity(files.len());
        let mut held = Vec::new();
        for (name, size, sha256) in files {
            let shared = format!("shared/{sha256}-{name}");
            let source = match &self.own {
                Some(own) if in_checkpoint.contains(&shared) => {
                    let url = own.url_of(&shared);
                    held.push(shared);
                    Some(url)
                }
                _ => None,
            };
            entries.push(FileEntry {
                object: format!("files/{name}"),
                name,
                size,
                sha256,
                source,
            });
        }
        let upload: Vec<FileEntry> = entries
            .iter()
            .filter(|e| e.source.is_none())
            .cloned()
            .collect();
        let uploaded = self.upload(target, local, upload).await?;
        self.metrics.uploaded("savepoint", uploaded);
        let hold = match (&self.own, held.is_empty()) {
            (Some(own), false) => {
                let name = format!("{HOLDS_DIR}/{id}.json");
                let hold = Hold {
                    savepoint: target.url(),
                    objects: held,
                    created_ms: crate::store::now_ms(),
                };
                own.put(&name, Bytes::from(hold.to_json())).await?;
                Some((own.clone(), name))
            }
            _ => None,
        };
        let checkpoint_id = self.next_id.load(Ordering::SeqCst).saturating_sub(1);
        let mut m = self.manifest(
            SnapshotKind::Savepoint,
            checkpoint_id,
            Some(id.to_owned()),
            &cut,
            entries,
        );
        m.operation_id = operation;
        m.hold = hold.as_ref().map(|(own, name)| own.url_of(name));
        if let Err(e) = target
            .put_if_absent(MANIFEST_FILE, Bytes::from(m.to_json()))
            .await
        {
            if let Some((own, name)) = &hold {
                let _ = own.delete(name).await;
            }
            return Err(e.into());
        }
        Ok(SavepointDone {
            bytes: m.total_bytes(),
            uploaded,
            held: hold.is_some(),
        })
    }
}

struct SavepointDone {
    bytes: u64,
    uploaded: u64,
    /// It references checkpoint files (a hold keeps them) until the copies are made.
    held: bool,
}

/// Removes the local staging directories of savepoints (`<data-dir>/savepoints/`): one exists only
/// while a savepoint runs, so any found at start-up was left by a crash.
fn remove_savepoint_staging(data_dir: &Path) {
    let dir = data_dir.join("savepoints");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "removed savepoint staging left by an earlier process")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove savepoint staging left by an earlier process")
        }
    }
}

async fn upload_one((to, path, f): (Location, PathBuf, FileEntry)) -> Result<u64, StorageError> {
    to.put_file(&f.object, &path, Some(&f.sha256)).await
}

fn info_of(m: &Manifest, uploaded: Option<u64>, pause: Option<Duration>) -> CheckpointInfo {
    CheckpointInfo {
        id: m.checkpoint_id,
        created_at: manifest::rfc3339(m.created_at_ms),
        created_at_ms: m.created_at_ms,
        files: m.files.len(),
        total_bytes: m.total_bytes(),
        uploaded_bytes: uploaded,
        write_pause_ms: pause.map(|d| d.as_secs_f64() * 1e3),
    }
}

/// Ids of the complete checkpoints (those with a manifest) in a replica directory, ascending.
pub(crate) async fn list_checkpoints(dir: &Location) -> Result<Vec<u64>, StorageError> {
    let mut ids: Vec<u64> = dir
        .list("chk-")
        .await?
        .into_iter()
        .filter_map(|o| {
            let (d, f) = o.key.split_once('/')?;
            (f == MANIFEST_FILE)
                .then(|| parse_checkpoint_dir(d))
                .flatten()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

pub(crate) async fn read_manifest(dir: &Location, id: u64) -> Result<Manifest, StorageError> {
    let name = format!("{}/{MANIFEST_FILE}", checkpoint_dir(id));
    let bytes = dir.get(&name).await?;
    Manifest::parse(&bytes).map_err(|e| StorageError::Remote {
        op: "parse",
        url: dir.url_of(&name),
        message: e.to_string(),
        transient: false,
    })
}

#[cfg(test)]
mod tests;

/// How old a hold must be before retention asks whether its savepoint ever completed: a
/// savepoint writes its manifest right after its hold, and an operation waits minutes at most.
const ORPHAN_HOLD_AFTER: Duration = Duration::from_secs(3600);

/// Whether the savepoint a hold was written for has its manifest.
async fn savepoint_committed(hold: &Hold, s3: &S3Options) -> Result<bool, StorageError> {
    Location::parse(&hold.savepoint, s3)
        .await?
        .exists(MANIFEST_FILE)
        .await
}
