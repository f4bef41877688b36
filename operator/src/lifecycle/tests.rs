//! The lifecycle's specification, as tests of the planner against a simulated world.

use super::model::{Effect, Wake};
use super::sim::{SidecarSavepoints, Sim};
use crate::crd::{OperationKind, Phase, Step, UpgradeMode};
use crate::fixtures::job;
use crate::status::DEGRADED;

fn wc() -> crate::fixtures::JobBuilder {
    job("wc")
        .location("s3://bucket/jobs")
        .state("counts")
        .readiness_timeout(60)
        .savepoint_timeout(30)
}

fn running(b: crate::fixtures::JobBuilder) -> Sim {
    let mut sim = Sim::new(b.build());
    sim.settle(30);
    assert_eq!(sim.status.phase, Some(Phase::Running), "{:?}", sim.status);
    sim
}

fn degraded_reason(sim: &Sim) -> Option<String> {
    sim.status
        .conditions
        .iter()
        .find(|c| c.type_ == DEGRADED && c.status == "True")
        .map(|c| c.reason.clone())
}

/// Runs reconciles, one second apart, until `f` holds (or panics after `limit` seconds).
fn until(sim: &mut Sim, limit: i64, what: &str, f: impl Fn(&Sim) -> bool) {
    for _ in 0..limit {
        sim.reconcile();
        if f(sim) {
            return;
        }
        sim.tick(1);
    }
    panic!(
        "{what} did not happen within {limit} s: {:#?}\nevents: {:#?}",
        sim.status, sim.events
    );
}

fn no_violations(sim: &Sim) {
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}

#[test]
fn a_new_job_records_its_identity_and_stores_under_it() {
    let mut b = wc();
    b = b.parallelism(2);
    let mut j = b.build();
    j.spec.initial_savepoint =
        Some("s3://bucket/jobs/default/old/uid-old/savepoints/upgrade-3".into());
    let mut sim = Sim::new(j);
    sim.reconcile();
    assert_eq!(sim.status.job_id.as_deref(), Some("uid-wc"));
    let d = sim.status.deployment.clone().unwrap();
    assert_eq!(
        d.state_location.as_deref(),
        Some("s3://bucket/jobs/default/wc/uid-wc/l1")
    );
    assert_eq!(
        d.restore_from.as_deref(),
        Some("s3://bucket/jobs/default/old/uid-old/savepoints/upgrade-3"),
        "an explicit initial savepoint is the one way to start from another job's state"
    );
    assert_eq!(sim.pods.len(), 2);
}

#[test]
fn a_job_created_again_under_the_same_name_never_sees_the_old_ones_state() {
    let mut sim = running(wc());
    let old = sim
        .status
        .deployment
        .clone()
        .unwrap()
        .state_location
        .unwrap();
    let mut again = wc().build();
    again.metadata.uid = Some("uid-wc-2".into());
    let mut sim2 = Sim::new(again);
    sim2.checkpoints = std::mem::take(&mut sim.checkpoints);
    sim2.reconcile();
    let new = sim2
        .status
        .deployment
        .clone()
        .unwrap()
        .state_location
        .unwrap();
    assert_ne!(old, new);
    assert!(new.contains("/uid-wc-2/"));
    assert_eq!(sim2.status.deployment.unwrap().restore_from, None);
}

#[test]
fn a_savepoint_upgrade_goes_savepoint_stop_start_ready_with_one_savepoint() {
    let mut sim = running(wc());
    sim.job.spec.app.image = "app:2".into();
    let mut steps = vec![];
    for _ in 0..30 {
        sim.reconcile();
        if let Some(s) = sim.step()
            && steps.last() != Some(&s)
        {
            steps.push(s);
        }
        if sim.status.operation.is_none()
            && sim.status.phase == Some(Phase::Running)
            && sim.status.restored_from.is_some()
        {
            break;
        }
        sim.tick(1);
    }
    assert_eq!(
        steps,
        [Step::Stopping, Step::WaitingReady],
        "the savepoint chains into the stop, and the start into the wait"
    );
    let st = &sim.status;
    let upgrade: Vec<_> = st
        .savepoints
        .iter()
        .filter(|s| s.reason == "upgrade")
        .collect();
    assert_eq!(upgrade.len(), 1);
    assert_eq!(st.restored_from.as_ref(), Some(&upgrade[0].location));
    assert!(
        upgrade[0]
            .location
            .starts_with("s3://bucket/jobs/default/wc/uid-wc/savepoints/upgrade-")
    );
    assert_eq!(st.stable, st.deployment);
    assert!(sim.has_event("UpgradeComplete"));
    no_violations(&sim);
}

