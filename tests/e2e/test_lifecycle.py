"""Savepoint-driven operations end to end, with state in S3: upgrades and rescales keep exactly the
job's state, a broken image is rolled back, suspend and resume keep state, a failed replica recovers
from its checkpoint, and an operator killed at any step of an upgrade resumes it correctly."""
import json
import re
import time
import urllib.request
from datetime import datetime

import pytest
from harness import wait_until
from scenario import Wordcount, resumed_at, start_operator, upgrade_killing_the_operator_at


@pytest.fixture
def operator(cluster, processes):
    return start_operator(cluster, processes)


def assert_exact(wc: Wordcount):
    """Counts, and the idle reports of the app's timers (none lost or fired twice), are exact."""
    wc.wait_app_done()
    problems = wc.differences(wc.savepoint())
    assert not problems, problems


def test_upgrade_and_rescales_keep_exactly_the_state(cluster, namespace, s3, operator):
    wc = Wordcount(cluster, s3, namespace, records=30_000)
    wc.apply()
    st = wc.wait_running(replicas=2)
    time.sleep(2)
    wc.patch({"app": {"image": "ghcr.io/stator/stator-wordcount:0.2.0", "args": wc.job["spec"]["app"]["args"]}})
    st = wc.wait_running(replicas=2, previous_hash=st["deployedSpecHash"])
    upgrade = [s for s in st["savepoints"] if s["reason"] == "upgrade"]
    assert len(upgrade) == 1 and st["restoredFrom"] == upgrade[0]["location"]
    assert all(x > 0 for x in wc.resume_positions()), "the new version resumed"
    assert wc.events("UpgradeComplete")
    # The savepoint was taken in two phases and referenced the old version's checkpoint files;
    # once the upgrade is done the operator copies them into it, server-side, and drops the holds.
    st = wait_until(lambda: (s := wc.status()) and all(x.get("selfContained") for x in s["savepoints"]) and s,
                    timeout=60, what="the upgrade savepoint to be made self-contained")
    assert wc.events("SavepointSelfContained")
    assert not [k for k in s3.keys() if "/holds/" in k], "no hold is left"
    sp = upgrade[0]["location"].split(f"s3://{s3.bucket}/", 1)[1]
    manifests = [k for k in s3.keys(sp + "/") if k.endswith("/manifest.json")]
    assert len(manifests) == 2
    for k in manifests:
        m = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=k)["Body"].read())
        assert "hold" not in m and not [f for f in m["files"] if "source" in f], m

    cluster.kubectl("scale", f"sj/{wc.name}", "--replicas=3", namespace=namespace)
    st = wc.wait_running(replicas=3, previous_hash=st["deployedSpecHash"])
    assert st["lastSavepoint"]["reason"] == "rescale" and st["lastSavepoint"]["parallelism"] == 2
    cluster.kubectl("scale", f"sj/{wc.name}", "--replicas=2", namespace=namespace)
    st = wc.wait_running(replicas=2, previous_hash=st["deployedSpecHash"])
    assert st["lastSavepoint"]["parallelism"] == 3
    assert_exact(wc)


def test_an_image_that_never_becomes_ready_is_rolled_back(cluster, namespace, s3, operator):
    wc = Wordcount(cluster, s3, namespace)
    wc.apply()
    st = wc.wait_running(replicas=2)
    good = st["deployedSpecHash"]
    wc.patch({"app": {"image": "ghcr.io/stator/no-such-image:1", "args": wc.job["spec"]["app"]["args"]}})

    def rolled_back():
        s = wc.status()
        return s.get("phase") == "RolledBack" and not s.get("operation") and s.get("readyReplicas") == 2 and s
    st = wait_until(rolled_back, timeout=180, what="the rollback")
    assert st["deployedSpecHash"] == good, "back on the last stable spec"
    assert st["failedSpecHash"] and st["failedSpecHash"] != good
    assert any(c["type"] == "Degraded" and c["status"] == "True" and c["reason"] == "RollingBack" for c in st["conditions"])
    assert wc.events("RolledBack")
    ops = st["operations"]
    time.sleep(8)
    st = wc.status()
    assert st["operations"] == ops and st["phase"] == "RolledBack", "no upgrade loop"
    assert all(p["spec"]["containers"][0]["image"] == "ghcr.io/stator/stator-wordcount:0.1.0" for p in wc.pods())
    assert_exact(wc)


