//! The StreamJob controller: for each job, validate the spec (pure), make sure of what its pods
//! refer to (the admin token Secret, the headless Service), run the lifecycle, and on deletion
//! clean up. Watches feed caches the reconciles read, so a job at rest costs no API request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self as runtime, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;

use crate::context::{Caches, Context, FIELD_MANAGER};
use crate::crd::{StateDeletePolicy, StreamJob};
use crate::lifecycle::{execute, layout};
use crate::objects::{self, ANNOTATION_SPEC_HASH};
use crate::stored::{self, StoredError};
use crate::validate::validate;

pub const FINALIZER: &str = "stator.dev/cleanup";
/// How long deletion retries reaching storage before it gives up and says what it left.
const DELETE_STATE_DEADLINE: i64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Lifecycle(#[from] execute::Error),
    #[error("deleting the stored state: {0}")]
    DeleteState(#[source] StoredError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Not a failure: the finalizer stays until this is over (an `Ok` would remove it).
    #[error("waiting for {0} pods to stop before deleting the job's stored state")]
    PodsStopping(usize),
    #[error("the StreamJob has no namespace")]
    NoNamespace,
}

impl Error {
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Lifecycle(e) => e.label(),
            Error::DeleteState(_) => "storage",
            Error::Finalizer(_) => "finalizer",
            Error::PodsStopping(_) => "pods_stopping",
            Error::NoNamespace => "no_namespace",
        }
    }

    /// Transient errors are retried with backoff; others wait for a change of the job.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(e) => e.code == 409 || e.code == 429 || e.code >= 500,
                _ => true,
            },
            Error::Lifecycle(e) => e.is_transient(),
            Error::DeleteState(e) => e.is_transient(),
            Error::Finalizer(_) | Error::PodsStopping(_) => true,
            Error::NoNamespace => false,
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

pub async fn reconcile(job: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let key = Context::key(&job);
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
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&key);
    }
    result
}

/// Transient errors back off exponentially per job (5 s to 5 min, with jitter); permanent ones
/// wait for a change of the job (with a long safety requeue).
pub fn error_policy(job: Arc<StreamJob>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::PodsStopping(n) = error {
        tracing::info!(job = %job.name_any(), pods = n, "waiting for the job's pods to stop before cleaning up");
        return Action::requeue(Duration::from_secs(2));
    }
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(Context::key(&job)).or_insert(0);
            *n += 1;
            *n
        })
        .unwrap_or(1);
    tracing::warn!(job = %job.name_any(), namespace = ?job.namespace(), error = %error, transient = error.is_transient(), failures = n, "reconcile failed");
    if !error.is_transient() {
        return Action::requeue(Duration::from_secs(600));
    }
    let base = (5u64 << n.min(6).saturating_sub(1)).min(300) as f64;
    Action::requeue(Duration::from_secs_f64(
        base * rand::rng().random_range(0.8..1.2),
    ))
}

async fn apply(job: Arc<StreamJob>, ctx: &Context) -> Result<Action, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    // An invalid spec starts nothing new, but whatever runs, and any operation in flight, still
    // goes on (a fenced savepoint must still time out).
    let mut problems = validate(&job).err().unwrap_or_default();
    problems.extend(crate::validate::storage_policy(
        &job,
        ctx.settings.allow_file_locations,
    ));
    if problems.is_empty() || job.status.as_ref().is_some_and(|s| s.deployment.is_some()) {
        ensure_token(&job, ctx, &ns).await?;
        let desired = objects::service(&job);
        apply_service(&job, ctx, &ns, &desired).await?;
    }
    let action = execute::run(&job, ctx, problems).await?;
    if let Some(st) = job.status.as_ref() {
        ctx.metrics
            .set_phase(format!("{ns}/{}", job.name_any()), st.phase);
    }
    Ok(action)
}

/// The admin token Secret: created once; known to exist once its token is cached.
async fn ensure_token(job: &StreamJob, ctx: &Context, ns: &str) -> Result<(), Error> {
    if ctx
        .tokens
        .lock()
        .is_ok_and(|t| t.contains_key(&Context::key(job)))
    {
        return Ok(());
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = objects::token_secret_name(job);
    let existing = secrets
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("reading Secret {name}")))?;
    if existing.is_none() {
        let secret = objects::token_secret(job, &objects::new_token());
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match secrets.create(&pp, &secret).await {
            Ok(_) => {
                let note = format!("created Secret {name} with the sidecars' admin token");
                ctx.publish(job, false, "CreatedAdminToken", note).await
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(kube_err(format!("creating Secret {name}"))(e)),
        }
    }
    match execute::token(job, ctx).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Server-side applies the Service unless the cached one carries the same content hash.
async fn apply_service(
    job: &StreamJob,
    ctx: &Context,
    ns: &str,
    desired: &Service,
) -> Result<(), Error> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(serde_json::to_vec(desired).unwrap_or_default());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    if ctx
        .service(job)
        .is_some_and(|live| live.annotations().get(ANNOTATION_SPEC_HASH) == Some(&hash))
    {
        return Ok(());
    }
    let mut desired = desired.clone();
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_SPEC_HASH.to_owned(), hash);
    let name = objects::service_name(job);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    services
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(kube_err(format!("applying Service {name}")))?;
    Ok(())
}

