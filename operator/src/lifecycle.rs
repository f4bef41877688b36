//! The job's lifecycle: deploy, upgrade (by savepoint, last state or stateless), rescale, suspend,
//! resume, savepoints on demand and on schedule, and rollback.
//!
//! Write-ahead: an operation and each of its steps are recorded in the status before they are
//! acted on, and every step's action is idempotent (savepoints are idempotent per location, pods
//! are applied or deleted by name). One reconcile performs at most one step and records the next,
//! so an operator killed anywhere resumes the operation: no second savepoint, no lost savepoint,
//! no duplicate pods.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::controller::{Context, Error, FIELD_MANAGER, publish};
use crate::crd::{
    Deployment, Operation, OperationKind, Phase, SavepointRef, Step, StreamJob, StreamJobSpec,
    StreamJobStatus, UpgradeMode,
};
use crate::objects::{self, ADMIN_PORT, ANNOTATION_SPEC_HASH, LABEL_REPLICA, PodInputs};
use crate::sidecar_api::SidecarApi;
use crate::status;

/// Default time a savepoint may take before an upgrade is abandoned.
const DEFAULT_SAVEPOINT_TIMEOUT: i64 = 300;

/// What one reconcile of the lifecycle decided.
pub struct Outcome {
    pub action: Action,
    /// Ready replicas of the current deployment, and pods present.
    pub ready: i32,
    pub present: i32,
}

fn now() -> String {
    status::now()
}

fn seconds_since(time: &str) -> i64 {
    time.parse::<Timestamp>()
        .map(|t| Timestamp::now().as_second() - t.as_second())
        .unwrap_or(0)
}

fn soon() -> Action {
    Action::requeue(Duration::from_millis(500))
}

/// The job with `spec` in place of its own (to build a stored deployment's pods).
fn with_spec(job: &StreamJob, spec: &StreamJobSpec) -> StreamJob {
    let mut j = job.clone();
    j.spec = spec.clone();
    j
}

fn deployment_spec(job: &StreamJob, d: &Deployment) -> StreamJobSpec {
    serde_json::from_str(&d.spec).unwrap_or_else(|_| job.spec.clone())
}

fn job_base(job: &StreamJob) -> Option<String> {
    objects::state_location(job)
}

fn savepoint_location(job: &StreamJob, reason: &str, n: i64) -> Option<String> {
    job_base(job).map(|b| format!("{b}/savepoints/{reason}-{n}"))
}

/// The state location of a lineage: where its replicas checkpoint.
pub fn lineage_location(job: &StreamJob, lineage: &str) -> Option<String> {
    job_base(job).map(|b| format!("{b}/{lineage}"))
}

fn new_deployment(
    job: &StreamJob,
    ctx: &Context,
    st: &mut StreamJobStatus,
    restore_from: Option<String>,
) -> Deployment {
    st.operations += 1;
    Deployment {
        hash: objects::spec_hash(job, &ctx.default_sidecar_image),
        spec: serde_json::to_string(&job.spec).unwrap_or_default(),
        lineage: format!("l{}", st.operations),
        restore_from,
    }
}

fn begin(
    st: &mut StreamJobStatus,
    kind: OperationKind,
    step: Step,
    reason: &str,
    target: Option<Deployment>,
    savepoint: Option<String>,
) {
    let t = now();
    st.operation = Some(Operation {
        kind,
        step,
        reason: reason.to_owned(),
        target,
        savepoint,
        savepoint_complete: false,
        started_at: t.clone(),
        step_started_at: t,
    });
}

fn next_step(st: &mut StreamJobStatus, step: Step) {
    if let Some(op) = st.operation.as_mut() {
        op.step = step;
        op.step_started_at = now();
    }
}

async fn token(job: &StreamJob, ctx: &Context) -> Result<String, Error> {
    let ns = job.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = secrets.get(&objects::token_secret_name(job)).await?;
    let token = secret
        .data
        .and_then(|d| {
            d.get(objects::TOKEN_KEY)
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        })
        .unwrap_or_default();
    Ok(token)
}

