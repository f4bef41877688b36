"""The warm handover (upgradeStrategy warmHandover) end to end: the new version's pods come up under
the other pod set and fetch the state while the old version serves; the old version then takes its
savepoint and the new pods, promoted, restore only what it added (an upgrade and a rescale). Exact counts prove that nothing
acknowledged before the fence is lost and nothing is counted twice; an operator killed at any step
resumes the handover; a new version that cannot start leaves the old one serving, never fenced."""
import time

import pytest
from harness import wait_until
from scenario import Wordcount, start_operator, upgrade_killing_the_operator_at
from test_lifecycle import assert_exact

NEXT_IMAGE = "ghcr.io/stator/stator-wordcount:0.2.0"
JOBS = "/apis/stator.dev/v1alpha1/namespaces/{ns}/streamjobs"


@pytest.fixture
def operator(cluster, processes):
    return start_operator(cluster, processes)


def handover_job(cluster, s3, namespace, records=30_000) -> Wordcount:
    return Wordcount(cluster, s3, namespace, records=records, upgradeStrategy="warmHandover")


def names(wc: Wordcount, live_only: bool = False) -> list[str]:
    return sorted(p["metadata"]["name"] for p in wc.pods()
                  if not (live_only and p["metadata"].get("deletionTimestamp")))


def upgrade(wc: Wordcount) -> None:
    wc.patch({"app": {"image": NEXT_IMAGE, "args": wc.job["spec"]["app"]["args"]}})


def step_of(obj: dict) -> str | None:
    return ((obj.get("status") or {}).get("operation") or {}).get("step")


def sidecar_log(wc: Wordcount, pod: str) -> str:
    return wc.cluster.kubectl("logs", pod, "-c", "stator-sidecar", namespace=wc.ns, check=False).stdout


def test_a_warm_handover_brings_the_new_pods_up_beside_the_old_and_keeps_exactly_the_state(
        cluster, namespace, s3, operator):
    wc = handover_job(cluster, s3, namespace)
    wc.apply()
    st = wc.wait_running(replicas=2)
    old = {p["metadata"]["name"]: p["metadata"]["uid"] for p in wc.pods()}
    assert sorted(old) == [f"{wc.name}-0", f"{wc.name}-1"]
    time.sleep(2)
    upgrade(wc)
    warming = cluster.watch_until(JOBS.format(ns=namespace), wc.name, lambda o: step_of(o) == "Warming", timeout=60)
    assert warming["status"]["operation"]["warmFrom"].endswith("/l1")
    # Both sets side by side, the old one still serving (Ready, not fenced: nothing paused yet).
    both = wait_until(lambda: n if len(n := names(wc)) == 4 else None, timeout=60, what="the new pods beside the old")
    assert both == sorted([*old, f"{wc.name}-green-0", f"{wc.name}-green-1"])
    st = wc.wait_running(replicas=2, previous_hash=st["deployedSpecHash"])
    assert st["deployment"]["slot"] == "green"
    upgrade_sp = [s for s in st["savepoints"] if s["reason"] == "upgrade"]
    assert len(upgrade_sp) == 1 and st["restoredFrom"] == upgrade_sp[0]["location"]
    wait_until(lambda: names(wc) == [f"{wc.name}-green-0", f"{wc.name}-green-1"], timeout=60,
               what="the old pods to go")
    for i in range(2):
        log = sidecar_log(wc, f"{wc.name}-green-{i}")
        assert "warm: waiting to be promoted" in log and "promoted by the operator" in log, log[-3000:]
    assert all(x > 0 for x in wc.resume_positions()), "the new version resumed"
    assert wc.events("UpgradeComplete")
    # kubectl shows which set runs.
    shown = cluster.kubectl("get", "pods", "-L", "stator.dev/slot", namespace=namespace).stdout
    assert f"{wc.name}-green-0" in shown and "green" in shown.split(f"{wc.name}-green-0", 1)[1].splitlines()[0]
    # A rescale is handed over the same way: three new pods fetch the two old replicas' key groups.
    cluster.kubectl("scale", f"sj/{wc.name}", "--replicas=3", namespace=namespace)
    st = wc.wait_running(replicas=3, previous_hash=st["deployedSpecHash"])
    assert st["deployment"]["slot"] == "blue"
    assert st["lastSavepoint"]["reason"] == "rescale" and st["lastSavepoint"]["parallelism"] == 2
    wait_until(lambda: names(wc) == [f"{wc.name}-blue-{i}" for i in range(3)], timeout=60,
               what="only the rescaled set to be left")
    assert "promoted by the operator" in sidecar_log(wc, f"{wc.name}-blue-2")
    assert_exact(wc)


# Promoting lasts one status write before it chains into WaitingReady within the reconcile; the
# planner's test kills the operator after every persisted plan of a handover.
@pytest.mark.parametrize("step", ["Warming", "Savepointing", "WaitingReady"])
def test_an_operator_killed_during_a_warm_handover_resumes_it(cluster, namespace, s3, processes, step):
    op = start_operator(cluster, processes, name="operator-1")
    wc = handover_job(cluster, s3, namespace)
    wc.apply()
    wc.wait_running(replicas=2)
    upgrade_killing_the_operator_at(cluster, processes, wc, op, step)
    wait_until(lambda: names(wc) == [f"{wc.name}-green-0", f"{wc.name}-green-1"], timeout=60,
               what="only the new set to be left")
    assert_exact(wc)


def test_a_new_version_that_cannot_start_leaves_the_old_one_serving_without_a_pause(cluster, namespace, s3, operator):
    wc = handover_job(cluster, s3, namespace)
    wc.apply()
    st = wc.wait_running(replicas=2)
    good = st["deployedSpecHash"]
    old = {p["metadata"]["name"]: p["metadata"]["uid"] for p in wc.pods()}
    wc.patch({"app": {"image": "ghcr.io/stator/no-such-image:1", "args": wc.job["spec"]["app"]["args"]}})

    def abandoned():
        s = wc.status()
        degraded = [c for c in s.get("conditions", []) if c["type"] == "Degraded" and c["status"] == "True"]
        return not s.get("operation") and degraded and degraded[0]["reason"] == "HandoverFailed" and s
    st = wait_until(abandoned, timeout=120, what="the handover to be abandoned")
    assert st["deployedSpecHash"] == good and st["failedSpecHash"] != good
    assert "ErrImagePull" in wc.events("HandoverFailed")[0]["message"]
    assert not [s for s in st.get("savepoints", []) if s["reason"] == "upgrade"], "no savepoint, no fence"
    wait_until(lambda: names(wc) == sorted(old), timeout=60, what="the new pods to be removed")
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in wc.pods()} == old, "the old pods never restarted"
    ops = st["operations"]
    time.sleep(6)
    st = wc.status()
    assert st["operations"] == ops and st.get("phase") == "Running", "not retried until the spec changes"
    assert_exact(wc)
