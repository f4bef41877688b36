"""Upgrade benchmark: how long a savepoint upgrade pauses writes and takes in all, for jobs holding
about 10 MB, 100 MB (and, with --sizes, 1 GB) of state, with the replicas' data on emptyDir volumes
(every restore downloads the state), on emptyDir with the warm handover (the new pods fetch the state
from the old version's checkpoints before the fence, then only the delta) and on
PersistentVolumeClaims (local recovery reuses the files already on the volume).

The app keeps writing during the run: after its fill it overwrites 0.1% of its keys per second, and
the upgrade starts 9 s after a checkpoint, so about 1% of the keys changed since the last checkpoint.
The savepoint is taken in two phases (a checkpoint while the old version writes, then the fence and
the delta), so the pause depends on the delta, not on the state.

Prints one table: the write pause (the operator's stator_operator_upgrade_pause_seconds: from the
first replica's fence to every new replica ready), the pause by phase (the fenced part of the
savepoint, stopping the old pods or promoting the warm ones, starting the new ones and waiting for
them to be ready; a handover's warming comes before the fence and is not paused), the
total upgrade time (patch to every new replica ready), the bytes uploaded while fenced and downloaded
by the restores, and as peers, in the same run against the same S3 server: a plain transfer (upload
then download, 4-way parallel) of the delta's bytes, and a plain parallel download of the whole
state.

    .venv/bin/python tests/e2e/bench_upgrade.py [--sizes 10,100,1000]
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from harness import Cluster, Processes, S3, wait_until  # noqa: E402
from scenario import Wordcount, start_operator  # noqa: E402

CHECKPOINT_INTERVAL = 10
STEPS = ("warming", "savepointing", "promoting", "stopping", "starting", "waiting_ready")
# (volume, upgrade strategy) of each row; a warm handover runs on emptyDir only.
VARIANTS = (("emptyDir", "recreate"), ("emptyDir", "warmHandover"), ("pvc", "recreate"))


def metrics(url: str) -> str:
    return urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}(?:{{([^}}]*)}})? ([0-9.e+-]+)$"
    return sum(float(v) for ls, v in re.findall(pattern, text, re.M) if all(l in (ls or "") for l in labels.split(",") if l))


def sidecar_urls(wc) -> list[str]:
    """The admin endpoints of the job's pods that are not stopping (after an upgrade: the new ones)."""
    return [f"http://{p['status']['podIP']}:9601" for p in wc.pods()
            if p.get("status", {}).get("podIP") and not p["metadata"].get("deletionTimestamp")]


def state_objects(s3, location: str) -> list[tuple[str, int]]:
    """(key, size) of every file of the savepoint, wherever its bytes are now (its own files or the
    checkpoint files it still references)."""
    client = s3.client()
    prefix = location.split(f"s3://{s3.bucket}/", 1)[1] + "/"
    out = []
    for key in s3.keys(prefix):
        if not key.endswith("/manifest.json"):
            continue
        m = json.loads(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
        base = key.rsplit("/", 1)[0]
        for f in m["files"]:
            src = f.get("source")
            out.append((src.split(f"s3://{s3.bucket}/", 1)[1] if src else f"{base}/{f['object']}", f["size"]))
    return out


def plain_download(s3, objects: list[tuple[str, int]]) -> float:
    client = s3.client()
    t = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda o: client.get_object(Bucket=s3.bucket, Key=o[0])["Body"].read(), objects))
    return time.monotonic() - t


def plain_transfer(s3, nbytes: int) -> float:
    """Upload then download `nbytes` of random bytes in 4 objects, 4-way parallel."""
    client = s3.client()
    parts = [os.urandom(max(nbytes // 4, 1)) for _ in range(4)]
    keys = [f"bench/delta-{time.monotonic_ns()}-{i}" for i in range(4)]
    t = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=s3.bucket, Key=kv[0], Body=kv[1]), zip(keys, parts)))
        list(pool.map(lambda k: client.get_object(Bucket=s3.bucket, Key=k)["Body"].read(), keys))
    return time.monotonic() - t


