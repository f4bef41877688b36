//! Checks a StreamJob's spec beyond what the CRD schema can say. Pure: no API calls. Every problem
//! is one sentence a user can act on; an invalid job gets them in its status and an Event, and its
//! pods are left alone.

use std::collections::BTreeSet;

use stator_core::keygroup::MAX_MAX_PARALLELISM;
use stator_core::names::check_flag_state_name;

use kube::ResourceExt;

use crate::crd::{StreamJob, UpgradeMode, UpgradeStrategy};

/// The longest name a pod or hostname may have (a DNS-1123 label).
const MAX_LABEL: usize = 63;

/// The CRD's rules on the job's name (`crd::JOB_NAME_*`), for a cluster that runs an older CRD: the
/// name must be a DNS-1035 label (it names the Service) and `<name>-<index>` must fit 63 characters for
/// every index below maxParallelism (pod names and hostnames).
fn check_job_name(name: &str, max_parallelism: i32) -> Option<String> {
    let label = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !label {
        return Some(format!(
            "metadata.name {name:?} must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and ending with a letter or digit): it names the job's Service and pods"
        ));
    }
    let longest = name.len() + 1 + (max_parallelism.max(1) - 1).to_string().len();
    (longest > MAX_LABEL).then(|| {
        format!(
            "metadata.name {name:?} is too long: the pod of replica {} would be named with {longest} characters; pod names and hostnames have at most {MAX_LABEL}",
            max_parallelism - 1
        )
    })
}

/// What this operator's settings refuse of a spec that is valid in itself: a `file://` location
/// (or initial savepoint) unless the operator runs where replicas share one filesystem.
pub fn storage_policy(job: &StreamJob, allow_file_locations: bool) -> Vec<String> {
    if allow_file_locations {
        return Vec::new();
    }
    let s = &job.spec;
    [
        ("state.location", s.state.location.as_deref()),
        ("initialSavepoint", s.initial_savepoint.as_deref()),
    ]
    .into_iter()
    .filter_map(|(field, l)| Some((field, l?)))
    .filter(|(_, l)| l.starts_with("file://"))
    .map(|(field, l)| {
        format!(
            "{field} {l:?} is a directory on each replica's own filesystem, which on a cluster nothing shares and the replica's pod takes with it: use an s3:// location (file:// works only where the operator runs with --allow-file-locations, a single-machine test setup)"
        )
    })
    .collect()
}

/// A warm handover restores the new pods from storage beside the old ones, under the second set
/// of pod names.
fn check_warm_handover(job: &StreamJob) -> Vec<String> {
    let s = &job.spec;
    let mut problems = Vec::new();
    if s.upgrade_mode != UpgradeMode::Savepoint {
        problems.push(format!(
            "upgradeStrategy warmHandover hands over through a savepoint: it needs upgradeMode savepoint, got {}",
            serde_json::to_value(s.upgrade_mode).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        ));
    }
    if s.state.location.is_none() {
        problems.push(
            "upgradeStrategy warmHandover restores the new pods from storage: it needs state.location"
                .to_owned(),
        );
    }
    if s.state
        .volume
        .as_ref()
        .is_some_and(|v| v.persistent_volume_claim.is_some())
    {
        problems.push("upgradeStrategy warmHandover runs the new pods beside the old ones, which hold the replicas' claims: use emptyDir volumes with it (with a persistentVolumeClaim the recreate strategy already restores only what changed, from the volume)".to_owned());
    }
    let name = job.name_any();
    let longest = name.len() + "-green-".len() + (s.max_parallelism.max(1) - 1).to_string().len();
    if longest > MAX_LABEL {
        problems.push(format!(
            "metadata.name {name:?} is too long for upgradeStrategy warmHandover: the new version's pod of replica {} would be named {name}-green-{} with {longest} characters; pod names and hostnames have at most {MAX_LABEL}",
            s.max_parallelism - 1,
            s.max_parallelism - 1
        ));
    }
    problems
}

