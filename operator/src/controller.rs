//! The StreamJob controller: for each job, fetch what it refers to, validate the spec (pure),
//! build the desired objects (pure), apply them, and report status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::crd::{Phase, StreamJob, StreamJobStatus};
use crate::metrics::Metrics;
use crate::objects::{self, ANNOTATION_SPEC_HASH};
use crate::status::{self, DEGRADED, PROGRESSING, READY};
use crate::validate::validate;

pub const FIELD_MANAGER: &str = "stator-operator";
pub const FINALIZER: &str = "stator.dev/cleanup";

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub default_sidecar_image: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer failed: {0}")]
    Finalizer(String),
    #[error("StreamJob has no namespace")]
    NoNamespace,
    #[error("waiting for the replicas to stop before deleting the stored state")]
    StoppingReplicas,
}

impl Error {
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::NoNamespace => "no_namespace",
            Error::StoppingReplicas => "stopping_replicas",
        }
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

pub async fn reconcile(job: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let jobs: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&jobs, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => apply(job, &ctx).await,
            Finalizer::Cleanup(job) => cleanup(job, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err().map(Error::label));
    result
}

pub fn error_policy(job: Arc<StreamJob>, error: &Error, _ctx: Arc<Context>) -> Action {
    if matches!(error, Error::StoppingReplicas) {
        tracing::info!(job = %job.name_any(), namespace = ?job.namespace(), "{error}");
        return Action::requeue(Duration::from_secs(1));
    }
    tracing::warn!(job = %job.name_any(), namespace = ?job.namespace(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

pub async fn publish(ctx: &Context, job: &StreamJob, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &job.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an Event");
    }
}

async fn apply(job: Arc<StreamJob>, ctx: &Context) -> Result<Action, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let name = job.name_any();
    let client = &ctx.client;
    let generation = job.metadata.generation;
    let old_status = job.status.clone().unwrap_or_default();

    // Validate: an invalid spec changes no pods; it is reported and awaits a new spec.
    if let Err(problems) = validate(&job) {
        let message = problems.join("; ");
        let mut st = old_status.clone();
        st.phase = Some(Phase::Failed);
        st.observed_generation = generation;
        status::set(
            &mut st.conditions,
            DEGRADED,
            true,
            "InvalidSpec",
            &message,
            generation,
        );
        status::set(
            &mut st.conditions,
            PROGRESSING,
            false,
            "InvalidSpec",
            "waiting for a valid spec",
            generation,
        );
        if !status::is_true(&old_status.conditions, DEGRADED)
            || old_status.conditions.iter().all(|c| c.message != message)
        {
            publish(
                ctx,
                &job,
                EventType::Warning,
                "InvalidSpec",
                message.clone(),
            )
            .await;
        }
        ctx.metrics.set_phase(format!("{ns}/{name}"), st.phase);
        write_status(client, &job, &old_status, st).await?;
        return Ok(Action::await_change());
    }

    // Fetch or create what the pods refer to.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret_name = objects::token_secret_name(&job);
    if secrets.get_opt(&secret_name).await?.is_none() {
        let secret = objects::token_secret(&job, &objects::new_token());
        match secrets
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &secret,
            )
            .await
        {
            Ok(_) => {
                publish(
                    ctx,
                    &job,
                    EventType::Normal,
                    "CreatedAdminToken",
                    format!("created Secret {secret_name} with the sidecars' admin token"),
                )
                .await
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    apply_if_changed(
        &services,
        &objects::service_name(&job),
        &objects::service(&job),
    )
    .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    for i in 0..job.spec.parallelism {
        if let Some(claim) = objects::claim(&job, i) {
            // Claims are immutable in most fields: create once, never re-apply.
            if claims
                .get_opt(&objects::claim_name(&job, i))
                .await?
                .is_none()
            {
                claims
                    .patch(
                        &objects::claim_name(&job, i),
                        &apply_params(),
                        &Patch::Apply(&claim),
                    )
                    .await?;
            }
        }
    }

    // Pods, upgrades, savepoints: the lifecycle (write-ahead, one step per reconcile).
    let mut st = old_status.clone();
    st.observed_generation = generation;
    let outcome = crate::lifecycle::reconcile(&job, ctx, &mut st).await?;
    let deployed = st.deployment.clone();
    let p = deployed
        .as_ref()
        .and_then(|d| serde_json::from_str::<crate::crd::StreamJobSpec>(&d.spec).ok())
        .map(|s| s.parallelism)
        .unwrap_or(job.spec.parallelism);
    st.replicas = outcome.present;
    st.ready_replicas = outcome.ready;
    st.selector = Some(objects::selector(&job));
    st.deployed_spec_hash = deployed.as_ref().map(|d| d.hash.clone());
    let in_flight = st.operation.as_ref().map(|o| (o.kind, o.step));
    let all_ready = in_flight.is_none() && outcome.ready == p && outcome.present == p;
    st.phase = Some(match in_flight {
        Some((crate::crd::OperationKind::Savepoint, _)) => Phase::Running,
        Some(_) => Phase::Upgrading,
        None if job.spec.suspend && st.phase == Some(Phase::Suspended) => Phase::Suspended,
        None if st.phase == Some(Phase::RolledBack) && st.failed_spec_hash.is_some() => {
            Phase::RolledBack
        }
        None if all_ready => Phase::Running,
        None if st.stable.is_some() => Phase::Upgrading,
        None => Phase::Deploying,
    });
    if st.phase == Some(Phase::Running) && old_status.phase != Some(Phase::Running) {
        publish(
            ctx,
            &job,
            EventType::Normal,
            "Running",
            format!("all {p} replicas are ready"),
        )
        .await;
    }
    let suspended = st.phase == Some(Phase::Suspended);
    let message = match &st.operation {
        Some(o) => format!("{} ({:?}: {:?})", o.reason, o.kind, o.step),
        None if suspended => "suspended".to_owned(),
        None => format!("{}/{p} replicas ready", outcome.ready),
    };
    status::set(
        &mut st.conditions,
        READY,
        all_ready,
        if all_ready {
            "AllReplicasReady"
        } else if suspended {
            "Suspended"
        } else {
            "ReplicasNotReady"
        },
        message.clone(),
        generation,
    );
    status::set(
        &mut st.conditions,
        PROGRESSING,
        st.operation.is_some() || (!all_ready && !suspended),
        if st.operation.is_some() {
            "Operation"
        } else if all_ready || suspended {
            "Deployed"
        } else {
            "RollingOut"
        },
        message,
        generation,
    );
    // Degraded is set by the lifecycle (a failed savepoint, a rollback) and cleared once the
    // job runs its spec again.
    let recovered = all_ready && st.failed_spec_hash.is_none();
    if recovered || !st.conditions.iter().any(|c| c.type_ == DEGRADED) {
        status::set(
            &mut st.conditions,
            DEGRADED,
            false,
            "AsExpected",
            "",
            generation,
        );
    }
    ctx.metrics.set_phase(format!("{ns}/{name}"), st.phase);
    write_status(client, &job, &old_status, st).await?;
    Ok(outcome.action)
}

/// Server-side applies `desired` unless the live object already carries the same content hash.
async fn apply_if_changed<K>(api: &Api<K>, name: &str, desired: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let hash = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(serde_json::to_vec(desired).unwrap_or_default());
        d.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    if let Some(live) = api.get_opt(name).await?
        && live
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_SPEC_HASH))
            == Some(&hash)
    {
        return Ok(());
    }
    let mut desired = desired.clone();
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_SPEC_HASH.to_owned(), hash);
    api.patch(name, &apply_params(), &Patch::Apply(&desired))
        .await?;
    Ok(())
}