#[test]
fn answers_without_a_watch_event_are_polled_within_half_a_second_and_each_step_is_timed() {
    use super::plan::{POLL_MAX, POLL_MIN};
    let mut sim = running(wc());
    sim.sidecar = SidecarSavepoints::Pending;
    sim.broken.insert("app:2".into());
    sim.job.spec.app.image = "app:2".into();
    let wake = sim.reconcile();
    assert_eq!(sim.step(), Some(Step::Savepointing));
    assert_eq!(
        wake,
        Wake::After(POLL_MIN),
        "a savepoint just started is asked about again at once"
    );
    sim.tick(20);
    let wake = sim.reconcile();
    assert_eq!(
        wake,
        Wake::After(POLL_MAX),
        "a long savepoint is still asked about twice a second"
    );
    sim.sidecar = SidecarSavepoints::Complete;
    until(&mut sim, 10, "the new pods to run", |s| {
        s.step() == Some(Step::WaitingReady)
            && s.pods.values().all(|p| p.phase == super::PodPhase::Running)
    });
    let wake = sim.reconcile();
    assert!(
        matches!(wake, Wake::After(d) if d <= POLL_MAX),
        "a running replica that is not ready yet is asked again soon, not at the readiness deadline: {wake:?}"
    );
    let steps: Vec<Step> = sim.steps_ended.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        [Step::Savepointing, Step::Stopping, Step::Starting],
        "each step that ended is timed"
    );
    assert!(
        sim.steps_ended[0].1 >= 20.0,
        "the savepoint's step lasted its 20 s: {:?}",
        sim.steps_ended
    );
}

#[test]
fn an_operator_killed_after_any_step_is_written_resumes_without_a_second_savepoint() {
    for crash in 0..6 {
        let mut sim = running(wc());
        sim.job.spec.app.image = "app:2".into();
        sim.reconcile_with_crash(Some(crash));
        sim.settle(120);
        let st = &sim.status;
        assert_eq!(
            st.phase,
            Some(Phase::Running),
            "crash after plan {crash}: {st:#?}"
        );
        assert_eq!(
            st.savepoints
                .iter()
                .filter(|s| s.reason == "upgrade")
                .count(),
            1
        );
        assert_eq!(
            sim.savepoints.len(),
            1,
            "one savepoint stored (crash after plan {crash})"
        );
        no_violations(&sim);
    }
}

#[test]
fn a_failed_savepoint_unfences_the_old_version_and_is_not_retried_in_a_loop() {
    let mut sim = running(wc());
    let good = sim.status.deployment.clone().unwrap().hash;
    sim.sidecar = SidecarSavepoints::Fail;
    sim.job.spec.app.image = "app:2".into();
    sim.settle(30);
    let st = &sim.status;
    assert_eq!(st.deployed_spec_hash.as_deref(), Some(good.as_str()));
    assert!(st.operation.is_none());
    assert_eq!(degraded_reason(&sim).as_deref(), Some("SavepointFailed"));
    assert!(
        sim.pods.values().all(|p| !p.fenced),
        "the old version writes again"
    );
    let ops = sim.status.operations;
    sim.settle(30);
    assert_eq!(
        sim.status.operations, ops,
        "the abandoned spec is not retried until it changes"
    );
    no_violations(&sim);
}

#[test]
fn a_savepoint_that_never_completes_is_abandoned_at_its_deadline_and_its_upload_deleted_later() {
    let mut sim = running(wc());
    sim.sidecar = SidecarSavepoints::Pending;
    sim.job.spec.app.image = "app:2".into();
    sim.reconcile();
    assert_eq!(sim.step(), Some(Step::Savepointing));
    assert!(sim.pods.values().all(|p| p.fenced));
    until(&mut sim, 40, "the abandonment", |s| {
        s.status.operation.is_none()
    });
    assert!(sim.pods.values().all(|p| !p.fenced));
    assert_eq!(
        sim.status.disposals.len(),
        1,
        "the partial savepoint is queued for deletion"
    );
    sim.tick(400);
    let effects = plan_effects(&mut sim);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Dispose { .. })),
        "{effects:?}"
    );
    no_violations(&sim);
}

fn plan_effects(sim: &mut Sim) -> Vec<Effect> {
    let obs = sim.observed(vec![], None);
    super::plan(&sim.job, &sim.status, &obs, sim.now, &sim.settings).effects
}

