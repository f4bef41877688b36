//! The savepoint history: retention by count and age, and what may never be dropped.

use k8s_openapi::jiff::Timestamp;

use crate::crd::{SavepointRef, StreamJob, StreamJobStatus};

/// Savepoints that a restore may still need: where the running, stable or incoming version
/// restored from, the resume point, the operation's own, and the latest upgrade, rescale or
/// suspend savepoint.
pub fn protected(st: &StreamJobStatus) -> Vec<String> {
    // An abandoned operation's savepoint is needed by nothing.
    let op = st.operation.as_ref().filter(|o| o.failure.is_none());
    [
        st.deployment.as_ref().and_then(|d| d.restore_from.clone()),
        st.stable.as_ref().and_then(|d| d.restore_from.clone()),
        st.resume_from.clone(),
        op.and_then(|o| o.savepoint.clone()),
        op.and_then(|o| o.target.as_ref())
            .and_then(|t| t.restore_from.clone()),
        st.savepoints
            .iter()
            .rev()
            .find(|s| matches!(s.reason.as_str(), "upgrade" | "rescale" | "suspend"))
            .map(|s| s.location.clone()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn age_seconds(time: &str, now: Timestamp) -> i64 {
    time.parse::<Timestamp>()
        .map(|t| now.as_second() - t.as_second())
        .unwrap_or(0)
}

/// Applies retention by count (`historyCount`, default 10) and age (`historyMaxAgeSeconds`) and
/// returns the dropped savepoints; protected ones are kept whatever their age.
pub fn retain(job: &StreamJob, st: &mut StreamJobStatus, now: Timestamp) -> Vec<SavepointRef> {
    let settings = job.spec.savepoint.clone().unwrap_or_default();
    let max_count = settings.history_count.unwrap_or(10).max(1) as usize;
    let max_age = settings.history_max_age_seconds;
    let protected = protected(st);
    let n = st.savepoints.len();
    let (mut keep, mut dropped) = (Vec::new(), Vec::new());
    for (i, s) in st.savepoints.drain(..).enumerate() {
        let too_many = n - i > max_count;
        let too_old = max_age.is_some_and(|a| age_seconds(&s.time, now) > a);
        if (too_many || too_old) && !protected.contains(&s.location) {
            dropped.push(s);
        } else {
            keep.push(s);
        }
    }
    st.savepoints = keep;
    dropped
}

/// Seconds until the oldest unprotected savepoint passes the maximum age, if one will.
pub fn next_expiry(job: &StreamJob, st: &StreamJobStatus, now: Timestamp) -> Option<i64> {
    let max_age = job.spec.savepoint.as_ref()?.history_max_age_seconds?;
    let protected = protected(st);
    st.savepoints
        .iter()
        .filter(|s| !protected.contains(&s.location))
        .map(|s| max_age - age_seconds(&s.time, now) + 1)
        .min()
        .map(|s| s.max(1))
}