def test_suspend_then_resume_keeps_the_state(cluster, namespace, s3, operator):
    wc = Wordcount(cluster, s3, namespace)
    wc.apply()
    wc.wait_running(replicas=2)
    time.sleep(2)
    wc.patch({"suspend": True})

    def suspended():
        s = wc.status()
        return s.get("phase") == "Suspended" and not wc.pods() and s
    st = wait_until(suspended, timeout=120, what="the job to suspend")
    assert st["lastSavepoint"]["reason"] == "suspend"
    suspend_point = st["lastSavepoint"]["location"]
    wc.patch({"suspend": False})
    st = wc.wait_running(replicas=2)
    assert st["restoredFrom"] == suspend_point
    assert all(x > 0 for x in wc.resume_positions())
    assert_exact(wc)


def test_the_status_follows_each_replicas_latest_checkpoint_at_rest(cluster, namespace, s3, operator):
    """At rest, `replicaCheckpoints` keeps up with the replicas' checkpoints (asked every
    checkpoint interval, at least 10 s apart), and each entry names a checkpoint in storage."""
    wc = Wordcount(cluster, s3, namespace, records=200_000)  # writes for the whole test
    wc.apply()
    wc.wait_running(replicas=2)

    def both(st: dict) -> dict[int, dict] | None:
        by_replica = {c["replica"]: c for c in st.get("replicaCheckpoints", [])}
        return by_replica if sorted(by_replica) == [0, 1] else None
    first = wait_until(lambda: both(wc.status()), timeout=30, what="both replicas' checkpoints in the status")
    assert not wc.status().get("operation"), "at rest"

    def advanced():
        st = wc.status()
        now = both(st)
        return (st, now) if now and all(now[i]["id"] > first[i]["id"] for i in (0, 1)) else None
    st, now = wait_until(advanced, timeout=45, what="the status to show newer checkpoints of a job at rest")
    assert not st.get("operation") and st["phase"] == "Running", "nothing but the checkpoints changed"
    lineage = st["deployment"]["stateLocation"].removeprefix(f"s3://{s3.bucket}/")
    stored = set(s3.keys(f"{lineage}/checkpoints/"))
    for i, c in now.items():
        assert f"{lineage}/checkpoints/replica-{i}-of-2/chk-{c['id']:020}/manifest.json" in stored, c
        age = time.time() - parse_time(c["time"])
        assert -5 < age < 30, f"replica {i}'s checkpoint is {age:.0f} s old: {c}"
    newest = max(c["time"] for c in now.values())
    assert st["lastCheckpoint"] in [{"id": c["id"], "time": c["time"]} for c in now.values() if c["time"] == newest]