#[test]
fn replicas_that_refuse_the_unfence_are_restarted_at_the_deadline() {
    let mut sim = running(wc());
    sim.sidecar = SidecarSavepoints::Fail;
    sim.unfence_ok = false;
    // A failed savepoint lifts its own fence in the sidecar; make it stick to test the deadline.
    sim.job.spec.app.image = "app:2".into();
    sim.reconcile();
    for p in sim.pods.values_mut() {
        p.fenced = true;
    }
    until(&mut sim, 90, "the unfence deadline", |s| {
        s.status.operation.is_none()
    });
    assert!(sim.has_event("UnfenceFailed"));
    assert!(
        sim.pods.values().all(|p| p.deleting || !p.fenced),
        "fenced replicas are stopped"
    );
}

#[test]
fn a_version_that_never_becomes_ready_is_rolled_back_and_stable_follows_the_rollback() {
    let mut sim = running(wc());
    sim.broken.insert("app:bad".into());
    let good = sim.status.deployment.clone().unwrap();
    sim.job.spec.app.image = "app:bad".into();
    sim.settle(200);
    let st = sim.status.clone();
    assert_eq!(st.phase, Some(Phase::RolledBack), "{st:#?}");
    assert_eq!(st.deployed_spec_hash.as_deref(), Some(good.hash.as_str()));
    assert!(st.failed_spec_hash.is_some());
    assert_eq!(
        st.stable, st.deployment,
        "stable is the rolled-back deployment, not the lineage from before"
    );
    assert_ne!(st.stable.as_ref().unwrap().lineage, good.lineage);
    assert!(sim.has_event("RolledBack"));
    // No loop: nothing more happens while the spec stays the failed one.
    let ops = st.operations;
    sim.settle(60);
    assert_eq!(sim.status.operations, ops);
    // A later lastState upgrade that fails rolls back to the newest lineage.
    sim.job.spec.upgrade_mode = UpgradeMode::LastState;
    sim.job.spec.app.image = "app:bad2".into();
    sim.broken.insert("app:bad2".into());
    let before = sim.status.stable.clone().unwrap();
    sim.settle(300);
    let back = sim.status.deployment.clone().unwrap();
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_ne!(
        back.lineage, good.lineage,
        "never the lineage from before the first failure"
    );
    assert!(back.lineage >= before.lineage || back.restore_from.is_some());
    no_violations(&sim);
}

#[test]
fn without_rollback_a_version_that_never_becomes_ready_fails_the_job_and_a_new_spec_is_acted_on() {
    let mut sim = running(wc().no_rollback());
    sim.broken.insert("app:bad".into());
    sim.job.spec.app.image = "app:bad".into();
    sim.settle(200);
    assert_eq!(sim.status.phase, Some(Phase::Failed));
    assert_eq!(degraded_reason(&sim).as_deref(), Some("NotReady"));
    assert!(sim.status.operation.is_none(), "the operation ended");
    sim.job.spec.app.image = "app:3".into();
    sim.settle(200);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    no_violations(&sim);
}

#[test]
fn a_suspend_supersedes_a_version_that_is_not_ready_yet() {
    let mut sim = running(wc().readiness_timeout(3000));
    sim.broken.insert("app:bad".into());
    sim.job.spec.app.image = "app:bad".into();
    until(&mut sim, 30, "the new version to start", |s| {
        s.step() == Some(Step::WaitingReady)
    });
    sim.job.spec.suspend = true;
    until(&mut sim, 60, "the suspend", |s| {
        s.status.phase == Some(Phase::Suspended) && s.pods.is_empty()
    });
    assert!(sim.has_event("Superseded"));
    no_violations(&sim);
}

#[test]
fn a_new_spec_supersedes_a_version_that_is_not_ready_yet() {
    let mut sim = running(wc().readiness_timeout(3000));
    sim.broken.insert("app:bad".into());
    sim.job.spec.app.image = "app:bad".into();
    until(&mut sim, 30, "the new version to start", |s| {
        s.step() == Some(Step::WaitingReady)
    });
    sim.job.spec.app.image = "app:fixed".into();
    sim.settle(120);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    assert!(sim.pods.values().all(|p| p.image == "app:fixed"));
    no_violations(&sim);
}

#[test]
fn an_invalid_spec_does_not_stop_a_fenced_savepoint_from_timing_out() {
    let mut sim = running(wc());
    sim.sidecar = SidecarSavepoints::Pending;
    sim.job.spec.app.image = "app:2".into();
    sim.reconcile();
    assert_eq!(sim.step(), Some(Step::Savepointing));
    sim.problems = vec!["state \"counts\" is declared twice".into()];
    until(&mut sim, 60, "the abandonment", |s| {
        s.status.operation.is_none()
    });
    assert!(sim.pods.values().all(|p| !p.fenced));
    assert_eq!(degraded_reason(&sim).as_deref(), Some("InvalidSpec"));
    no_violations(&sim);
}

