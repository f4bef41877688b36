//! A simulated world for the planner's tests: pods that start, become ready and stop, sidecars
//! that fence, take savepoints and checkpoint, and storage that remembers both. It drives the
//! planner as the executor does and checks the lifecycle's invariants at every effect.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::layout;
use super::model::{
    CheckpointInfo, Checkpoints, Effect, Need, Observed, Outcome, PodPhase, PodView,
    SavepointAnswer, Settings, Wake,
};
use crate::crd::{Deployment, Slot, Step, StreamJob, StreamJobStatus, UpgradeMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarSavepoints {
    Complete,
    Pending,
    Fail,
}

#[derive(Debug, Clone)]
pub struct SimPod {
    pub hash: String,
    pub image: String,
    pub location: Option<String>,
    pub parallelism: i32,
    pub phase: PodPhase,
    pub ready: bool,
    pub deleting: bool,
    pub fenced: bool,
    /// What the pod's status says keeps it from running (a crash loop, an image pull error).
    pub problem: Option<String>,
    /// What it was created to run.
    pub deployment: Deployment,
    /// A warm handover's standby pod: it serves nothing until promoted and warm.
    pub standby: bool,
    /// Its sidecar restored the bulk of the state (a standby pod, once running).
    pub warm: bool,
    pub promoted: bool,
}

/// A pod's key: its pod set and replica index (its name).
pub type PodKey = (Option<Slot>, i32);

/// One lineage's checkpoints: (parallelism, replica) -> (latest id, its time).
pub type Lineage = BTreeMap<(i32, i32), (u64, Timestamp)>;

pub struct Sim {
    pub job: StreamJob,
    pub status: StreamJobStatus,
    pub now: Timestamp,
    pub settings: Settings,
    pub pods: BTreeMap<PodKey, SimPod>,
    pub claims: BTreeSet<i32>,
    pub checkpoints: BTreeMap<String, Lineage>,
    /// savepoint location -> replica -> (operation id, time)
    pub savepoints: BTreeMap<String, BTreeMap<i32, (String, Timestamp)>>,
    pub sidecar: SidecarSavepoints,
    pub unfence_ok: bool,
    /// Images whose pods never become ready.
    pub broken: BTreeSet<String>,
    pub reject_pods: Option<String>,
    pub problems: Vec<String>,
    /// What the spec refers to and the cluster lacks (the credentials Secret).
    pub missing: Vec<String>,
    pub events: Vec<(&'static str, String)>,
    pub created: Vec<(i32, String)>,
    /// operation id -> savepoint locations it triggered
    ops: BTreeMap<String, BTreeSet<String>>,
    /// savepoint location -> operation id
    locations: BTreeMap<String, String>,
    /// Violations found (the property test fails on any).
    pub violations: Vec<String>,
    /// The steps that ended, with their durations.
    pub steps_ended: Vec<(Step, f64)>,
    /// Savepoints the operator made self-contained (or tried to), in order.
    pub copies: Vec<String>,
    pub copy_fails: bool,
    /// Standby sidecars refuse promotions (unreachable).
    pub promote_fails: bool,
}

pub fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

impl Sim {
    pub fn new(job: StreamJob) -> Self {
        Sim {
            job,
            status: StreamJobStatus::default(),
            now: t0(),
            settings: Settings {
                default_sidecar_image: "sidecar:1".into(),
                allow_file_locations: false,
            },
            pods: BTreeMap::new(),
            claims: BTreeSet::new(),
            checkpoints: BTreeMap::new(),
            savepoints: BTreeMap::new(),
            sidecar: SidecarSavepoints::Complete,
            unfence_ok: true,
            broken: BTreeSet::new(),
            reject_pods: None,
            problems: Vec::new(),
            missing: Vec::new(),
            events: Vec::new(),
            created: Vec::new(),
            ops: BTreeMap::new(),
            locations: BTreeMap::new(),
            violations: Vec::new(),
            steps_ended: Vec::new(),
            copies: Vec::new(),
            copy_fails: false,
            promote_fails: false,
        }
    }

    /// The pods as the executor splits them: the deployed set, a handover's standby set (ready
    /// meaning warm) and the rest.
    pub fn observed(&self, outcomes: Vec<Outcome>, checkpoints: Option<Checkpoints>) -> Observed {
        let live = self.status.deployed_slot();
        let views = self
            .pods
            .iter()
            .map(|(&(slot, i), p)| {
                // What the executor learns: a standby's sidecar says whether it is warm (asked
                // only while it stands beside the deployed set), any other's whether it serves.
                let ready = if p.standby {
                    p.warm && slot != live
                } else {
                    p.ready && !p.fenced
                };
                let view = PodView {
                    spec_hash: Some(p.hash.clone()),
                    phase: p.phase,
                    ready,
                    deleting: p.deleting,
                    problem: p.problem.clone(),
                };
                ((slot, i), view)
            })
            .collect();
        let (pods, beside, strays) = super::execute::split_views(views, &self.status);
        Observed {
            pods,
            standby: beside,
            strays,
            claims: self.claims.clone(),
            spec_problems: self.problems.clone(),
            missing: self.missing.clone(),
            outcomes,
            checkpoints,
            replica_checkpoints: None,
        }
    }

    fn observe_checkpoints(&self, location: &str, parallelism: i32) -> Checkpoints {
        let latest = self
            .checkpoints
            .get(location)
            .map(|c| {
                c.iter()
                    .filter(|((p, _), _)| *p == parallelism)
                    .map(|((_, i), (id, t))| {
                        (
                            *i,
                            CheckpointInfo {
                                id: *id,
                                created_at: *t,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Checkpoints {
            location: location.to_owned(),
            parallelism,
            latest,
        }
    }

    /// One reconcile. `crash_after`: the operator dies after persisting the n-th plan, before
    /// performing its effects.
    pub fn reconcile_with_crash(&mut self, crash_after: Option<usize>) -> Wake {
        let mut outcomes = Vec::new();
        let mut checkpoints = None;
        let mut wake = Wake::Idle;
        for n in 0..12 {
            let observed = self.observed(std::mem::take(&mut outcomes), checkpoints.clone());
            let plan = super::plan(&self.job, &self.status, &observed, self.now, &self.settings);
            if let Some(Need::Checkpoints {
                location,
                parallelism,
            }) = &plan.need
            {
                checkpoints = Some(self.observe_checkpoints(location, *parallelism));
                outcomes = observed.outcomes;
                continue;
            }
            self.status = plan.status.clone();
            if crash_after == Some(n) {
                return Wake::Now;
            }
            outcomes = plan.effects.iter().filter_map(|e| self.apply(e)).collect();
            wake = plan.wake;
            if wake != Wake::Now && outcomes.is_empty() {
                break;
            }
        }
        self.check_status();
        wake
    }

    pub fn reconcile(&mut self) -> Wake {
        self.reconcile_with_crash(None)
    }

    /// Time passes: pods start and stop, running replicas checkpoint.
    pub fn tick(&mut self, seconds: i64) {
        self.now += SignedDuration::from_secs(seconds);
        let gone: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|(_, p)| p.deleting)
            .map(|(&k, _)| k)
            .collect();
        for k in gone {
            self.pods.remove(&k);
        }
        let now = self.now;
        for (&(_, i), p) in self.pods.iter_mut() {
            if p.phase == PodPhase::Pending {
                p.phase = PodPhase::Running;
            }
            if p.standby && p.phase == PodPhase::Running {
                p.warm = true;
                if p.promoted {
                    p.standby = false;
                }
            }
            p.ready = p.phase == PodPhase::Running && !p.standby && !self.broken.contains(&p.image);
            if p.ready
                && !p.fenced
                && let Some(l) = &p.location
            {
                let c = self.checkpoints.entry(l.clone()).or_default();
                let id = c.get(&(p.parallelism, i)).map_or(1, |(id, _)| id + 1);
                c.insert((p.parallelism, i), (id, now));
            }
        }
    }

    /// Reconciles and lets time pass until the job settles (no operation) or `limit` seconds.
    pub fn settle(&mut self, limit: i64) {
        let end = self.now + SignedDuration::from_secs(limit);
        loop {
            let wake = self.reconcile();
            if self.status.operation.is_none()
                && wake != Wake::Now
                && self.now > t0()
                && self.quiet()
            {
                return;
            }
            if self.now >= end {
                return;
            }
            self.tick(1);
        }
    }

    fn quiet(&self) -> bool {
        let Some(d) = &self.status.deployment else {
            return true;
        };
        if self.job.spec.suspend || self.status.phase == Some(crate::crd::Phase::Suspended) {
            return self.pods.is_empty();
        }
        let p = layout::parallelism(&self.job, d);
        self.pods.len() as i32 == p
            && self.pods.iter().all(|(k, x)| {
                k.0 == d.slot && x.hash == d.hash && (x.ready || self.broken.contains(&x.image))
            })
    }

    pub fn has_event(&self, reason: &str) -> bool {
        self.events.iter().any(|(r, _)| *r == reason)
    }

    pub fn step(&self) -> Option<Step> {
        self.status.operation.as_ref().map(|o| o.step)
    }

    fn violation(&mut self, v: String) {
        self.violations.push(v);
    }

    /// The persisted status never keeps an operation past its deadlines, and a fenced replica
    /// is always unfenced or stopped once its savepoint is over.
    fn check_status(&mut self) {
        let slack = SignedDuration::from_secs(2 * super::plan::STOP_MARGIN + 5);
        if let Some(op) = self.status.operation.clone()
            && let Some(d) = op
                .deadline
                .as_deref()
                .and_then(|d| d.parse::<Timestamp>().ok())
            && self.now > d + slack
        {
            self.violation(format!(
                "operation {} still in {:?} {} s past its deadline",
                op.reason,
                op.step,
                (self.now - d).get_seconds()
            ));
        }
        self.check_writers();
        let in_savepoint = self.status.operation.as_ref().is_some_and(|o| {
            matches!(
                o.step,
                Step::Savepointing | Step::Unfencing | Step::Stopping | Step::Promoting
            )
        });
        if !in_savepoint {
            let fenced: Vec<PodKey> = self
                .pods
                .iter()
                .filter(|(_, p)| p.fenced && !p.deleting)
                .map(|(&k, _)| k)
                .collect();
            if !fenced.is_empty() {
                self.violation(format!(
                    "replicas {fenced:?} left fenced with no savepoint in progress ({:?})",
                    self.status.operation.as_ref().map(|o| o.step)
                ));
            }
        }
    }

    /// Never two pods of one replica accepting writes: a handover's new pod serves only once
    /// the old one is fenced (or gone).
    fn check_writers(&mut self) {
        let mut writers: BTreeMap<i32, usize> = BTreeMap::new();
        for (&(_, i), p) in &self.pods {
            if p.phase == PodPhase::Running && !p.fenced && !p.standby {
                *writers.entry(i).or_default() += 1;
            }
        }
        let two: Vec<i32> = writers
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(i, _)| i)
            .collect();
        if !two.is_empty() {
            self.violation(format!("replicas {two:?} have two pods accepting writes"));
        }
    }

    fn latest_elsewhere(&self, own: Option<&str>) -> Option<Timestamp> {
        self.checkpoints
            .iter()
            .filter(|(l, _)| Some(l.as_str()) != own)
            .flat_map(|(_, c)| c.values().map(|(_, t)| *t))
            .max()
    }

    fn check_restore(&mut self, i: i32, d: &crate::crd::Deployment) {
        let p = layout::parallelism(&self.job, d);
        let own = d.state_location.as_deref();
        if own
            .and_then(|l| self.checkpoints.get(l))
            .is_some_and(|c| c.contains_key(&(p, i)))
        {
            return; // its own latest checkpoint
        }
        let newest_elsewhere = self.latest_elsewhere(own);
        match d.restore_from.as_deref() {
            None => {
                let stateless = self.job.spec.upgrade_mode == UpgradeMode::Stateless;
                if !stateless && (newest_elsewhere.is_some() || !self.savepoints.is_empty()) {
                    self.violation(format!(
                        "replica {i} of lineage {} starts empty although state was committed",
                        d.lineage
                    ));
                }
            }
            Some(src) if self.savepoints.contains_key(src) => {
                let sp = self.savepoints[src].clone();
                let parts = sp.keys().max().map_or(0, |m| m + 1);
                if sp.len() as i32 != parts {
                    self.violation(format!(
                        "replica {i} restores from incomplete savepoint {src}"
                    ));
                }
                let at = sp.values().map(|(_, t)| *t).max();
                if let (Some(at), Some(newest)) = (at, newest_elsewhere)
                    && newest > at
                {
                    self.violation(format!("replica {i} of lineage {} restores savepoint {src} older than a checkpoint taken since", d.lineage));
                }
            }
            Some(src) if self.checkpoints.contains_key(src) => {
                let c = &self.checkpoints[src];
                let complete = (1..=4).any(|q| (0..q).all(|r| c.contains_key(&(q, r))));
                if !complete {
                    self.violation(format!(
                        "replica {i} restores from lineage {src} without a complete checkpoint set"
                    ));
                }
            }
            Some(src) => {
                // A lineage that never checkpointed, or a savepoint that was never taken.
                if src.contains("/savepoints/") {
                    self.violation(format!(
                        "replica {i} restores from savepoint {src} that does not exist"
                    ));
                } else if newest_elsewhere.is_some()
                    && self.job.spec.upgrade_mode != UpgradeMode::Stateless
                {
                    self.violation(format!("replica {i} restores from lineage {src} that holds no checkpoint while others do"));
                }
            }
        }
    }

    fn apply(&mut self, e: &Effect) -> Option<Outcome> {
        match e {
            Effect::CreateClaim { replica, .. } => {
                self.claims.insert(*replica);
                None
            }
            Effect::DeleteClaim { replica } => {
                if self.pods.keys().any(|(_, i)| i == replica) {
                    self.violation(format!("claim {replica} deleted while its pod exists"));
                }
                self.claims.remove(replica);
                None
            }
            Effect::CreatePod {
                replica,
                deployment,
                warm_from,
            } => {
                if let Some(m) = &self.reject_pods {
                    return Some(Outcome::PodRejected {
                        replica: *replica,
                        message: m.clone(),
                    });
                }
                let key = (deployment.slot, *replica);
                if self.pods.contains_key(&key) {
                    // The API server refuses a second pod of one name; the planner must not ask.
                    self.violation(format!("a second pod named for replica {key:?}"));
                    return None;
                }
                if warm_from.is_none() {
                    self.check_restore(*replica, deployment);
                } else if self
                    .pods
                    .iter()
                    .any(|(k, p)| k.1 == *replica && k.0 != key.0 && p.fenced)
                {
                    self.violation(format!(
                        "standby pod {key:?} created after the old version fenced"
                    ));
                }
                let spec = layout::deployment_spec(&self.job, deployment);
                self.created.push((*replica, deployment.hash.clone()));
                self.pods.insert(
                    key,
                    SimPod {
                        hash: deployment.hash.clone(),
                        image: spec.app.image.clone(),
                        location: deployment.state_location.clone(),
                        parallelism: spec.parallelism,
                        phase: PodPhase::Pending,
                        ready: false,
                        deleting: false,
                        fenced: false,
                        problem: None,
                        deployment: deployment.clone(),
                        standby: warm_from.is_some(),
                        warm: false,
                        promoted: false,
                    },
                );
                None
            }
            Effect::Promote {
                slot,
                replica,
                location,
                operation,
            } => {
                let key = (*slot, *replica);
                let result = match self.pods.get(&key) {
                    _ if self.promote_fails => Err("unreachable".to_owned()),
                    Some(p) if p.phase == PodPhase::Running && !p.deleting => {
                        Ok(p.deployment.clone())
                    }
                    _ => Err("no pod".to_owned()),
                };
                let result = match result {
                    Ok(d) => {
                        if d.restore_from.as_deref() != Some(location.as_str()) {
                            self.violation(format!(
                                "{key:?} promoted with {location}, created to restore {:?}",
                                d.restore_from
                            ));
                        }
                        // Taken by every old replica (at the old parallelism).
                        let sp = self.savepoints.get(location);
                        let parts = sp.and_then(|s| s.keys().max()).map_or(0, |m| m + 1);
                        if sp.is_none_or(|s| s.len() as i32 != parts) {
                            self.violation(format!(
                                "{key:?} promoted before savepoint {location} completed"
                            ));
                        }
                        let old_writes = self.pods.iter().any(|(k, p)| {
                            k.1 == *replica
                                && k.0 != *slot
                                && !p.fenced
                                && p.phase == PodPhase::Running
                        });
                        if old_writes {
                            self.violation(format!(
                                "{key:?} promoted while the old pod of replica {replica} is not fenced"
                            ));
                        }
                        self.check_restore(*replica, &d);
                        if let Some(p) = self.pods.get_mut(&key) {
                            p.promoted = true;
                            if p.warm {
                                p.standby = false;
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                Some(Outcome::Promoted {
                    replica: *replica,
                    operation: operation.clone(),
                    result,
                })
            }
            Effect::DeletePod { slot, replica, .. } => {
                let now = self.now;
                if let Some(p) = self.pods.get_mut(&(*slot, *replica)) {
                    if !p.deleting
                        && !p.fenced
                        && p.phase == PodPhase::Running
                        && let Some(l) = &p.location
                    {
                        // The sidecar's final checkpoint on SIGTERM.
                        let c = self.checkpoints.entry(l.clone()).or_default();
                        let id = c
                            .get(&(p.parallelism, *replica))
                            .map_or(1, |(id, _)| id + 1);
                        c.insert((p.parallelism, *replica), (id, now));
                    }
                    p.deleting = true;
                }
                None
            }
            Effect::TriggerSavepoint {
                replica,
                location,
                stop,
                operation,
            } => {
                let locs = self.ops.entry(operation.clone()).or_default();
                locs.insert(location.clone());
                let locs = locs.clone();
                if locs.len() > 1 {
                    self.violation(format!("operation {operation} took savepoints at {locs:?}"));
                }
                if let Some(other) = self.locations.insert(location.clone(), operation.clone())
                    && other != *operation
                {
                    self.violation(format!(
                        "location {location} used by operations {other} and {operation}"
                    ));
                }
                let now = self.now;
                let live = self.status.deployed_slot();
                let answer = match self.pods.get_mut(&(live, *replica)) {
                    Some(p) if p.phase == PodPhase::Running && !p.deleting => {
                        let done = self
                            .savepoints
                            .get(location)
                            .and_then(|s| s.get(replica))
                            .cloned();
                        match done {
                            Some((op, _)) if op == *operation => SavepointAnswer::Complete,
                            Some(_) => {
                                SavepointAnswer::Failed("another operation's savepoint".into())
                            }
                            None => {
                                if *stop {
                                    p.fenced = true;
                                }
                                match self.sidecar {
                                    SidecarSavepoints::Complete => {
                                        self.savepoints
                                            .entry(location.clone())
                                            .or_default()
                                            .insert(*replica, (operation.clone(), now));
                                        SavepointAnswer::Complete
                                    }
                                    SidecarSavepoints::Pending => SavepointAnswer::Pending,
                                    SidecarSavepoints::Fail => {
                                        p.fenced = false;
                                        SavepointAnswer::Failed("upload failed".into())
                                    }
                                }
                            }
                        }
                    }
                    _ => SavepointAnswer::Unreachable("no pod".into()),
                };
                Some(Outcome::Savepoint {
                    replica: *replica,
                    operation: operation.clone(),
                    answer,
                    fenced_at: stop.then_some(now),
                    uploaded_bytes: None,
                })
            }
            Effect::Unfence { replica } => {
                let live = self.status.deployed_slot();
                let ok = self.unfence_ok && self.pods.contains_key(&(live, *replica));
                if ok && let Some(p) = self.pods.get_mut(&(live, *replica)) {
                    p.fenced = false;
                }
                Some(Outcome::Unfenced {
                    replica: *replica,
                    ok,
                })
            }
            Effect::CompleteSavepoint { location } => {
                self.copies.push(location.clone());
                Some(Outcome::Completed {
                    location: location.clone(),
                    result: if self.copy_fails {
                        Err("CopyObject refused".into())
                    } else {
                        Ok((3, 1000))
                    },
                })
            }
            Effect::Dispose { location } => {
                let n = self.savepoints.remove(location).map_or(0, |s| s.len());
                Some(Outcome::Disposed {
                    location: location.clone(),
                    result: Ok(n),
                })
            }
            Effect::Event { reason, note, .. } => {
                self.events.push((reason, note.clone()));
                None
            }
            Effect::StepEnded { step, seconds, .. } => {
                self.steps_ended.push((*step, *seconds));
                None
            }
            Effect::OperationEnded { .. } | Effect::SavepointEnded { .. } => None,
        }
    }
}
