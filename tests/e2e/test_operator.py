"""The operator end to end: StreamJobs applied with kubectl become ready replica pods with the sidecar,
the example app writes state, a deleted pod comes back with its state, invalid jobs are refused or
reported, `kubectl get sj` and `kubectl scale` work, two operators elect one leader, and the chart
installs a working operator."""
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from harness import wait_until
from scenario import start_operator

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def load(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


@pytest.fixture
def operator(cluster, processes):
    return start_operator(cluster, processes)


def status(cluster, name, namespace) -> dict:
    return (cluster.get("sj", name, namespace, check=False) or {}).get("status") or {}


def condition(st: dict, type_: str) -> dict:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def pods(cluster, namespace) -> list:
    return cluster.get("pods", namespace=namespace)["items"]


def http(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def app_log(cluster, namespace, pod) -> str:
    return cluster.kubectl("logs", pod, "-c", "app", namespace=namespace, check=False).stdout


def test_example_runs_ready_replica_pods_with_the_sidecar_and_writes_state(cluster, namespace, operator):
    cluster.apply(load("wordcount-local.yaml"), namespace=namespace)
    cluster.wait("sj/wordcount-local", "condition=Ready", namespace, timeout="180s")
    items = pods(cluster, namespace)
    assert sorted(p["metadata"]["name"] for p in items) == ["wordcount-local-0", "wordcount-local-1"]
    for p in items:
        sidecar = p["spec"]["initContainers"][0]
        assert sidecar["name"] == "stator-sidecar" and sidecar["restartPolicy"] == "Always"
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
        assert p["metadata"]["ownerReferences"][0]["kind"] == "StreamJob"
    st = status(cluster, "wordcount-local", namespace)
    assert st["phase"] == "Running" and st["readyReplicas"] == 2 and st["replicas"] == 2
    assert st["observedGeneration"] == 1 and st["deployedSpecHash"]
    assert condition(st, "Ready")["status"] == "True"
    for kind in ("service", "secret"):
        name = "wordcount-local" if kind == "service" else "wordcount-local-admin-token"
        assert cluster.get(kind, name, namespace)["metadata"]["ownerReferences"][0]["name"] == "wordcount-local"

    # The app writes state through the sidecar: its write counter grows.
    if cluster.local:
        ip = items[0]["status"]["podIP"]

        def writes():
            m = re.search(r'stator_sidecar_operations_total\{op="write"\} (\d+)', http(f"http://{ip}:9601/metrics"))
            return int(m.group(1)) if m else 0
        wait_until(lambda: writes() > 10, timeout=60, what="the app to write state")

    # `kubectl get sj` shows the printer columns.
    out = cluster.kubectl("get", "sj", namespace=namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "PHASE", "PARALLELISM", "READY", "STEP", "LAST", "SAVEPOINT", "AGE"]
    assert out[1].split()[:4] == ["wordcount-local", "Running", "2", "2"]

    # Nothing changes, nothing is written: the job's resourceVersion stays put.
    rv = cluster.get("sj", "wordcount-local", namespace)["metadata"]["resourceVersion"]
    pod_rvs = {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in pods(cluster, namespace)}
    svc_rv = cluster.get("service", "wordcount-local", namespace)["metadata"]["resourceVersion"]
    time.sleep(8)
    assert cluster.get("sj", "wordcount-local", namespace)["metadata"]["resourceVersion"] == rv
    assert cluster.get("service", "wordcount-local", namespace)["metadata"]["resourceVersion"] == svc_rv
    assert sorted(pod_rvs) == sorted(p["metadata"]["name"] for p in pods(cluster, namespace))


def test_deleted_pod_comes_back_with_its_state(cluster, namespace, operator):
    cluster.apply(load("wordcount-local.yaml"), namespace=namespace)
    cluster.wait("sj/wordcount-local", "condition=Ready", namespace, timeout="180s")
    first = wait_until(lambda: "resuming at record" in (log := app_log(cluster, namespace, "wordcount-local-0")) and log,
                       timeout=60, what="the app to report where it resumed")
    assert "resuming at record 0" in first, first
    old_uid = cluster.get("pod", "wordcount-local-0", namespace)["metadata"]["uid"]
    time.sleep(5)  # let the app count a few thousand records
    cluster.kubectl("delete", "pod", "wordcount-local-0", "--wait=true", namespace=namespace)

    def recreated():
        p = cluster.get("pod", "wordcount-local-0", namespace, check=False)
        return p and p["metadata"]["uid"] != old_uid
    wait_until(recreated, timeout=90, what="the operator to recreate the pod")
    cluster.wait("sj/wordcount-local", "condition=Ready", namespace, timeout="180s")

    def resumed():
        m = re.search(r"resuming at record (\d+)", app_log(cluster, namespace, "wordcount-local-0"))
        return m and int(m.group(1))
    position = wait_until(resumed, timeout=60, what="the new app to report where it resumed")
    assert position > 0, "the new pod resumed from the state the old one wrote, not from scratch"
    events = cluster.get("events", namespace=namespace)["items"]
    assert any(e.get("reason") == "CreatedPod" and "wordcount-local-0" in (e.get("message") or e.get("note") or "") for e in events)


def test_invalid_jobs_are_refused_by_the_schema_or_reported_in_the_status(cluster, namespace, operator):
    refused = {
        "parallelism-above-max.yaml": "parallelism must not exceed maxParallelism",
        "bad-location.yaml": "state.location must be an s3://bucket/prefix or file:///path URL",
        "bad-upgrade-mode.yaml": "Unsupported value: \"rolling\"",
    }
    for name, message in refused.items():
        r = cluster.kubectl("apply", "-f", str(EXAMPLES / "invalid" / name), namespace=namespace, check=False)
        assert r.returncode != 0, f"{name} was accepted"
        assert message in r.stderr, f"{name}: {r.stderr}"

    cluster.apply(load("invalid/duplicate-state.yaml"), namespace=namespace)

    def reported():
        st = status(cluster, "duplicate-state", namespace)
        c = condition(st, "Degraded")
        return st.get("phase") == "Failed" and c.get("status") == "True" and c.get("reason") == "InvalidSpec" and c
    c = wait_until(reported, timeout=60, what="the invalid spec to be reported")
    assert 'state "counts" is declared twice' in c["message"]
    assert pods(cluster, namespace) == [], "an invalid job gets no pods"
    events = cluster.get("events", namespace=namespace)["items"]
    assert any(e.get("reason") == "InvalidSpec" for e in events)

    # maxParallelism is immutable once set.
    cluster.apply(load("wordcount-local.yaml"), namespace=namespace)
    r = cluster.kubectl("patch", "sj", "wordcount-local", "--type=merge", "-p", '{"spec":{"maxParallelism":256}}',
                        namespace=namespace, check=False)
    assert r.returncode != 0 and "maxParallelism is immutable" in r.stderr, r.stderr


def test_names_that_cannot_run_are_refused_by_the_api_server_naming_the_field(cluster, namespace):
    """Job names that cannot name the Service or every replica's pod, and state names the sidecar would
    refuse, never get as far as the operator: the CRD's rules refuse them with a message naming the field."""
    def refused(job: dict) -> str:
        r = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(job), namespace=namespace, check=False)
        assert r.returncode != 0, f"{job['metadata']['name']} was accepted"
        return r.stderr

    base = load("wordcount-local.yaml")
    for name in ("1wordcount", "word.count"):
        job = dict(base, metadata={"name": name})
        assert "metadata.name must be a DNS-1035 label" in refused(job)
    long = "a" * 60  # <name>-127 would be 64 characters
    assert "metadata.name is too long" in refused(dict(base, metadata={"name": long}))
    ok = dict(base, metadata={"name": long}, spec=dict(base["spec"], maxParallelism=10))
    cluster.apply(ok, namespace=namespace)  # <name>-9 fits: accepted

    def with_state(name: str) -> dict:
        spec = dict(base["spec"], state=dict(base["spec"]["state"], states=[{"name": name, "kind": "value"}]))
        return dict(base, metadata={"name": "states"}, spec=spec)
    err = refused(with_state("tab\there"))
    assert "spec.state.states[0].name" in err and "should match" in err, err
    err = refused(with_state("€" * 67))  # 67 characters, 201 bytes
    assert "spec.state.states[0].name" in err and "state names are at most 200 bytes of UTF-8" in err, err
    err = refused(with_state("a:b"))
    assert "spec.state.states[0].name" in err, err


def test_kubectl_scale_changes_parallelism(cluster, namespace, operator):
    cluster.apply(load("wordcount-local.yaml"), namespace=namespace)
    cluster.wait("sj/wordcount-local", "condition=Ready", namespace, timeout="180s")
    cluster.kubectl("scale", "sj/wordcount-local", "--replicas=3", namespace=namespace)
    assert cluster.get("sj", "wordcount-local", namespace)["spec"]["parallelism"] == 3

    def scaled():
        st = status(cluster, "wordcount-local", namespace)
        return st.get("readyReplicas") == 3 and st.get("replicas") == 3 and st.get("phase") == "Running"
    wait_until(scaled, timeout=180, what="3 ready replicas")
    names = sorted(p["metadata"]["name"] for p in pods(cluster, namespace) if not p["metadata"].get("deletionTimestamp"))
    assert names == ["wordcount-local-0", "wordcount-local-1", "wordcount-local-2"]
    scale = json.loads(cluster.kubectl("get", "--raw", f"/apis/stator.dev/v1alpha1/namespaces/{namespace}/streamjobs/wordcount-local/scale").stdout)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3


def test_two_operator_replicas_elect_one_leader(cluster, namespace, processes):
    args = ["--leader-election", "--lease-namespace", namespace, "--namespace", namespace, "--lease-seconds", "6"]
    chart = {"release_namespace": namespace, "values": {"watchNamespaces": [namespace]}}
    a = start_operator(cluster, processes, *args, "--identity", "op-a", name="operator-a", **chart)
    b = start_operator(cluster, processes, *args, "--identity", "op-b", name="operator-b", **chart)

    def holder():
        lease = cluster.get("lease", "stator-operator-leader", namespace, check=False)
        return lease and lease["spec"].get("holderIdentity")
    first = wait_until(holder, timeout=30, what="a leader")
    assert first in ("op-a", "op-b")
    leaders = [p for p in (a, b) if re.search(r"^stator_operator_leader 1$", http(f"{p.http}/metrics"), re.M)]
    assert len(leaders) == 1, "exactly one replica leads"
    cluster.apply(load("wordcount-local.yaml"), namespace=namespace)
    cluster.wait("sj/wordcount-local", "condition=Ready", namespace, timeout="180s")

    leaders[0].stop()
    wait_until(lambda: holder() not in (None, first), timeout=45, what="the standby to take over")
    cluster.kubectl("scale", "sj/wordcount-local", "--replicas=1", namespace=namespace)
    wait_until(lambda: status(cluster, "wordcount-local", namespace).get("replicas") == 1, timeout=120,
               what="the new leader to reconcile")


def test_helm_install_with_default_values_runs_a_job_in_another_namespace(cluster, namespace):
    """`helm install` with the chart's defaults: the operator runs as a pod (in-cluster credentials, its
    ServiceAccount's token), watches every namespace, and runs a job in a namespace it was not told of."""
    chart, release = str(REPO / "charts" / "stator"), "stator-defaults"
    jobs = cluster.create_namespace("jobs")
    try:
        cluster.helm_install(chart, release, namespace)
        cluster.wait(f"deploy/{release}", "condition=Available", namespace, timeout="120s")
        cluster.apply(load("wordcount-local.yaml"), namespace=jobs)
        cluster.wait("sj/wordcount-local", "condition=Ready", jobs, timeout="180s")
        pod = cluster.get("pods", namespace=namespace)["items"][0]
        assert pod["spec"]["serviceAccountName"] == release
        log = cluster.kubectl("logs", "deploy/" + release, namespace=namespace).stdout
        assert "all namespaces" in log, log[-2000:]
    finally:
        cluster.delete_namespace(jobs)
        cluster.helm_uninstall(chart, release, namespace)


def test_helm_install_for_chosen_namespaces_runs_a_job(cluster, namespace):
    chart, values = str(REPO / "charts" / "stator"), {"watchNamespaces": [namespace], "logFormat": "text"}
    try:
        cluster.helm_install(chart, "stator", namespace, values=values)
        cluster.wait("deploy/stator", "condition=Available", namespace, timeout="120s")
        cluster.apply(load("wordcount-local.yaml"), namespace=namespace)
        cluster.wait("sj/wordcount-local", "condition=Ready", namespace, timeout="180s")
    finally:
        # Uninstalled before the namespace goes: deleting the namespace deletes the operator's Role
        # with the running pod, whose next lease renewal would be refused during a later test.
        cluster.kubectl("delete", "sj", "--all", "--wait=true", "--timeout=120s", namespace=namespace, check=False)
        cluster.helm_uninstall(chart, "stator", namespace, values)