#[test]
fn resume_after_a_suspend_without_savepoint_continues_the_lineage() {
    let mut sim = running(wc());
    // An old suspend savepoint in the history must not be what a later resume restores.
    sim.job.spec.suspend = true;
    sim.settle(60);
    sim.job.spec.suspend = false;
    sim.settle(60);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    sim.tick(5);
    sim.reconcile();
    let lineage = sim.status.deployment.clone().unwrap();
    // Now suspend while a replica is not ready: no savepoint can be taken.
    sim.broken.insert("app:1".into());
    sim.job.spec.app.image = "app:1".into();
    sim.broken.clear();
    sim.pods.get_mut(&(None, 0)).unwrap().ready = false;
    sim.job.spec.app.image = "ghcr.io/stator/wordcount:1".into();
    sim.job.spec.suspend = true;
    sim.pods.get_mut(&(None, 0)).unwrap().phase = super::model::PodPhase::Pending;
    sim.settle(60);
    assert_eq!(sim.status.phase, Some(Phase::Suspended));
    assert_eq!(sim.status.resume_from, None);
    sim.job.spec.suspend = false;
    sim.settle(60);
    let d = sim.status.deployment.clone().unwrap();
    assert_eq!(
        d.lineage, lineage.lineage,
        "the same lineage: each replica resumes from its own latest checkpoint"
    );
    no_violations(&sim);
}

#[test]
fn last_state_takes_a_savepoint_when_a_replica_has_no_checkpoint() {
    let mut j = wc().mode(UpgradeMode::LastState).build();
    j.spec.state.checkpoint_interval_seconds = 0;
    let mut sim = Sim::new(j);
    sim.reconcile();
    sim.tick(1);
    sim.reconcile();
    // No checkpoints at all (the sim checkpoints on tick; drop them to model interval 0).
    sim.checkpoints.clear();
    sim.job.spec.app.image = "app:2".into();
    sim.reconcile();
    assert!(sim.has_event("LastStateFallback"), "{:?}", sim.events);
    assert_eq!(
        sim.status.operation.as_ref().map(|o| o.kind),
        Some(OperationKind::Upgrade)
    );
    sim.settle(60);
    assert!(
        sim.status
            .restored_from
            .as_deref()
            .is_some_and(|r| r.contains("/savepoints/"))
    );
    no_violations(&sim);
}

#[test]
fn last_state_takes_a_savepoint_when_checkpoints_are_older_than_the_limit() {
    let mut sim = running(wc().mode(UpgradeMode::LastState).max_checkpoint_age(60));
    for c in sim.checkpoints.values_mut() {
        for v in c.values_mut() {
            v.1 = super::sim::t0();
        }
    }
    sim.tick(0);
    sim.now += k8s_openapi::jiff::SignedDuration::from_secs(600);
    for p in sim.pods.values_mut() {
        p.location = None; // stop checkpointing
    }
    sim.job.spec.app.image = "app:2".into();
    sim.reconcile();
    assert!(
        sim.events
            .iter()
            .any(|(r, n)| *r == "LastStateFallback" && n.contains("maxCheckpointAgeSeconds")),
        "{:?}",
        sim.events
    );
}

#[test]
fn last_state_with_fresh_checkpoints_continues_the_lineage_and_rescales_from_them() {
    let mut sim = running(wc().mode(UpgradeMode::LastState));
    let d = sim.status.deployment.clone().unwrap();
    sim.job.spec.app.image = "app:2".into();
    sim.settle(60);
    let same = sim.status.deployment.clone().unwrap();
    assert_eq!(
        same.lineage, d.lineage,
        "same parallelism: the replicas continue their own checkpoints"
    );
    assert!(sim.savepoints.is_empty(), "no savepoint");
    sim.job.spec.parallelism = 3;
    sim.settle(60);
    let rescaled = sim.status.deployment.clone().unwrap();
    assert_ne!(rescaled.lineage, d.lineage);
    assert_eq!(
        rescaled.restore_from, d.state_location,
        "rescaled from the old lineage's checkpoints"
    );
    no_violations(&sim);
}

