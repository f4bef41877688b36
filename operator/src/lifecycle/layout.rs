//! Where a job's state lives, and where a new deployment's state comes from.
//!
//! Identity: every stored path lies under `<state location>/<namespace>/<name>/<jobId>/`, where
//! the job id is the StreamJob's UID recorded once in the status. A job deleted and created again
//! under the same name, or a second cluster on the same bucket, has another id and so never sees
//! this job's checkpoints or savepoints. Starting from another job's state is deliberate: the new
//! job names the savepoint in `spec.initialSavepoint`.

use kube::ResourceExt;

use super::model::{Checkpoints, Need, Settings};
use crate::crd::{Deployment, StreamJob, StreamJobSpec, StreamJobStatus};
use crate::objects;

/// The spec a deployment was built from (the job's own when the stored one does not parse).
pub fn deployment_spec(job: &StreamJob, d: &Deployment) -> StreamJobSpec {
    serde_json::from_str(&d.spec).unwrap_or_else(|_| job.spec.clone())
}

pub fn parallelism(job: &StreamJob, d: &Deployment) -> i32 {
    deployment_spec(job, d).parallelism
}

/// The job with `spec` in place of its own.
pub fn with_spec(job: &StreamJob, spec: &StreamJobSpec) -> StreamJob {
    let mut j = job.clone();
    j.spec = spec.clone();
    j
}

/// This incarnation's root in storage under `spec`'s state location.
pub fn job_root(job: &StreamJob, spec: &StreamJobSpec, job_id: &str) -> Option<String> {
    let base = spec.state.location.as_deref()?;
    Some(format!(
        "{}/{}/{}/{job_id}",
        base.trim_end_matches('/'),
        job.namespace().unwrap_or_default(),
        job.name_any()
    ))
}

fn job_id(st: &StreamJobStatus) -> &str {
    st.job_id.as_deref().unwrap_or_default()
}

/// Where lineage `lineage` checkpoints under `spec`.
pub fn lineage_location(
    job: &StreamJob,
    spec: &StreamJobSpec,
    st: &StreamJobStatus,
    lineage: &str,
) -> Option<String> {
    job_root(job, spec, job_id(st)).map(|r| format!("{r}/{lineage}"))
}

/// Where operation `n` puts its savepoint.
pub fn savepoint_location(
    job: &StreamJob,
    spec: &StreamJobSpec,
    st: &StreamJobStatus,
    reason: &str,
    n: i64,
) -> Option<String> {
    job_root(job, spec, job_id(st)).map(|r| format!("{r}/savepoints/{reason}-{n}"))
}

/// The id the sidecars see for operation `n`: unique to this incarnation and operation.
pub fn operation_id(st: &StreamJobStatus, n: i64) -> String {
    format!("{}-op{n}", job_id(st))
}

/// A new deployment of `spec` in `lineage`, restoring from `restore_from`.
pub fn deployment(
    job: &StreamJob,
    spec: &StreamJobSpec,
    st: &StreamJobStatus,
    settings: &Settings,
    lineage: String,
    restore_from: Option<String>,
) -> Deployment {
    let target = with_spec(job, spec);
    Deployment {
        hash: objects::spec_hash(&target),
        spec: serde_json::to_string(spec).unwrap_or_default(),
        state_location: lineage_location(job, spec, st, &lineage),
        lineage,
        restore_from,
        sidecar_image: Some(
            spec.sidecar
                .as_ref()
                .and_then(|s| s.image.clone())
                .unwrap_or_else(|| settings.default_sidecar_image.clone()),
        ),
        // Pod names change only in a warm handover.
        slot: st.deployed_slot(),
    }
}

/// Where the next deployment's state comes from, carrying over from deployment `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The same parallelism in the same place: keep the lineage. Each replica resumes from its
    /// own latest checkpoint, or (having none) from the lineage's restore point, which is
    /// exactly its latest state either way.
    Continue,
    /// A new lineage restoring from `from`'s complete checkpoint set (rescaled as needed).
    Checkpoints(String),
    /// A new lineage restoring from the point `from` started from: no replica of `from` ever
    /// completed a checkpoint, so that point is its latest state.
    Point(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carry {
    Ready(Source),
    Need(Need),
    /// No source holds every replica's latest state (some replicas checkpointed, others did not,
    /// and the parallelism changes): say why.
    Blocked(String),
}

/// Decides how state carries over from `from` to a deployment of `to`, without ever restoring a
/// point older than a replica's latest completed checkpoint.
pub fn carry(
    job: &StreamJob,
    st: &StreamJobStatus,
    from: &Deployment,
    to: &StreamJobSpec,
    checkpoints: Option<&Checkpoints>,
) -> Carry {
    let from_p = parallelism(job, from);
    let Some(location) = from.state_location.clone() else {
        // State only on the replicas' volumes: they keep it.
        return Carry::Ready(Source::Continue);
    };
    let same_place = lineage_location(job, to, st, &from.lineage).as_ref() == Some(&location);
    if from_p == to.parallelism && same_place {
        return Carry::Ready(Source::Continue);
    }
    let Some(c) = checkpoints.filter(|c| c.location == location && c.parallelism == from_p) else {
        return Carry::Need(Need::Checkpoints {
            location,
            parallelism: from_p,
        });
    };
    if c.latest.len() as i32 == from_p {
        Carry::Ready(Source::Checkpoints(location))
    } else if c.latest.is_empty() {
        Carry::Ready(Source::Point(from.restore_from.clone()))
    } else {
        let missing: Vec<String> = (0..from_p)
            .filter(|i| !c.latest.contains_key(i))
            .map(|i| i.to_string())
            .collect();
        Carry::Blocked(format!(
            "replicas {} of lineage {} have no checkpoint while the others have, so no single \
             restore point holds every replica's latest state at another parallelism; make every \
             replica ready (a savepoint is then taken) or keep parallelism {from_p}",
            missing.join(", "),
            from.lineage
        ))
    }
}

/// The deployment that carries `from`'s state into `to` by `source`.
pub fn carried(
    job: &StreamJob,
    st: &mut StreamJobStatus,
    settings: &Settings,
    from: &Deployment,
    to: &StreamJobSpec,
    source: Source,
) -> Deployment {
    match source {
        Source::Continue => {
            let mut d = deployment(
                job,
                to,
                st,
                settings,
                from.lineage.clone(),
                from.restore_from.clone(),
            );
            d.state_location = from.state_location.clone().or(d.state_location);
            d
        }
        Source::Checkpoints(location) => {
            st.operations += 1;
            let lineage = format!("l{}", st.operations);
            deployment(job, to, st, settings, lineage, Some(location))
        }
        Source::Point(point) => {
            st.operations += 1;
            let lineage = format!("l{}", st.operations);
            deployment(job, to, st, settings, lineage, point)
        }
    }
}
