//! The executor: observe, plan, persist, act. The only part of the lifecycle that does I/O.
//!
//! Observations come from the watch caches (pods, claims), the sidecars' answers to the effects
//! just performed, and storage when the planner asks ([`Need`]). The planned status is written
//! with a full replace under the resourceVersion that was read, before any of the plan's effects
//! are performed; a writer holding a stale view gets 409 and retries from the newer object.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use rand::Rng;

use super::layout;
use super::model::{
    Checkpoints, Effect, Need, Observed, Outcome, PodPhase, PodView, SavepointAnswer, Stray, Wake,
};
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{Deployment, Slot, Step, StreamJob, StreamJobStatus};
use crate::objects::{self, ANNOTATION_SPEC_HASH, LABEL_REPLICA, LABEL_SLOT, PodInputs};
use crate::sidecar_api::{ApiError, SidecarApi};
use crate::stored::{self, StoredError};

/// Plans (and steps) chained within one reconcile at most.
const MAX_CHAIN: usize = 12;
/// The safety requeue of a job at rest (watch events drive everything else).
const IDLE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the StreamJob changed since it was read; planning again from the newer version")]
    Conflict,
    #[error("cannot observe the checkpoints the plan needs: {0}")]
    Checkpoints(#[source] StoredError),
    #[error("the admin token Secret {name} holds no token")]
    NoToken { name: String },
    #[error("the StreamJob has no namespace")]
    NoNamespace,
}

impl Error {
    /// Whether retrying may help (with backoff); otherwise the job waits for a change.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(e) => e.code == 409 || e.code == 429 || e.code >= 500,
                _ => true,
            },
            Error::Conflict => true,
            Error::Checkpoints(e) => e.is_transient(),
            Error::NoToken { .. } | Error::NoNamespace => false,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Conflict => "conflict",
            Error::Checkpoints(_) => "storage",
            Error::NoToken { .. } => "token",
            Error::NoNamespace => "no_namespace",
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// Runs the lifecycle for `job` until it has to wait; returns when to reconcile again.
pub async fn run(job: &StreamJob, ctx: &Context, problems: Vec<String>) -> Result<Action, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &ns);
    let mut current = job.clone();
    let mut status = job.status.clone().unwrap_or_default();
    let mut outcomes = Vec::new();
    let mut checkpoints: Option<Checkpoints> = None;
    let mut overlay = Overlay::default();
    let missing = missing_references(ctx, &current).await?;
    let mut replica_checkpoints = ask_checkpoints(ctx, &current).await;
    for _ in 0..MAX_CHAIN {
        let (mut pods, mut standby, strays) =
            split_views(overlay.apply(pod_views(ctx, &current)), &status);
        let live = status.deployed_slot();
        if asks_readiness(ctx, &current, &status) {
            observe_serving(ctx, &current, live, &mut pods).await;
        }
        if let Some(op) = &status.operation
            && op.step == Step::Warming
            && let Some(slot) = op.standby_slot()
        {
            observe_warm(ctx, &current, slot, &mut standby).await;
        }
        let observed = Observed {
            pods,
            standby,
            strays,
            claims: claim_indices(ctx, &current),
            spec_problems: problems.clone(),
            missing: missing.clone(),
            outcomes: std::mem::take(&mut outcomes),
            checkpoints: checkpoints.clone(),
            replica_checkpoints: replica_checkpoints.take(),
        };
        let plan = super::plan(
            &current,
            &status,
            &observed,
            Timestamp::now(),
            &ctx.settings,
        );
        if let Some(Need::Checkpoints {
            location,
            parallelism,
        }) = plan.need
        {
            if checkpoints
                .as_ref()
                .is_some_and(|c| c.location == location && c.parallelism == parallelism)
            {
                // Already observed: the planner cannot ask twice for the same thing.
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            let options = stored::options(&ctx.client, &current)
                .await
                .map_err(Error::Checkpoints)?;
            checkpoints = Some(
                stored::latest_checkpoints(&location, parallelism, &options)
                    .await
                    .map_err(Error::Checkpoints)?,
            );
            outcomes = observed.outcomes;
            continue;
        }
        if plan.status != status || current.status.is_none() {
            current = persist(&api, &current, plan.status.clone()).await?;
            status = plan.status.clone();
        }
        outcomes = perform(&current, &status, ctx, &plan.effects, &mut overlay).await?;
        if !outcomes.is_empty() {
            // Answers to these effects: plan again with them.
            continue;
        }
        match plan.wake {
            Wake::Now => continue,
            Wake::After(d) => return Ok(Action::requeue(jitter(d))),
            Wake::Idle => return Ok(Action::requeue(jitter(at_rest_every(&current)))),
        }
    }
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// Long waits get up to 10% of jitter, so that many jobs do not wake in the same second.
fn jitter(d: Duration) -> Duration {
    if d < Duration::from_secs(10) {
        return d;
    }
    d.mul_f64(rand::rng().random_range(0.9..1.1))
}

async fn persist(
    api: &Api<StreamJob>,
    current: &StreamJob,
    status: StreamJobStatus,
) -> Result<StreamJob, Error> {
    let mut object = current.clone();
    object.status = Some(status);
    object.metadata.managed_fields = None;
    match api
        .replace_status(&current.name_any(), &PostParams::default(), &object)
        .await
    {
        Ok(written) => Ok(StreamJob {
            spec: current.spec.clone(),
            ..written
        }),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Conflict),
        Err(e) => Err(kube_err("writing the StreamJob's status")(e)),
    }
}