#[test]
fn an_upgrade_of_a_job_that_is_not_ready_continues_from_checkpoints_instead_of_a_savepoint() {
    let mut sim = running(wc());
    sim.broken.insert("ghcr.io/stator/wordcount:1".into());
    sim.tick(1);
    sim.reconcile();
    sim.job.spec.app.image = "app:fixed".into();
    sim.settle(60);
    assert!(sim.has_event("UpgradeWithoutSavepoint"));
    assert_eq!(sim.status.phase, Some(Phase::Running));
    assert!(sim.savepoints.is_empty());
    no_violations(&sim);
}

#[test]
fn a_failing_periodic_savepoint_waits_an_interval_and_its_upload_is_deleted() {
    let mut sim = running(wc().periodic(100).savepoint_timeout(10));
    sim.sidecar = SidecarSavepoints::Fail;
    sim.tick(100);
    sim.reconcile();
    let attempts = sim.status.operations;
    for _ in 0..50 {
        sim.tick(1);
        sim.reconcile();
    }
    assert_eq!(
        sim.status.operations, attempts,
        "no retry before the interval"
    );
    assert!(!sim.status.disposals.is_empty() || sim.has_event("SavepointDisposed"));
    sim.tick(60);
    sim.reconcile();
    assert!(
        sim.status.operations > attempts,
        "retried after the interval"
    );
}

#[test]
fn a_refused_pod_is_reported_backed_off_and_forgotten_when_the_spec_changes() {
    let mut sim = Sim::new(wc().build());
    sim.reject_pods =
        Some("pods \"wc-0\" is forbidden: violates PodSecurity \"restricted:latest\"".into());
    sim.reconcile();
    assert_eq!(degraded_reason(&sim).as_deref(), Some("PodRejected"));
    assert!(sim.has_event("PodRejected"));
    let tries = sim.created.len();
    sim.tick(5);
    let wake = sim.reconcile();
    assert!(matches!(wake, Wake::After(_)));
    assert_eq!(sim.created.len(), tries, "backed off: no create in a loop");
    assert_eq!(
        sim.events
            .iter()
            .filter(|(r, _)| *r == "PodRejected")
            .count(),
        1,
        "one Event per message"
    );
    sim.reject_pods = None;
    sim.job.spec.app.image = "app:2".into();
    sim.settle(30);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    assert!(sim.status.rejection.is_none());
    assert_ne!(degraded_reason(&sim).as_deref(), Some("PodRejected"));
}

#[test]
fn claims_of_replicas_above_the_parallelism_are_kept_unless_the_spec_says_delete() {
    for delete in [false, true] {
        let mut sim = running(
            wc().claims(delete)
                .parallelism(3)
                .mode(UpgradeMode::Stateless),
        );
        assert_eq!(sim.claims.len(), 3);
        sim.job.spec.parallelism = 1;
        sim.settle(60);
        sim.tick(1);
        sim.reconcile();
        assert_eq!(
            sim.claims.len(),
            if delete { 1 } else { 3 },
            "deleteOnScaleDown: {delete}"
        );
    }
}

#[test]
fn a_new_default_sidecar_image_reaches_a_job_only_at_its_next_upgrade() {
    let mut sim = running(wc());
    sim.settings.default_sidecar_image = "sidecar:2".into();
    let ops = sim.status.operations;
    sim.settle(30);
    assert_eq!(sim.status.operations, ops, "no upgrade of its own");
    sim.job.spec.restart_nonce = Some(1);
    sim.settle(60);
    assert_eq!(
        sim.status.deployment.unwrap().sidecar_image.as_deref(),
        Some("sidecar:2")
    );
}

#[test]
fn retention_never_drops_a_restore_point() {
    let mut sim = running(wc());
    sim.job.spec.app.image = "app:2".into();
    sim.settle(60);
    let restore = sim.status.restored_from.clone().unwrap();
    sim.job
        .spec
        .savepoint
        .get_or_insert_with(Default::default)
        .history_count = Some(1);
    for n in 1..5 {
        sim.job.spec.savepoint.as_mut().unwrap().trigger_nonce = Some(n);
        sim.settle(30);
    }
    assert!(sim.status.savepoints.iter().any(|s| s.location == restore));
    assert!(sim.savepoints.contains_key(&restore), "still in storage");
    assert!(sim.has_event("SavepointDisposed"));
}

#[test]
fn pods_that_outlive_their_grace_period_are_deleted_with_force() {
    let mut sim = running(wc().mode(UpgradeMode::Stateless));
    sim.job.spec.app.image = "app:2".into();
    sim.reconcile();
    assert_eq!(sim.step(), Some(Step::Stopping));
    sim.now += k8s_openapi::jiff::SignedDuration::from_secs(200);
    let effects = plan_effects(&mut sim);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::DeletePod { force: true, .. })),
        "{effects:?}"
    );
}

