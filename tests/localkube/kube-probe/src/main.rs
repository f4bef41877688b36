//! A small controller that behaves like Stator's operator will: it reconciles StreamJobs (dynamic
//! objects), owns ConfigMaps, applies objects and status with server-side apply, manages a finalizer with
//! merge patches, publishes Events, and checks Lease optimistic concurrency. It runs a scenario against
//! the cluster in $KUBECONFIG and prints `PROBE OK` or fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

const FINALIZER: &str = "stator.dev/probe";
const MANAGER: &str = "stator-operator";

struct Ctx {
    client: Client,
    ar: ApiResource,
    recorder: Recorder,
    reconciles: AtomicUsize,
    errors: AtomicUsize,
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ctx.ar);
    if obj.meta().deletion_timestamp.is_some() {
        if obj.finalizers().iter().any(|f| f == FINALIZER) {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
                .await?;
        }
        return Ok(Action::await_change());
    }
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        let patch = json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": obj.resource_version()}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        return Ok(Action::await_change());
    }
    let parallelism = obj.data["spec"]["parallelism"].as_i64().unwrap_or(1);
    let owner = obj.controller_owner_ref(&ctx.ar).expect("has uid");
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-cfg"), "ownerReferences": [owner],
                     "labels": {"app.kubernetes.io/managed-by": "probe"}},
        "data": {"parallelism": parallelism.to_string()},
    });
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    cms.patch(&format!("{name}-cfg"), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&cm)).await?;
    let status = json!({
        "apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob",
        "status": {"phase": "Running", "replicas": parallelism, "observedGeneration": obj.meta().generation},
    });
    api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&status)).await?;
    let ev = Event {
        type_: EventType::Normal,
        reason: "Reconciled".into(),
        note: Some(format!("parallelism {parallelism}")),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.recorder.publish(&ev, &obj.object_ref(&ctx.ar)).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_obj: Arc<DynamicObject>, err: &kube::Error, ctx: Arc<Ctx>) -> Action {
    ctx.errors.fetch_add(1, Ordering::SeqCst);
    eprintln!("reconcile error: {err:?}");
    Action::requeue(Duration::from_secs(1))
}

async fn wait_for<F, Fut>(what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    for _ in 0..200 {
        if f().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting for {what}")
}

async fn lease_conflict(client: &Client, ns: &str) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let mut lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "probe-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))?;
    lease = leases.create(&PostParams::default(), &lease).await?;
    let mut theirs = lease.clone();
    theirs.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases.replace("probe-leader", &PostParams::default(), &theirs).await?;
    lease.spec.as_mut().unwrap().lease_transitions = Some(1);
    match leases.replace("probe-leader", &PostParams::default(), &lease).await {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => bail!("a stale lease replace must get 409, got {other:?}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ns = std::env::args().nth(1).unwrap_or_else(|| "default".into());
    let client = Client::try_default().await.context("client from KUBECONFIG")?;
    lease_conflict(&client, &ns).await?;

    let gvk = GroupVersionKind::gvk("stator.dev", "v1alpha1", "StreamJob");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "streamjobs");
    let sjs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let reporter = Reporter { controller: "stator.dev/probe".into(), instance: Some("probe-0".into()) };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        ar: ar.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        reconciles: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
    });
    let controller = Controller::new_with(sjs.clone(), watcher::Config::default(), ar.clone())
        .owns(cms.clone(), watcher::Config::default().labels("app.kubernetes.io/managed-by=probe"))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                eprintln!("controller: {e:?}");
            }
        });
    let handle = tokio::spawn(controller);

    let sj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob",
        "metadata": {"name": "wc"}, "spec": {"image": "example/app:1", "parallelism": 2}
    }))?;
    sjs.create(&PostParams::default(), &sj).await?;
    let cfg = |want: &'static str| {
        let cms = cms.clone();
        move || {
            let cms = cms.clone();
            async move {
                Ok(cms.get_opt("wc-cfg").await?.and_then(|c| c.data).and_then(|d| d.get("parallelism").cloned())
                    == Some(want.to_string()))
            }
        }
    };
    wait_for("configmap with parallelism 2", cfg("2")).await?;
    let phase = |generation: i64| {
        let sjs = sjs.clone();
        move || {
            let sjs = sjs.clone();
            async move {
                let o = sjs.get("wc").await?;
                Ok(o.data["status"]["phase"] == "Running" && o.data["status"]["observedGeneration"] == generation)
            }
        }
    };
    wait_for("status Running at generation 1", phase(1)).await?;
    sjs.patch("wc", &PatchParams::default(), &Patch::Merge(json!({"spec": {"parallelism": 3}}))).await?;
    wait_for("configmap with parallelism 3", cfg("3")).await?;
    wait_for("status at generation 2", phase(2)).await?;

    // Steady state: no busy loop (a write that changes nothing must not trigger another reconcile).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = ctx.reconciles.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = ctx.reconciles.load(Ordering::SeqCst) - before;
    if idle > 1 {
        bail!("{idle} reconciles in 4 s of steady state: busy loop");
    }

    sjs.delete("wc", &DeleteParams::default()).await?;
    wait_for("streamjob gone (finalizer removed)", || {
        let sjs = sjs.clone();
        async move { Ok(sjs.get_opt("wc").await?.is_none()) }
    })
    .await?;
    wait_for("owned configmap collected", || {
        let cms = cms.clone();
        async move { Ok(cms.get_opt("wc-cfg").await?.is_none()) }
    })
    .await?;
    handle.abort();
    let errors = ctx.errors.load(Ordering::SeqCst);
    if errors > 0 {
        bail!("{errors} reconcile errors");
    }
    println!("PROBE OK reconciles={} idle={idle}", ctx.reconciles.load(Ordering::SeqCst));
    Ok(())
}
