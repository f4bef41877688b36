"""Operator scale benchmark: N StreamJobs (default 50 and 500; --jobs 2000) on the local control plane
(the real kube-apiserver) without the stand-in kubelet, so the jobs' pods stay Pending and no process
runs per pod (their images are not in the image map either). That
exercises the operator's side at full size: it creates every job's Secret, Service and pods, and writes
their status. Prints one table per run:

- time for every job to be deployed (status written, every pod created),
- API requests per minute at rest, reads and writes, from the operator's own request counter,
- the operator's RSS and CPU at rest,
- reconcile p50 and p99 (from the operator's histogram buckets: upper bounds),
- a restarted operator: time until every job was reconciled again, and reconcile errors.

The peer, measured in the same run, is one `kubectl get sj -A` listing every job: what one round trip
through this API server costs at this size.

    .venv/bin/python tests/e2e/bench_scale.py [--jobs 50,500,2000] [--rest 60]
"""
import argparse
import os
import re
import signal
import shutil
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import yaml  # noqa: E402
from harness import Cluster, Processes, wait_until  # noqa: E402
from scenario import start_operator  # noqa: E402


def metrics(url: str) -> str:
    return urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()


def total(text: str, name: str, label: str = "") -> float:
    """The sum of a metric's samples whose labels contain `label`."""
    return sum(float(m.group(2)) for m in re.finditer(rf"^{name}(?:{{([^}}]*)}})? ([0-9.e+-]+)$", text, re.M)
               if label in (m.group(1) or ""))


def quantile(text: str, name: str, q: float) -> float:
    buckets = [(float("inf") if le == "+Inf" else float(le), float(n))
               for le, n in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+-]+)$', text, re.M)]
    if not buckets:
        return float("nan")
    count = buckets[-1][1]
    for le, n in buckets:
        if n >= q * count:
            return le
    return float("inf")


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds so far)."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def job_yaml(i: int) -> dict:
    return {"apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob", "metadata": {"name": f"job-{i:04d}"},
            "spec": {"parallelism": 2, "app": {"image": "example.invalid/never-pulled:1"},
                     "sidecar": {"image": "example.invalid/never-pulled-sidecar:1"},
                     "state": {"states": [{"name": "counts", "kind": "value"}]}}}


def run(n: int, rest: int, tmp: str) -> dict:
    out: dict = {"jobs": n}
    # No kubelet: pods stay Pending (no process per pod), on the real control plane.
    with Cluster(workdir=os.path.join(tmp, f"cluster-{n}"), kubelet=False) as cluster:
        processes = Processes(os.path.join(tmp, f"logs-{n}"))
        try:
            ns = cluster.create_namespace()
            op = start_operator(cluster, processes)
            path = Path(tmp) / f"jobs-{n}.yaml"
            path.write_text(yaml.safe_dump_all([job_yaml(i) for i in range(n)]))
            t = time.monotonic()
            cluster.kubectl("apply", "-f", str(path), namespace=ns, timeout=1800)

            def deployed():
                items = cluster.get("sj", namespace=ns)["items"]
                done = sum(1 for j in items if (j.get("status") or {}).get("replicas") == 2)
                return done == n
            wait_until(deployed, timeout=3600, interval=2, what=f"{n} jobs to be deployed")
            out["deploy_s"] = time.monotonic() - t
            t = time.monotonic()
            cluster.kubectl("get", "sj", "-A", "-o", "name")
            out["peer_list_s"] = time.monotonic() - t
            time.sleep(10)  # let the last watch events settle
            m0, (_, cpu0), t0 = metrics(op.http), proc_stats(op.proc.pid), time.monotonic()
            time.sleep(rest)
            m1, (rss, cpu1), t1 = metrics(op.http), proc_stats(op.proc.pid), time.monotonic()
            minutes = (t1 - t0) / 60
            name = "stator_operator_api_requests_total"
            out["reads_per_min"] = (total(m1, name, 'verb="get"') - total(m0, name, 'verb="get"')) / minutes
            writes = sum(total(m1, name, f'verb="{v}"') - total(m0, name, f'verb="{v}"')
                         for v in ("create", "update", "patch", "delete"))
            out["writes_per_min"] = writes / minutes
            out["rss_mb"] = rss
            out["cpu_pct"] = 100 * (cpu1 - cpu0) / (t1 - t0)
            h = "stator_operator_reconcile_duration_seconds"
            out["p50_s"], out["p99_s"] = quantile(m1, h, 0.5), quantile(m1, h, 0.99)

            # A restarted operator reconciles every job again.
            op.proc.send_signal(signal.SIGTERM)
            op.proc.wait(timeout=60)
            t = time.monotonic()
            op2 = start_operator(cluster, processes, name="operator-2")
            wait_until(lambda: total(metrics(op2.http), "stator_operator_reconciles_total") >= n,
                       timeout=600, interval=0.5, what="every job to be reconciled again")
            out["restart_s"] = time.monotonic() - t
            m2 = metrics(op2.http)
            out["restart_errors"] = total(m2, "stator_operator_reconcile_errors_total")
        finally:
            processes.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", default="50,500")
    ap.add_argument("--rest", type=int, default=60, help="seconds at rest to measure requests, RSS and CPU")
    args = ap.parse_args()
    import tempfile  # noqa: PLC0415
    tmp = tempfile.mkdtemp(prefix="stator-bench-scale-")
    rows = [run(int(n), args.rest, tmp) for n in args.jobs.split(",")]
    shutil.rmtree(tmp, ignore_errors=True)  # kept on failure, for its logs
    cols = [("jobs", "jobs", "{:.0f}"), ("deploy_s", "all deployed s", "{:.1f}"),
            ("peer_list_s", "peer: list all s", "{:.2f}"), ("reads_per_min", "reads/min at rest", "{:.1f}"),
            ("writes_per_min", "writes/min at rest", "{:.1f}"), ("rss_mb", "RSS MB", "{:.0f}"),
            ("cpu_pct", "CPU % at rest", "{:.1f}"), ("p50_s", "reconcile p50 s", "{:.3f}"),
            ("p99_s", "reconcile p99 s", "{:.3f}"), ("restart_s", "restart: all reconciled s", "{:.1f}"),
            ("restart_errors", "restart errors", "{:.0f}")]
    print("| " + " | ".join(c[1] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f.format(r[k]) for k, _, f in cols) + " |")


if __name__ == "__main__":
    main()
