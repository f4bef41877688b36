"""The pod the operator will build, with the real binaries: the sidecar as a native sidecar (socket on
an emptyDir, data on a PVC, admin token from a Secret, admin address from the downward API) and the
word-count app beside it. Checks what the stand-in must get right for the operator: start order, probes,
a clean SIGTERM shutdown, data surviving a new pod on the same claim."""

from __future__ import annotations

import json
import os
import secrets
import urllib.request

import pytest

from harness import wait_until

BIN = os.environ.get("STATOR_BIN_DIR") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/stator-target"), "release")
SIDECAR_IMAGE = os.environ.get("STATOR_SIDECAR_IMAGE", "ghcr.io/stator/stator-sidecar:dev")
APP_IMAGE = os.environ.get("STATOR_WORDCOUNT_IMAGE", "ghcr.io/stator/stator-wordcount:dev")


# What the `restricted` Pod Security Standard asks of every container (the test namespace enforces it).
RESTRICTED_CONTAINER = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]}}


def pod(name: str, claim: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "wc"}},
        "spec": {
            "terminationGracePeriodSeconds": 20,
            "initContainers": [{
                "name": "sidecar", "image": SIDECAR_IMAGE, "restartPolicy": "Always",
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "STATOR_SOCKET", "value": "/var/run/stator/state.sock"},
                    {"name": "STATOR_DATA_DIR", "value": "/data/db"},
                    {"name": "STATOR_ADMIN_ADDR", "value": "$(POD_IP):9601"},
                    {"name": "STATOR_ADMIN_TOKEN_FILE", "value": "/etc/stator/admin/token"},
                    {"name": "STATOR_REPLICA_INDEX", "value": "0"},
                    {"name": "STATOR_PARALLELISM", "value": "1"},
                    {"name": "STATOR_LOG_FORMAT", "value": "text"},
                ],
                "ports": [{"name": "admin", "containerPort": 9601}],
                "startupProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 1,
                                 "failureThreshold": 60},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 2},
                "volumeMounts": [{"name": "run", "mountPath": "/var/run/stator"},
                                 {"name": "data", "mountPath": "/data"},
                                 {"name": "admin", "mountPath": "/etc/stator/admin", "readOnly": True}],
                "securityContext": RESTRICTED_CONTAINER,
            }],
            "containers": [{
                "name": "app", "image": APP_IMAGE, "args": ["run", "--records", "3000"],
                "env": [{"name": "STATOR_SOCKET", "value": "/var/run/stator/state.sock"}],
                "volumeMounts": [{"name": "run", "mountPath": "/var/run/stator"}],
                "securityContext": RESTRICTED_CONTAINER,
            }],
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "run", "emptyDir": {}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
                        {"name": "admin", "secret": {"secretName": "wc-admin", "defaultMode": 0o400}}],
        },
    }


def ready(p: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions", []))


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "stator-sidecar"))
                    or not os.path.exists(os.path.join(BIN, "stator-wordcount")),
                    reason="stator-sidecar and stator-wordcount are not built (cargo build --release)")
def test_operator_shaped_pod_runs_the_real_sidecar_and_app(cluster, namespace):
    if not cluster.local:
        pytest.skip("reads the pod's address from the host, which only the local stand-in allows")
    token = secrets.token_hex(16)
    cluster.apply([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wc-admin"}, "stringData": {"token": token}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-wc-0"},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        pod("wc-0", "data-wc-0"),
    ], namespace=namespace)
    p = wait_until(lambda: (lambda x: x if ready(x) else None)(cluster.get("pod", "wc-0", namespace)), timeout=60,
                   what="pod Ready")
    ip = p["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:9601/readyz", timeout=5) as r:
        assert r.status == 200
    logs = wait_until(lambda: cluster.kubectl("logs", "wc-0", "-c", "app", namespace=namespace).stdout or None,
                      timeout=30, what="app logs")
    assert logs
    sidecar = next(c for c in p["status"]["initContainerStatuses"] if c["name"] == "sidecar")
    assert sidecar["restartCount"] == 0 and sidecar["ready"]

    import subprocess  # noqa: PLC0415
    watch = subprocess.Popen(["kubectl", "--kubeconfig", cluster.kubeconfig, "get", "pod", "wc-0", "-n", namespace,
                              "-w", "-o", "json", "--output-watch-events"], stdout=subprocess.PIPE, text=True)
    out = ""
    try:
        while True:  # the watch is running once it has printed the pod as it is
            line = watch.stdout.readline()
            assert line, "kubectl get -w ended early"
            out += line
            try:
                json.loads(out)
                break
            except ValueError:
                continue
        cluster.kubectl("delete", "pod", "wc-0", "--wait=true", "--timeout=60s", namespace=namespace)
    finally:
        watch.terminate()
        out += watch.communicate(timeout=10)[0]
    events, dec, i = [], json.JSONDecoder(), 0
    while i < len(out):
        if out[i].isspace():
            i += 1
            continue
        ev, i = dec.raw_decode(out, i)
        events.append(ev)
    assert events, out
    final = [e["object"] for e in events if e["type"] == "MODIFIED"][-1]
    term = {c["name"]: c["state"].get("terminated") for c in
            final["status"]["initContainerStatuses"] + final["status"]["containerStatuses"]}
    assert term["sidecar"] and term["sidecar"]["exitCode"] == 0, term
    log_dir = os.path.join(cluster.localkube.workdir, "kubelet", "pods")
    sidecar_log = "".join(open(os.path.join(root, f)).read() for root, _, files in os.walk(log_dir)
                          for f in files if f.startswith("sidecar.") and f"{namespace}_wc-0_" in root)
    assert sidecar_log, "the sidecar's log is kept"

    cluster.apply(pod("wc-0", "data-wc-0"), namespace=namespace)
    p = wait_until(lambda: (lambda x: x if ready(x) else None)(cluster.get("pod", "wc-0", namespace)), timeout=60,
                   what="recreated pod Ready on the same claim")
    pvc = cluster.get("pvc", "data-wc-0", namespace)
    assert pvc["status"]["phase"] == "Bound"