/// Deletion: stop every pod first (none may checkpoint into state being deleted), then, with
/// `onDelete: Delete`, the stored state of this incarnation and the claims. Always finishes:
/// storage that cannot be reached (no credentials Secret any more, access denied, or still
/// failing after ten minutes) is left, and an Event says where.
async fn cleanup(job: Arc<StreamJob>, ctx: &Context) -> Result<Action, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let live = ctx.pods(&job);
    if !live.is_empty() {
        for pod in &live {
            if pod.metadata.deletion_timestamp.is_none() {
                match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(kube_err(format!("deleting pod {}", pod.name_any()))(e)),
                }
            }
        }
        // Their deletion events wake us; returning Ok would remove the finalizer now.
        return Err(Error::PodsStopping(live.len()));
    }
    let delete = job.spec.state.on_delete == StateDeletePolicy::Delete;
    tracing::info!(job = %job.name_any(), delete_state = delete, "the job's pods are gone: cleaning up");
    if delete {
        delete_stored_state(&job, ctx).await?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        for claim in ctx.claims(&job) {
            match claims
                .delete(&claim.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(kube_err(format!("deleting claim {}", claim.name_any()))(e)),
            }
        }
    }
    ctx.metrics
        .set_phase(format!("{ns}/{}", job.name_any()), None);
    if let Ok(mut t) = ctx.tokens.lock() {
        t.remove(&Context::key(&job));
    }
    let note = format!(
        "StreamJob deleted; stored state {}",
        if delete { "deleted" } else { "retained" }
    );
    ctx.publish(&job, false, "Deleted", note).await;
    Ok(Action::await_change())
}

async fn delete_stored_state(job: &StreamJob, ctx: &Context) -> Result<(), Error> {
    let st = job.status.clone().unwrap_or_default();
    let id = st.job_id.clone().or_else(|| job.uid()).unwrap_or_default();
    let Some(root) = layout::job_root(job, &job.spec, &id) else {
        return Ok(());
    };
    let options = match stored::options(&ctx.client, job).await {
        Ok(o) => o,
        // The Secret is gone (a namespace being deleted): try the operator's own credentials.
        Err(e @ (StoredError::SecretMissing { .. } | StoredError::SecretIncomplete { .. })) => {
            tracing::info!(job = %job.name_any(), error = %e, "using the operator's own credentials to delete stored state");
            stored::base_options(job)
        }
        Err(e) => return give_up_or_retry(job, ctx, &root, e).await,
    };
    tracing::info!(job = %job.name_any(), location = root, "deleting the job's stored state");
    match stored::delete_all(&root, &options).await {
        Ok(n) => {
            tracing::info!(job = %job.name_any(), location = root, objects = n, "deleted the job's stored state");
            let note = format!("deleted {n} stored objects under {root} (onDelete: Delete)");
            ctx.publish(job, false, "DeletedState", note).await;
            Ok(())
        }
        Err(e) => give_up_or_retry(job, ctx, &root, e).await,
    }
}

async fn give_up_or_retry(
    job: &StreamJob,
    ctx: &Context,
    root: &str,
    e: StoredError,
) -> Result<(), Error> {
    let since = job
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| Timestamp::now().as_second() - t.0.as_second())
        .unwrap_or(0);
    if e.is_transient() && since < DELETE_STATE_DEADLINE {
        ctx.publish(job, true, "DeleteStateFailed", format!("{e}; retrying"))
            .await;
        return Err(Error::DeleteState(e));
    }
    let note = format!("stored state under {root} was left in storage: {e}");
    tracing::warn!(job = %job.name_any(), "{note}");
    ctx.publish(job, true, "DeleteStateFailed", note).await;
    Ok(())
}