def run(size_mb: int, volume: str, strategy: str, cluster, s3, op, n: int) -> dict:
    ns = cluster.create_namespace(f"bench{n}")
    wc = Wordcount(cluster, s3, ns, name="fill", parallelism=2)
    spec = wc.job["spec"]
    keys_per_replica = size_mb // 2 * 1024
    churn = max(keys_per_replica // 1000, 1)
    spec["app"]["args"] = ["fill", "--mb", str(size_mb // 2), "--churn", str(churn)]
    spec["state"]["checkpointIntervalSeconds"] = CHECKPOINT_INTERVAL
    spec["state"]["states"] = [{"name": "blob", "kind": "value"}]
    spec["savepoint"] = {"timeoutSeconds": 900, "historyCount": 10}
    spec["rollback"]["readinessTimeoutSeconds"] = 900
    if volume == "pvc":
        spec["state"]["volume"] = {"persistentVolumeClaim": {"size": "10Gi"}}
    spec["upgradeStrategy"] = strategy
    wc.apply()
    st = wc.wait_running(replicas=2, timeout=600)
    wait_until(lambda: all("filled" in wc.app_log(p["metadata"]["name"]) for p in wc.pods()), timeout=900,
               what="the app to fill its state")
    urls = sidecar_urls(wc)

    def completed() -> float:
        return sum(metric(metrics(u), "stator_sidecar_checkpoints_total", 'outcome="completed"') for u in urls)

    def uploaded_by_checkpoints() -> float:
        return sum(metric(metrics(u), "stator_sidecar_uploaded_bytes_total", 'kind="checkpoint"') for u in urls)

    # Start 9 s after a checkpoint once the fill's compactions have settled (a checkpoint uploads
    # under 5% of the state, besides the live WAL that every checkpoint copies, up to 16 MiB a
    # replica): about 1% of the keys changed since that checkpoint.
    deadline = time.monotonic() + 600
    while True:
        first, sent = completed(), uploaded_by_checkpoints()
        wait_until(lambda: completed() > first, timeout=300, what="a checkpoint after the fill")
        if uploaded_by_checkpoints() - sent < 0.05 * size_mb * 1e6 + 2 * 16 * 2**20 or time.monotonic() > deadline:
            break
    time.sleep(CHECKPOINT_INTERVAL - 1)
    before = metrics(op.http)
    t = time.monotonic()
    wc.patch({"app": {"image": "ghcr.io/stator/stator-wordcount:0.2.0", "args": spec["app"]["args"]}})
    st = wc.wait_running(replicas=2, timeout=1800, previous_hash=st["deployedSpecHash"])
    total = time.monotonic() - t
    after = metrics(op.http)

    def delta(name: str, labels: str = "") -> float:
        return metric(after, name, labels) - metric(before, name, labels)

    pause = delta("stator_operator_upgrade_pause_seconds_sum")
    steps = {s: delta("stator_operator_operation_step_seconds_sum", f'reason="upgrade",step="{s}"') for s in STEPS}
    after_fence = steps["promoting"] + steps["stopping"] + steps["starting"] + steps["waiting_ready"]
    fenced_savepoint = max(pause - after_fence, 0.0)
    uploaded = int(delta("stator_operator_savepoint_uploaded_bytes_total", 'reason="upgrade"'))
    downloaded = int(sum(metric(metrics(u), "stator_sidecar_restore_downloaded_bytes_total") for u in sidecar_urls(wc)))
    objects = state_objects(s3, st["restoredFrom"])
    download = plain_download(s3, objects)
    transfer = plain_transfer(s3, uploaded)
    cluster.delete_namespace(ns)
    return {"size": size_mb, "volume": volume, "strategy": strategy, "bytes": sum(s for _, s in objects),
            "total": total, "pause": pause, "warming": steps["warming"],
            "phase_one": steps["savepointing"] - fenced_savepoint, "fenced": fenced_savepoint,
            "stop": steps["stopping"], "promote": steps["promoting"],
            "start": steps["starting"] + steps["waiting_ready"],
            "uploaded": uploaded, "downloaded": downloaded, "transfer": transfer, "download": download}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="stator-bench-upgrade-")
    rows = []
    with Cluster(workdir=os.path.join(work, "cluster")) as cluster, S3(log_dir=os.path.join(work, "s3")) as s3:
        processes = Processes(os.path.join(work, "processes"))
        try:
            op = start_operator(cluster, processes)
            n = 0
            for size in [int(s) for s in args.sizes.split(",")]:
                for volume, strategy in VARIANTS:
                    n += 1
                    print(f"measuring {size} MB on {volume}, {strategy} ...", file=sys.stderr, flush=True)
                    rows.append(run(size, volume, strategy, cluster, s3, op, n))
        finally:
            processes.stop()
    print("stator upgrade benchmark: 2 replicas, savepoint upgrade (image change) of an app that keeps writing, "
          "state in moto S3 on loopback")
    print("| state | volume | strategy | state bytes | total s | write pause s | warming (not paused) s "
          "| phase one (not paused) s | fenced savepoint s | stop s | promote s | start and ready s "
          "| uploaded in pause | downloaded in pause | plain delta transfer s "
          "| plain download of the state s | pause / (1 s + 1.3 x delta) | total - download s |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        budget = 1.0 + 1.3 * r["transfer"]
        print(f"| {r['size']} MB | {r['volume']} | {r['strategy']} | {r['bytes']} | {r['total']:.2f} | "
              f"{r['pause']:.2f} | {r['warming']:.2f} | {r['phase_one']:.2f} | {r['fenced']:.2f} | {r['stop']:.2f} | "
              f"{r['promote']:.2f} | {r['start']:.2f} | {r['uploaded']} | "
              f"{r['downloaded']} | {r['transfer']:.3f} | {r['download']:.2f} | {r['pause'] / budget:.2f} | "
              f"{r['total'] - r['download']:.2f} |")
    shutil.rmtree(work, ignore_errors=True)  # gigabytes of state at the 1 GB size; kept on failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
