"""What keeps a job's replicas from running is told on the StreamJob, not only on its pods: the Degraded
condition names the cause (with the failing container's last words), an Event says it once, and the phase
says what the job is doing (Deploying, never Upgrading with no operation in flight)."""
from harness import free_port, wait_until
from scenario import Wordcount, start_operator
import pytest


@pytest.fixture
def operator(cluster, processes):
    return start_operator(cluster, processes)


def degraded(wc: Wordcount) -> dict:
    return next((c for c in wc.status().get("conditions", []) if c["type"] == "Degraded"), {})


def told(wc: Wordcount, reason: str, timeout: float = 90) -> dict:
    def now():
        c = degraded(wc)
        return c if c.get("status") == "True" and c.get("reason") == reason else None
    return wait_until(now, timeout=timeout, what=f"Degraded={reason} on {wc.name}")


def test_a_missing_credentials_secret_is_named_on_the_job_until_it_exists(cluster, namespace, s3, operator):
    wc = Wordcount(cluster, s3, namespace, name="nosecret", parallelism=1)
    wc.job["spec"]["state"]["credentialsSecret"] = "absent-s3"
    wc.apply()
    c = told(wc, "MissingSecret")
    assert '"absent-s3"' in c["message"] and namespace in c["message"], c["message"]
    st = wc.status()
    assert st["phase"] == "Deploying" and not st.get("operation"), st
    assert [e["message"] for e in wc.events("MissingSecret")] == [c["message"]], "told once"
    # Creating it is all the user has to do.
    cluster.kubectl("create", "secret", "generic", "absent-s3",
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}", namespace=namespace)
    wc.wait_running(replicas=1)
    c = degraded(wc)
    assert c["status"] == "False", c


def unreachable_storage(wc: Wordcount) -> None:
    wc.job["spec"]["state"]["s3"]["endpoint"] = f"http://127.0.0.1:{free_port()}"


def app_exits_at_once(wc: Wordcount) -> None:
    wc.job["spec"]["app"]["args"] = ["run", "--batch", "0"]


def image_cannot_be_pulled(wc: Wordcount) -> None:
    wc.job["spec"]["app"]["image"] = "registry.invalid/stator/no-such-app:1"


def initial_savepoint_missing(wc: Wordcount) -> None:
    wc.job["spec"]["initialSavepoint"] = f"s3://{wc.s3.bucket}/nothing/here"


@pytest.mark.parametrize("cause, container, words", [
    (unreachable_storage, "stator-sidecar", "cannot open or restore the state store"),
    (app_exits_at_once, "app", "--batch must be at least 1"),
    (image_cannot_be_pulled, "app", "registry.invalid/stator/no-such-app:1"),
    (initial_savepoint_missing, "stator-sidecar", "nothing to restore at s3://"),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_a_replica_that_cannot_run_says_why_on_the_job(cluster, namespace, s3, operator, cause, container, words):
    wc = Wordcount(cluster, s3, namespace, name="failing", parallelism=1)
    cause(wc)
    wc.apply()
    c = told(wc, "ReplicaFailing")
    assert c["message"].startswith(f"replica 0: container {container} is in "), c["message"]
    assert words in c["message"], c["message"]
    st = wc.status()
    assert st["phase"] == "Deploying" and not st.get("operation"), st
    assert st["readyReplicas"] == 0
    assert any(words in e["message"] for e in wc.events("ReplicaFailing")), "an Event says it too"


def test_a_pod_the_api_server_refuses_is_reported_with_the_servers_words(cluster, namespace, s3, operator):
    """The namespace enforces the restricted Pod Security Standard: a privileged app container is refused
    at admission, and the job says so instead of showing no pods."""
    wc = Wordcount(cluster, s3, namespace, name="privileged", parallelism=1)
    wc.job["spec"]["app"]["securityContext"] = {"privileged": True}
    wc.apply()
    c = told(wc, "PodRejected")
    assert "violates PodSecurity" in c["message"] and "privileged" in c["message"], c["message"]
    assert wc.pods() == []
    # Fixing the spec is enough.
    wc.patch({"app": {"securityContext": None}})
    wc.wait_running(replicas=1)
    assert degraded(wc)["status"] == "False"


def test_a_file_location_is_refused_where_replicas_share_no_filesystem(cluster, namespace, s3, operator):
    """The operator runs as the chart installs it (allowFileLocations off): a file:// location would keep
    each replica's state on its own pod, lost with it, so the job is refused before anything starts."""
    wc = Wordcount(cluster, s3, namespace, name="filelocation", parallelism=1)
    state = wc.job["spec"]["state"]
    state["location"] = "file:///var/lib/stator"
    del state["credentialsSecret"], state["s3"]
    wc.apply()
    c = told(wc, "InvalidSpec", timeout=60)
    assert c["message"].startswith('state.location "file:///var/lib/stator" is a directory on each replica'), c
    assert "use an s3:// location" in c["message"]
    assert wc.status()["phase"] == "Failed" and wc.pods() == []
