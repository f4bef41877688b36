"""The kubelet stand-in: pods run as local processes with real lifecycle semantics."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from localkube.kubelet import expand

from .client import wait_for


def pod(name, containers, init=None, volumes=None, **spec):
    s = {"containers": containers, "terminationGracePeriodSeconds": 5, **spec}
    if init:
        s["initContainers"] = init
    if volumes:
        s["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": s}


def app(name="app", port=8080, env=None, probe=True, **extra):
    c = {"name": name, "image": "example/app:1",
         "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "PORT", "value": str(port)}] + (env or [])}
    if probe:
        c["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 1}
    c.update(extra)
    return c


def get_pod(client, ns, name):
    return client.get(f"/api/v1/namespaces/{ns}/pods/{name}").body


def cond(p, t):
    return next((c["status"] for c in p.get("status", {}).get("conditions", []) if c["type"] == t), None)


def cstatus(p, name):
    sts = p.get("status", {}).get("containerStatuses", []) + p.get("status", {}).get("initContainerStatuses", [])
    return next((c for c in sts if c["name"] == name), None)


def wait_ready(client, ns, name, timeout=20):
    return wait_for(lambda: (lambda p: p if cond(p, "Ready") == "True" else None)(get_pod(client, ns, name)),
                    timeout=timeout, what=f"pod {name} Ready")


def http_json(ip, port, path):
    with urllib.request.urlopen(f"http://{ip}:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def test_expansion_follows_kubernetes_rules():
    env = {"A": "1", "B": "two"}.get
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$$$(A)", env) == "$1"
    assert expand("$(A", env) == "$(A"
    assert expand("a$b$", env) == "a$b$"
    assert expand("$()", env) == "$()"


def test_pod_runs_with_its_own_address_env_and_volumes(client, ns):
    client.post(f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": "admin"}, "stringData": {"token": "s3cret"}})
    c = app(env=[{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                 {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                 {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "admin", "key": "token"}}},
                 {"name": "ADDR", "value": "$(POD_IP):$(PORT)"}],
            args=["--name=$(POD_NAME)", "--socket=/var/run/stator/state.sock", "$$(LITERAL)"],
            volumeMounts=[{"name": "sock", "mountPath": "/var/run/stator"},
                          {"name": "token", "mountPath": "/etc/stator", "readOnly": True},
                          {"name": "info", "mountPath": "/etc/podinfo"}])
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [c], volumes=[
        {"name": "sock", "emptyDir": {}}, {"name": "token", "secret": {"secretName": "admin"}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]))
    p = wait_ready(client, ns, "p")
    ip = p["status"]["podIP"]
    assert ip.startswith("127.1.") and p["status"]["phase"] == "Running"
    env = http_json(ip, 8080, "/env")
    assert env["POD_NAME"] == "p" and env["POD_NS"] == ns and env["TOKEN"] == "s3cret"
    assert env["ADDR"] == f"{ip}:8080" and env["HOSTNAME"] == "p"
    argv = http_json(ip, 8080, "/argv")
    assert argv[1] == "--name=p" and argv[3] == "$(LITERAL)"
    sock = argv[2].split("=", 1)[1]
    assert os.path.realpath(sock).endswith("/volumes/sock/state.sock") and os.path.isdir(os.path.dirname(sock)), \
        "paths under a mountPath are rewritten to the volume's local directory"
    assert len(sock) < 60, "and stay short enough for a Unix socket (108 bytes)"
    voldir = os.path.dirname(os.path.dirname(sock))
    assert open(os.path.join(voldir, "token", "token")).read() == "s3cret"
    assert open(os.path.join(voldir, "info", "labels")).read() == 'app="p"'
    cs = cstatus(p, "app")
    assert cs["ready"] and cs["restartCount"] == 0 and "running" in cs["state"] and cs["started"]
    assert [c["type"] for c in p["status"]["conditions"]] == [
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]


def test_readiness_probe_drives_ready(client, ns, tmp_path):
    flag = tmp_path / "ready"
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [app(env=[{"name": "READY_FILE", "value": str(flag)}])]))
    wait_for(lambda: cstatus(get_pod(client, ns, "p"), "app") and cstatus(get_pod(client, ns, "p"), "app")["state"].get("running"),
             what="container running")
    time.sleep(1.5)
    p = get_pod(client, ns, "p")
    assert cond(p, "Ready") == "False" and cond(p, "ContainersReady") == "False"
    assert p["status"]["phase"] == "Running"
    flag.write_text("")
    wait_ready(client, ns, "p")


def test_native_sidecar_starts_first_and_stops_last(client, ns, tmp_path):
    marker = tmp_path / "order"
    side = app("sidecar", port=9100, env=[{"name": "MARKER", "value": str(marker)}, {"name": "TERM_DELAY", "value": "0.5"}],
               restartPolicy="Always")
    side["image"] = "example/sidecar:1"
    # As for the real kubelet, "started" means the process runs unless a startupProbe says more: with one,
    # the app container starts only once the sidecar answers.
    side["startupProbe"] = {"httpGet": {"path": "/readyz", "port": 9100}, "periodSeconds": 1, "failureThreshold": 30}
    main = app(env=[{"name": "MARKER", "value": str(marker)}])
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [main], init=[side]))
    p = wait_ready(client, ns, "p")
    assert p["spec"]["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in p["status"]["initContainerStatuses"]] == ["sidecar"]
    lines = marker.read_text().splitlines()
    sidecar_pid = int(lines[0].split()[1])
    assert len(lines) == 2 and lines[0].startswith("started")
    assert "sidecar" in open(f"/proc/{sidecar_pid}/cmdline").read(), "the sidecar started first"
    client.delete(f"/api/v1/namespaces/{ns}/pods/p")
    wait_for(lambda: client.get(f"/api/v1/namespaces/{ns}/pods/p").status == 404, what="pod gone")
    lines = marker.read_text().splitlines()
    assert lines[2:] == ["sigterm", "sigterm"]


def test_sigterm_then_sigkill_after_grace_period(client, ns, tmp_path):
    marker = tmp_path / "m"
    c = app(env=[{"name": "IGNORE_TERM", "value": "1"}, {"name": "MARKER", "value": str(marker)}])
    body = pod("p", [c])
    body["spec"]["terminationGracePeriodSeconds"] = 2
    client.post(f"/api/v1/namespaces/{ns}/pods", body)
    p = wait_ready(client, ns, "p")
    pid = int(marker.read_text().split()[1])
    w = client.watch(f"/api/v1/namespaces/{ns}/pods", {"fieldSelector": "metadata.name=p",
                                                       "resourceVersion": p["metadata"]["resourceVersion"]})
    try:
        t0 = time.monotonic()
        r = client.delete(f"/api/v1/namespaces/{ns}/pods/p")
        assert r.status == 200 and r.body["metadata"]["deletionGracePeriodSeconds"] == 2
        assert r.body["metadata"]["deletionTimestamp"]
        assert client.get(f"/api/v1/namespaces/{ns}/pods/p").body["metadata"]["deletionTimestamp"], \
            "the pod stays, terminating, during its grace period"
        wait_for(lambda: "sigterm" in marker.read_text(), what="SIGTERM delivered")
        events = []
        while not events or events[-1]["type"] != "DELETED":
            events.append(w.next(timeout=15))
        elapsed = time.monotonic() - t0
    finally:
        w.close()
    assert 1.8 <= elapsed < 6, elapsed
    assert not os.path.exists(f"/proc/{pid}"), "the process was killed"
    final = [e for e in events if e["type"] == "MODIFIED"][-1]["object"]
    assert final["status"]["phase"] == "Failed"
    t = cstatus(final, "app")["state"]["terminated"]
    assert t["exitCode"] == 137 and t["signal"] == 9 and t["reason"] == "Error"


def test_graceful_exit_on_sigterm_reports_exit_code(client, ns):
    c = app(env=[{"name": "TERM_EXIT", "value": "0"}])
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [c]))
    wait_ready(client, ns, "p")
    seen = []
    w = client.watch(f"/api/v1/namespaces/{ns}/pods", {"fieldSelector": "metadata.name=p"})
    try:
        client.delete(f"/api/v1/namespaces/{ns}/pods/p")
        while True:
            ev = w.next(timeout=15)
            seen.append(ev)
            if ev is None or ev["type"] == "DELETED":
                break
    finally:
        w.close()
    last = [e for e in seen if e and e["type"] == "MODIFIED"][-1]["object"]
    t = cstatus(last, "app")["state"]["terminated"]
    assert t["exitCode"] == 0 and t["reason"] == "Completed" and last["status"]["phase"] == "Succeeded"


def test_restart_policy_restart_counts_and_exit_codes(client, ns):
    c = app(env=[{"name": "EXIT_AFTER", "value": "0.2"}, {"name": "EXIT_CODE", "value": "3"}], probe=False)
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("always", [c]))
    p = wait_for(lambda: (lambda x: x if (cstatus(x, "app") or {}).get("restartCount", 0) >= 2 else None)(
        get_pod(client, ns, "always")), timeout=30, what="two restarts")
    cs = cstatus(p, "app")
    assert cs["lastState"]["terminated"]["exitCode"] == 3 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert p["status"]["phase"] == "Running"
    wait_for(lambda: (cstatus(get_pod(client, ns, "always"), "app")["state"].get("waiting") or {}).get("reason")
             == "CrashLoopBackOff", timeout=20, interval=0.05, what="CrashLoopBackOff")

    client.post(f"/api/v1/namespaces/{ns}/pods", pod("never", [c], restartPolicy="Never"))
    p = wait_for(lambda: (lambda x: x if x["status"]["phase"] == "Failed" else None)(get_pod(client, ns, "never")),
                 what="Failed")
    cs = cstatus(p, "app")
    assert cs["restartCount"] == 0 and cs["state"]["terminated"]["exitCode"] == 3

    ok = app(env=[{"name": "EXIT_AFTER", "value": "0.1"}, {"name": "EXIT_CODE", "value": "0"}], probe=False)
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("onfailure", [ok], restartPolicy="OnFailure"))
    p = wait_for(lambda: (lambda x: x if x["status"]["phase"] == "Succeeded" else None)(get_pod(client, ns, "onfailure")),
                 what="Succeeded")
    assert cstatus(p, "app")["state"]["terminated"]["reason"] == "Completed"
    assert cond(p, "Ready") == "False"


def test_unmapped_image_waits_in_image_pull_backoff(client, ns):
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [{"name": "app", "image": "nowhere/nothing:1"}]))
    p = wait_for(lambda: (lambda x: x if (cstatus(x, "app") or {}).get("state", {}).get("waiting", {}).get("reason")
                          in ("ErrImagePull", "ImagePullBackOff") else None)(get_pod(client, ns, "p")), what="pull error")
    assert p["status"]["phase"] == "Pending" and cond(p, "Ready") == "False"


def test_pvc_data_survives_pod_recreation(client, ns):
    client.post(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
        "metadata": {"name": "data-job-0"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    pvc = client.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-job-0").body
    assert pvc["status"]["phase"] == "Pending", "the default class binds when the first consumer is scheduled"
    assert pvc["spec"]["storageClassName"] == "standard"
    body = pod("job-0", [app(volumeMounts=[{"name": "data", "mountPath": "/data"}], args=["--data=/data"])],
               volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data-job-0"}}])
    client.post(f"/api/v1/namespaces/{ns}/pods", body)
    p = wait_ready(client, ns, "job-0")
    data = http_json(p["status"]["podIP"], 8080, "/argv")[1].split("=", 1)[1]
    with open(os.path.join(data, "state"), "w") as f:
        f.write("kept")
    assert client.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-job-0").body["status"]["phase"] == "Bound"
    client.delete(f"/api/v1/namespaces/{ns}/pods/job-0")
    wait_for(lambda: client.get(f"/api/v1/namespaces/{ns}/pods/job-0").status == 404, what="pod gone")
    client.post(f"/api/v1/namespaces/{ns}/pods", body)
    p = wait_ready(client, ns, "job-0")
    data2 = http_json(p["status"]["podIP"], 8080, "/argv")[1].split("=", 1)[1]
    assert open(os.path.join(data2, "state")).read() == "kept"


def test_pod_with_missing_claim_is_unschedulable(client, ns):
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [app()], volumes=[
        {"name": "data", "persistentVolumeClaim": {"claimName": "nope"}}]))
    p = wait_for(lambda: (lambda x: x if cond(x, "PodScheduled") == "False" else None)(get_pod(client, ns, "p")),
                 what="Unschedulable")
    c = next(c for c in p["status"]["conditions"] if c["type"] == "PodScheduled")
    assert c["reason"] == "Unschedulable" and 'persistentvolumeclaim "nope" not found' in c["message"]
    assert p["status"]["phase"] == "Pending" and not p["spec"].get("nodeName")


@pytest.mark.parametrize("probe", ["liveness"])
def test_liveness_failure_restarts_the_container(client, ns, tmp_path, probe):
    c = app(probe=False, env=[{"name": "READY_FILE", "value": str(tmp_path / "never")}])
    c["livenessProbe"] = {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2,
                          "initialDelaySeconds": 1}
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [c], terminationGracePeriodSeconds=1))
    wait_for(lambda: (cstatus(get_pod(client, ns, "p"), "app") or {}).get("restartCount", 0) >= 1, timeout=30,
             what="restart after liveness failures")


def test_changing_an_image_restarts_that_container(client, ns):
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [app()]))
    p = wait_ready(client, ns, "p")
    old_id = cstatus(p, "app")["containerID"]
    r = client.patch(f"/api/v1/namespaces/{ns}/pods/p", {"spec": {"containers": [{"name": "app", "image": "example/app:2"}]}},
                     content_type="application/strategic-merge-patch+json")
    assert r.status == 200
    p = wait_for(lambda: (lambda x: x if (cstatus(x, "app") or {}).get("image") == "example/app:2"
                          and cstatus(x, "app")["ready"] else None)(get_pod(client, ns, "p")), what="restarted on the new image")
    cs = cstatus(p, "app")
    assert cs["restartCount"] == 1 and cs["containerID"] != old_id


def test_bind_all_addresses_stay_inside_the_pod(client, ns):
    for name in ("a", "b"):
        c = app(probe=True)
        c["env"] = [{"name": "POD_IP", "value": "0.0.0.0"}, {"name": "PORT", "value": "8080"}]
        c["args"] = ["--listen=0.0.0.0:8080", "--cidr=0.0.0.0/0"]
        client.post(f"/api/v1/namespaces/{ns}/pods", pod(name, [c]))
    for name in ("a", "b"):
        p = wait_ready(client, ns, name)
        ip = p["status"]["podIP"]
        assert http_json(ip, 8080, "/env")["POD_IP"] == ip, "two pods binding 0.0.0.0:8080 do not collide"
        assert http_json(ip, 8080, "/argv")[1:] == [f"--listen={ip}:8080", "--cidr=0.0.0.0/0"]
