//! What every reconcile shares: the API clients, the watch caches, the event recorder, metrics,
//! settings, and small per-job memories (admin tokens, failure counts) that a restart may lose.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

use crate::crd::StreamJob;
use crate::lifecycle::Settings;
use crate::metrics::Metrics;
use crate::objects::{self, LABEL_JOB};

pub const FIELD_MANAGER: &str = "stator-operator";

/// The operator's view of the objects it owns, from its watches (never a GET per reconcile).
#[derive(Clone)]
pub struct Caches {
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub claims: Store<PersistentVolumeClaim>,
}

pub struct Context {
    /// For requests that must answer quickly (a read timeout; watches use their own client).
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub caches: Caches,
    /// Admin tokens by job UID: read once from the job's Secret, never logged.
    pub tokens: Mutex<HashMap<String, String>>,
    /// Consecutive failed reconciles by job, for the error policy's backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// When each job's replicas were last asked for their latest checkpoints.
    pub checkpoints_asked: Mutex<HashMap<String, std::time::Instant>>,
    /// When each job's last operation ended.
    pub operation_ended: Mutex<HashMap<String, std::time::Instant>>,
}

fn owned_by<K: Resource>(job: &StreamJob, o: &K) -> bool {
    o.meta().namespace == job.namespace()
        && o.meta()
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_JOB))
            .is_some_and(|n| *n == job.name_any())
        && o.meta().owner_references.as_ref().is_none_or(|refs| {
            refs.iter()
                .all(|r| Some(&r.uid) == job.metadata.uid.as_ref() || r.kind != "StreamJob")
        })
}

impl Context {
    /// The job's pods, from the watch cache.
    pub fn pods(&self, job: &StreamJob) -> Vec<Arc<Pod>> {
        self.caches
            .pods
            .state()
            .into_iter()
            .filter(|p| owned_by(job, p.as_ref()))
            .collect()
    }

    pub fn claims(&self, job: &StreamJob) -> Vec<Arc<PersistentVolumeClaim>> {
        self.caches
            .claims
            .state()
            .into_iter()
            .filter(|c| owned_by(job, c.as_ref()))
            .collect()
    }

    pub fn service(&self, job: &StreamJob) -> Option<Arc<Service>> {
        let name = objects::service_name(job);
        self.caches.services.state().into_iter().find(|s| {
            s.metadata.namespace == job.namespace() && s.metadata.name.as_deref() == Some(&name)
        })
    }

    pub fn key(job: &StreamJob) -> String {
        job.uid().unwrap_or_else(|| {
            format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
        })
    }

    pub async fn publish(&self, job: &StreamJob, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &job.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish an Event");
        }
    }
}