def parse_time(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def test_a_failed_replica_recovers_from_its_checkpoint(cluster, namespace, s3, operator):
    wc = Wordcount(cluster, s3, namespace)
    wc.apply()
    wc.wait_running(replicas=2)
    time.sleep(5)  # several checkpoints (every 2 s)
    old = next(p for p in wc.pods() if p["metadata"]["name"] == f"{wc.name}-1")
    cluster.kubectl("delete", "pod", f"{wc.name}-1", "--grace-period=0", "--wait=true", namespace=namespace)
    wait_until(lambda: any(p["metadata"]["name"] == f"{wc.name}-1" and p["metadata"]["uid"] != old["metadata"]["uid"]
                           for p in wc.pods()), timeout=60, what="the replica to be recreated")
    wc.wait_running(replicas=2)
    position = wait_until(lambda: resumed_at(wc.app_log(f"{wc.name}-1")), timeout=60, what="the app to resume")
    assert position > 0, "restored from its checkpoint, not started empty"
    assert_exact(wc)


# Starting lasts one status write (it chains into WaitingReady within the reconcile): the kill lands
# just after it; a kill between that write and its effects is covered by the planner's test that
# crashes after every persisted plan (an_operator_killed_after_any_step_is_written_resumes_...).
@pytest.mark.parametrize("step", ["Savepointing", "Stopping", "Starting", "WaitingReady"])
def test_operator_killed_at_a_step_of_an_upgrade_resumes_it(cluster, namespace, s3, processes, step):
    op = start_operator(cluster, processes, name="operator-1")
    wc = Wordcount(cluster, s3, namespace)
    wc.apply()
    wc.wait_running(replicas=2)
    upgrade_killing_the_operator_at(cluster, processes, wc, op, step)
    names = sorted(p["metadata"]["name"] for p in wc.pods())
    assert names == [f"{wc.name}-0", f"{wc.name}-1"], "no duplicate pods"
    assert_exact(wc)


def test_a_savepoint_that_times_out_leaves_the_old_version_running(cluster, namespace, s3, operator):
    wc = Wordcount(cluster, s3, namespace, records=200_000)
    wc.job["spec"]["savepoint"] = {"timeoutSeconds": 4}
    wc.apply()
    st = wc.wait_running(replicas=2)
    good = st["deployedSpecHash"]
    s3.stop()  # storage unreachable: the savepoint cannot complete
    wc.patch({"app": {"image": "ghcr.io/stator/stator-wordcount:0.2.0", "args": wc.job["spec"]["app"]["args"]}})

    def abandoned():
        s = wc.status()
        degraded = next((c for c in s.get("conditions", []) if c["type"] == "Degraded"), {})
        return not s.get("operation") and degraded.get("reason") == "SavepointFailed" and degraded.get("status") == "True" and s
    st = wait_until(abandoned, timeout=120, what="the upgrade to be abandoned")
    assert st["deployedSpecHash"] == good
    assert wc.events("SavepointFailed")
    # The old version keeps running and keeps writing: unfenced, ready, its app still counting.
    st = wait_until(lambda: (s := wc.status()).get("readyReplicas") == 2 and s.get("phase") == "Running" and s,
                    timeout=60, what="the old version to be ready again")
    assert all(p["spec"]["containers"][0]["image"].endswith(":0.1.0") for p in wc.pods())
    if cluster.local:
        ip = wc.pods()[0]["status"]["podIP"]

        def writes():
            m = re.search(r'stator_sidecar_operations_total\{op="write"\} (\d+)',
                          urllib.request.urlopen(f"http://{ip}:9601/metrics", timeout=5).read().decode())
            return int(m.group(1)) if m else 0
        first = writes()
        wait_until(lambda: writes() > first + 5, timeout=30, what="the old version to accept writes again")
    time.sleep(3)
    assert st["failedSpecHash"] != good, "the abandoned spec is not retried in a loop"
    assert wc.status()["operations"] == st["operations"]


def test_periodic_savepoints_appear_and_retention_disposes_of_the_right_ones(cluster, namespace, s3, operator):
    wc = Wordcount(cluster, s3, namespace, records=200_000)
    wc.apply()
    st = wc.wait_running(replicas=2)
    wc.patch({"app": {"image": "ghcr.io/stator/stator-wordcount:0.2.0", "args": wc.job["spec"]["app"]["args"]}})
    st = wc.wait_running(replicas=2, previous_hash=st["deployedSpecHash"])
    upgrade = st["restoredFrom"]
    wc.patch({"savepoint": {"periodicIntervalSeconds": 2, "historyCount": 2, "timeoutSeconds": 60}})

    def rotated():
        s = wc.status()
        periodic = [p for p in s.get("savepoints", []) if p["reason"] == "periodic"]
        n = int(periodic[-1]["location"].rsplit("-", 1)[1]) if periodic else 0
        # Events of one reason are folded into one Event with a count, so one suffices.
        return wc.events("SavepointDisposed") and n >= 6 and s
    st = wait_until(rotated, timeout=120, what="periodic savepoints to rotate")
    kept = [p["location"] for p in st["savepoints"]]
    assert upgrade in kept, "the savepoint the running version restored from is never dropped"
    assert len([p for p in st["savepoints"] if p["reason"] == "periodic"]) <= 2
    stored = wc.savepoint_dirs()
    kept_dirs = {k.rsplit("/", 1)[1] for k in kept}
    # Everything in the history is in storage; what was disposed of is gone (one may be in flight).
    assert kept_dirs <= stored, (kept_dirs, stored)
    assert len(stored - kept_dirs) <= 1, (stored, kept_dirs)


def test_deleting_a_job_removes_its_stored_state_only_when_asked(cluster, namespace, s3, operator):
    kept = Wordcount(cluster, s3, namespace, name="kept")
    gone = Wordcount(cluster, s3, namespace, name="gone")
    gone.job["spec"]["state"]["onDelete"] = "Delete"
    for wc in (kept, gone):
        wc.apply()
    for wc in (kept, gone):
        wc.wait_running(replicas=2)
        wc.savepoint()
    assert s3.keys(f"jobs/{namespace}/gone/") and s3.keys(f"jobs/{namespace}/kept/")
    for wc in (kept, gone):
        cluster.kubectl("delete", "sj", wc.name, "--wait=true", "--timeout=120s", namespace=namespace)
    assert s3.keys(f"jobs/{namespace}/gone/") == [], "onDelete: Delete removes checkpoints and savepoints"
    assert s3.keys(f"jobs/{namespace}/kept/"), "the default, Retain, keeps them"


def test_deletion_finishes_without_the_credentials_secret_and_deleted_state_stays_deleted(cluster, namespace, s3, processes):
    # The operator has credentials of its own (as with a workload identity), the job's Secret is
    # gone first (as while a namespace is deleted): the deletion still finishes and deletes.
    start_operator(cluster, processes, env=s3.env)
    gone = Wordcount(cluster, s3, namespace, name="gone")
    gone.job["spec"]["state"]["onDelete"] = "Delete"
    gone.apply()
    gone.wait_running(replicas=2)
    root = gone.job_root()
    wait_until(lambda: s3.keys(f"{root}/"), timeout=30, what="a checkpoint")
    cluster.kubectl("delete", "secret", "stator-s3", namespace=namespace)
    cluster.kubectl("delete", "sj", "gone", "--wait=true", "--timeout=120s", namespace=namespace)
    assert s3.keys(f"{root}/") == [], "deleted with the operator's own credentials"
    time.sleep(4)  # two checkpoint intervals: no pod is left to write into it again
    assert s3.keys(f"{root}/") == [], "deleted state stays deleted"


def test_a_job_created_again_under_its_name_starts_empty_not_from_the_old_ones_state(cluster, namespace, s3, operator):
    wc = Wordcount(cluster, s3, namespace)
    wc.apply()
    wc.wait_running(replicas=2)
    old = wc.status()["jobId"]
    time.sleep(4)
    wc.savepoint()
    cluster.kubectl("delete", "sj", wc.name, "--wait=true", "--timeout=120s", namespace=namespace)
    assert s3.keys(f"jobs/{namespace}/{wc.name}/{old}/"), "Retain keeps the old incarnation's state"
    again = Wordcount(cluster, s3, namespace)
    again.apply()
    st = again.wait_running(replicas=2)
    assert st["jobId"] != old and not st.get("restoredFrom")
    assert again.resume_positions() == [0, 0], "a new incarnation never restores the old one's checkpoints"