/// How often the replicas' latest checkpoints are asked for during an operation.
const CHECKPOINTS_DURING_OPERATIONS: Duration = Duration::from_secs(2);
/// The least time between two asks of a job at rest, however short its checkpoint interval.
const CHECKPOINTS_AT_REST_MIN: Duration = Duration::from_secs(10);

/// How often a job at rest is reconciled, and its replicas' latest checkpoints asked for: every
/// checkpoint interval (at least [`CHECKPOINTS_AT_REST_MIN`], at most [`IDLE`]), so that the
/// status lags the replicas by about one interval; [`IDLE`] for a job that takes no checkpoints.
fn at_rest_every(job: &StreamJob) -> Duration {
    let state = &job.spec.state;
    if state.location.is_none() || state.checkpoint_interval_seconds <= 0 {
        return IDLE;
    }
    Duration::from_secs(state.checkpoint_interval_seconds as u64)
        .clamp(CHECKPOINTS_AT_REST_MIN, IDLE)
}

/// Each running replica's latest checkpoint, asked of its sidecar, when it is time to ask again.
async fn ask_checkpoints(
    ctx: &Context,
    job: &StreamJob,
) -> Option<BTreeMap<i32, Option<super::model::CheckpointInfo>>> {
    let busy = job.status.as_ref().is_some_and(|s| s.operation.is_some());
    let every = if busy {
        CHECKPOINTS_DURING_OPERATIONS
    } else {
        // A little early is on time: the requeue that brings this reconcile has 10% of jitter.
        at_rest_every(job).mul_f64(0.85)
    };
    let key = Context::key(job);
    if ctx
        .checkpoints_asked
        .lock()
        .ok()?
        .get(&key)
        .is_some_and(|t| t.elapsed() < every)
    {
        return None;
    }
    let live = job.status.as_ref().and_then(StreamJobStatus::deployed_slot);
    let addrs: Vec<(i32, String)> = ctx
        .pods(job)
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| slot_of(p) == live)
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| Some((replica(p)?, admin_addr(p)?)))
        .collect();
    if addrs.is_empty() {
        return None;
    }
    if let Ok(mut asked) = ctx.checkpoints_asked.lock() {
        asked.insert(key, std::time::Instant::now());
    }
    let api = SidecarApi::new(token(job, ctx).await.ok()?);
    let answers =
        futures::future::join_all(addrs.iter().map(|(_, a)| api.latest_checkpoint(a))).await;
    let mut out = BTreeMap::new();
    for ((i, _), answer) in addrs.iter().zip(answers) {
        match answer {
            Ok(Some((id, at))) => {
                if let Ok(created_at) = at.parse() {
                    out.insert(*i, Some(super::model::CheckpointInfo { id, created_at }));
                }
            }
            Ok(None) => {
                out.insert(*i, None);
            }
            // Unreachable now: what was shown stays.
            Err(_) => {}
        }
    }
    Some(out)
}

/// How long after an operation the replicas' readiness is still asked of their sidecars: until
/// the kubelet's readiness probe has caught up (its period is 2 s), so the phase does not flap.
const READINESS_AFTERGLOW: Duration = Duration::from_secs(10);

