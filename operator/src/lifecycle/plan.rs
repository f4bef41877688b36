//! The planner: `(job, status, observed, now) -> (next status, effects, when to plan again)`.
//! No API calls and no clock: everything it knows is passed in, so it is tested as a table.
//!
//! One call advances the job by at most one step and records it in the status; the executor
//! persists that status before it performs the effects, so every effect belongs to a step that
//! is already written down (write-ahead). Steps that need no wait return [`Wake::Now`] and the
//! executor plans again in the same reconcile.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{Timestamp, Unit};
use kube::ResourceExt;

use super::layout::{self, Carry, Source};
use super::model::{Effect, Need, Observed, Outcome, Plan, PodPhase, PodView, Settings, Wake};
use super::{retention, summary};
use crate::crd::{
    Deployment, Disposal, Operation, OperationKind, Phase, SavepointRef, Slot, Step, StreamJob,
    StreamJobSpec, StreamJobStatus, UpgradeMode, UpgradeStrategy,
};
use crate::objects;
use crate::status::{self, DEGRADED};

/// Default seconds a savepoint may take.
pub const SAVEPOINT_TIMEOUT: i64 = 300;
/// Default seconds a new version may take to become ready.
pub const READINESS_TIMEOUT: i64 = 300;
/// Seconds the old replicas have to accept an unfence before they are restarted.
pub const UNFENCE_TIMEOUT: i64 = 60;
/// Seconds beyond a pod's grace period before it is deleted with force, and again before the
/// operation gives up on it.
pub const STOP_MARGIN: i64 = 30;
/// How long to wait before deleting what a failed savepoint left behind (its sidecars may still
/// be uploading).
pub const DISPOSAL_DELAY: i64 = 60;
/// How often a savepoint in progress is polled.
/// The shortest poll of a sidecar answer that comes without a watch event (a savepoint, a
/// sidecar becoming ready): a step that has lasted `t` is polled every `t / 20`, between this and
/// [`POLL_MAX`].
pub const POLL_MIN: Duration = Duration::from_millis(50);
pub const POLL_MAX: Duration = Duration::from_millis(500);

/// Plans the next step for `job`.
pub fn plan(
    job: &StreamJob,
    status: &StreamJobStatus,
    observed: &Observed,
    now: Timestamp,
    settings: &Settings,
) -> Plan {
    let mut p = Planner {
        job,
        obs: observed,
        now,
        settings,
        st: status.clone(),
        effects: Vec::new(),
        wake: Wake::Idle,
        need: None,
    };
    p.run();
    if let Some(need) = p.need {
        return Plan {
            status: status.clone(),
            effects: Vec::new(),
            wake: Wake::Now,
            need: Some(need),
        };
    }
    let events = summary::summarize(job, status, &mut p.st, observed, &time(now));
    p.effects.extend(events);
    Plan {
        status: p.st,
        effects: p.effects,
        wake: p.wake,
        need: None,
    }
}

pub(super) struct Planner<'a> {
    pub job: &'a StreamJob,
    pub obs: &'a Observed,
    pub now: Timestamp,
    pub settings: &'a Settings,
    pub st: StreamJobStatus,
    pub effects: Vec<Effect>,
    pub wake: Wake,
    pub need: Option<Need>,
}

/// A time as stored in the status (millisecond precision).
pub fn time(t: Timestamp) -> String {
    t.round(Unit::Millisecond).unwrap_or(t).to_string()
}

pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

