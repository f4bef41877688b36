"""The stand-in kubelet against the real control plane: pods run as local processes with real lifecycle
semantics, the node is registered and kept alive, unscheduled pods are bound as a scheduler would,
logs reach `kubectl logs`, and the kubelet acts with a node's credentials only."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from localkube import LocalKube
from localkube.kubelet import expand

from .client import Client, wait_for


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
    pvc = wait_for(lambda: (lambda c: c if c["status"].get("phase") == "Bound" else None)(
        client.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-job-0").body), timeout=30,
        what="the claim bound by kube-controller-manager's host-path provisioner")
    assert pvc["spec"]["storageClassName"] == "standard", "the default StorageClass"
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


def test_a_stopped_cluster_removes_its_claims_host_path_volumes(tmp_path):
    lk = LocalKube(workdir=str(tmp_path / "lk"), kubelet=False)
    lk.start()
    try:
        c = Client(lk.kubeconfig)
        c.post("/api/v1/namespaces/default/persistentvolumeclaims", {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        pvc = wait_for(lambda: (lambda b: b if b["status"].get("phase") == "Bound" else None)(
            c.get("/api/v1/namespaces/default/persistentvolumeclaims/data").body), timeout=30, what="the claim bound")
        pv = c.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}").body
        path = pv["spec"]["hostPath"]["path"]
        assert os.path.isdir(path) and lk.host_path_volumes() == [path]
        with open(os.path.join(path, "state"), "w") as f:
            f.write("a replica's files")
    finally:
        lk.stop()
    assert not os.path.exists(path), "the volume outlived its cluster"


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


def test_node_is_registered_ready_and_its_lease_renewed(client, cluster):
    node = client.get(f"/api/v1/nodes/{cluster.node_name}").body
    assert cond(node, "Ready") == "True"
    assert not [t for t in node["spec"].get("taints") or [] if t["key"].startswith("node.kubernetes.io/")], \
        "kube-controller-manager lifted the not-ready taint"
    lease = client.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{cluster.node_name}").body
    first = lease["spec"]["renewTime"]
    wait_for(lambda: client.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"
                                f"{cluster.node_name}").body["spec"]["renewTime"] != first,
             timeout=25, what="the node lease renewed")


def test_kubectl_logs_are_served_through_the_api_server(client, ns, cluster):
    import subprocess  # noqa: PLC0415
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [app()]))
    wait_ready(client, ns, "p")
    r = subprocess.run(["kubectl", "--kubeconfig", cluster.kubeconfig, "-n", ns, "logs", "p", "-c", "app"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "listening" in r.stdout
    r = subprocess.run(["kubectl", "--kubeconfig", cluster.kubeconfig, "-n", ns, "logs", "p", "--previous"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and 'previous terminated container "app" in pod "p" not found' in r.stderr


def test_run_as_non_root_is_checked_against_the_image_user(client, ns):
    sc = {"runAsNonRoot": True}
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("root", [dict(app(), securityContext=sc)]))
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("nonroot", [dict(app(), image="example/nonroot:1",
                                                                      securityContext=sc)]))
    wait_ready(client, ns, "nonroot")
    p = wait_for(lambda: (lambda x: x if ((cstatus(x, "app") or {}).get("state", {}).get("waiting") or {}).get(
        "reason") == "CreateContainerConfigError" else None)(get_pod(client, ns, "root")), what="a config error")
    assert "container has runAsNonRoot and image will run as root" in cstatus(p, "app")["state"]["waiting"]["message"]


def test_service_account_token_reaches_the_api_server_in_cluster(client, ns):
    """The ServiceAccount admission plugin adds the kube-api-access volume; the kubelet fills it with a
    bound token (TokenRequest) and the cluster CA, and the app's client uses them."""
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [app()], automountServiceAccountToken=True))
    p = wait_ready(client, ns, "p")
    assert any(v["name"].startswith("kube-api-access-") for v in p["spec"]["volumes"])
    env = http_json(p["status"]["podIP"], 8080, "/env")
    cfg = json.load(open(env["KUBECONFIG"]))
    token = open(cfg["users"][0]["user"]["tokenFile"]).read()
    import ssl  # noqa: PLC0415
    ctx = ssl.create_default_context(cafile=cfg["clusters"][0]["cluster"]["certificate-authority"])
    req = urllib.request.Request(f"{cfg['clusters'][0]['cluster']['server']}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                 data=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        who = json.loads(r.read())["status"]["userInfo"]
    assert who["username"] == f"system:serviceaccount:{ns}:default"
    assert who["extra"]["authentication.kubernetes.io/pod-name"] == ["p"], "the token is bound to the pod"


def test_the_kubelet_reads_only_what_its_pods_name(client, ns, cluster):
    """Node authorization: the kubelet's own credentials read a Secret that a pod on its node names, and
    nothing else, so a pod works here only if it would on a real node."""
    from localkube.client import ApiError, Kube  # noqa: PLC0415
    for name in ("named", "other"):
        client.post(f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": name}, "stringData": {"k": name}})
    client.post(f"/api/v1/namespaces/{ns}/pods", pod("p", [app(env=[
        {"name": "K", "valueFrom": {"secretKeyRef": {"name": "named", "key": "k"}}}])]))
    p = wait_ready(client, ns, "p")
    assert http_json(p["status"]["podIP"], 8080, "/env")["K"] == "named"
    node = Kube(cluster.control_plane.kubeconfig("node"))
    assert node.get(f"/api/v1/namespaces/{ns}/secrets/named")["metadata"]["name"] == "named"
    with pytest.raises(ApiError) as e:
        node.get(f"/api/v1/namespaces/{ns}/secrets/other")
    assert e.value.code == 403 and "no relationship found between node" in e.value.message


def test_paths_under_mount_points_are_rewritten_once():
    from localkube.kubelet import PodWorker  # noqa: PLC0415
    mounts = [("/var/run/stator", "/tmp/lk/2/socket"), ("/tmp", "/tmp/lk/2/tmp")]
    assert PodWorker.localize("--socket=/var/run/stator/state.sock", mounts) == "--socket=/tmp/lk/2/socket/state.sock", \
        "a path rewritten into /tmp is not rewritten again by the /tmp mount"
    assert PodWorker.localize("/tmp/x,/tmpfoo /var/run/statorx", mounts) == "/tmp/lk/2/tmp/x,/tmpfoo /var/run/statorx"