/// Whether a replica's readiness is asked of its sidecar rather than taken from its Ready
/// condition: while an operation waits for its new replicas, and shortly after. Elsewhere the
/// kubelet's probes decide (an app that exits at once must not count as ready for a moment).
fn asks_readiness(ctx: &Context, job: &StreamJob, st: &StreamJobStatus) -> bool {
    if st
        .operation
        .as_ref()
        .is_some_and(|o| o.step == crate::crd::Step::WaitingReady)
    {
        return true;
    }
    ctx.operation_ended
        .lock()
        .ok()
        .and_then(|ended| ended.get(&Context::key(job)).copied())
        .is_some_and(|t| t.elapsed() < READINESS_AFTERGLOW)
}

/// Marks as ready the running pods that are not Ready but serve: every app container is ready
/// and the sidecar answers its readiness check now (asked directly, instead of waiting for the
/// kubelet's next probe). A sidecar that cannot be asked is simply not known to serve.
async fn observe_serving(
    ctx: &Context,
    job: &StreamJob,
    live: Option<Slot>,
    views: &mut BTreeMap<i32, PodView>,
) {
    let wanted = |pod: &Pod, v: &PodView| !v.ready && apps_ready(pod);
    let ask = async |api: &SidecarApi, addr: &str| api.is_ready(addr).await;
    mark_ready(ctx, job, live, views, wanted, ask).await;
}

/// Marks as ready (warm) the running standby pods whose sidecar says it restored the bulk of the
/// state and waits to be promoted (or was).
async fn observe_warm(
    ctx: &Context,
    job: &StreamJob,
    slot: Slot,
    views: &mut BTreeMap<i32, PodView>,
) {
    let ask =
        async |api: &SidecarApi, addr: &str| api.standby(addr).await.is_ok_and(|s| s.is_warm());
    mark_ready(ctx, job, Some(slot), views, |_, _| true, ask).await;
}