pub fn validate(job: &StreamJob) -> Result<(), Vec<String>> {
    let s = &job.spec;
    let mut problems = Vec::new();
    if let Some(p) = check_job_name(&job.name_any(), s.max_parallelism) {
        problems.push(p);
    }
    if s.app.image.trim().is_empty() {
        problems.push("app.image must name a container image".to_owned());
    }
    if s.max_parallelism < 1 || s.max_parallelism > MAX_MAX_PARALLELISM as i32 {
        problems.push(format!(
            "maxParallelism must be between 1 and {MAX_MAX_PARALLELISM}, got {}",
            s.max_parallelism
        ));
    }
    if s.parallelism < 1 {
        problems.push(format!(
            "parallelism must be at least 1, got {}",
            s.parallelism
        ));
    } else if s.parallelism > s.max_parallelism {
        problems.push(format!(
            "parallelism ({}) must not exceed maxParallelism ({})",
            s.parallelism, s.max_parallelism
        ));
    }
    match s.state.location.as_deref() {
        Some(l) if l.starts_with("s3://") => {
            let rest = &l["s3://".len()..];
            if rest.split('/').next().is_none_or(str::is_empty) {
                problems.push(format!(
                    "state.location {l:?} names no bucket: use s3://bucket/prefix"
                ));
            }
        }
        Some(l) if l.starts_with("file://") => {
            if s.state.credentials_secret.is_some() {
                problems
                    .push("state.credentialsSecret only applies to an s3:// location".to_owned());
            }
        }
        Some(l) => problems.push(format!(
            "state.location {l:?} must be an s3://bucket/prefix or file:///path URL"
        )),
        None => {
            if s.upgrade_mode != UpgradeMode::Stateless {
                // Allowed (state stays on the replicas' volumes), but upgrades then cannot carry
                // state: say so where users look.
            }
            if s.initial_savepoint.is_some() {
                problems.push("initialSavepoint needs state.location to be set".to_owned());
            }
        }
    }
    if let Some(sp) = &s.initial_savepoint
        && !(sp.starts_with("s3://") || sp.starts_with("file://"))
    {
        problems.push(format!(
            "initialSavepoint {sp:?} must be an s3:// or file:// location"
        ));
    }
    if s.state.credentials_secret.is_some()
        && s.state
            .s3
            .as_ref()
            .is_some_and(|s3| s3.web_identity.is_some())
    {
        problems.push(
            "state.credentialsSecret and state.s3.webIdentity are two ways to reach S3: set one"
                .to_owned(),
        );
    }
    if s.state.retained_checkpoints < 1 {
        problems.push("state.retainedCheckpoints must be at least 1".to_owned());
    }
    let mut names = BTreeSet::new();
    for d in &s.state.states {
        if !names.insert(d.name.as_str()) {
            problems.push(format!("state {:?} is declared twice", d.name));
        }
        if let Err(e) = check_flag_state_name(&d.name) {
            problems.push(format!("state.states: {e}"));
        }
    }
    let mut op_names = BTreeSet::new();
    for d in &s.state.operator_states {
        if !op_names.insert(d.name.as_str()) {
            problems.push(format!("operator state {:?} is declared twice", d.name));
        }
        if let Err(e) = check_flag_state_name(&d.name) {
            problems.push(format!("state.operatorStates: {e}"));
        }
    }
    if let Some(v) = &s.state.volume
        && v.empty_dir.is_some() == v.persistent_volume_claim.is_some()
    {
        problems
            .push("state.volume needs exactly one of emptyDir or persistentVolumeClaim".to_owned());
    }
    if s.upgrade_strategy == UpgradeStrategy::WarmHandover {
        problems.extend(check_warm_handover(job));
    }
    for e in &s.app.env {
        if e.name.starts_with("STATOR_") {
            problems.push(format!(
                "app.env {:?}: STATOR_* variables are set by the operator",
                e.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::job;

    #[test]
    fn a_warm_handover_needs_storage_savepoints_emptydir_and_room_in_the_pod_names() {
        let ok = job("wc").location("s3://b/p").warm_handover().build();
        assert_eq!(validate(&ok), Ok(()));
        let err = validate(&job("wc").warm_handover().build()).unwrap_err();
        assert!(err[0].contains("needs state.location"), "{err:?}");
        let err = validate(
            &job("wc")
                .location("s3://b/p")
                .mode(UpgradeMode::LastState)
                .warm_handover()
                .build(),
        )
        .unwrap_err();
        assert!(
            err[0].contains("needs upgradeMode savepoint, got lastState"),
            "{err:?}"
        );
        let err = validate(
            &job("wc")
                .location("s3://b/p")
                .claims(false)
                .warm_handover()
                .build(),
        )
        .unwrap_err();
        assert!(err[0].contains("use emptyDir volumes"), "{err:?}");
        // 57 + "-0" fits 63; 57 + "-green-127" does not.
        let name = "a".repeat(57);
        let mut long = job(&name).location("s3://b/p").build();
        assert_eq!(validate(&long), Ok(()));
        long.spec.upgrade_strategy = crate::crd::UpgradeStrategy::WarmHandover;
        let err = validate(&long).unwrap_err();
        assert!(err[0].contains("-green-127 with 67 characters"), "{err:?}");
    }

    #[test]
    fn a_minimal_job_is_valid() {
        assert_eq!(validate(&job("wc").build()), Ok(()));
    }

    #[test]
    fn parallelism_above_max_parallelism_is_refused() {
        let err = validate(&job("wc").parallelism(200).build()).unwrap_err();
        assert_eq!(
            err,
            vec!["parallelism (200) must not exceed maxParallelism (128)"]
        );
    }

    #[test]
    fn bad_locations_are_refused() {
        let err = validate(&job("wc").location("gs://bucket/x").build()).unwrap_err();
        assert!(
            err[0].contains("must be an s3://bucket/prefix or file:///path URL"),
            "{err:?}"
        );
        let err = validate(&job("wc").location("s3:///nobucket").build()).unwrap_err();
        assert!(err[0].contains("names no bucket"), "{err:?}");
    }

    #[test]
    fn names_that_cannot_name_the_service_or_every_pod_are_refused() {
        for bad in ["1wordcount", "word.count", "Word", "wc-", "word_count"] {
            let err = validate(&job(bad).build()).unwrap_err();
            assert!(
                err[0].contains("must be a DNS-1035 label"),
                "{bad}: {err:?}"
            );
        }
        // maxParallelism 128: the last pod is <name>-127, four more characters.
        assert_eq!(validate(&job(&"a".repeat(59)).build()), Ok(()));
        let err = validate(&job(&"a".repeat(60)).build()).unwrap_err();
        assert!(err[0].contains("is too long"), "{err:?}");
        let mut j = job(&"a".repeat(60)).build();
        j.spec.max_parallelism = 10;
        j.spec.parallelism = 2;
        assert_eq!(validate(&j), Ok(()), "<name>-9 fits");
    }

    #[test]
    fn state_names_the_sidecar_would_refuse_are_refused() {
        let mut j = job("wc").state("ok").build();
        for bad in ["tab\there", "a:b", &"€".repeat(100)] {
            j.spec.state.states[0].name = bad.to_owned();
            let err = validate(&j).unwrap_err();
            assert!(err[0].starts_with("state.states: state name"), "{err:?}");
        }
    }

    #[test]
    fn reserved_env_and_duplicate_states_are_refused() {
        let mut j = job("wc").state("counts").state("counts").build();
        j.spec.app.env.push(k8s_openapi::api::core::v1::EnvVar {
            name: "STATOR_SOCKET".into(),
            value: Some("/x".into()),
            value_from: None,
        });
        let err = validate(&j).unwrap_err();
        assert!(err.iter().any(|e| e.contains("declared twice")), "{err:?}");
        assert!(
            err.iter().any(|e| e.contains("set by the operator")),
            "{err:?}"
        );
    }

    #[test]
    fn file_locations_are_refused_unless_the_operator_allows_them() {
        let mut j = job("wc").location("file:///tmp/stator").build();
        assert_eq!(validate(&j), Ok(()), "valid in itself");
        let refused = storage_policy(&j, false);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("state.location \"file:///tmp/stator\" is a directory")
                && refused[0].contains("use an s3:// location"),
            "{refused:?}"
        );
        assert!(storage_policy(&j, true).is_empty());
        j.spec.state.location = Some("s3://bucket/jobs".into());
        assert!(storage_policy(&j, false).is_empty());
        j.spec.initial_savepoint = Some("file:///old/savepoint".into());
        assert!(storage_policy(&j, false)[0].starts_with("initialSavepoint"));
    }
}