async fn job_pods(job: &StreamJob, ctx: &Context) -> Result<BTreeMap<i32, Pod>, Error> {
    let ns = job.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut out = BTreeMap::new();
    for pod in pods
        .list(&ListParams::default().labels(&objects::selector(job)))
        .await?
    {
        if let Some(i) = pod.labels().get(LABEL_REPLICA).and_then(|i| i.parse().ok()) {
            out.insert(i, pod);
        }
    }
    Ok(out)
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn admin_addr(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
    Some(if ip.contains(':') {
        format!("[{ip}]:{ADMIN_PORT}")
    } else {
        format!("{ip}:{ADMIN_PORT}")
    })
}

/// Creates the pods of deployment `d` that are missing, replaces failed ones and ones of another
/// version, deletes replicas beyond its parallelism. Returns (ready, present).
async fn converge(
    job: &StreamJob,
    ctx: &Context,
    d: &Deployment,
) -> Result<(i32, i32, bool), Error> {
    let ns = job.namespace().unwrap_or_default();
    let spec = deployment_spec(job, d);
    let target = with_spec(job, &spec);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = job_pods(job, ctx).await?;
    let location = lineage_location(&target, &d.lineage);
    let inputs = PodInputs {
        default_sidecar_image: &ctx.default_sidecar_image,
        spec_hash: &d.hash,
        restore_from: d.restore_from.as_deref(),
        state_location: location.as_deref(),
    };
    let (mut ready, mut present, mut changed) = (0, 0, false);
    for (&i, pod) in &existing {
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let stale = pod.annotations().get(ANNOTATION_SPEC_HASH) != Some(&d.hash);
        let failed = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed" | "Succeeded")
        );
        if i >= spec.parallelism || stale || failed {
            if !deleting {
                let why = if i >= spec.parallelism {
                    "beyond the parallelism"
                } else if failed {
                    "failed"
                } else {
                    "of another version"
                };
                api.delete(&pod.name_any(), &DeleteParams::default())
                    .await?;
                publish(
                    ctx,
                    job,
                    EventType::Normal,
                    "DeletedPod",
                    format!("deleted pod {} ({why})", pod.name_any()),
                )
                .await;
                changed = true;
            }
            continue;
        }
        present += 1;
        if is_ready(pod) {
            ready += 1;
        }
    }
    for i in 0..spec.parallelism {
        if existing.contains_key(&i) {
            continue;
        }
        let pod = objects::pod(&target, i, &inputs);
        api.patch(
            &objects::pod_name(job, i),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&pod),
        )
        .await?;
        publish(
            ctx,
            job,
            EventType::Normal,
            "CreatedPod",
            format!(
                "created pod {} (replica {i} of {}, lineage {})",
                objects::pod_name(job, i),
                spec.parallelism,
                d.lineage
            ),
        )
        .await;
        changed = true;
    }
    Ok((ready, present, changed))
}

/// Deletes every pod of the job; true once none is left.
pub(crate) async fn stop_all(job: &StreamJob, ctx: &Context) -> Result<bool, Error> {
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = job_pods(job, ctx).await?;
    for pod in pods.values() {
        if pod.metadata.deletion_timestamp.is_none() {
            api.delete(&pod.name_any(), &DeleteParams::default())
                .await?;
        }
    }
    Ok(pods.is_empty())
}

enum SavepointProgress {
    Pending,
    Complete,
    Failed(String),
}

/// Triggers (idempotently) and polls the savepoint at `location` on every replica.
async fn savepoint_progress(
    job: &StreamJob,
    ctx: &Context,
    location: &str,
    stop: bool,
    parallelism: i32,
) -> Result<SavepointProgress, Error> {
    let pods = job_pods(job, ctx).await?;
    let api = SidecarApi::new(token(job, ctx).await?);
    let mut complete = 0;
    for i in 0..parallelism {
        let Some(pod) = pods.get(&i) else {
            return Ok(SavepointProgress::Failed(format!("replica {i} has no pod")));
        };
        let Some(addr) = admin_addr(pod) else {
            return Ok(SavepointProgress::Failed(format!(
                "replica {i}'s pod has no address"
            )));
        };
        match api.trigger_savepoint(&addr, location, stop).await {
            Ok(s) if s.is_complete() => complete += 1,
            Ok(s) if s.is_failed() => {
                return Ok(SavepointProgress::Failed(format!(
                    "replica {i}: {}",
                    s.reason.unwrap_or_else(|| "failed".into())
                )));
            }
            Ok(_) => {}
            // A sidecar that cannot be reached now may answer later: the timeout decides.
            Err(e) => {
                tracing::warn!(job = %job.name_any(), replica = i, error = %e, "savepoint status unavailable")
            }
        }
    }
    Ok(if complete == parallelism {
        SavepointProgress::Complete
    } else {
        SavepointProgress::Pending
    })
}