/// Writes the status only when it changed. The whole status is replaced, guarded by the
/// resourceVersion this reconcile read: a writer holding a stale view (an operator replica that
/// lost its lease, say) gets 409 instead of overwriting a newer step of an operation.
async fn write_status(
    client: &Client,
    job: &StreamJob,
    old: &StreamJobStatus,
    new: StreamJobStatus,
) -> Result<(), Error> {
    if *old == new && job.status.is_some() {
        return Ok(());
    }
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
    let mut object = job.clone();
    object.status = Some(new);
    object.metadata.managed_fields = None;
    api.replace_status(&job.name_any(), &PostParams::default(), &object)
        .await?;
    Ok(())
}

async fn cleanup(job: Arc<StreamJob>, ctx: &Context) -> Result<Action, Error> {
    // Pods, the Service and the Secret go with their owner reference. Stored state and claims are
    // kept unless the policy says Delete.
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    if job.spec.state.on_delete == crate::crd::StateDeletePolicy::Delete {
        // No pod may still checkpoint into the state about to be deleted (it would reappear): stop
        // every replica first, and wait for them to be gone.
        if !crate::lifecycle::stop_all(&job, ctx).await? {
            // An error, not Ok: kube-runtime removes the finalizer when cleanup returns Ok.
            return Err(Error::StoppingReplicas);
        }
        // Stored state next: if it cannot be deleted, the finalizer stays and this is retried,
        // so the job does not vanish leaving its data behind unannounced.
        match crate::lifecycle::delete_stored_state(&job, ctx).await {
            Ok(n) => {
                let note = format!("deleted {n} stored objects (onDelete: Delete)");
                publish(ctx, &job, EventType::Normal, "DeletedState", note).await
            }
            Err(e) => {
                publish(
                    ctx,
                    &job,
                    EventType::Warning,
                    "DeleteStateFailed",
                    e.clone(),
                )
                .await;
                return Err(Error::Finalizer(e));
            }
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        for i in 0..job.spec.parallelism {
            match claims
                .delete(&objects::claim_name(&job, i), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    ctx.metrics
        .set_phase(format!("{ns}/{}", job.name_any()), None);
    publish(
        ctx,
        &job,
        EventType::Normal,
        "Deleted",
        format!(
            "StreamJob deleted; stored state {}",
            match job.spec.state.on_delete {
                crate::crd::StateDeletePolicy::Retain => "retained",
                crate::crd::StateDeletePolicy::Delete => "deleted",
            }
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// Runs the controller for one namespace (or all, with `None`) until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let client = ctx.client.clone();
    // Secrets are not watched: the operator may only get and create its own (see the chart's RBAC).
    let (jobs, pods, services, claims): (
        Api<StreamJob>,
        Api<Pod>,
        Api<Service>,
        Api<PersistentVolumeClaim>,
    ) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=stator-operator");
    Controller::new(jobs, watcher::Config::default())
        .owns(pods, owned.clone())
        .owns(services, owned.clone())
        .owns(claims, owned)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

pub fn reporter(instance: Option<String>) -> Reporter {
    Reporter {
        controller: FIELD_MANAGER.into(),
        instance,
    }
}

pub fn recorder(client: Client, instance: Option<String>) -> Recorder {
    Recorder::new(client, reporter(instance))
}
