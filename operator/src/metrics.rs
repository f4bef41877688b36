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

use crate::crd::{Phase, Step};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    reason: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    reason: String,
    step: &'static str,
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
    operations: Family<OperationLabel, Counter>,
    operation_seconds: Family<ReasonLabel, Histogram>,
    pause_seconds: Family<ReasonLabel, Histogram>,
    step_seconds: Family<StepLabel, Histogram>,
    savepoint_uploaded: Family<ReasonLabel, Counter>,
    savepoints: Family<OperationLabel, Counter>,
    malformed: Counter,
    api_requests: Family<VerbLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: String,
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
            "Whether this replica holds the leader lease (1) or not (0)",
            leader.clone(),
        );
        let operations = Family::default();
        registry.register(
            "operations",
            "Upgrades, rescales, rollbacks, suspends and resumes, by result",
            operations.clone(),
        );
        let operation_seconds = Family::<ReasonLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.5, 2.0, 14))
        });
        registry.register(
            "operation_duration_seconds",
            "Total time of an operation, from its start to every replica ready",
            operation_seconds.clone(),
        );
        let pause_seconds = Family::<ReasonLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.5, 2.0, 14))
        });
        registry.register(
            "upgrade_pause_seconds",
            "Time writes were paused: from fencing the old version for its savepoint to every new replica ready",
            pause_seconds.clone(),
        );
        let step_seconds = Family::<StepLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 18))
        });
        registry.register(
            "operation_step_seconds",
            "Time each step of an operation took (savepointing, stopping, starting, waiting_ready, unfencing): the pause of an upgrade by phase",
            step_seconds.clone(),
        );
        let savepoint_uploaded = Family::default();
        registry.register(
            "savepoint_uploaded_bytes",
            "Bytes the replicas uploaded for savepoints, by reason (a stop-with-savepoint: while writes were fenced; the rest was in their checkpoints)",
            savepoint_uploaded.clone(),
        );
        let savepoints = Family::default();
        registry.register(
            "savepoints",
            "Savepoints by reason and result",
            savepoints.clone(),
        );
        let malformed = Counter::default();
        registry.register(
            "malformed_streamjobs",
            "StreamJobs skipped because they cannot be read",
            malformed.clone(),
        );
        let api_requests = Family::default();
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API server by verb (watches count once per connection)",
            api_requests.clone(),
        );
        Self {
            malformed,
            api_requests,
            registry,
            reconciles,
            errors,
            duration,
            jobs,
            phases: Mutex::new(BTreeMap::new()),
            leader,
            operations,
            operation_seconds,
            pause_seconds,
            step_seconds,
            savepoint_uploaded,
            savepoints,
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
            Phase::Recovering,
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

    pub fn operation(&self, reason: &str, ok: bool, seconds: f64, pause: Option<f64>) {
        let result = if ok { "success" } else { "failure" };
        self.operations
            .get_or_create(&OperationLabel {
                reason: reason.to_owned(),
                result,
            })
            .inc();
        if ok {
            self.operation_seconds
                .get_or_create(&ReasonLabel {
                    reason: reason.to_owned(),
                })
                .observe(seconds);
            if let Some(p) = pause {
                self.pause_seconds
                    .get_or_create(&ReasonLabel {
                        reason: reason.to_owned(),
                    })
                    .observe(p);
            }
        }
    }

    pub fn step(&self, reason: &str, step: Step, seconds: f64) {
        let step = match step {
            Step::Warming => "warming",
            Step::Savepointing => "savepointing",
            Step::Promoting => "promoting",
            Step::Stopping => "stopping",
            Step::Starting => "starting",
            Step::WaitingReady => "waiting_ready",
            Step::Unfencing => "unfencing",
        };
        self.step_seconds
            .get_or_create(&StepLabel {
                reason: reason.to_owned(),
                step,
            })
            .observe(seconds);
    }

    pub fn savepoint(&self, reason: &str, ok: bool, uploaded_bytes: u64) {
        self.savepoint_uploaded
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc_by(uploaded_bytes);
        let result = if ok { "success" } else { "failure" };
        self.savepoints
            .get_or_create(&OperationLabel {
                reason: reason.to_owned(),
                result,
            })
            .inc();
    }

    pub fn malformed(&self) {
        self.malformed.inc();
    }

    /// Counts one request to the API server.
    pub fn api_request(&self, verb: &str) {
        self.api_requests
            .get_or_create(&VerbLabel {
                verb: verb.to_owned(),
            })
            .inc();
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
