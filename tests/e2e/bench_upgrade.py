"""Upgrade benchmark: the time a savepoint upgrade takes and how long writes pause, for jobs holding
about 10 MB, 100 MB (and, with --sizes, 1 GB) of state, with the replicas' data on emptyDir volumes
(every restore downloads the savepoint) and on PersistentVolumeClaims (local recovery reuses the
files already on the volume). Prints one table; the peer figure is a plain parallel download of the
same savepoint objects from the same S3 server.

    .venv/bin/python tests/e2e/bench_upgrade.py [--sizes 10,100,1000]
"""
import argparse
import os
import re
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


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def plain_download(s3, prefix: str) -> tuple[float, int]:
    client = s3.client()
    keys = s3.keys(prefix)
    t = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda k: len(client.get_object(Bucket=s3.bucket, Key=k)["Body"].read()), keys))
    return time.monotonic() - t, sum(sizes)


def run(size_mb: int, volume: str, cluster, s3, op, n: int) -> dict:
    ns = cluster.create_namespace(f"bench{n}")
    wc = Wordcount(cluster, s3, ns, name="fill", parallelism=2)
    spec = wc.job["spec"]
    spec["app"]["args"] = ["fill", "--mb", str(size_mb // 2)]
    spec["state"]["checkpointIntervalSeconds"] = 30
    spec["state"]["states"] = [{"name": "blob", "kind": "value"}]
    spec["savepoint"] = {"timeoutSeconds": 900, "historyCount": 10}
    spec["rollback"]["readinessTimeoutSeconds"] = 900
    if volume == "pvc":
        spec["state"]["volume"] = {"persistentVolumeClaim": {"size": "10Gi"}}
    wc.apply()
    st = wc.wait_running(replicas=2, timeout=600)
    wait_until(lambda: all("filled" in wc.app_log(p["metadata"]["name"]) for p in wc.pods()), timeout=900,
               what="the app to fill its state")
    pauses_before = metric(op.http, "stator_operator_upgrade_pause_seconds_sum")
    t = time.monotonic()
    wc.patch({"app": {"image": "ghcr.io/stator/stator-wordcount:0.2.0", "args": spec["app"]["args"]}})
    st = wc.wait_running(replicas=2, timeout=1800, previous_hash=st["deployedSpecHash"])
    total = time.monotonic() - t
    pause = metric(op.http, "stator_operator_upgrade_pause_seconds_sum") - pauses_before
    sp = st["restoredFrom"].split(f"s3://{s3.bucket}/", 1)[1]
    download, nbytes = plain_download(s3, sp + "/")
    cluster.delete_namespace(ns)
    return {"size": size_mb, "volume": volume, "bytes": nbytes, "total": total, "pause": pause, "download": download}


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
                for volume in ("emptyDir", "pvc"):
                    n += 1
                    print(f"measuring {size} MB on {volume} ...", file=sys.stderr, flush=True)
                    rows.append(run(size, volume, cluster, s3, op, n))
        finally:
            processes.stop()
    print("stator upgrade benchmark: 2 replicas, savepoint upgrade (image change), state in moto S3 on loopback")
    print("| state | volume | savepoint bytes | total upgrade s | write pause s | plain download of the savepoint s | pause / download |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} MB | {r['volume']} | {r['bytes']} | {r['total']:.1f} | {r['pause']:.1f} | {r['download']:.2f} | {r['pause'] / max(r['download'], 1e-3):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