fn degraded(sim: &Sim) -> crate::crd::Condition {
    sim.status
        .conditions
        .iter()
        .find(|c| c.type_ == DEGRADED)
        .cloned()
        .expect("a Degraded condition")
}

#[test]
fn a_replica_failing_after_the_job_ran_is_recovering_not_upgrading_and_says_why() {
    let mut sim = running(wc().parallelism(2));
    let image = sim.job.spec.app.image.clone();
    sim.broken.insert(image.clone());
    let why = "container app is in CrashLoopBackOff, last exit code 2: unknown state \"countz\"";
    sim.pods.get_mut(&(None, 1)).unwrap().problem = Some(why.into());
    sim.tick(1);
    sim.reconcile();
    assert_eq!(
        sim.status.phase,
        Some(Phase::Recovering),
        "{:#?}",
        sim.status
    );
    assert!(sim.status.operation.is_none());
    let c = degraded(&sim);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ReplicaFailing")
    );
    assert_eq!(c.message, format!("replica 1: {why}"));
    // One Event per message, not one per reconcile.
    sim.tick(1);
    sim.reconcile();
    let told = sim
        .events
        .iter()
        .filter(|(r, _)| *r == "ReplicaFailing")
        .count();
    assert_eq!(told, 1, "{:?}", sim.events);
    // It comes back: Running, and Degraded clears.
    sim.broken.remove(&image);
    sim.pods.get_mut(&(None, 1)).unwrap().problem = None;
    sim.settle(10);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    assert_eq!(degraded(&sim).status, "False");
}

#[test]
fn a_missing_credentials_secret_is_told_until_it_exists() {
    let mut sim = Sim::new(wc().build());
    let image = sim.job.spec.app.image.clone();
    sim.broken.insert(image.clone());
    sim.missing =
        vec!["the Secret \"s3\" that state.credentialsSecret names does not exist".into()];
    sim.reconcile();
    sim.tick(1);
    sim.reconcile();
    assert_eq!(sim.status.phase, Some(Phase::Deploying));
    let c = degraded(&sim);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "MissingSecret")
    );
    assert!(c.message.contains("\"s3\""), "{}", c.message);
    assert!(sim.has_event("MissingSecret"));
    sim.missing.clear();
    sim.broken.remove(&image);
    sim.settle(10);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    assert_eq!(degraded(&sim).reason, "AsExpected");
}

#[test]
fn a_failing_pod_does_not_hide_the_rollback_that_it_caused() {
    let mut sim = running(wc());
    sim.broken.insert("app:bad".into());
    sim.job.spec.app.image = "app:bad".into();
    for _ in 0..200 {
        sim.reconcile();
        for p in sim.pods.values_mut() {
            p.problem =
                (p.image == "app:bad").then(|| "container app is in CrashLoopBackOff".into());
        }
        if sim.status.phase == Some(Phase::RolledBack) {
            break;
        }
        sim.tick(1);
    }
    assert_eq!(
        sim.status.phase,
        Some(Phase::RolledBack),
        "{:#?}",
        sim.status
    );
    assert_ne!(degraded(&sim).reason, "ReplicaFailing");
    assert!(sim.has_event("RolledBack"));
}

#[test]
fn each_replicas_latest_checkpoint_is_shown_in_the_status() {
    use super::model::CheckpointInfo;
    let sim = running(wc().parallelism(2));
    let mut obs = sim.observed(vec![], None);
    let later = sim.now + k8s_openapi::jiff::SignedDuration::from_secs(3);
    obs.replica_checkpoints = Some(std::collections::BTreeMap::from([
        (
            0,
            Some(CheckpointInfo {
                id: 7,
                created_at: sim.now,
            }),
        ),
        (
            1,
            Some(CheckpointInfo {
                id: 5,
                created_at: later,
            }),
        ),
    ]));
    let plan = super::plan(&sim.job, &sim.status, &obs, sim.now, &sim.settings);
    let shown: Vec<(i32, i64)> = plan
        .status
        .replica_checkpoints
        .iter()
        .map(|r| (r.replica, r.id))
        .collect();
    assert_eq!(shown, [(0, 7), (1, 5)]);
    assert_eq!(
        plan.status.last_checkpoint.as_ref().map(|c| c.id),
        Some(5),
        "the newest by time"
    );
    // Asked again later without an answer: what was shown stays.
    let obs = sim.observed(vec![], None);
    let again = super::plan(&sim.job, &plan.status, &obs, sim.now, &sim.settings);
    assert_eq!(again.status.replica_checkpoints.len(), 2);
    // A replica that answers it has none (a new version's) is no longer shown with the old one's.
    let mut obs = sim.observed(vec![], None);
    obs.replica_checkpoints = Some(std::collections::BTreeMap::from([(1, None)]));
    let after = super::plan(&sim.job, &again.status, &obs, sim.now, &sim.settings);
    let shown: Vec<i32> = after
        .status
        .replica_checkpoints
        .iter()
        .map(|r| r.replica)
        .collect();
    assert_eq!(shown, [0]);
}

