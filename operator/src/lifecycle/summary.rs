//! The status a person reads: phase, the Ready, Progressing and Degraded conditions, replica
//! counts. A pure function of the planned status and what was observed.

use super::layout;
use super::model::{Effect, Observed};
use crate::crd::{OperationKind, Phase, StreamJob, StreamJobStatus};
use crate::objects;
use crate::status::{self, DEGRADED, PROGRESSING, READY};

/// Fills in the summary of `st` (the planned status; `old` is the one read) and returns the
/// Events a change of it deserves.
pub fn summarize(
    job: &StreamJob,
    old: &StreamJobStatus,
    st: &mut StreamJobStatus,
    obs: &Observed,
    now: &str,
) -> Vec<Effect> {
    let mut events = Vec::new();
    let generation = job.metadata.generation;
    let set = |st: &mut StreamJobStatus, t: &str, v: bool, reason: &str, message: String| {
        status::set_at(&mut st.conditions, t, v, reason, message, generation, now)
    };
    st.observed_generation = generation;
    if let Some(latest) = &obs.replica_checkpoints {
        for (&replica, c) in latest {
            let Some(c) = c else {
                st.replica_checkpoints.retain(|r| r.replica != replica);
                continue;
            };
            let entry = crate::crd::ReplicaCheckpoint {
                replica,
                id: c.id as i64,
                time: super::plan::time(c.created_at),
            };
            match st
                .replica_checkpoints
                .iter_mut()
                .find(|r| r.replica == replica)
            {
                Some(r) => *r = entry,
                None => st.replica_checkpoints.push(entry),
            }
        }
        st.replica_checkpoints.sort_by_key(|r| r.replica);
    }
    st.selector = Some(objects::selector(job));
    let deployed = st.deployment.clone();
    st.deployed_spec_hash = deployed.as_ref().map(|d| d.hash.clone());
    let p = deployed
        .as_ref()
        .map(|d| layout::parallelism(job, d))
        .unwrap_or(job.spec.parallelism);
    let hash = deployed.as_ref().map(|d| d.hash.as_str());
    let ours = |pod: &&super::model::PodView| !pod.deleting && pod.spec_hash.as_deref() == hash;
    st.replicas = obs.pods.values().filter(|p| !p.deleting).count() as i32;
    st.ready_replicas = obs.pods.values().filter(ours).filter(|p| p.ready).count() as i32;
    let all_ready = deployed.is_some()
        && (0..p).all(|i| obs.pods.get(&i).is_some_and(|pod| ours(&pod) && pod.ready))
        && st.replicas == p;
    st.replica_checkpoints.retain(|r| r.replica < p);
    st.last_checkpoint = st
        .replica_checkpoints
        .iter()
        .max_by(|a, b| a.time.cmp(&b.time))
        .map(|r| crate::crd::CheckpointRef {
            id: r.id,
            time: r.time.clone(),
        });
    let valid = obs.spec_problems.is_empty();
    let suspended = st.operation.is_none() && st.phase == Some(Phase::Suspended);

    st.phase = Some(match st.operation.as_ref().map(|o| o.kind) {
        Some(OperationKind::Savepoint) if all_ready => Phase::Running,
        Some(_) => Phase::Upgrading,
        None if suspended => Phase::Suspended,
        None if !valid && deployed.is_none() => Phase::Failed,
        None if st.phase == Some(Phase::RolledBack) && st.failed_spec_hash.is_some() => {
            Phase::RolledBack
        }
        None if all_ready => Phase::Running,
        None if st.phase == Some(Phase::Failed) && st.failed_spec_hash.is_some() => Phase::Failed,
        // Deployed before, no operation in flight, a replica not ready: it is being recreated or
        // is failing (the Degraded condition says which), not upgrading.
        None if st.stable.is_some() => Phase::Recovering,
        None => Phase::Deploying,
    });
    if st.phase == Some(Phase::Running) && old.phase != Some(Phase::Running) {
        events.push(Effect::Event {
            warning: false,
            reason: "Running",
            note: format!("all {p} replicas are ready"),
        });
    }
    let suspended = st.phase == Some(Phase::Suspended);
    let message = match &st.operation {
        Some(o) => format!("{} ({:?}: {:?})", o.reason, o.kind, o.step),
        None if suspended => "suspended".to_owned(),
        None => format!("{}/{p} replicas ready", st.ready_replicas),
    };
    let ready = all_ready && st.operation.is_none();
    let reason = if ready {
        "AllReplicasReady"
    } else if suspended {
        "Suspended"
    } else {
        "ReplicasNotReady"
    };
    set(st, READY, ready, reason, message.clone());
    let progressing = st.operation.is_some() || (!ready && !suspended);
    let reason = if st.operation.is_some() {
        "Operation"
    } else if ready || suspended {
        "Deployed"
    } else {
        "RollingOut"
    };
    set(st, PROGRESSING, progressing, reason, message);

    // Degraded: the spec, a refused pod, or what the planner reported (a failed savepoint, a
    // rollback, a blocked upgrade), cleared once the job runs its spec again.
    if !valid {
        let message = obs.spec_problems.join("; ");
        let known = old
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.reason == "InvalidSpec" && c.message == message);
        if !known {
            events.push(Effect::Event {
                warning: true,
                reason: "InvalidSpec",
                note: message.clone(),
            });
        }
        set(st, DEGRADED, true, "InvalidSpec", message);
        if deployed.is_none() {
            set(
                st,
                PROGRESSING,
                false,
                "InvalidSpec",
                "waiting for a valid spec".into(),
            );
        }
    } else if let Some(r) = st.rejection.clone() {
        let message = format!(
            "the API server refused a pod of spec {}: {}",
            r.spec_hash, r.message
        );
        set(st, DEGRADED, true, "PodRejected", message);
    } else if let Some((reason, message)) = failing(obs).filter(|_| !planner_degraded(st)) {
        let known = old
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.reason == reason && c.message == message);
        if !known {
            events.push(Effect::Event {
                warning: true,
                reason,
                note: message.clone(),
            });
        }
        set(st, DEGRADED, true, reason, message);
    } else {
        let degraded = st.conditions.iter().find(|c| c.type_ == DEGRADED).cloned();
        let stale = degraded.as_ref().is_some_and(|c| {
            matches!(
                c.reason.as_str(),
                "InvalidSpec" | "PodRejected" | MISSING_SECRET | REPLICA_FAILING
            )
        });
        let recovered = ready && st.failed_spec_hash.is_none();
        if degraded.is_none() || stale || recovered {
            set(st, DEGRADED, false, "AsExpected", String::new());
        }
    }
    events
}

const MISSING_SECRET: &str = "MissingSecret";
const REPLICA_FAILING: &str = "ReplicaFailing";

/// The planner reported something (a rollback, a failed savepoint): its reason says more than a
/// failing pod does, and stays.
fn planner_degraded(st: &StreamJobStatus) -> bool {
    st.conditions.iter().any(|c| {
        c.type_ == DEGRADED
            && c.status == "True"
            && !matches!(
                c.reason.as_str(),
                "InvalidSpec" | "PodRejected" | "AsExpected" | MISSING_SECRET | REPLICA_FAILING
            )
    })
}

/// What keeps replicas from running that only the cluster shows: a Secret the spec names and that
/// does not exist, or what each failing pod's status says, replica by replica.
fn failing(obs: &Observed) -> Option<(&'static str, String)> {
    if !obs.missing.is_empty() {
        return Some((MISSING_SECRET, obs.missing.join("; ")));
    }
    let failing: Vec<String> = obs
        .pods
        .iter()
        .filter(|(_, p)| !p.deleting)
        .filter_map(|(i, p)| Some(format!("replica {i}: {}", p.problem.as_ref()?)))
        .collect();
    (!failing.is_empty()).then(|| (REPLICA_FAILING, failing.join("; ")))
}