impl Planner<'_> {
    fn run(&mut self) {
        if self.st.job_id.is_none() {
            // Recorded once, before anything is stored under it.
            let id = self.job.uid().unwrap_or_else(|| self.job.name_any());
            self.st.job_id = Some(id);
        }
        self.take_rejections();
        self.strays();
        self.disposals();
        self.copies();
        match self.st.operation.clone() {
            Some(op) => self.drive(op),
            None => self.idle(),
        }
    }

    // --- small helpers ------------------------------------------------------------------------

    pub fn now_str(&self) -> String {
        time(self.now)
    }

    pub fn after(&self, seconds: i64) -> String {
        time(self.now + k8s_openapi::jiff::SignedDuration::from_secs(seconds))
    }

    pub fn past(&self, deadline: Option<&str>) -> bool {
        deadline.and_then(parse_time).is_some_and(|d| self.now >= d)
    }

    /// Plan again at `deadline` at the latest.
    pub fn wake_by(&mut self, deadline: Option<&str>) {
        match deadline.and_then(parse_time) {
            Some(d) => {
                let left = d.duration_since(self.now).as_secs_f64().max(0.05);
                self.wake(Wake::After(Duration::from_secs_f64(left)));
            }
            None => self.wake(Wake::Idle),
        }
    }

    pub fn wake(&mut self, w: Wake) {
        self.wake = match (self.wake, w) {
            (Wake::Now, _) | (_, Wake::Now) => Wake::Now,
            (Wake::After(a), Wake::After(b)) => Wake::After(a.min(b)),
            (Wake::After(a), Wake::Idle) | (Wake::Idle, Wake::After(a)) => Wake::After(a),
            (Wake::Idle, Wake::Idle) => Wake::Idle,
        };
    }

    pub fn event(&mut self, warning: bool, reason: &'static str, note: impl Into<String>) {
        self.effects.push(Effect::Event {
            warning,
            reason,
            note: note.into(),
        });
    }

    pub fn degraded(&mut self, reason: &str, message: impl Into<String>) {
        let now = self.now_str();
        status::set_at(
            &mut self.st.conditions,
            DEGRADED,
            true,
            reason,
            message,
            self.job.metadata.generation,
            &now,
        );
    }

    pub fn valid(&self) -> bool {
        self.obs.spec_problems.is_empty()
    }

    pub fn desired_hash(&self) -> String {
        objects::spec_hash(self.job)
    }

    /// The spec may be rolled out: valid, and not the one that was given up on.
    pub fn wants(&self, hash: &str) -> bool {
        self.valid()
            && self.desired_hash() != hash
            && self.st.failed_spec_hash.as_deref() != Some(&self.desired_hash())
    }

    pub fn spec_of(&self, d: &Deployment) -> StreamJobSpec {
        layout::deployment_spec(self.job, d)
    }

    pub fn next_n(&mut self) -> i64 {
        self.st.operations += 1;
        self.st.operations
    }

    pub fn has_storage(&self) -> bool {
        self.job.spec.state.location.is_some()
    }

    /// Every replica of `d` has a ready pod of `d`'s version.
    pub fn all_ready(&self, d: &Deployment) -> bool {
        (0..layout::parallelism(self.job, d)).all(|i| {
            self.obs.pods.get(&i).is_some_and(|p| {
                p.ready && !p.deleting && p.spec_hash.as_deref() == Some(d.hash.as_str())
            })
        })
    }

    pub fn step_timeout(&self, step: Step, d: Option<&Deployment>) -> Option<i64> {
        let spec = &self.job.spec;
        match step {
            Step::Savepointing => Some(
                spec.savepoint
                    .as_ref()
                    .and_then(|s| s.timeout_seconds)
                    .unwrap_or(SAVEPOINT_TIMEOUT),
            ),
            Step::Stopping => {
                let grace = d
                    .or(self.st.deployment.as_ref())
                    .map(|d| self.spec_of(d))
                    .and_then(|s| s.pod.and_then(|p| p.termination_grace_period_seconds))
                    .unwrap_or(objects::DEFAULT_GRACE_SECONDS);
                Some(grace + STOP_MARGIN)
            }
            Step::Starting => None,
            Step::Promoting => Some(UNFENCE_TIMEOUT),
            Step::Warming | Step::WaitingReady => Some(
                spec.rollback
                    .as_ref()
                    .map(|r| r.readiness_timeout_seconds)
                    .unwrap_or(READINESS_TIMEOUT),
            ),
            Step::Unfencing => Some(UNFENCE_TIMEOUT),
        }
    }

    /// Records a new operation; `n` names its savepoint and identifies it to the sidecars.
    pub fn begin(
        &mut self,
        n: i64,
        kind: OperationKind,
        step: Step,
        reason: &str,
        target: Option<Deployment>,
        savepoint: Option<String>,
    ) {
        let now = self.now_str();
        let deadline = self
            .step_timeout(step, self.st.deployment.as_ref())
            .map(|s| self.after(s));
        self.st.operation = Some(Operation {
            kind,
            step,
            reason: reason.to_owned(),
            target,
            savepoint,
            savepoint_complete: false,
            fenced_at: None,
            started_at: now.clone(),
            step_started_at: now,
            id: layout::operation_id(&self.st, n),
            deadline,
            failure: None,
            recheck_lineage: None,
            warm_from: None,
        });
        self.wake(Wake::Now);
    }

    /// When to look again at an answer no watch event announces, in a step that began at
    /// `since`: soon at first, less often as the step goes on.
    pub fn poll(&self, since: &str) -> Duration {
        Duration::from_secs_f64(self.seconds_since(since) / 20.0).clamp(POLL_MIN, POLL_MAX)
    }

    /// Records how long the operation's current step took (for the operator's metrics).
    pub fn step_ended(&mut self) {
        if let Some(op) = &self.st.operation {
            let seconds = self.seconds_since(&op.step_started_at);
            self.effects.push(Effect::StepEnded {
                reason: op.reason.clone(),
                step: op.step,
                seconds,
            });
        }
    }

    pub fn next_step(&mut self, step: Step) {
        self.step_ended();
        let now = self.now_str();
        let timeout = {
            let target = self.st.operation.as_ref().and_then(|o| o.target.clone());
            let d = if step == Step::Stopping {
                self.st.deployment.clone()
            } else {
                target
            };
            self.step_timeout(step, d.as_ref())
        };
        let deadline = timeout.map(|s| self.after(s));
        if let Some(op) = self.st.operation.as_mut() {
            op.step = step;
            op.step_started_at = now;
            op.deadline = deadline;
        }
        self.wake(Wake::Now);
    }

    pub fn seconds_since(&self, t: &str) -> f64 {
        parse_time(t)
            .map(|t| self.now.duration_since(t).as_secs_f64())
            .unwrap_or(0.0)
    }

    // --- pods -----------------------------------------------------------------------------------

    fn rejected_backoff(&self, hash: &str) -> Option<String> {
        let r = self.st.rejection.as_ref().filter(|r| r.spec_hash == hash)?;
        let seconds = 30i64 << r.attempts.clamp(1, 4).saturating_sub(1);
        let retry = parse_time(&r.at)? + k8s_openapi::jiff::SignedDuration::from_secs(seconds);
        (self.now < retry).then(|| time(retry))
    }

    /// Keeps `d`'s pods: deletes those beyond its parallelism, of another version or finished;
    /// creates missing ones (never while a pod of that index still exists, even stopping).
    pub fn converge(&mut self, d: &Deployment) {
        let spec = self.spec_of(d);
        let p = spec.parallelism;
        for (&i, pod) in &self.obs.pods {
            if pod.deleting {
                continue;
            }
            let why = if i >= p {
                "beyond the parallelism"
            } else if pod.spec_hash.as_deref() != Some(d.hash.as_str()) {
                "of another version"
            } else if pod.phase == PodPhase::Terminated {
                "finished"
            } else {
                continue;
            };
            self.effects.push(Effect::DeletePod {
                slot: self.live_slot(),
                replica: i,
                force: false,
                why,
            });
        }
        let missing: Vec<i32> = (0..p).filter(|i| !self.obs.pods.contains_key(i)).collect();
        if missing.is_empty() {
            return;
        }
        if let Some(retry) = self.rejected_backoff(&d.hash) {
            self.wake_by(Some(&retry));
            return;
        }
        let claims = spec
            .state
            .volume
            .as_ref()
            .is_some_and(|v| v.persistent_volume_claim.is_some());
        for i in missing {
            if claims && !self.obs.claims.contains(&i) {
                self.effects.push(Effect::CreateClaim {
                    replica: i,
                    deployment: d.clone(),
                });
            }
            self.effects.push(Effect::CreatePod {
                replica: i,
                deployment: d.clone(),
                warm_from: None,
            });
        }
    }

    /// Deletes every pod (with force past `deadline`); true once none is left.
    pub fn stop_all(&mut self, force: bool) -> bool {
        self.delete_deployed(force, "stopping the job");
        self.obs.pods.is_empty()
    }

    /// Deletes every pod of the deployed set not stopping already (every one with `force`).
    pub fn delete_deployed(&mut self, force: bool, why: &'static str) {
        for (&i, pod) in &self.obs.pods {
            if force || !pod.deleting {
                self.effects.push(Effect::DeletePod {
                    slot: self.live_slot(),
                    replica: i,
                    force,
                    why,
                });
            }
        }
    }

    /// The pod set of the deployed version (the one `obs.pods` holds).
    pub fn live_slot(&self) -> Option<Slot> {
        self.st.deployed_slot()
    }

    /// The pods observed for deployment `d`: a warm handover's standby set, or the deployed one.
    pub fn pods_for(&self, d: &Deployment) -> &BTreeMap<i32, PodView> {
        let standby = self.st.operation.as_ref().and_then(|o| o.standby_slot());
        if standby.is_some() && d.slot == standby && d.slot != self.live_slot() {
            &self.obs.standby
        } else {
            &self.obs.pods
        }
    }

    /// Deletes the pods of a set no longer in use: a handover's new pods once it was abandoned,
    /// the old version's once it handed over.
    fn strays(&mut self) {
        for s in &self.obs.strays {
            if !s.deleting {
                self.effects.push(Effect::DeletePod {
                    slot: s.slot,
                    replica: s.replica,
                    force: false,
                    why: "of a pod set no longer in use",
                });
            }
        }
    }

    /// The deployment whose pods are being created now.
    fn creating(&self) -> Option<Deployment> {
        match &self.st.operation {
            Some(o) if matches!(o.step, Step::Warming | Step::Starting | Step::WaitingReady) => {
                o.target.clone()
            }
            _ => self.st.deployment.clone(),
        }
    }

    /// Records a refused pod (permanent for this spec: backed off, reported once per message),
    /// and forgets it once the spec changes or every pod of it exists.
    fn take_rejections(&mut self) {
        let Some(d) = self.creating() else {
            self.st.rejection = None;
            return;
        };
        let rejected = self.obs.outcomes.iter().find_map(|o| match o {
            Outcome::PodRejected { replica, message } => Some((*replica, message.clone())),
            _ => None,
        });
        if let Some((replica, message)) = rejected {
            let previous = self.st.rejection.take().filter(|r| r.spec_hash == d.hash);
            let attempts = previous.as_ref().map_or(0, |r| r.attempts) + 1;
            if previous.as_ref().map(|r| &r.message) != Some(&message) {
                let note =
                    format!("the API server refused the pod of replica {replica}: {message}");
                self.event(true, "PodRejected", note);
            }
            self.st.rejection = Some(crate::crd::Rejection {
                spec_hash: d.hash.clone(),
                message,
                at: self.now_str(),
                attempts,
            });
        } else if let Some(r) = &self.st.rejection {
            let pods = self.pods_for(&d);
            let all = (0..layout::parallelism(self.job, &d)).all(|i| {
                pods.get(&i)
                    .is_some_and(|p| p.spec_hash.as_deref() == Some(d.hash.as_str()))
            });
            if r.spec_hash != d.hash || all {
                self.st.rejection = None;
            }
        }
    }

    // --- disposals ------------------------------------------------------------------------------

    /// Queues savepoint locations for deletion, never a protected one.
    pub fn dispose_later(&mut self, locations: Vec<String>, delay: i64) {
        let not_before = self.after(delay);
        for location in locations {
            if !self.st.disposals.iter().any(|d| d.location == location) {
                self.st.disposals.push(Disposal {
                    location,
                    not_before: not_before.clone(),
                });
            }
        }
    }

    fn disposals(&mut self) {
        let mut answered = Vec::new();
        for o in &self.obs.outcomes {
            if let Outcome::Disposed { location, result } = o {
                answered.push(location.clone());
                match result {
                    Ok(n) => {
                        self.st.disposals.retain(|d| &d.location != location);
                        let note = format!("deleted savepoint {location} ({n} objects)");
                        self.event(false, "SavepointDisposed", note);
                    }
                    Err(e) => {
                        let retry = self.after(300);
                        if let Some(d) = self
                            .st
                            .disposals
                            .iter_mut()
                            .find(|d| &d.location == location)
                        {
                            d.not_before = retry;
                        }
                        let note = format!(
                            "could not delete savepoint {location}: {e}; retrying in 5 minutes"
                        );
                        self.event(true, "SavepointDisposalFailed", note);
                    }
                }
            }
        }
        let protected = retention::protected(&self.st);
        self.st
            .disposals
            .retain(|d| !protected.contains(&d.location));
        let mut next: Option<String> = None;
        for d in self.st.disposals.clone() {
            if answered.contains(&d.location) {
                continue;
            }
            if self.past(Some(&d.not_before)) {
                self.effects.push(Effect::Dispose {
                    location: d.location.clone(),
                });
                self.wake(Wake::Now);
            } else if next.as_ref().is_none_or(|n| d.not_before < *n) {
                next = Some(d.not_before.clone());
            }
        }
        if next.is_some() {
            self.wake_by(next.as_deref());
        }
    }

    /// Makes the savepoints of the history self-contained (server-side copies of the checkpoint
    /// files they reference), one reconcile at a time, only while no operation runs: a copy never
    /// competes with an upgrade's restore.
    fn copies(&mut self) {
        for o in &self.obs.outcomes {
            let Outcome::Completed { location, result } = o else {
                continue;
            };
            let retry = self.after(60);
            let Some(s) = self
                .st
                .savepoints
                .iter_mut()
                .find(|s| &s.location == location)
            else {
                continue;
            };
            let note = match result {
                Ok((0, _)) => None,
                Ok((n, bytes)) => Some((
                    false,
                    "SavepointSelfContained",
                    format!(
                        "savepoint {location} is self-contained: copied {n} files ({bytes} bytes) from its checkpoints, server-side"
                    ),
                )),
                Err(e) => Some((
                    true,
                    "SavepointCopyFailed",
                    format!(
                        "savepoint {location} still references its checkpoints' files (kept for it): {e}; trying again in a minute"
                    ),
                )),
            };
            match result {
                Ok(_) => {
                    s.self_contained = Some(true);
                    s.copy_retry_at = None;
                }
                Err(_) => s.copy_retry_at = Some(retry),
            }
            if let Some(ref mut last) = self.st.last_savepoint
                && &last.location == location
            {
                last.self_contained = Some(result.is_ok());
            }
            if let Some((warning, reason, note)) = note {
                self.event(warning, reason, note);
            }
        }
        if self.st.operation.is_some() {
            return;
        }
        let answered: Vec<&str> = self
            .obs
            .outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Completed { location, .. } => Some(location.as_str()),
                _ => None,
            })
            .collect();
        let pending =
            self.st.savepoints.iter().find(|s| {
                s.self_contained == Some(false) && !answered.contains(&s.location.as_str())
            });
        let Some(s) = pending.cloned() else {
            return;
        };
        if self.past(s.copy_retry_at.as_deref()) || s.copy_retry_at.is_none() {
            self.effects.push(Effect::CompleteSavepoint {
                location: s.location,
            });
            self.wake(Wake::Now);
        } else {
            self.wake_by(s.copy_retry_at.as_deref());
        }
    }

    /// Adds a completed savepoint to the history and applies retention.
    pub fn record_savepoint(&mut self, location: &str, reason: &str, parallelism: i32) {
        let r = SavepointRef {
            location: location.to_owned(),
            time: self.now_str(),
            reason: reason.to_owned(),
            parallelism,
            self_contained: Some(false),
            copy_retry_at: None,
        };
        self.st.last_savepoint = Some(r.clone());
        if !self.st.savepoints.iter().any(|s| s.location == location) {
            self.st.savepoints.push(r);
        }
        self.retain();
    }

    pub fn retain(&mut self) {
        let dropped = retention::retain(self.job, &mut self.st, self.now);
        self.dispose_later(dropped.into_iter().map(|s| s.location).collect(), 0);
    }

    // --- no operation in flight -----------------------------------------------------------------

    fn idle(&mut self) {
        if self.job.spec.suspend {
            return self.suspend();
        }
        if self.st.phase == Some(Phase::Suspended) {
            if self.valid() {
                self.resume();
            }
            return;
        }
        let Some(d) = self.st.deployment.clone() else {
            if self.valid() {
                self.first_deployment();
            }
            return;
        };
        if self.wants(&d.hash) && self.upgrade(&d) {
            return;
        }
        if self.need.is_some() {
            return;
        }
        self.converge(&d);
        self.retain();
        if self.all_ready(&d) {
            self.st.stable = Some(d.clone());
            if self.st.failed_spec_hash.as_deref() == Some(d.hash.as_str()) {
                // The spec given up on became ready after all.
                self.st.failed_spec_hash = None;
            }
            self.savepoints(&d);
        }
        self.claims_cleanup(&d);
        if let Some(s) = retention::next_expiry(self.job, &self.st, self.now) {
            self.wake(Wake::After(Duration::from_secs(s as u64)));
        }
    }

    fn first_deployment(&mut self) {
        let n = self.next_n();
        let d = layout::deployment(
            self.job,
            &self.job.spec,
            &self.st,
            self.settings,
            format!("l{n}"),
            self.job.spec.initial_savepoint.clone(),
        );
        self.st.deployment = Some(d.clone());
        self.converge(&d);
    }

    fn suspend(&mut self) {
        if self.st.phase == Some(Phase::Suspended) {
            self.stop_all(false);
            return;
        }
        let Some(d) = self.st.deployment.clone() else {
            self.st.phase = Some(Phase::Suspended);
            self.st.resume_from = None;
            return;
        };
        let n = self.next_n();
        let storage = d.state_location.is_some() && self.has_storage();
        if storage && self.all_ready(&d) {
            let sp = layout::savepoint_location(self.job, &self.job.spec, &self.st, "suspend", n);
            self.begin(
                n,
                OperationKind::Suspend,
                Step::Savepointing,
                "suspend",
                None,
                sp,
            );
            self.event(false, "Suspending", "stopping the job with a savepoint");
        } else {
            self.begin(
                n,
                OperationKind::Suspend,
                Step::Stopping,
                "suspend",
                None,
                None,
            );
            let why = if storage {
                "not every replica is ready, so no savepoint: each replica's final and latest checkpoints carry its state"
            } else {
                "state.location is not set: only state on persistent volumes survives"
            };
            self.event(
                true,
                "SuspendWithoutSavepoint",
                format!("suspending without a savepoint: {why}"),
            );
        }
    }

    fn resume(&mut self) {
        let spec = self.job.spec.clone();
        let target = match (self.st.resume_from.clone(), self.st.deployment.clone()) {
            (Some(sp), _) => {
                let n = self.next_n();
                layout::deployment(
                    self.job,
                    &spec,
                    &self.st,
                    self.settings,
                    format!("l{n}"),
                    Some(sp),
                )
            }
            (None, Some(d)) => {
                match layout::carry(self.job, &self.st, &d, &spec, self.obs.checkpoints.as_ref()) {
                    Carry::Ready(source) => {
                        layout::carried(self.job, &mut self.st, self.settings, &d, &spec, source)
                    }
                    Carry::Need(need) => {
                        self.need = Some(need);
                        return;
                    }
                    Carry::Blocked(why) => return self.blocked("resume", why),
                }
            }
            (None, None) => {
                let n = self.next_n();
                layout::deployment(
                    self.job,
                    &spec,
                    &self.st,
                    self.settings,
                    format!("l{n}"),
                    spec.initial_savepoint.clone(),
                )
            }
        };
        let n = self.next_n();
        let from = target
            .restore_from
            .clone()
            .unwrap_or_else(|| "its own checkpoints".to_owned());
        self.begin(
            n,
            OperationKind::Resume,
            Step::Starting,
            "resume",
            Some(target),
            None,
        );
        self.event(false, "Resuming", format!("resuming from {from}"));
    }

    /// An operation that cannot start: reported once per reason, retried on every change.
    fn blocked(&mut self, what: &str, why: String) {
        let message = format!("cannot {what}: {why}");
        let already = self
            .st
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.status == "True" && c.message == message);
        if !already {
            self.event(true, "UpgradeBlocked", message.clone());
        }
        self.degraded("UpgradeBlocked", message);
    }

    /// Starts an upgrade (or rescale) from `d` to the job's spec; false when it cannot start.
    fn upgrade(&mut self, d: &Deployment) -> bool {
        let spec = self.job.spec.clone();
        let old = self.spec_of(d);
        let rescale = old.parallelism != spec.parallelism;
        let reason = if rescale { "rescale" } else { "upgrade" };
        let storage = self.has_storage() && d.state_location.is_some();
        let ready = self.all_ready(d);
        let mode = if self.has_storage() {
            spec.upgrade_mode
        } else {
            UpgradeMode::LastState
        };
        let hash = self.desired_hash();
        if !self.has_storage() && rescale {
            self.event(
                true,
                "RescaleWithoutStorage",
                "state.location is not set: state cannot be redistributed to the new parallelism",
            );
        }
        let savepoint_upgrade = |p: &mut Self, why: Option<String>| {
            let n = p.next_n();
            let sp = layout::savepoint_location(p.job, &spec, &p.st, reason, n);
            let target =
                layout::deployment(p.job, &spec, &p.st, p.settings, format!("l{n}"), sp.clone());
            p.begin(
                n,
                OperationKind::Upgrade,
                Step::Savepointing,
                reason,
                Some(target),
                sp,
            );
            if let Some(why) = why {
                p.event(
                    false,
                    "LastStateFallback",
                    format!("taking a savepoint instead of restoring checkpoints: {why}"),
                );
            }
        };
        if mode == UpgradeMode::Savepoint
            && ready
            && storage
            && spec.upgrade_strategy == UpgradeStrategy::WarmHandover
        {
            // A rescale too: each new replica fetches the old checkpoints that overlap its key
            // groups, and its restore of the savepoint reuses them.
            self.warm_handover(d, &spec, reason);
            let note = format!("{reason} to spec {hash} (warm handover)");
            self.event(false, "UpgradeStarted", note);
            return true;
        }
        match mode {
            UpgradeMode::Stateless => {
                let n = self.next_n();
                let target = layout::deployment(
                    self.job,
                    &spec,
                    &self.st,
                    self.settings,
                    format!("l{n}"),
                    None,
                );
                self.begin(
                    n,
                    OperationKind::Upgrade,
                    Step::Stopping,
                    reason,
                    Some(target),
                    None,
                );
            }
            UpgradeMode::Savepoint if ready && storage => savepoint_upgrade(self, None),
            UpgradeMode::LastState if ready && storage => {
                let location = d.state_location.clone().unwrap_or_default();
                let p_old = old.parallelism;
                let Some(c) = self
                    .obs
                    .checkpoints
                    .as_ref()
                    .filter(|c| c.location == location && c.parallelism == p_old)
                else {
                    self.need = Some(Need::Checkpoints {
                        location,
                        parallelism: p_old,
                    });
                    return true;
                };
                let max_age = spec
                    .last_state
                    .as_ref()
                    .and_then(|l| l.max_checkpoint_age_seconds);
                let missing = (0..p_old).find(|i| !c.latest.contains_key(i));
                let stale = c.latest.iter().find(|(_, ck)| {
                    max_age.is_some_and(|a| self.now.duration_since(ck.created_at).as_secs() > a)
                });
                if let Some(i) = missing {
                    savepoint_upgrade(
                        self,
                        Some(format!(
                            "replica {i} has no checkpoint in lineage {}",
                            d.lineage
                        )),
                    );
                } else if let Some((i, ck)) = stale {
                    let age = self.now.duration_since(ck.created_at).as_secs();
                    savepoint_upgrade(
                        self,
                        Some(format!(
                            "replica {i}'s latest checkpoint is {age} s old, more than lastState.maxCheckpointAgeSeconds"
                        )),
                    );
                } else {
                    let source = match layout::carry(self.job, &self.st, d, &spec, Some(c)) {
                        Carry::Ready(s) => s,
                        // Every replica has a checkpoint: never blocked, never a further need.
                        Carry::Need(_) | Carry::Blocked(_) => Source::Checkpoints(location),
                    };
                    self.start_carried(d, &spec, source, reason);
                }
            }
            _ => {
                // Not every replica is ready (no savepoint can be taken), or no storage.
                match layout::carry(self.job, &self.st, d, &spec, self.obs.checkpoints.as_ref()) {
                    Carry::Ready(source) => {
                        if mode == UpgradeMode::Savepoint {
                            self.event(false, "UpgradeWithoutSavepoint", "not every replica is ready, so no savepoint can be taken: the new version continues from the replicas' checkpoints");
                        }
                        self.start_carried(d, &spec, source, reason);
                    }
                    Carry::Need(need) => {
                        self.need = Some(need);
                        return true;
                    }
                    Carry::Blocked(why) => {
                        self.blocked(reason, why);
                        return false;
                    }
                }
            }
        }
        let note = format!("{reason} to spec {hash} ({mode:?} mode)");
        self.event(false, "UpgradeStarted", note);
        true
    }

    /// Starts a warm handover from `d`: the new version's pods come up under the other pod set
    /// and restore from `d`'s checkpoints while `d` serves.
    fn warm_handover(&mut self, d: &Deployment, spec: &StreamJobSpec, reason: &str) {
        let n = self.next_n();
        let sp = layout::savepoint_location(self.job, spec, &self.st, reason, n);
        let mut target = layout::deployment(
            self.job,
            spec,
            &self.st,
            self.settings,
            format!("l{n}"),
            sp.clone(),
        );
        target.slot = Some(Slot::next(d.slot));
        self.begin(
            n,
            OperationKind::Upgrade,
            Step::Warming,
            reason,
            Some(target),
            sp,
        );
        if let Some(o) = self.st.operation.as_mut() {
            o.warm_from = d.state_location.clone();
        }
    }

    fn start_carried(
        &mut self,
        d: &Deployment,
        spec: &StreamJobSpec,
        source: Source,
        reason: &str,
    ) {
        let point = matches!(source, Source::Point(_));
        let target = layout::carried(self.job, &mut self.st, self.settings, d, spec, source);
        let n = self.next_n();
        self.begin(
            n,
            OperationKind::Upgrade,
            Step::Stopping,
            reason,
            Some(target),
            None,
        );
        if point {
            self.recheck(d);
        }
    }

    /// Marks the operation's restore point for a second look once `from`'s pods have stopped.
    pub fn recheck(&mut self, from: &Deployment) {
        let lineage = from.state_location.clone();
        if let Some(o) = self.st.operation.as_mut() {
            o.recheck_lineage = lineage;
        }
    }

    /// Savepoints on demand (trigger nonce) and on schedule, while every replica is ready.
    fn savepoints(&mut self, d: &Deployment) {
        if !self.has_storage() || d.state_location.is_none() {
            return;
        }
        let settings = self.job.spec.savepoint.clone().unwrap_or_default();
        let nonce = settings.trigger_nonce;
        if nonce.is_some() && nonce != self.st.last_trigger_nonce {
            self.st.last_trigger_nonce = nonce;
            let n = self.next_n();
            let sp = layout::savepoint_location(self.job, &self.job.spec, &self.st, "trigger", n);
            self.begin(
                n,
                OperationKind::Savepoint,
                Step::Savepointing,
                "trigger",
                None,
                sp,
            );
            return;
        }
        let Some(interval) = settings.periodic_interval_seconds.filter(|s| *s > 0) else {
            return;
        };
        let last = [
            self.st.last_periodic_attempt.clone(),
            self.st.last_savepoint.as_ref().map(|s| s.time.clone()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|t| parse_time(&t))
        .max();
        let due = last.map(|t| t + k8s_openapi::jiff::SignedDuration::from_secs(interval));
        match due {
            Some(due) if due > self.now => {
                self.wake_by(Some(&time(due)));
            }
            _ => {
                self.st.last_periodic_attempt = Some(self.now_str());
                let n = self.next_n();
                let sp =
                    layout::savepoint_location(self.job, &self.job.spec, &self.st, "periodic", n);
                self.begin(
                    n,
                    OperationKind::Savepoint,
                    Step::Savepointing,
                    "periodic",
                    None,
                    sp,
                );
            }
        }
    }

    /// Claims of replicas above the parallelism, when the spec asks to delete them.
    fn claims_cleanup(&mut self, d: &Deployment) {
        let spec = self.spec_of(d);
        let delete = spec
            .state
            .volume
            .as_ref()
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .is_some_and(|c| c.delete_on_scale_down);
        if !delete {
            return;
        }
        for &i in &self.obs.claims {
            if i >= spec.parallelism && !self.obs.pods.contains_key(&i) {
                self.effects.push(Effect::DeleteClaim { replica: i });
            }
        }
    }
}