#[test]
fn an_upgrade_savepoint_is_made_self_contained_once_the_upgrade_is_done() {
    let mut sim = running(wc());
    sim.job.spec.app.image = "app:2".into();
    sim.reconcile();
    assert!(sim.status.operation.is_some());
    let upgrade = sim
        .status
        .savepoints
        .iter()
        .find(|s| s.reason == "upgrade")
        .cloned()
        .expect("the upgrade's savepoint is recorded");
    assert_eq!(
        upgrade.self_contained,
        Some(false),
        "it references its checkpoints' files at first"
    );
    assert!(
        sim.copies.is_empty(),
        "no copy competes with the upgrade: {:?}",
        sim.copies
    );
    sim.settle(60);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    assert_eq!(
        sim.copies,
        std::slice::from_ref(&upgrade.location),
        "copied once"
    );
    let after = sim
        .status
        .savepoints
        .iter()
        .find(|s| s.location == upgrade.location)
        .unwrap();
    assert_eq!(after.self_contained, Some(true));
    sim.reconcile();
    assert_eq!(sim.copies.len(), 1, "not copied again");
}

#[test]
fn a_savepoint_copy_that_fails_is_retried_a_minute_later_and_told() {
    let mut sim = running(wc());
    sim.copy_fails = true;
    sim.job.spec.app.image = "app:2".into();
    sim.settle(60);
    assert_eq!(sim.copies.len(), 1);
    assert!(sim.has_event("SavepointCopyFailed"));
    let wake = sim.reconcile();
    assert_eq!(sim.copies.len(), 1, "not retried at once");
    assert!(
        matches!(wake, Wake::After(d) if d <= std::time::Duration::from_secs(60)),
        "{wake:?}"
    );
    sim.copy_fails = false;
    sim.tick(61);
    sim.reconcile();
    assert_eq!(sim.copies.len(), 2, "retried after a minute");
    assert!(
        sim.status
            .savepoints
            .iter()
            .all(|s| s.self_contained == Some(true))
    );
}

// --- warm handover ------------------------------------------------------------------------------

fn slots(sim: &Sim) -> Vec<Option<crate::crd::Slot>> {
    let mut s: Vec<_> = sim.pods.keys().map(|k| k.0).collect();
    s.dedup();
    s
}

#[test]
fn a_warm_handover_warms_the_new_pods_beside_the_old_and_promotes_them_only_after_the_fence() {
    use crate::crd::Slot;
    let mut sim = running(wc().warm_handover());
    let old = sim.status.deployment.clone().unwrap();
    sim.job.spec.app.image = "app:2".into();
    sim.reconcile();
    let op = sim.status.operation.clone().unwrap();
    assert_eq!(op.step, Step::Warming);
    assert_eq!(
        op.warm_from, old.state_location,
        "warms from the old lineage"
    );
    assert_eq!(op.target.as_ref().unwrap().slot, Some(Slot::Green));
    assert_eq!(sim.pods.len(), 4, "two versions side by side");
    assert!(
        sim.pods.iter().all(|(k, p)| k.0.is_some() == p.standby),
        "the new pods are standby pods"
    );
    assert!(
        sim.pods.values().all(|p| !p.fenced),
        "the old version still serves while the new one warms"
    );
    until(&mut sim, 60, "the handover", |s| {
        s.status.operation.is_none()
    });
    let steps: Vec<Step> = sim.steps_ended.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        vec![
            Step::Warming,
            Step::Savepointing,
            Step::Promoting,
            Step::WaitingReady
        ]
    );
    sim.settle(30);
    let d = sim.status.deployment.clone().unwrap();
    assert_eq!(d.slot, Some(Slot::Green));
    assert_eq!(sim.status.phase, Some(Phase::Running));
    assert_eq!(
        slots(&sim),
        vec![Some(Slot::Green)],
        "the old pods are gone"
    );
    assert!(sim.has_event("UpgradeComplete"));
    // The next handover goes back to the other set.
    sim.job.spec.app.image = "app:3".into();
    sim.settle(60);
    assert_eq!(slots(&sim), vec![Some(Slot::Blue)]);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    no_violations(&sim);
}