/// Sets `ready` to the sidecar's answer to `ask` for the running pods of set `slot` that are not
/// stopping and that `wanted` selects.
async fn mark_ready(
    ctx: &Context,
    job: &StreamJob,
    slot: Option<Slot>,
    views: &mut BTreeMap<i32, PodView>,
    wanted: impl Fn(&Pod, &PodView) -> bool,
    ask: impl AsyncFn(&SidecarApi, &str) -> bool,
) {
    let candidates: Vec<(i32, String)> = ctx
        .pods(job)
        .iter()
        .filter(|pod| slot_of(pod) == slot)
        .filter_map(|pod| {
            let i = replica(pod)?;
            let v = views.get(&i)?;
            if v.deleting || v.phase != PodPhase::Running || !wanted(pod, v) {
                return None;
            }
            Some((i, admin_addr(pod)?))
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    let Ok(token) = token(job, ctx).await else {
        return;
    };
    let api = SidecarApi::new(token);
    let answers =
        futures::future::join_all(candidates.iter().map(|(_, addr)| ask(&api, addr))).await;
    for ((i, _), ready) in candidates.iter().zip(answers) {
        if let Some(v) = views.get_mut(i) {
            v.ready = ready;
            if ready {
                v.problem = None;
            }
        }
    }
}

/// Whether every app container (not the sidecar, an init container) reports ready. The watch
/// cache keeps no pod spec, so the statuses are what counts: the kubelet lists every container.
fn apps_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

fn replica(pod: &Pod) -> Option<i32> {
    pod.labels().get(LABEL_REPLICA)?.parse().ok()
}

/// The pod set a pod belongs to (absent: the first, `<job>-<index>`).
fn slot_of(pod: &Pod) -> Option<Slot> {
    Slot::parse(pod.labels().get(LABEL_SLOT)?)
}

/// Every pod of a job, by set and replica index.
pub(super) type Views = BTreeMap<(Option<Slot>, i32), PodView>;

/// The deployed version's pods, a warm handover's standby pods, and the pods of any other set.
pub(super) fn split_views(
    views: Views,
    st: &StreamJobStatus,
) -> (BTreeMap<i32, PodView>, BTreeMap<i32, PodView>, Vec<Stray>) {
    let live = st.deployed_slot();
    let standby = st
        .operation
        .as_ref()
        .and_then(|o| o.standby_slot())
        .filter(|s| Some(*s) != live);
    let (mut pods, mut beside, mut strays) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
    for ((slot, i), view) in views {
        if slot == live {
            pods.insert(i, view);
        } else if slot.is_some() && slot == standby {
            beside.insert(i, view);
        } else {
            strays.push(Stray {
                slot,
                replica: i,
                deleting: view.deleting,
            });
        }
    }
    (pods, beside, strays)
}

fn pod_views(ctx: &Context, job: &StreamJob) -> Views {
    let mut out = BTreeMap::new();
    for pod in ctx.pods(job) {
        let Some(i) = replica(&pod) else { continue };
        let status = pod.status.as_ref();
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") => PodPhase::Running,
            Some("Succeeded" | "Failed") => PodPhase::Terminated,
            _ => PodPhase::Pending,
        };
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        out.insert(
            (slot_of(&pod), i),
            PodView {
                spec_hash: pod.annotations().get(ANNOTATION_SPEC_HASH).cloned(),
                phase,
                ready,
                deleting: pod.metadata.deletion_timestamp.is_some(),
                problem: (!ready)
                    .then(|| super::pod_problem::problem(&pod))
                    .flatten(),
            },
        );
    }
    out
}

/// The credentials Secret, when a replica is not ready and the spec names one: without it the pods
/// wait in ContainerCreating and only a pod Event says why. Not read while every replica runs.
async fn missing_references(ctx: &Context, job: &StreamJob) -> Result<Vec<String>, Error> {
    let Some(name) = &job.spec.state.credentials_secret else {
        return Ok(Vec::new());
    };
    let pods = ctx.pods(job);
    let all_ready = !pods.is_empty()
        && pods.iter().all(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
    if all_ready || job.spec.suspend {
        return Ok(Vec::new());
    }
    let ns = job.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    match secrets.get_metadata_opt(name).await {
        Ok(Some(_)) => Ok(Vec::new()),
        Ok(None) => Ok(vec![format!(
            "the Secret {name:?} that state.credentialsSecret names does not exist in namespace {ns:?}: create it with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )]),
        Err(e) => Err(kube_err(format!("reading the credentials Secret {name:?}"))(e)),
    }
}

fn claim_indices(ctx: &Context, job: &StreamJob) -> std::collections::BTreeSet<i32> {
    ctx.claims(job)
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| c.labels().get(LABEL_REPLICA)?.parse().ok())
        .collect()
}

/// This reconcile's own writes, which the watch cache may not show yet.
#[derive(Default)]
struct Overlay {
    created: BTreeMap<(Option<Slot>, i32), String>,
    deleted: Vec<(Option<Slot>, i32)>,
}

impl Overlay {
    fn apply(&self, mut pods: Views) -> Views {
        for (&i, hash) in &self.created {
            pods.entry(i).or_insert(PodView {
                spec_hash: Some(hash.clone()),
                phase: PodPhase::Pending,
                ready: false,
                deleting: false,
                problem: None,
            });
        }
        for i in &self.deleted {
            if let Some(p) = pods.get_mut(i) {
                p.deleting = true;
            }
        }
        pods
    }
}

fn admin_addr(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
    Some(if ip.contains(':') {
        format!("[{ip}]:{}", objects::ADMIN_PORT)
    } else {
        format!("{ip}:{}", objects::ADMIN_PORT)
    })
}

/// The sidecars' admin token: from the cache, else read once from the job's Secret.
pub async fn token(job: &StreamJob, ctx: &Context) -> Result<String, Error> {
    let key = Context::key(job);
    if let Some(t) = ctx.tokens.lock().ok().and_then(|t| t.get(&key).cloned()) {
        return Ok(t);
    }
    let name = objects::token_secret_name(job);
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let secret = secrets
        .get(&name)
        .await
        .map_err(kube_err(format!("reading the admin token Secret {name}")))?;
    let token = secret
        .data
        .and_then(|d| {
            d.get(objects::TOKEN_KEY)
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        })
        .filter(|t| !t.is_empty())
        .ok_or(Error::NoToken { name })?;
    if let Ok(mut t) = ctx.tokens.lock() {
        t.insert(key, token.clone());
    }
    Ok(token)
}

fn forget_token(job: &StreamJob, ctx: &Context) {
    if let Ok(mut t) = ctx.tokens.lock() {
        t.remove(&Context::key(job));
    }
}

/// Builds replica `i`'s pod of deployment `d`.
pub fn build_pod(
    job: &StreamJob,
    st: &StreamJobStatus,
    ctx: &Context,
    d: &Deployment,
    i: i32,
    warm_from: Option<&str>,
) -> Pod {
    let spec = layout::deployment_spec(job, d);
    let target = layout::with_spec(job, &spec);
    let legacy = layout::lineage_location(job, &spec, st, &d.lineage);
    let inputs = PodInputs {
        sidecar_image: d
            .sidecar_image
            .as_deref()
            .unwrap_or(&ctx.settings.default_sidecar_image),
        job_id: st.job_id.as_deref(),
        spec_hash: &d.hash,
        restore_from: d.restore_from.as_deref(),
        state_location: d.state_location.as_deref().or(legacy.as_deref()),
        slot: d.slot,
        warm_from,
    };
    objects::pod(&target, i, &inputs)
}

async fn perform(
    job: &StreamJob,
    st: &StreamJobStatus,
    ctx: &Context,
    effects: &[Effect],
    overlay: &mut Overlay,
) -> Result<Vec<Outcome>, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let mut outcomes = Vec::new();
    let mut sidecar_calls = Vec::new();
    for effect in effects {
        match effect {
            Effect::CreateClaim {
                replica,
                deployment,
            } => {
                let target = layout::with_spec(job, &layout::deployment_spec(job, deployment));
                let Some(claim) = objects::claim(&target, *replica) else {
                    continue;
                };
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                match claims.create(&pp, &claim).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
                        outcomes.push(Outcome::PodRejected {
                            replica: *replica,
                            message: format!(
                                "claim {}: {}",
                                objects::claim_name(job, *replica),
                                e.message
                            ),
                        });
                    }
                    Err(e) => {
                        return Err(kube_err(format!(
                            "creating claim {}",
                            objects::claim_name(job, *replica)
                        ))(e));
                    }
                }
            }
            Effect::DeleteClaim { replica } => {
                let name = objects::claim_name(job, *replica);
                match claims.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        ctx.publish(
                            job,
                            false,
                            "DeletedClaim",
                            format!(
                                "deleted claim {name} (above the parallelism; deleteOnScaleDown)"
                            ),
                        )
                        .await
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(kube_err(format!("deleting claim {name}"))(e)),
                }
            }
            Effect::CreatePod {
                replica,
                deployment,
                warm_from,
            } => {
                let pod = build_pod(job, st, ctx, deployment, *replica, warm_from.as_deref());
                let name = objects::slot_pod_name(job, deployment.slot, *replica);
                let key = (deployment.slot, *replica);
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                match pods.create(&pp, &pod).await {
                    Ok(_) => {
                        overlay.created.insert(key, deployment.hash.clone());
                        let p = layout::parallelism(job, deployment);
                        let warm = if warm_from.is_some() {
                            ", warming up beside the running version"
                        } else {
                            ""
                        };
                        let note = format!(
                            "created pod {name} (replica {replica} of {p}, lineage {}{warm})",
                            deployment.lineage
                        );
                        ctx.publish(job, false, "CreatedPod", note).await;
                    }
                    // The cache has not seen it yet: it exists.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        overlay.created.insert(key, deployment.hash.clone());
                    }
                    // Admission (Pod Security, a webhook), validation or a quota: permanent for
                    // this spec.
                    Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
                        outcomes.push(Outcome::PodRejected {
                            replica: *replica,
                            message: e.message.clone(),
                        });
                    }
                    Err(e) => return Err(kube_err(format!("creating pod {name}"))(e)),
                }
            }
            Effect::DeletePod {
                slot,
                replica,
                force,
                why,
            } => {
                let name = objects::slot_pod_name(job, *slot, *replica);
                let dp = DeleteParams {
                    grace_period_seconds: force.then_some(0),
                    ..Default::default()
                };
                match pods.delete(&name, &dp).await {
                    Ok(_) => {
                        overlay.deleted.push((*slot, *replica));
                        ctx.publish(
                            job,
                            false,
                            "DeletedPod",
                            format!("deleted pod {name} ({why})"),
                        )
                        .await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        overlay.deleted.push((*slot, *replica))
                    }
                    Err(e) => return Err(kube_err(format!("deleting pod {name}"))(e)),
                }
            }
            Effect::TriggerSavepoint { .. } | Effect::Unfence { .. } | Effect::Promote { .. } => {
                sidecar_calls.push(effect)
            }
            Effect::Dispose { location } => {
                let result = match stored::options(&ctx.client, job).await {
                    Ok(options) => stored::delete_all(location, &options)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                outcomes.push(Outcome::Disposed {
                    location: location.clone(),
                    result,
                });
            }
            Effect::CompleteSavepoint { location } => {
                let result = match stored::options(&ctx.client, job).await {
                    Ok(options) => stored::complete_savepoint(location, &options)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                outcomes.push(Outcome::Completed {
                    location: location.clone(),
                    result,
                });
            }
            Effect::Event {
                warning,
                reason,
                note,
            } => ctx.publish(job, *warning, reason, note.clone()).await,
            Effect::OperationEnded {
                reason,
                ok,
                seconds,
                pause,
            } => {
                if let Ok(mut ended) = ctx.operation_ended.lock() {
                    ended.insert(Context::key(job), std::time::Instant::now());
                }
                ctx.metrics.operation(reason, *ok, *seconds, *pause)
            }
            Effect::SavepointEnded {
                reason,
                ok,
                uploaded_bytes,
            } => ctx.metrics.savepoint(reason, *ok, *uploaded_bytes),
            Effect::StepEnded {
                reason,
                step,
                seconds,
            } => ctx.metrics.step(reason, *step, *seconds),
        }
    }
    if !sidecar_calls.is_empty() {
        outcomes.extend(call_sidecars(job, ctx, &sidecar_calls).await?);
    }
    Ok(outcomes)
}