/// Lets the old replicas write again after an abandoned stop-with-savepoint.
async fn unfence_all(job: &StreamJob, ctx: &Context) {
    let Ok(token) = token(job, ctx).await else {
        return;
    };
    let api = SidecarApi::new(token);
    if let Ok(pods) = job_pods(job, ctx).await {
        for pod in pods.values() {
            if let Some(addr) = admin_addr(pod)
                && let Err(e) = api.unfence(&addr).await
            {
                tracing::warn!(pod = %pod.name_any(), error = %e, "could not unfence a replica");
            }
        }
    }
}

async fn record_savepoint(
    job: &StreamJob,
    ctx: &Context,
    st: &mut StreamJobStatus,
    location: &str,
    reason: &str,
    parallelism: i32,
) {
    let r = SavepointRef {
        location: location.to_owned(),
        time: now(),
        reason: reason.to_owned(),
        parallelism,
    };
    st.last_savepoint = Some(r.clone());
    if !st.savepoints.iter().any(|s| s.location == location) {
        st.savepoints.push(r);
    }
    let dropped = retain_history(job, st);
    dispose(job, ctx, dropped).await;
}

/// How the operator reaches the job's storage: the job's S3 settings and its credentials Secret.
pub async fn storage_options(
    job: &StreamJob,
    ctx: &Context,
) -> Result<stator_storage::S3Options, String> {
    let mut options = stator_storage::S3Options::default();
    if let Some(s3) = &job.spec.state.s3 {
        options.endpoint = s3.endpoint.clone();
        if let Some(r) = &s3.region {
            options.region = r.clone();
        }
        options.path_style = s3.path_style;
    }
    if let Some(name) = &job.spec.state.credentials_secret {
        let secrets: Api<Secret> =
            Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
        let secret = secrets
            .get(name)
            .await
            .map_err(|e| format!("cannot read Secret {name}: {e}"))?;
        let data = secret.data.unwrap_or_default();
        let field = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
                .ok_or_else(|| format!("Secret {name} has no {k}"))
        };
        options.static_credentials = Some(stator_storage::StaticCredentials {
            access_key_id: field("AWS_ACCESS_KEY_ID")?,
            secret_access_key: field("AWS_SECRET_ACCESS_KEY")?,
        });
    }
    Ok(options)
}

/// Deletes everything the job stored (checkpoints of every lineage and savepoints). Returns the
/// number of objects deleted.
pub async fn delete_stored_state(job: &StreamJob, ctx: &Context) -> Result<usize, String> {
    let Some(base) = job_base(job) else {
        return Ok(0);
    };
    let options = storage_options(job, ctx).await?;
    let location = stator_storage::Location::parse(&base, &options)
        .await
        .map_err(|e| e.to_string())?;
    location
        .delete_all(8)
        .await
        .map_err(|e| format!("deleting {base}: {e}"))
}

/// Deletes savepoints dropped from the history from storage. A failure is reported and left: the
/// savepoint stays in storage, out of the history.
async fn dispose(job: &StreamJob, ctx: &Context, dropped: Vec<SavepointRef>) {
    if dropped.is_empty() {
        return;
    }
    let options = match storage_options(job, ctx).await {
        Ok(o) => o,
        Err(e) => {
            publish(ctx, job, EventType::Warning, "SavepointDisposalFailed", e).await;
            return;
        }
    };
    for s in dropped {
        let result = match stator_storage::Location::parse(&s.location, &options).await {
            Ok(location) => location.delete_all(4).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(n) => {
                let note = format!(
                    "deleted savepoint {} ({n} objects): dropped from the history",
                    s.location
                );
                publish(ctx, job, EventType::Normal, "SavepointDisposed", note).await
            }
            Err(e) => {
                let note = format!("could not delete savepoint {}: {e}", s.location);
                publish(
                    ctx,
                    job,
                    EventType::Warning,
                    "SavepointDisposalFailed",
                    note,
                )
                .await
            }
        }
    }
}

