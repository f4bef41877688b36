"""The whole system locally: the real Kubernetes control plane (kube-apiserver, etcd, kube-controller-manager)
with the stand-in kubelet, S3 (moto), the operator (under the chart's RBAC) and the example app.
Applies the example StreamJob, lets it write state, changes its image (a savepoint upgrade), rescales
it from 2 to 3 replicas, and checks that every word count is exactly what the input produces, and that
every event-time timer the app set fired exactly once (no idle report lost or written twice).

Run it with scripts/demo (which installs and builds first); on a real cluster set
STATOR_E2E_KUBECONFIG (see tests/README.md)."""
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from harness import Cluster, Processes, S3  # noqa: E402
from scenario import Wordcount, expected, start_operator  # noqa: E402

T0 = time.monotonic()


def step(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def main() -> int:
    work = tempfile.mkdtemp(prefix="stator-demo-")
    rc = demo(work)
    if rc == 0:
        # The cluster's etcd, the pods' volumes and the logs: about 300 MB a run, not kept on success.
        shutil.rmtree(work, ignore_errors=True)
    else:
        step(f"logs kept under {work}")
    return rc


def demo(work: str) -> int:
    records = int(os.environ.get("DEMO_RECORDS", "20000"))
    step(f"starting the local cluster (kube-apiserver, etcd, kube-controller-manager, the stand-in kubelet), "
         f"S3 (moto) and the operator as the chart's ServiceAccount (logs under {work})")
    with Cluster(workdir=os.path.join(work, "cluster")) as cluster, S3(log_dir=os.path.join(work, "s3")) as s3:
        processes = Processes(os.path.join(work, "processes"))
        try:
            start_operator(cluster, processes)
            ns = cluster.create_namespace("demo")
            wc = Wordcount(cluster, s3, ns, records=records)
            step(f"kubectl apply: StreamJob {wc.name}, 2 replicas, counting words of {records} records, checkpoints to {s3.url}")
            wc.apply()
            st = wc.wait_running(replicas=2)
            step(f"  running: pods {', '.join(sorted(p['metadata']['name'] for p in wc.pods()))}")
            time.sleep(2)
            t = time.monotonic()
            step("changing the app image to 0.2.0: a savepoint upgrade")
            wc.patch({"app": {"image": "ghcr.io/stator/stator-wordcount:0.2.0", "args": wc.job["spec"]["app"]["args"]}})
            st = wc.wait_running(replicas=2, previous_hash=st["deployedSpecHash"])
            step(f"  upgraded in {time.monotonic() - t:.1f}s from savepoint {st['restoredFrom']}")
            for i, position in enumerate(wc.resume_positions()):
                step(f"  {wc.name}-{i} resumed at record {position}")
            t = time.monotonic()
            step("kubectl scale sj/wordcount --replicas=3: a rescale through a savepoint")
            cluster.kubectl("scale", "sj/wordcount", "--replicas=3", namespace=ns)
            st = wc.wait_running(replicas=3, previous_hash=st["deployedSpecHash"])
            step(f"  rescaled in {time.monotonic() - t:.1f}s from savepoint {st['restoredFrom']}")
            step("waiting for the app to finish its input")
            wc.wait_app_done()
            location = wc.savepoint()
            step(f"reading the job's state offline from savepoint {location}")
            problems = wc.differences(location)
            if problems:
                for what, diff in problems.items():
                    sample = dict(list(diff.items())[:5]) if isinstance(diff, dict) else diff[:5]
                    step(f"FAILED: {len(diff)} {what} differ, e.g. {sample}")
                return 1
            want = expected(records)
            step(f"every one of {len(want['counts'])} word counts matches the input exactly ({sum(want['counts'].values())} words): "
                 "nothing lost, nothing counted twice across the upgrade and the rescale")
            step(f"every one of {sum(map(len, want['idle'].values()))} idle-word timers fired exactly once, "
                 "in event-time order, with no timer left pending")
            step("demo passed")
            return 0
        finally:
            processes.stop()


if __name__ == "__main__":
    sys.exit(main())