/// Savepoint triggers and unfences, to every replica at once.
async fn call_sidecars(
    job: &StreamJob,
    ctx: &Context,
    calls: &[&Effect],
) -> Result<Vec<Outcome>, Error> {
    let api = SidecarApi::new(token(job, ctx).await?);
    let live = job.status.as_ref().and_then(StreamJobStatus::deployed_slot);
    let all: BTreeMap<(Option<Slot>, i32), String> = ctx
        .pods(job)
        .iter()
        .filter_map(|p| Some(((slot_of(p), replica(p)?), admin_addr(p)?)))
        .collect();
    let addrs: BTreeMap<i32, String> = all
        .iter()
        .filter(|((s, _), _)| *s == live)
        .map(|((_, i), a)| (*i, a.clone()))
        .collect();
    let all = &all;
    let api = &api;
    let addrs = &addrs;
    let answers = futures::future::join_all(calls.iter().map(|effect| async move {
        match effect {
            Effect::TriggerSavepoint { replica, location, stop, operation } => {
                let (mut fenced_at, mut uploaded_bytes) = (None, None);
                let answer = match addrs.get(replica) {
                    None => SavepointAnswer::Unreachable(format!("replica {replica}'s pod has no address")),
                    Some(addr) => match api.trigger_savepoint(addr, location, *stop, operation).await {
                        Ok(s) if s.is_complete() => {
                            fenced_at = s.fenced_at.as_deref().and_then(|t| t.parse().ok());
                            uploaded_bytes = s.uploaded_bytes;
                            SavepointAnswer::Complete
                        }
                        Ok(s) if s.is_failed() => SavepointAnswer::Failed(s.reason.unwrap_or_else(|| "failed".into())),
                        Ok(_) => SavepointAnswer::Pending,
                        Err(ApiError::Status { status: 409, body, .. }) => SavepointAnswer::Failed(format!("refused: {body}")),
                        Err(e) => SavepointAnswer::Unreachable(e.to_string()),
                    },
                };
                Some((
                    matches!(&answer, SavepointAnswer::Unreachable(m) if m.contains("answered 401")),
                    Outcome::Savepoint {
                        replica: *replica,
                        operation: operation.clone(),
                        answer,
                        fenced_at,
                        uploaded_bytes,
                    },
                ))
            }
            Effect::Unfence { replica } => {
                let ok = match addrs.get(replica) {
                    None => false,
                    Some(addr) => match api.unfence(addr).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(job = %job.name_any(), replica, error = %e, "could not unfence a replica");
                            false
                        }
                    },
                };
                Some((false, Outcome::Unfenced { replica: *replica, ok }))
            }
            Effect::Promote { slot, replica, location, operation } => {
                let result = match all.get(&(*slot, *replica)) {
                    None => Err(format!("replica {replica}'s new pod has no address")),
                    Some(addr) => api.promote(addr, location).await.map_err(|e| e.to_string()),
                };
                if let Err(e) = &result {
                    tracing::warn!(job = %job.name_any(), replica, error = %e, "could not promote a standby replica");
                }
                Some((false, Outcome::Promoted { replica: *replica, operation: operation.clone(), result }))
            }
            _ => None,
        }
    }))
    .await;
    let mut out = Vec::new();
    for (unauthorized, outcome) in answers.into_iter().flatten() {
        if unauthorized {
            // The token changed (the Secret was recreated): read it again next time.
            forget_token(job, ctx);
        }
        if let Outcome::Savepoint {
            replica,
            answer: SavepointAnswer::Unreachable(m),
            ..
        } = &outcome
        {
            tracing::warn!(job = %job.name_any(), replica, error = %m, "savepoint status unavailable");
        }
        out.push(outcome);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Operation, OperationKind};

    fn view() -> PodView {
        PodView {
            spec_hash: Some("h".into()),
            phase: PodPhase::Running,
            ready: true,
            deleting: false,
            problem: None,
        }
    }

    fn status(live: Option<Slot>, step: Step, target: Option<Slot>) -> StreamJobStatus {
        let deployment = |slot| Deployment {
            slot,
            ..Default::default()
        };
        StreamJobStatus {
            deployment: Some(deployment(live)),
            operation: Some(Operation {
                kind: OperationKind::Upgrade,
                step,
                reason: "upgrade".into(),
                target: Some(deployment(target)),
                savepoint: None,
                savepoint_complete: false,
                fenced_at: None,
                started_at: String::new(),
                step_started_at: String::new(),
                id: String::new(),
                deadline: None,
                failure: None,
                recheck_lineage: None,
                warm_from: Some("s3://b/jobs/l1".into()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pods_split_into_the_deployed_set_a_handovers_standby_set_and_strays() {
        let views: Views = [
            ((None, 0), view()),
            ((None, 1), view()),
            ((Some(Slot::Green), 0), view()),
            ((Some(Slot::Blue), 1), view()),
        ]
        .into_iter()
        .collect();
        let st = status(None, Step::Warming, Some(Slot::Green));
        let (pods, standby, strays) = split_views(views.clone(), &st);
        assert_eq!(pods.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(standby.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(strays.len(), 1);
        assert_eq!((strays[0].slot, strays[0].replica), (Some(Slot::Blue), 1));
        // After the promotion the new set is the deployed one and the old set is stray.
        let st = status(Some(Slot::Green), Step::WaitingReady, Some(Slot::Green));
        let (pods, standby, strays) = split_views(views.clone(), &st);
        assert_eq!(pods.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert!(standby.is_empty());
        assert_eq!(strays.len(), 3);
        // An operation that is not a handover has no standby set.
        let mut st = status(None, Step::Stopping, None);
        st.operation.as_mut().unwrap().warm_from = None;
        let (pods, standby, strays) = split_views(views, &st);
        assert_eq!(pods.len(), 2);
        assert!(standby.is_empty());
        assert_eq!(strays.len(), 2);
    }

    #[test]
    fn a_job_at_rest_is_asked_for_its_checkpoints_every_checkpoint_interval_within_bounds() {
        use crate::fixtures::job;
        let every = |interval: i64, location: Option<&str>| {
            let mut j = match location {
                Some(l) => job("j").location(l).build(),
                None => job("j").build(),
            };
            j.spec.state.checkpoint_interval_seconds = interval;
            at_rest_every(&j).as_secs()
        };
        assert_eq!(every(60, Some("s3://b/jobs")), 60);
        assert_eq!(
            every(2, Some("s3://b/jobs")),
            10,
            "no more often than every 10 s"
        );
        assert_eq!(
            every(3600, Some("s3://b/jobs")),
            300,
            "no less often than the safety requeue"
        );
        assert_eq!(
            every(0, Some("s3://b/jobs")),
            300,
            "no periodic checkpoints: nothing to follow"
        );
        assert_eq!(every(60, None), 300, "no checkpoints without a location");
    }
}