/// Runs the controller for one namespace (or all, with `None`) until `shutdown` resolves.
pub async fn run(
    ctx_parts: ControllerParts,
    namespace: Option<String>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let ControllerParts {
        api_client,
        watch_client,
        recorder,
        metrics,
        settings,
        concurrency,
    } = ctx_parts;
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=stator-operator");
    // Owned objects trigger on deletion too (touched): a vanished pod is recreated at once.
    let (pods_reader, pods_writer) = reflector::store::<Pod>();
    let (services_reader, services_writer) = reflector::store::<Service>();
    let (claims_reader, claims_writer) = reflector::store::<PersistentVolumeClaim>();
    let pods = reflector(
        pods_writer,
        watcher(api::<Pod>(&watch_client, &namespace), owned.clone()).modify(|pod| {
            slim(pod);
            // Read are labels, annotations, owners and status; the spec is most of a pod.
            pod.spec = None;
        }),
    )
    .default_backoff()
    .touched_objects();
    let services = reflector(
        services_writer,
        watcher(api::<Service>(&watch_client, &namespace), owned.clone()).modify(|service| {
            slim(service);
            // Only its spec-hash annotation is compared.
            service.spec = None;
        }),
    )
    .default_backoff()
    .touched_objects();
    let claims = reflector(
        claims_writer,
        watcher(
            api::<PersistentVolumeClaim>(&watch_client, &namespace),
            owned,
        )
        .modify(slim),
    )
    .default_backoff()
    .touched_objects();

    let (jobs_reader, jobs_writer) = reflector::store::<StreamJob>();
    let jobs = reflector(
        jobs_writer,
        guarded_jobs(&watch_client, &namespace, metrics.clone()),
    )
    .default_backoff()
    .applied_objects();

    let ctx = Arc::new(Context {
        client: api_client,
        recorder,
        metrics,
        settings,
        caches: Caches {
            pods: pods_reader,
            services: services_reader,
            claims: claims_reader,
        },
        tokens: Default::default(),
        failures: Default::default(),
        checkpoints_asked: Default::default(),
        operation_ended: Default::default(),
    });
    Controller::for_stream(jobs, jobs_reader)
        .with_config(runtime::Config::default().concurrency(concurrency))
        .owns_stream(pods)
        .owns_stream(services)
        .owns_stream(claims)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// What [`run`] builds its context from.
pub struct ControllerParts {
    pub api_client: Client,
    pub watch_client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub settings: crate::lifecycle::Settings,
    pub concurrency: u16,
}

/// What the watch caches drop from every object before keeping it: the field managers, which
/// the operator never reads (a JSON tree per manager). Pods and Services also drop their spec
/// (nothing reads it from the cache; read the object from the API if that changes). Measured by
/// tests/e2e/bench_scale.py (docs/BENCHMARKS.md).
fn slim<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// StreamJobs watched as untyped objects and parsed one by one: one that does not parse (a
/// status from a newer operator, a hand-edited field) is skipped and reported, and the watch
/// goes on for every other job.
fn guarded_jobs(
    client: &Client,
    namespace: &Option<String>,
    metrics: Arc<crate::metrics::Metrics>,
) -> impl futures::Stream<Item = Result<watcher::Event<StreamJob>, watcher::Error>> + Send + 'static
{
    let resource = ApiResource::erase::<StreamJob>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let parse = move |o: DynamicObject| -> Option<StreamJob> {
        let name = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        match o.try_parse::<StreamJob>() {
            Ok(mut job) => {
                slim(&mut job);
                // kubectl apply keeps a whole copy of the spec here; the operator never reads it.
                job.annotations_mut()
                    .remove("kubectl.kubernetes.io/last-applied-configuration");
                Some(job)
            }
            Err(e) => {
                metrics.malformed();
                tracing::error!(job = name, error = %e, "skipping a StreamJob that cannot be read; fix or delete it");
                None
            }
        }
    };
    watcher(api, watcher::Config::default()).filter_map(move |event| {
        let parse = parse.clone();
        async move {
            match event {
                Err(e) => Some(Err(e)),
                Ok(watcher::Event::Apply(o)) => parse(o).map(|j| Ok(watcher::Event::Apply(j))),
                Ok(watcher::Event::InitApply(o)) => {
                    parse(o).map(|j| Ok(watcher::Event::InitApply(j)))
                }
                Ok(watcher::Event::Delete(o)) => parse(o).map(|j| Ok(watcher::Event::Delete(j))),
                Ok(watcher::Event::Init) => Some(Ok(watcher::Event::Init)),
                Ok(watcher::Event::InitDone) => Some(Ok(watcher::Event::InitDone)),
            }
        }
    })
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