#[test]
fn a_new_version_that_cannot_start_beside_the_old_one_is_abandoned_without_a_fence() {
    use crate::crd::Slot;
    let mut sim = running(wc().warm_handover());
    let good = sim.status.deployment.clone().unwrap();
    sim.job.spec.app.image = "app:2".into();
    sim.reconcile();
    assert_eq!(sim.step(), Some(Step::Warming));
    sim.pods.get_mut(&(Some(Slot::Green), 1)).unwrap().problem =
        Some("ErrImagePull: app:2 not found".into());
    sim.reconcile();
    assert!(sim.status.operation.is_none());
    assert_eq!(degraded_reason(&sim).as_deref(), Some("HandoverFailed"));
    assert!(sim.savepoints.is_empty(), "no savepoint was taken");
    sim.settle(30);
    assert_eq!(sim.status.deployment.as_ref(), Some(&good));
    assert_eq!(slots(&sim), vec![None], "the new pods are removed");
    assert!(sim.pods.values().all(|p| !p.fenced && p.ready));
    let ops = sim.status.operations;
    sim.settle(30);
    assert_eq!(
        sim.status.operations, ops,
        "not retried until the spec changes"
    );
    no_violations(&sim);
}

#[test]
fn a_handed_over_version_that_never_becomes_ready_rolls_back_with_its_state() {
    let mut sim = running(wc().warm_handover());
    let good = sim.status.deployment.clone().unwrap().hash;
    sim.broken.insert("app:bad".into());
    sim.job.spec.app.image = "app:bad".into();
    sim.settle(200);
    assert!(sim.has_event("RollingBack"), "{:#?}", sim.events);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.status.deployment.as_ref().unwrap().hash, good);
    assert!(sim.pods.values().all(|p| p.ready));
    no_violations(&sim);
}

#[test]
fn an_operator_killed_after_any_step_of_a_handover_resumes_it_without_a_second_savepoint() {
    for crash in 0..8 {
        let mut sim = running(wc().warm_handover());
        sim.job.spec.app.image = "app:2".into();
        for _ in 0..3 {
            sim.reconcile_with_crash(Some(crash));
            sim.tick(1);
        }
        sim.settle(120);
        let st = &sim.status;
        assert_eq!(st.phase, Some(Phase::Running), "crash after plan {crash}");
        assert_eq!(
            sim.savepoints.len(),
            1,
            "one savepoint (crash after {crash})"
        );
        assert_eq!(
            slots(&sim),
            vec![Some(crate::crd::Slot::Green)],
            "crash after {crash}"
        );
        no_violations(&sim);
    }
}

#[test]
fn standby_pods_that_cannot_be_promoted_are_replaced_by_pods_restoring_the_savepoint() {
    let mut sim = running(wc().warm_handover());
    sim.promote_fails = true;
    sim.job.spec.app.image = "app:2".into();
    until(&mut sim, 30, "the promotion step", |s| {
        s.step() == Some(Step::Promoting)
    });
    until(&mut sim, 120, "the deadline", |s| {
        s.step() == Some(Step::WaitingReady)
    });
    sim.promote_fails = false;
    sim.settle(60);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    assert!(sim.pods.values().all(|p| !p.standby && p.ready));
    no_violations(&sim);
}

#[test]
fn a_rescale_is_handed_over_warm_too() {
    use crate::crd::Slot;
    let mut sim = running(wc().warm_handover());
    sim.job.spec.parallelism = 3;
    sim.reconcile();
    assert_eq!(sim.step(), Some(Step::Warming));
    assert_eq!(sim.pods.len(), 5, "3 new pods beside the 2 old ones");
    sim.settle(60);
    assert_eq!(slots(&sim), vec![Some(Slot::Green)]);
    assert_eq!(sim.pods.len(), 3);
    assert_eq!(sim.status.phase, Some(Phase::Running));
    let sp = sim.status.last_savepoint.clone().unwrap();
    assert_eq!((sp.reason.as_str(), sp.parallelism), ("rescale", 2));
    sim.job.spec.parallelism = 1;
    sim.settle(60);
    assert_eq!(slots(&sim), vec![Some(Slot::Blue)]);
    assert_eq!(sim.pods.len(), 1);
    no_violations(&sim);
}