/// Applies the history's retention by count and age; never drops the savepoint the running
/// version restored from, nor the latest upgrade savepoint. Returns the dropped ones.
pub fn retain_history(job: &StreamJob, st: &mut StreamJobStatus) -> Vec<SavepointRef> {
    let settings = job.spec.savepoint.clone().unwrap_or_default();
    let max_count = settings.history_count.unwrap_or(10).max(1) as usize;
    let max_age = settings.history_max_age_seconds;
    let protected: Vec<String> = [
        st.deployment.as_ref().and_then(|d| d.restore_from.clone()),
        st.stable.as_ref().and_then(|d| d.restore_from.clone()),
        st.savepoints
            .iter()
            .rev()
            .find(|s| matches!(s.reason.as_str(), "upgrade" | "rescale" | "suspend"))
            .map(|s| s.location.clone()),
        st.operation.as_ref().and_then(|o| o.savepoint.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    let n = st.savepoints.len();
    for (i, s) in st.savepoints.drain(..).enumerate() {
        let too_many = n - i > max_count;
        let too_old = max_age.is_some_and(|a| seconds_since(&s.time) > a);
        if (too_many || too_old) && !protected.contains(&s.location) {
            dropped.push(s);
        } else {
            keep.push(s);
        }
    }
    st.savepoints = keep;
    dropped
}

/// Runs the lifecycle one step. `st` is the status to write afterwards.
pub async fn reconcile(
    job: &StreamJob,
    ctx: &Context,
    st: &mut StreamJobStatus,
) -> Result<Outcome, Error> {
    let hash = objects::spec_hash(job, &ctx.default_sidecar_image);
    let has_location = job.spec.state.location.is_some();

    // An operation in flight continues, whatever the spec says now.
    if let Some(op) = st.operation.clone() {
        return drive(job, ctx, st, op).await;
    }

    // Suspend: stop with a savepoint (when there is storage for one) and remove the pods.
    if job.spec.suspend {
        if st.phase == Some(Phase::Suspended) {
            stop_all(job, ctx).await?;
            return Ok(Outcome {
                action: Action::requeue(Duration::from_secs(60)),
                ready: 0,
                present: 0,
            });
        }
        let pods = job_pods(job, ctx).await?;
        st.operations += 1;
        let n = st.operations;
        if pods.is_empty() || !has_location {
            begin(
                st,
                OperationKind::Suspend,
                Step::Stopping,
                "suspend",
                None,
                None,
            );
            if has_location.then_some(()).is_none() && !pods.is_empty() {
                publish(ctx, job, EventType::Warning, "SuspendWithoutSavepoint", "state.location is not set: suspending without a savepoint; only state on persistent volumes survives".into()).await;
            }
        } else {
            begin(
                st,
                OperationKind::Suspend,
                Step::Savepointing,
                "suspend",
                None,
                savepoint_location(job, "suspend", n),
            );
            publish(
                ctx,
                job,
                EventType::Normal,
                "Suspending",
                "stopping the job with a savepoint".into(),
            )
            .await;
        }
        return Ok(Outcome {
            action: soon(),
            ready: 0,
            present: pods.len() as i32,
        });
    }

    // Resume from the suspend savepoint.
    if st.phase == Some(Phase::Suspended) {
        let restore = st
            .savepoints
            .iter()
            .rev()
            .find(|s| s.reason == "suspend")
            .map(|s| s.location.clone())
            .or_else(|| st.deployment.as_ref().and_then(|d| d.restore_from.clone()));
        let target = new_deployment(job, ctx, st, restore.clone());
        begin(
            st,
            OperationKind::Resume,
            Step::Starting,
            "resume",
            Some(target),
            restore.clone(),
        );
        publish(
            ctx,
            job,
            EventType::Normal,
            "Resuming",
            format!(
                "resuming from {}",
                restore.as_deref().unwrap_or("empty state")
            ),
        )
        .await;
        return Ok(Outcome {
            action: soon(),
            ready: 0,
            present: 0,
        });
    }

    let Some(deployed) = st.deployment.clone() else {
        // First deployment.
        let target = new_deployment(job, ctx, st, job.spec.initial_savepoint.clone());
        st.deployment = Some(target.clone());
        let (ready, present, _) = converge(job, ctx, &target).await?;
        return Ok(Outcome {
            action: soon(),
            ready,
            present,
        });
    };

    // A changed spec: upgrade (or rescale), unless this very spec was rolled back.
    if deployed.hash != hash && st.failed_spec_hash.as_deref() != Some(&hash) {
        let old_spec = deployment_spec(job, &deployed);
        let rescale = old_spec.parallelism != job.spec.parallelism;
        let reason = if rescale { "rescale" } else { "upgrade" };
        let mode = if has_location {
            job.spec.upgrade_mode
        } else {
            UpgradeMode::LastState
        };
        st.operations += 1;
        let n = st.operations;
        // Per mode: the new version's lineage, where it restores from, the first step, and the
        // savepoint the operation takes.
        let (lineage, restore_from, step, savepoint) = match mode {
            UpgradeMode::Savepoint => {
                let sp = savepoint_location(job, reason, n);
                (format!("l{n}"), sp.clone(), Step::Savepointing, sp)
            }
            UpgradeMode::LastState => {
                // Each replica restores from the old lineage's latest checkpoints; without remote
                // storage, from the data on its volume (same lineage).
                if !has_location && rescale {
                    publish(ctx, job, EventType::Warning, "RescaleWithoutStorage", "state.location is not set: state cannot be redistributed to the new parallelism".into()).await;
                }
                match lineage_location(job, &deployed.lineage) {
                    Some(old) => (format!("l{n}"), Some(old), Step::Stopping, None),
                    None => (deployed.lineage.clone(), None, Step::Stopping, None),
                }
            }
            UpgradeMode::Stateless => (format!("l{n}"), None, Step::Stopping, None),
        };
        let target = Deployment {
            hash: hash.clone(),
            spec: serde_json::to_string(&job.spec).unwrap_or_default(),
            lineage,
            restore_from,
        };
        begin(
            st,
            OperationKind::Upgrade,
            step,
            reason,
            Some(target),
            savepoint,
        );
        publish(
            ctx,
            job,
            EventType::Normal,
            "UpgradeStarted",
            format!("{reason} to spec {hash} ({mode:?} mode)"),
        )
        .await;
        return Ok(Outcome {
            action: soon(),
            ready: 0,
            present: 0,
        });
    }

    // Steady state: keep the deployment's pods, recreate failed or vanished ones.
    let (ready, present, changed) = converge(job, ctx, &deployed).await?;
    let p = deployment_spec(job, &deployed).parallelism;
    if ready == p && !changed {
        if st.stable.as_ref() != Some(&deployed) && st.phase != Some(Phase::RolledBack) {
            st.stable = Some(deployed.clone());
        }
        // Retention by age applies even when no new savepoint comes.
        let dropped = retain_history(job, st);
        dispose(job, ctx, dropped).await;
        // Savepoints on demand and on schedule.
        let settings = job.spec.savepoint.clone().unwrap_or_default();
        let nonce = settings.trigger_nonce;
        let periodic_due = settings
            .periodic_interval_seconds
            .filter(|s| *s > 0)
            .is_some_and(|interval| {
                st.savepoints
                    .iter()
                    .rev()
                    .find(|s| s.reason == "periodic")
                    .map(|s| seconds_since(&s.time))
                    .unwrap_or(i64::MAX)
                    >= interval
                    && st
                        .last_savepoint
                        .as_ref()
                        .is_none_or(|s| seconds_since(&s.time) >= interval)
            });
        let triggered = has_location && nonce.is_some() && nonce != st.last_trigger_nonce;
        if triggered {
            st.last_trigger_nonce = nonce;
        }
        if triggered || (has_location && periodic_due) {
            let reason = if triggered { "trigger" } else { "periodic" };
            st.operations += 1;
            let location = savepoint_location(job, reason, st.operations);
            begin(
                st,
                OperationKind::Savepoint,
                Step::Savepointing,
                reason,
                None,
                location,
            );
            return Ok(Outcome {
                action: soon(),
                ready,
                present,
            });
        }
        let next = settings
            .periodic_interval_seconds
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s.clamp(1, 60) as u64))
            .unwrap_or(Duration::from_secs(60));
        return Ok(Outcome {
            action: Action::requeue(next),
            ready,
            present,
        });
    }
    Ok(Outcome {
        action: Action::requeue(Duration::from_secs(2)),
        ready,
        present,
    })
}

