//! Status conditions: standard `metav1.Condition` semantics (the transition time changes only when
//! the status does).

use crate::crd::Condition;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
        .to_string()
}

/// Sets condition `type_` in `conditions`, keeping its transition time when its status is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    set_at(
        conditions,
        type_,
        status,
        reason,
        message,
        generation,
        &now(),
    )
}

/// [`set`] with the time given (the planner passes its clock in).
pub fn set_at(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &str,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.to_owned();
            }
            c.status = status;
            c.reason = reason.to_owned();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: now.to_owned(),
        }),
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_changes_only_with_status() {
        let mut cs = vec![];
        set(&mut cs, READY, false, "Deploying", "0/2 ready", Some(1));
        let t0 = cs[0].last_transition_time.clone();
        cs[0].last_transition_time = "2000-01-01T00:00:00Z".into();
        set(&mut cs, READY, false, "Deploying", "1/2 ready", Some(1));
        assert_eq!(cs[0].last_transition_time, "2000-01-01T00:00:00Z");
        assert_eq!(cs[0].message, "1/2 ready");
        set(
            &mut cs,
            READY,
            true,
            "AllReplicasReady",
            "2/2 ready",
            Some(1),
        );
        assert_ne!(cs[0].last_transition_time, "2000-01-01T00:00:00Z");
        assert!(!t0.is_empty());
        assert!(is_true(&cs, READY));
    }
}
