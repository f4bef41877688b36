//! The operation in flight, step by step. Every wait has a deadline fixed when its step began;
//! every failure ends with the old version serving (unfenced), a rollback, or the job Failed with
//! a reason and an Event. A suspend or a new spec is acted on as soon as the running step allows:
//! a savepoint, an unfence and a stop finish first (each bounded); a version that is not ready
//! yet is superseded at once.

use std::collections::BTreeMap;

use super::layout::{self, Carry, Source};
use super::model::{Effect, Outcome, PodPhase, SavepointAnswer, Wake};
use super::plan::{Planner, STOP_MARGIN};
use crate::crd::{Deployment, Operation, OperationKind, Phase, Step};

impl Planner<'_> {
    pub(super) fn drive(&mut self, op: Operation) {
        match op.step {
            Step::Warming => self.warming(op),
            Step::Promoting => self.promoting(op),
            Step::Savepointing => self.savepointing(op),
            Step::Unfencing => self.unfencing(op),
            Step::Stopping => self.stopping(op),
            Step::Starting => self.starting(op),
            Step::WaitingReady => self.waiting_ready(op),
        }
    }

    fn op_mut(&mut self) -> Option<&mut Operation> {
        self.st.operation.as_mut()
    }

    fn end(&mut self, op: &Operation, ok: bool) {
        self.step_ended();
        let seconds = self.seconds_since(&op.started_at);
        // Writes paused from the fence (after the savepoint's first phase) to every new replica
        // ready.
        let paused = self.seconds_since(op.fenced_at.as_deref().unwrap_or(&op.started_at));
        let pause =
            (ok && op.savepoint_complete && op.kind != OperationKind::Savepoint).then_some(paused);
        self.effects.push(Effect::OperationEnded {
            reason: op.reason.clone(),
            ok,
            seconds,
            pause,
        });
        self.st.operation = None;
        self.wake(Wake::Now);
    }

    // --- Warming (a warm handover) -----------------------------------------------------------

    /// The new version's pods restore from the old version's checkpoints beside it; once every
    /// one is warm, the old version takes its savepoint. Nothing is fenced yet, so giving up
    /// costs the running version nothing.
    fn warming(&mut self, op: Operation) {
        let (Some(target), Some(from), Some(d)) = (
            op.target.clone(),
            op.warm_from.clone(),
            self.st.deployment.clone(),
        ) else {
            return self.end(&op, false);
        };
        if self.job.spec.suspend || self.wants(&target.hash) {
            let by = if self.job.spec.suspend {
                "a suspend".to_owned()
            } else {
                format!("spec {}", self.desired_hash())
            };
            self.event(
                false,
                "Superseded",
                format!(
                    "warm handover to spec {} superseded by {by}: its pods are removed, the running version continues",
                    target.hash
                ),
            );
            return self.end(&op, false);
        }
        if !self.all_ready(&d) {
            // The savepoint needs every old replica: start again once they are ready (or take
            // the path for a version that is not ready).
            self.event(
                true,
                "HandoverPaused",
                "a replica of the running version is not ready, so no savepoint can be taken: the warm handover stops and the upgrade starts again",
            );
            return self.end(&op, false);
        }
        if let Some(r) = self
            .st
            .rejection
            .clone()
            .filter(|r| r.spec_hash == target.hash)
        {
            let why = format!("the API server refused its pods: {}", r.message);
            return self.handover_failed(&op, &target, why);
        }
        let p = layout::parallelism(self.job, &target);
        let mut warm = 0;
        for i in 0..p {
            match self.obs.standby.get(&i) {
                None => self.effects.push(Effect::CreatePod {
                    replica: i,
                    deployment: target.clone(),
                    warm_from: Some(from.clone()),
                }),
                Some(pod) if pod.deleting => {}
                Some(pod) if pod.phase == PodPhase::Terminated => {
                    let why = format!("the pod of replica {i} ended while warming up");
                    return self.handover_failed(&op, &target, why);
                }
                Some(pod) if pod.ready => warm += 1,
                Some(pod) => {
                    if let Some(problem) = pod.problem.clone() {
                        let why = format!("replica {i} cannot start: {problem}");
                        return self.handover_failed(&op, &target, why);
                    }
                }
            }
        }
        if warm == p {
            return self.next_step(Step::Savepointing);
        }
        if self.past(op.deadline.as_deref()) {
            let timeout = self.seconds_since(&op.step_started_at).round();
            let why = format!("{warm} of {p} replicas warm after {timeout} s");
            return self.handover_failed(&op, &target, why);
        }
        self.wake_by(op.deadline.as_deref());
        let poll = self.poll(&op.step_started_at);
        self.wake(Wake::After(poll));
    }

    /// The new version cannot come up beside the old one, which was never fenced and goes on
    /// serving; the spec is not tried again until it changes.
    fn handover_failed(&mut self, op: &Operation, target: &Deployment, why: String) {
        let message = format!(
            "warm handover to spec {} abandoned before the running version was fenced: {why}; the running version continues",
            target.hash
        );
        self.event(true, "HandoverFailed", message.clone());
        self.degraded("HandoverFailed", message);
        self.st.failed_spec_hash = Some(target.hash.clone());
        self.end(op, false);
    }

    // --- Promoting (a warm handover) ---------------------------------------------------------

    /// The savepoint is complete and the old replicas are fenced: their pods go, and every warm
    /// replica is told to restore the savepoint's delta and serve. Once each running one has
    /// accepted (or the step's deadline passed: those that did not are replaced by pods that
    /// restore the savepoint from scratch), the new version is the deployed one.
    fn promoting(&mut self, op: Operation) {
        let (Some(target), Some(location)) = (op.target.clone(), op.savepoint.clone()) else {
            return self.end(&op, false);
        };
        self.delete_deployed(false, "handed over to the new version");
        let answers: BTreeMap<i32, &Result<(), String>> = self
            .obs
            .outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Promoted {
                    replica,
                    operation,
                    result,
                } if *operation == op.id => Some((*replica, result)),
                _ => None,
            })
            .collect();
        let running: Vec<i32> = self
            .obs
            .standby
            .iter()
            .filter(|(_, p)| p.phase == PodPhase::Running && !p.deleting)
            .map(|(&i, _)| i)
            .collect();
        let accepted = |i: &i32| answers.get(i).is_some_and(|r| r.is_ok());
        let past = self.past(op.deadline.as_deref());
        if !past && answers.is_empty() && !running.is_empty() {
            for &i in &running {
                self.effects.push(Effect::Promote {
                    slot: target.slot,
                    replica: i,
                    location: location.clone(),
                    operation: op.id.clone(),
                });
            }
            return self.wake(Wake::Now);
        }
        if !past && !running.iter().all(accepted) {
            let poll = self.poll(&op.step_started_at);
            return self.wake(Wake::After(poll));
        }
        // Pods that were not promoted would wait forever: they are replaced.
        for (&i, pod) in &self.obs.standby {
            if !accepted(&i) && !pod.deleting {
                self.effects.push(Effect::DeletePod {
                    slot: target.slot,
                    replica: i,
                    force: false,
                    why: "not promoted in time: replaced by a pod restoring the savepoint",
                });
            }
        }
        self.st.deployment = Some(target);
        self.next_step(Step::WaitingReady);
    }

    // --- Savepointing ---------------------------------------------------------------------------

    fn savepointing(&mut self, op: Operation) {
        let Some(location) = op.savepoint.clone() else {
            return self.next_step(Step::Stopping);
        };
        let Some(d) = self.st.deployment.clone() else {
            return self.abandon(op, "nothing is deployed".into());
        };
        let stop = op.kind != OperationKind::Savepoint;
        let p = layout::parallelism(self.job, &d);
        // This operation's answers; the first replica to fence starts the write pause.
        let mut answers: BTreeMap<i32, SavepointAnswer> = BTreeMap::new();
        let mut fenced_at: Option<k8s_openapi::jiff::Timestamp> = None;
        let mut uploaded = 0u64;
        for o in &self.obs.outcomes {
            if let Outcome::Savepoint {
                replica,
                operation,
                answer,
                fenced_at: fenced,
                uploaded_bytes,
            } = o
                && *operation == op.id
            {
                answers.insert(*replica, answer.clone());
                fenced_at = match (fenced_at, *fenced) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                uploaded += uploaded_bytes.unwrap_or(0);
            }
        }
        if answers.is_empty() {
            for i in 0..p {
                let running = self
                    .obs
                    .pods
                    .get(&i)
                    .is_some_and(|pod| pod.phase == PodPhase::Running && !pod.deleting);
                if !running {
                    return self.abandon(op, format!("replica {i} has no running pod"));
                }
            }
            for i in 0..p {
                self.effects.push(Effect::TriggerSavepoint {
                    replica: i,
                    location: location.clone(),
                    stop,
                    operation: op.id.clone(),
                });
            }
            return self.wake(Wake::Now);
        }
        if let Some((i, why)) = answers.iter().find_map(|(i, a)| match a {
            SavepointAnswer::Failed(why) => Some((i, why)),
            _ => None,
        }) {
            return self.abandon(op.clone(), format!("replica {i}: {why}"));
        }
        let complete = (0..p).all(|i| answers.get(&i) == Some(&SavepointAnswer::Complete));
        if complete {
            self.record_savepoint(&location, &op.reason, p);
            self.effects.push(Effect::SavepointEnded {
                reason: op.reason.clone(),
                ok: true,
                uploaded_bytes: uploaded,
            });
            self.event(
                false,
                "SavepointComplete",
                format!("savepoint for {} complete at {location}", op.reason),
            );
            if op.kind == OperationKind::Savepoint {
                return self.end(&op, true);
            }
            if let Some(o) = self.op_mut() {
                o.savepoint_complete = true;
                if o.fenced_at.is_none() {
                    o.fenced_at = fenced_at.map(super::plan::time);
                }
            }
            if op.warm_from.is_some() {
                return self.next_step(Step::Promoting);
            }
            return self.next_step(Step::Stopping);
        }
        if self.past(op.deadline.as_deref()) {
            let timeout = self.seconds_since(&op.step_started_at).round();
            return self.abandon(op, format!("not complete after {timeout} s"));
        }
        // Each poll waits at the sidecar for the savepoint to complete (up to 2 s), so the poll
        // interval adds little to the pause.
        let poll = self.poll(&op.step_started_at);
        self.wake(Wake::After(poll));
    }

    /// A savepoint failed or timed out: nothing was lost (writes were at most fenced).
    fn abandon(&mut self, op: Operation, why: String) {
        self.effects.push(Effect::SavepointEnded {
            reason: op.reason.clone(),
            ok: false,
            uploaded_bytes: 0,
        });
        if let Some(sp) = &op.savepoint {
            // What it uploaded is deleted once its sidecars have surely stopped writing.
            let delay = self
                .job
                .spec
                .savepoint
                .as_ref()
                .and_then(|s| s.timeout_seconds)
                .unwrap_or(super::plan::SAVEPOINT_TIMEOUT)
                .max(super::plan::DISPOSAL_DELAY);
            self.dispose_later(vec![sp.clone()], delay);
        }
        match op.kind {
            OperationKind::Savepoint => {
                let message = format!("savepoint for {} failed: {why}", op.reason);
                self.event(true, "SavepointFailed", message.clone());
                self.degraded("SavepointFailed", message);
                self.end(&op, false);
            }
            OperationKind::Suspend => {
                // Suspend anyway: the fenced replicas stop, each with a final checkpoint, and a
                // resume continues from their checkpoints.
                let message = format!(
                    "suspend savepoint failed: {why}; suspending from the replicas' checkpoints"
                );
                self.event(true, "SavepointFailed", message.clone());
                self.degraded("SavepointFailed", message);
                if let Some(o) = self.op_mut() {
                    o.savepoint = None;
                }
                self.next_step(Step::Stopping);
            }
            _ => {
                let message = format!(
                    "savepoint for {} failed: {why}; the running version continues",
                    op.reason
                );
                self.event(true, "SavepointFailed", message.clone());
                self.degraded("SavepointFailed", message.clone());
                if let Some(t) = &op.target {
                    // Not retried until the spec changes.
                    self.st.failed_spec_hash = Some(t.hash.clone());
                }
                if let Some(o) = self.op_mut() {
                    o.failure = Some(message);
                }
                self.next_step(Step::Unfencing);
            }
        }
    }

    // --- Unfencing ------------------------------------------------------------------------------

    fn unfencing(&mut self, op: Operation) {
        let answers: BTreeMap<i32, bool> = self
            .obs
            .outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Unfenced { replica, ok } => Some((*replica, *ok)),
                _ => None,
            })
            .collect();
        let live: Vec<i32> = self
            .obs
            .pods
            .iter()
            .filter(|(_, p)| !p.deleting && p.phase == PodPhase::Running)
            .map(|(&i, _)| i)
            .collect();
        if answers.is_empty() && !live.is_empty() {
            for &i in &live {
                self.effects.push(Effect::Unfence { replica: i });
            }
            return self.wake(Wake::Now);
        }
        let fenced: Vec<i32> = live
            .iter()
            .copied()
            .filter(|i| answers.get(i) != Some(&true))
            .collect();
        if fenced.is_empty() {
            return self.end(&op, false);
        }
        if self.past(op.deadline.as_deref()) {
            // A replica that cannot be unfenced is restarted: a new sidecar is not fenced.
            for &i in &fenced {
                self.effects.push(Effect::DeletePod {
                    slot: self.live_slot(),
                    replica: i,
                    force: false,
                    why: "still fenced after an abandoned savepoint",
                });
            }
            let list: Vec<String> = fenced.iter().map(|i| i.to_string()).collect();
            self.event(
                true,
                "UnfenceFailed",
                format!(
                    "replicas {} did not accept the unfence: restarting them",
                    list.join(", ")
                ),
            );
            return self.end(&op, false);
        }
        let poll = self.poll(&op.step_started_at);
        self.wake(Wake::After(poll));
    }

    // --- Stopping -------------------------------------------------------------------------------

    fn stopping(&mut self, op: Operation) {
        let force = self.past(op.deadline.as_deref());
        if !self.stop_all(force) {
            let hard = op
                .deadline
                .as_deref()
                .and_then(super::plan::parse_time)
                .map(|d| {
                    super::plan::time(d + k8s_openapi::jiff::SignedDuration::from_secs(STOP_MARGIN))
                });
            if self.past(hard.as_deref()) {
                let left: Vec<String> = self.obs.pods.keys().map(|i| i.to_string()).collect();
                let message = format!(
                    "pods of replicas {} were not deleted even with force",
                    left.join(", ")
                );
                self.event(true, "StopFailed", message.clone());
                self.degraded("StopFailed", message);
                self.st.phase = Some(Phase::Failed);
                if let Some(t) = &op.target {
                    self.st.failed_spec_hash = Some(t.hash.clone());
                }
                return self.end(&op, false);
            }
            if force {
                self.event(
                    true,
                    "ForcedDelete",
                    "pods outlived their grace period: deleting them with force",
                );
                return self.wake_by(hard.as_deref());
            }
            return self.wake_by(op.deadline.as_deref());
        }
        if op.kind == OperationKind::Suspend {
            self.st.resume_from = op.savepoint.clone().filter(|_| op.savepoint_complete);
            self.st.phase = Some(Phase::Suspended);
            self.event(false, "Suspended", "all replicas stopped");
            return self.end(&op, true);
        }
        self.next_step(Step::Starting);
    }

    // --- Starting -------------------------------------------------------------------------------

    fn starting(&mut self, op: Operation) {
        let Some(mut target) = op.target.clone() else {
            return self.end(&op, false);
        };
        if let Some(lineage) = op.recheck_lineage.clone()
            && let Some(from) = self.st.deployment.clone()
        {
            // The stopped pods' final checkpoints may exist now.
            let from_p = layout::parallelism(self.job, &from);
            let Some(c) = self
                .obs
                .checkpoints
                .as_ref()
                .filter(|c| c.location == lineage && c.parallelism == from_p)
            else {
                self.need = Some(super::model::Need::Checkpoints {
                    location: lineage,
                    parallelism: from_p,
                });
                return;
            };
            if c.latest.len() as i32 == from_p {
                target.restore_from = Some(lineage);
            } else if !c.latest.is_empty() {
                // Some replicas checkpointed on their way out, others never did: no single point
                // holds them all at another parallelism, so start at the old one (each replica
                // continues its own checkpoint); the rescale follows through a savepoint.
                let mut spec = self.spec_of(&target);
                spec.parallelism = from_p;
                let mut d = layout::deployment(
                    self.job,
                    &spec,
                    &self.st,
                    self.settings,
                    from.lineage.clone(),
                    from.restore_from.clone(),
                );
                d.state_location = from.state_location.clone();
                d.sidecar_image = target.sidecar_image.clone();
                self.event(true, "RescaleDeferred", format!("replicas of lineage {} checkpointed while stopping but not all of them: starting at parallelism {from_p}, the rescale follows once every replica is ready", from.lineage));
                target = d;
            }
            if let Some(o) = self.op_mut() {
                o.recheck_lineage = None;
            }
        }
        if self.job.spec.suspend {
            // Nothing runs: suspended at the target, which a resume continues.
            self.st.deployment = Some(target);
            self.st.resume_from = None;
            self.st.phase = Some(Phase::Suspended);
            self.event(
                false,
                "Suspended",
                "suspended before the new version started",
            );
            return self.end(&op, true);
        }
        // A spec changed meanwhile is started instead, from the same restore point, when that
        // point does not depend on the parallelism.
        let spec = self.job.spec.clone();
        let same_p = layout::parallelism(self.job, &target) == spec.parallelism;
        if self.wants(&target.hash) && (op.savepoint_complete || same_p) {
            let mut next = layout::deployment(
                self.job,
                &spec,
                &self.st,
                self.settings,
                target.lineage.clone(),
                target.restore_from.clone(),
            );
            if same_p {
                next.state_location = target.state_location.clone().or(next.state_location);
            }
            self.event(
                false,
                "UpgradeRetargeted",
                format!("starting spec {} instead of {}", next.hash, target.hash),
            );
            target = next;
        }
        self.st.deployment = Some(target.clone());
        if let Some(o) = self.op_mut() {
            o.target = Some(target.clone());
        }
        self.next_step(Step::WaitingReady);
        self.converge(&target);
    }

    // --- WaitingReady ---------------------------------------------------------------------------

    fn waiting_ready(&mut self, op: Operation) {
        let Some(target) = op.target.clone() else {
            return self.end(&op, false);
        };
        self.converge(&target);
        let p = layout::parallelism(self.job, &target);
        if self.all_ready(&target) {
            self.st.restored_from = target.restore_from.clone();
            self.st.stable = Some(target.clone());
            if op.kind == OperationKind::Resume {
                self.st.resume_from = None;
            }
            if op.kind == OperationKind::Rollback {
                self.st.phase = Some(Phase::RolledBack);
                self.event(
                    true,
                    "RolledBack",
                    format!(
                        "rolled back to spec {} after the new version did not become ready",
                        target.hash
                    ),
                );
            } else {
                self.st.failed_spec_hash = None;
                self.st.phase = None;
                let took = self.seconds_since(&op.started_at);
                self.event(
                    false,
                    "UpgradeComplete",
                    format!(
                        "{} complete: {p} replicas ready at spec {} in {took:.1} s",
                        op.reason, target.hash
                    ),
                );
            }
            return self.end(&op, true);
        }
        if self.job.spec.suspend {
            self.event(
                false,
                "Superseded",
                format!("{} superseded by a suspend", op.reason),
            );
            self.end(&op, false);
            let n = self.next_n();
            return self.begin(
                n,
                OperationKind::Suspend,
                Step::Stopping,
                "suspend",
                None,
                None,
            );
        }
        if self.wants(&target.hash) {
            // Not ready yet, so nothing is lost by starting over from this version's state.
            self.event(
                false,
                "Superseded",
                format!(
                    "{} to spec {} superseded by spec {}",
                    op.reason,
                    target.hash,
                    self.desired_hash()
                ),
            );
            return self.end(&op, false);
        }
        if !self.past(op.deadline.as_deref()) {
            self.wake_by(op.deadline.as_deref());
            // A running pod whose sidecar is still restoring becomes ready without a watch event
            // until the next readiness probe: ask its sidecar again soon.
            let starting = (0..p).any(|i| {
                self.obs
                    .pods
                    .get(&i)
                    .is_some_and(|pod| pod.phase == PodPhase::Running && !pod.ready)
            });
            if starting {
                let poll = self.poll(&op.step_started_at);
                self.wake(Wake::After(poll));
            }
            return;
        }
        let timeout = self.seconds_since(&op.step_started_at).round();
        let stable = self.st.stable.clone().filter(|s| s.hash != target.hash);
        match stable {
            Some(stable) if op.kind == OperationKind::Upgrade && self.job.rollback_enabled() => {
                self.rollback(op, target, stable, timeout)
            }
            _ => {
                let message = format!(
                    "{p} replicas of spec {} not ready after {timeout} s; the job waits for a new spec",
                    target.hash
                );
                self.fail(&op, &target, "NotReady", message);
            }
        }
    }

    fn fail(&mut self, op: &Operation, target: &Deployment, reason: &'static str, message: String) {
        self.event(true, reason, message.clone());
        self.degraded(reason, message);
        self.st.failed_spec_hash = Some(target.hash.clone());
        self.st.phase = Some(Phase::Failed);
        self.end(op, false);
    }

    /// Back to the stable spec, carrying over the failed version's latest state.
    fn rollback(&mut self, op: Operation, failed: Deployment, stable: Deployment, timeout: f64) {
        let stable_spec = self.spec_of(&stable);
        let source = match layout::carry(
            self.job,
            &self.st,
            &failed,
            &stable_spec,
            self.obs.checkpoints.as_ref(),
        ) {
            Carry::Ready(s) => s,
            Carry::Need(need) => {
                self.need = Some(need);
                return;
            }
            Carry::Blocked(why) => {
                let message = format!(
                    "spec {} not ready after {timeout} s and cannot be rolled back: {why}",
                    failed.hash
                );
                return self.fail(&op, &failed, "RollbackImpossible", message);
            }
        };
        let point = matches!(source, Source::Point(_));
        let mut back = match source {
            Source::Continue => Deployment {
                lineage: failed.lineage.clone(),
                restore_from: failed.restore_from.clone(),
                state_location: failed.state_location.clone(),
                ..stable.clone()
            },
            other => {
                let mut d = layout::carried(
                    self.job,
                    &mut self.st,
                    self.settings,
                    &failed,
                    &stable_spec,
                    other,
                );
                d.sidecar_image = stable.sidecar_image.clone();
                d
            }
        };
        back.hash = stable.hash.clone();
        back.spec = stable.spec.clone();
        self.end(&op, false);
        self.st.failed_spec_hash = Some(failed.hash.clone());
        let p = layout::parallelism(self.job, &failed);
        let message = format!(
            "{p} replicas of spec {} not ready after {timeout} s: rolling back to spec {}",
            failed.hash, back.hash
        );
        self.event(true, "RollingBack", message.clone());
        self.degraded("RollingBack", message);
        let n = self.next_n();
        self.begin(
            n,
            OperationKind::Rollback,
            Step::Stopping,
            "rollback",
            Some(back),
            None,
        );
        if point {
            self.recheck(&failed);
        }
    }
}