/// One step of the operation in flight.
async fn drive(
    job: &StreamJob,
    ctx: &Context,
    st: &mut StreamJobStatus,
    op: Operation,
) -> Result<Outcome, Error> {
    let idle = |action| {
        Ok(Outcome {
            action,
            ready: 0,
            present: 0,
        })
    };
    let deployed_p = st
        .deployment
        .as_ref()
        .map(|d| deployment_spec(job, d).parallelism)
        .unwrap_or(job.spec.parallelism);
    match op.step {
        Step::Savepointing => {
            let Some(location) = op.savepoint.clone() else {
                next_step(st, Step::Stopping);
                return idle(soon());
            };
            let stop = op.kind != OperationKind::Savepoint;
            let timeout = job
                .spec
                .savepoint
                .as_ref()
                .and_then(|s| s.timeout_seconds)
                .unwrap_or(DEFAULT_SAVEPOINT_TIMEOUT);
            let progress = savepoint_progress(job, ctx, &location, stop, deployed_p).await?;
            let failure = match progress {
                SavepointProgress::Complete => {
                    record_savepoint(job, ctx, st, &location, &op.reason, deployed_p).await;
                    ctx.metrics.savepoint(&op.reason, true);
                    publish(
                        ctx,
                        job,
                        EventType::Normal,
                        "SavepointComplete",
                        format!("savepoint for {} complete at {location}", op.reason),
                    )
                    .await;
                    if op.kind == OperationKind::Savepoint {
                        st.operation = None;
                    } else {
                        if let Some(o) = st.operation.as_mut() {
                            o.savepoint_complete = true;
                        }
                        next_step(st, Step::Stopping);
                    }
                    return idle(soon());
                }
                SavepointProgress::Failed(why) => Some(why),
                SavepointProgress::Pending if seconds_since(&op.step_started_at) > timeout => {
                    Some(format!("not complete after {timeout} s"))
                }
                SavepointProgress::Pending => None,
            };
            let Some(why) = failure else {
                return idle(Action::requeue(Duration::from_secs(1)));
            };
            // Abandon: the old version keeps running, nothing is lost (writes were only fenced).
            if stop {
                unfence_all(job, ctx).await;
            }
            ctx.metrics.savepoint(&op.reason, false);
            let message = format!(
                "savepoint for {} failed: {why}; the running version continues",
                op.reason
            );
            publish(
                ctx,
                job,
                EventType::Warning,
                "SavepointFailed",
                message.clone(),
            )
            .await;
            status::set(
                &mut st.conditions,
                status::DEGRADED,
                true,
                "SavepointFailed",
                message,
                job.metadata.generation,
            );
            if let Some(target) = &op.target {
                // Not retried until the spec changes (or restartNonce does).
                st.failed_spec_hash = Some(target.hash.clone());
            }
            st.operation = None;
            idle(Action::requeue(Duration::from_secs(5)))
        }
        Step::Stopping => {
            if !stop_all(job, ctx).await? {
                return idle(Action::requeue(Duration::from_secs(1)));
            }
            match op.kind {
                OperationKind::Suspend => {
                    if let (Some(d), Some(sp)) = (
                        st.deployment.as_mut(),
                        op.savepoint.clone().filter(|_| op.savepoint_complete),
                    ) {
                        d.restore_from = Some(sp);
                    }
                    st.operation = None;
                    st.phase = Some(Phase::Suspended);
                    ctx.metrics.operation(
                        "suspend",
                        true,
                        seconds_since(&op.started_at) as f64,
                        None,
                    );
                    publish(
                        ctx,
                        job,
                        EventType::Normal,
                        "Suspended",
                        "all replicas stopped".into(),
                    )
                    .await;
                    idle(Action::requeue(Duration::from_secs(60)))
                }
                _ => {
                    next_step(st, Step::Starting);
                    idle(soon())
                }
            }
        }
        Step::Starting => {
            let Some(target) = op.target.clone() else {
                st.operation = None;
                return idle(soon());
            };
            // From here on the new version is the deployment: recreated pods belong to it.
            st.deployment = Some(target.clone());
            let (ready, present, _) = converge(job, ctx, &target).await?;
            next_step(st, Step::WaitingReady);
            Ok(Outcome {
                action: Action::requeue(Duration::from_secs(1)),
                ready,
                present,
            })
        }
        Step::WaitingReady => {
            let Some(target) = op.target.clone() else {
                st.operation = None;
                return idle(soon());
            };
            let (ready, present, _) = converge(job, ctx, &target).await?;
            let p = deployment_spec(job, &target).parallelism;
            if ready == p {
                let took = seconds_since(&op.started_at) as f64;
                st.operation = None;
                st.restored_from = target.restore_from.clone();
                if op.kind == OperationKind::Rollback {
                    st.phase = Some(Phase::RolledBack);
                    publish(
                        ctx,
                        job,
                        EventType::Warning,
                        "RolledBack",
                        format!(
                            "rolled back to spec {} after the new version did not become ready",
                            target.hash
                        ),
                    )
                    .await;
                } else {
                    // A rolled-back spec stays marked until the spec changes; any other completed
                    // operation clears the mark.
                    st.failed_spec_hash = None;
                    st.stable = Some(target.clone());
                    publish(
                        ctx,
                        job,
                        EventType::Normal,
                        "UpgradeComplete",
                        format!(
                            "{} complete: {p} replicas ready at spec {} in {took:.0} s",
                            op.reason, target.hash
                        ),
                    )
                    .await;
                }
                let pause = op.savepoint.as_ref().map(|_| took);
                ctx.metrics.operation(&op.reason, true, took, pause);
                return Ok(Outcome {
                    action: soon(),
                    ready,
                    present,
                });
            }
            let timeout = job
                .spec
                .rollback
                .as_ref()
                .map(|r| r.readiness_timeout_seconds)
                .unwrap_or(300);
            let can_roll_back =
                job.rollback_enabled() && op.kind == OperationKind::Upgrade && st.stable.is_some();
            if seconds_since(&op.step_started_at) > timeout && can_roll_back {
                let stable = st.stable.clone().unwrap_or_default();
                st.failed_spec_hash = Some(target.hash.clone());
                ctx.metrics.operation(
                    &op.reason,
                    false,
                    seconds_since(&op.started_at) as f64,
                    None,
                );
                st.operations += 1;
                // Back to the stable spec, restored from the same upgrade savepoint (or, without
                // one, from the stable version's own checkpoints).
                let restore = op
                    .savepoint
                    .clone()
                    .filter(|_| op.savepoint_complete)
                    .or_else(|| lineage_location(job, &stable.lineage));
                let back = Deployment {
                    lineage: format!("l{}", st.operations),
                    restore_from: restore,
                    ..stable
                };
                let message = format!(
                    "{p} replicas of spec {} not ready after {timeout} s: rolling back to spec {}",
                    target.hash, back.hash
                );
                publish(ctx, job, EventType::Warning, "RollingBack", message.clone()).await;
                status::set(
                    &mut st.conditions,
                    status::DEGRADED,
                    true,
                    "RollingBack",
                    message,
                    job.metadata.generation,
                );
                begin(
                    st,
                    OperationKind::Rollback,
                    Step::Stopping,
                    "rollback",
                    Some(back),
                    op.savepoint.clone(),
                );
                if let Some(o) = st.operation.as_mut() {
                    o.savepoint_complete = op.savepoint_complete;
                }
                return Ok(Outcome {
                    action: soon(),
                    ready,
                    present,
                });
            }
            Ok(Outcome {
                action: Action::requeue(Duration::from_secs(1)),
                ready,
                present,
            })
        }
    }
}
