"""The word-count job on a cluster, with its state in S3: deploy, change the image, rescale, suspend,
and read the job's exact state back from a savepoint with `stator-inspect dump`: its word counts,
the idle reports its event-time timers wrote (each exactly once) and the timers still pending.
Shared by the end-to-end tests and the local demo (scripts/demo)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import yaml
from harness import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STATOR_BIN_DIR", Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/stator-target")) / "release"))


def start_operator(cluster, processes, *extra: str, name: str = "operator", release: str = "stator-e2e",
                   release_namespace: str = "stator-e2e", values: dict | None = None, env: dict | None = None):
    """The operator binary as a local process, authenticated as the chart's ServiceAccount with exactly the
    RBAC the chart renders for `values` in `release_namespace` (never with the admin's credentials)."""
    kubeconfig = cluster.operator_kubeconfig(release, release_namespace, values)
    port = free_port()
    p = processes.start(
        [str(BIN / "stator-operator"), "run", "--http-addr", f"127.0.0.1:{port}", "--log-format", "text", *extra],
        name=name, env={**os.environ, "KUBECONFIG": kubeconfig, "POD_NAMESPACE": release_namespace,
                        **(env or {}), "STATOR_LOG": "info"},
        ready_log="stator-operator started")
    p.http = f"http://127.0.0.1:{port}"
    return p


def expected(records: int) -> dict:
    """What the app must produce from `records` records: `counts` and `idle` (per word, its idle
    reports `deadline:count`, one per timer that fired)."""
    out = subprocess.run([str(BIN / "stator-wordcount"), "expect", "--records", str(records)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def expected_counts(records: int) -> dict[str, int]:
    return expected(records)["counts"]


class Wordcount:
    """One word-count StreamJob in `namespace`, checkpointing to the `s3` bucket."""

    def __init__(self, cluster, s3, namespace: str, name: str = "wordcount", records: int = 20_000,
                 parallelism: int = 2, **spec_overrides):
        self.cluster, self.s3, self.ns, self.name, self.records = cluster, s3, namespace, name, records
        cluster.kubectl("create", "secret", "generic", "stator-s3",
                        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
                        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}", namespace=namespace, check=False)
        job = yaml.safe_load((REPO / "examples" / "wordcount.yaml").read_text())
        job["metadata"]["name"] = name
        spec = job["spec"]
        spec["parallelism"] = parallelism
        spec["app"]["args"] = ["run", "--records", str(records), "--pause-ms", "20"]
        spec["state"]["location"] = f"s3://{s3.bucket}/jobs"
        spec["state"]["s3"] = {"endpoint": s3.endpoint, "pathStyle": True, "region": s3.region}
        spec["state"]["checkpointIntervalSeconds"] = 2
        spec["rollback"]["readinessTimeoutSeconds"] = 25
        spec["savepoint"] = {"historyCount": 10, "timeoutSeconds": 60}
        for k, v in spec_overrides.items():
            spec[k] = v
        self.job = job
        self.nonce = 0

    # --- reading -------------------------------------------------------------------------------

    def get(self) -> dict:
        return self.cluster.get("sj", self.name, self.ns)

    def status(self) -> dict:
        return self.get().get("status") or {}

    def pods(self) -> list[dict]:
        return [p for p in self.cluster.get("pods", namespace=self.ns)["items"]
                if p["metadata"].get("labels", {}).get("stator.dev/job") == self.name]

    def app_log(self, pod: str) -> str:
        return self.cluster.kubectl("logs", pod, "-c", "app", namespace=self.ns, check=False).stdout

    def resume_positions(self, timeout: float = 60) -> list[int]:
        """The record each replica's app resumed at, in pod order. A Ready pod's app may not have
        logged it yet (Ready needs the app started and the sidecar serving, not a line printed),
        so this waits for every line."""
        def logged():
            positions = [resumed_at(self.app_log(p["metadata"]["name"]))
                         for p in sorted(self.pods(), key=lambda p: p["metadata"]["name"])]
            return positions if positions and None not in positions else None
        return wait_until(logged, timeout=timeout, what="every app to log where it resumed")

    def events(self, reason: str) -> list[dict]:
        return [e for e in self.cluster.get("events", namespace=self.ns)["items"] if e.get("reason") == reason]

    # --- acting --------------------------------------------------------------------------------

    def apply(self) -> None:
        self.cluster.apply(self.job, namespace=self.ns)

    def patch(self, spec: dict) -> None:
        self.cluster.kubectl("patch", "sj", self.name, "--type=merge", "-p", json.dumps({"spec": spec}), namespace=self.ns)

    def wait_running(self, replicas: int | None = None, timeout: float = 180, previous_hash: str | None = None) -> dict:
        def running():
            st = self.status()
            ok = (st.get("phase") == "Running" and not st.get("operation")
                  and st.get("readyReplicas") == (replicas or self.get()["spec"]["parallelism"])
                  and (previous_hash is None or st.get("deployedSpecHash") != previous_hash))
            return st if ok else None
        return wait_until(running, timeout=timeout, what=f"{self.name} to run")

    def wait_app_done(self, timeout: float = 180) -> None:
        def done():
            return all(f"processed records up to {self.records}" in self.app_log(p["metadata"]["name"])
                       for p in self.pods() if not p["metadata"].get("deletionTimestamp")) and self.pods()
        wait_until(done, timeout=timeout, what=f"every replica to process {self.records} records")

    def savepoint(self, timeout: float = 120) -> str:
        """Takes a savepoint through the trigger nonce; returns its location."""
        self.nonce += 1
        nonce = int(time.time()) * 100 + self.nonce
        self.patch({"savepoint": {"triggerNonce": nonce, "historyCount": 10, "timeoutSeconds": 60}})

        def taken():
            st = self.status()
            sp = st.get("lastSavepoint") or {}
            return st.get("lastTriggerNonce") == nonce and not st.get("operation") and sp.get("reason") == "trigger" and sp["location"]
        return wait_until(taken, timeout=timeout, what="the triggered savepoint")

    def _dump(self, location: str, *what: str) -> list[dict]:
        env = {**os.environ, **self.s3.env}
        out = subprocess.run([str(BIN / "stator-inspect"), "--s3-endpoint", self.s3.endpoint, "--s3-path-style",
                              "dump", *what, location], check=True, capture_output=True, text=True, env=env).stdout
        return [json.loads(line) for line in out.splitlines()]

    def counts(self, location: str) -> dict[str, int]:
        """The job's counts in the savepoint at `location`, read offline."""
        counts: dict[str, int] = {}
        for entry in self._dump(location, "--state", "counts"):
            if entry["key"] in counts:
                raise AssertionError(f"word {entry['key']} is held by two replicas")
            counts[entry["key"]] = int(entry["value"])
        return counts

    def job_root(self) -> str:
        """This incarnation's prefix in the bucket: the job's UID is part of every stored path."""
        return f"jobs/{self.ns}/{self.name}/{self.status()['jobId']}"

    def idle_reports(self, location: str) -> dict[str, list[str]]:
        """Per word, the idle reports its fired timers wrote, from the savepoint at `location`."""
        reports: dict[str, list[str]] = {}
        for entry in self._dump(location, "--state", "idle"):
            if entry["key"] in reports:
                raise AssertionError(f"word {entry['key']} has idle reports in two replicas")
            reports[entry["key"]] = entry["values"]
        return reports

    def timers(self, location: str) -> tuple[list[int | None], list[dict]]:
        """Each replica's watermark and every pending timer in the savepoint at `location`."""
        lines = self._dump(location, "--timers")
        return [ln["watermark"] for ln in lines if "watermark" in ln], [ln for ln in lines if "timer" in ln]

    def differences(self, location: str) -> dict[str, object]:
        """What the savepoint at `location` holds that the input does not produce, once the app has
        finished its input: word counts, idle reports (a timer lost or fired twice shows here) and
        pending timers (the end of input fires them all). Empty when the state is exact."""
        want = expected(self.records)
        got = self.counts(location)
        problems: dict[str, object] = {}
        counts = {w: (got.get(w), want["counts"].get(w)) for w in set(got) | set(want["counts"])
                  if got.get(w) != want["counts"].get(w)}
        if counts:
            problems["counts (got, want)"] = counts
        reports = self.idle_reports(location)
        idle = {w: (reports.get(w), want["idle"].get(w)) for w in set(reports) | set(want["idle"])
                if reports.get(w) != want["idle"].get(w)}
        if idle:
            problems["idle reports (got, want)"] = idle
        watermarks, pending = self.timers(location)
        if pending:
            problems["timers still pending"] = pending
        if not watermarks or any(w != 2**64 - 1 for w in watermarks):
            problems["watermarks (the end of input is the maximum)"] = watermarks
        return problems

    def savepoint_dirs(self) -> set[str]:
        keys = self.s3.keys(f"{self.job_root()}/savepoints/")
        return {k.split("/savepoints/")[1].split("/")[0] for k in keys}


def upgrade_killing_the_operator_at(cluster, processes, wc: Wordcount, op, step: str) -> dict:
    """Starts an upgrade of the running `wc` (a new image), kills the operator `op` with SIGKILL
    once the operation is at `step`, starts another and returns the status once the upgrade is
    done, checking that exactly one savepoint was taken for it."""
    before = wc.status()["deployedSpecHash"]
    wc.patch({"app": {"image": "ghcr.io/stator/stator-wordcount:0.2.0", "args": wc.job["spec"]["app"]["args"]}})
    cluster.watch_until(f"/apis/stator.dev/v1alpha1/namespaces/{wc.ns}/streamjobs", wc.name,
                        lambda o: ((o.get("status") or {}).get("operation") or {}).get("step") == step, timeout=60)
    op.proc.send_signal(signal.SIGKILL)
    op.proc.wait()
    start_operator(cluster, processes, name="operator-2")
    st = wc.wait_running(replicas=2, previous_hash=before)
    upgrade = [s for s in st["savepoints"] if s["reason"] == "upgrade"]
    assert len(upgrade) == 1, st["savepoints"]
    assert wc.savepoint_dirs() == {upgrade[0]["location"].rsplit("/", 1)[1]}, "exactly one savepoint was taken"
    return st


def resumed_at(log: str) -> int | None:
    m = re.findall(r"resuming at record (\d+)", log)
    return int(m[-1]) if m else None
