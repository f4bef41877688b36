//! The operator's Prometheus metrics: reconciles, their durations and errors, and jobs by phase.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    errors: Family<KindLabel, Counter>,
    duration: Histogram,
    jobs: Family<PhaseLabel, Gauge<i64, std::sync::atomic::AtomicI64>>,
    phases: Mutex<BTreeMap<String, Phase>>,
    pub leader: Gauge<u64, AtomicU64>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stator_operator");
        let reconciles = Family::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        let errors = Family::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind of error",
            errors.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one StreamJob",
            duration.clone(),
        );
        let jobs = Family::default();
        registry.register("jobs", "StreamJobs by phase", jobs.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            jobs,
            phases: Mutex::new(BTreeMap::new()),
            leader,
        }
    }

    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        self.duration.observe(took.as_secs_f64());
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
        if let Some(kind) = error {
            self.errors.get_or_create(&KindLabel { kind }).inc();
        }
    }

    /// Records `job`'s phase (`None` when the job is gone).
    pub fn set_phase(&self, job: String, phase: Option<Phase>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        match phase {
            Some(p) => phases.insert(job, p),
            None => phases.remove(&job),
        };
        let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
        for p in [
            Phase::Deploying,
            Phase::Running,
            Phase::Upgrading,
            Phase::Suspended,
            Phase::Failed,
            Phase::RolledBack,
        ] {
            counts.insert(p.as_str(), 0);
        }
        for p in phases.values() {
            *counts.entry(p.as_str()).or_default() += 1;
        }
        for (phase, n) in counts {
            self.jobs.get_or_create(&PhaseLabel { phase }).set(n);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
