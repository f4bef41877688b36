//! Why a replica's pod does not run, in one sentence, from what only the pod's status says: a
//! container that crash-loops (with the last words it logged), an image that cannot be pulled, a
//! configuration the kubelet refused, a pod no node takes. Pure: the pod in, a message out.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Waiting reasons that mean the container will not run as it is.
const STUCK: [&str; 7] = [
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What the scheduler says while a pod's claims are being bound.
const WAITING_FOR_CLAIM: &str = "unbound immediate PersistentVolumeClaims";

/// The longest message a condition carries (a crash's log tail can be long).
const MAX_MESSAGE: usize = 600;

pub fn problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        // Waiting for its claim to be provisioned and bound is how a replica with a volume starts.
        && !c.message.as_deref().is_some_and(|m| m.contains(WAITING_FOR_CLAIM))
    {
        return Some(bounded(format!(
            "not scheduled: {}",
            c.message.as_deref().unwrap_or("no reason given")
        )));
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    containers.filter_map(container_problem).next().map(bounded)
}

fn container_problem(c: &ContainerStatus) -> Option<String> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !STUCK.contains(&reason) {
        return None;
    }
    let mut out = format!("container {} is in {reason}", c.name);
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    match last {
        Some(t) if reason == "CrashLoopBackOff" => {
            out.push_str(&format!(", last exit code {}", t.exit_code));
            if let Some(words) = t.message.as_deref().and_then(last_words) {
                out.push_str(&format!(": {words}"));
            } else if let Some(r) = &t.reason {
                out.push_str(&format!(" ({r})"));
            }
        }
        _ => {
            if let Some(m) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
                out.push_str(&format!(": {m}"));
            }
        }
    }
    Some(out)
}

/// The last thing a container logged before it ended (its termination message, which the pods take
/// from the log tail): the last non-empty line, and of a JSON log line its message and error.
fn last_words(message: &str) -> Option<String> {
    let line = message
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())?;
    let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
        return Some(line.to_owned());
    };
    let fields = json.get("fields").unwrap_or(&json);
    let text = |k: &str| fields.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    match (text("message"), text("error")) {
        (Some(m), Some(e)) => Some(format!("{m}: {e}")),
        (Some(m), None) => Some(m),
        (None, Some(e)) => Some(e),
        (None, None) => Some(line.to_owned()),
    }
}

fn bounded(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, PodCondition, PodStatus,
    };

    fn pod(init: Vec<ContainerStatus>, main: Vec<ContainerStatus>) -> Pod {
        Pod {
            status: Some(PodStatus {
                init_container_statuses: Some(init),
                container_statuses: Some(main),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn waiting(name: &str, reason: &str, message: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn crashed(name: &str, code: i32, message: &str) -> ContainerStatus {
        ContainerStatus {
            last_state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: Some("Error".into()),
                    message: Some(message.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..waiting(
                name,
                "CrashLoopBackOff",
                "back-off 10s restarting failed container",
            )
        }
    }

    #[test]
    fn a_crash_loop_names_the_container_and_its_last_words() {
        let log = "{\"level\":\"INFO\",\"fields\":{\"message\":\"starting\"}}\n\
                   {\"level\":\"ERROR\",\"fields\":{\"message\":\"restore failed\",\"error\":\"cannot reach s3://b/x: connection refused\"}}\n";
        let p = pod(vec![crashed("stator-sidecar", 1, log)], vec![]);
        assert_eq!(
            problem(&p).as_deref(),
            Some(
                "container stator-sidecar is in CrashLoopBackOff, last exit code 1: restore failed: cannot reach s3://b/x: connection refused"
            )
        );
        let p = pod(
            vec![],
            vec![crashed("app", 2, "usage: wordcount run\nerror: bad flag\n")],
        );
        assert_eq!(
            problem(&p).as_deref(),
            Some("container app is in CrashLoopBackOff, last exit code 2: error: bad flag")
        );
    }

    #[test]
    fn pull_and_config_errors_carry_the_kubelets_message() {
        let p = pod(
            vec![],
            vec![waiting(
                "app",
                "ImagePullBackOff",
                "Back-off pulling image \"x:1\"",
            )],
        );
        assert_eq!(
            problem(&p).as_deref(),
            Some("container app is in ImagePullBackOff: Back-off pulling image \"x:1\"")
        );
    }

    #[test]
    fn starting_containers_and_unscheduled_pods() {
        let p = pod(vec![waiting("app", "ContainerCreating", "")], vec![]);
        assert_eq!(problem(&p), None, "starting is not a problem");
        let mut p = pod(vec![], vec![]);
        p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            message: Some("0/1 nodes are available: persistentvolumeclaim \"x\" not found.".into()),
            ..Default::default()
        }]);
        assert!(problem(&p).unwrap().starts_with("not scheduled: 0/1 nodes"));
        let conditions = p.status.as_mut().unwrap().conditions.as_mut().unwrap();
        conditions[0].message = Some(
            "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.".into(),
        );
        assert_eq!(
            problem(&p),
            None,
            "a claim being bound is a start, not a failure"
        );
    }

    #[test]
    fn long_messages_are_bounded() {
        let p = pod(vec![], vec![crashed("app", 1, &"é".repeat(2000))]);
        let m = problem(&p).unwrap();
        assert!(
            m.len() <= MAX_MESSAGE + 3 && m.ends_with("..."),
            "{}",
            m.len()
        );
    }
}
