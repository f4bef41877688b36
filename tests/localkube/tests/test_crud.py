"""CRUD semantics over raw HTTP: status codes and Status bodies as the real API server sends them."""

from __future__ import annotations

SJ = "/apis/stator.dev/v1alpha1/namespaces/{ns}/streamjobs"


def sj(name: str, **spec) -> dict:
    return {"apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob", "metadata": {"name": name},
            "spec": {"image": "example/app:1", **spec}}


def cm(name: str, **data) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_create_get_list_delete(client, ns):
    r = client.post(f"/api/v1/namespaces/{ns}/configmaps", cm("a", k="v"))
    assert r.status == 201
    md = r.body["metadata"]
    assert md["namespace"] == ns and md["uid"] and md["resourceVersion"] and md["creationTimestamp"]
    assert client.get(f"/api/v1/namespaces/{ns}/configmaps/a").body["data"] == {"k": "v"}
    lst = client.get(f"/api/v1/namespaces/{ns}/configmaps").body
    assert lst["kind"] == "ConfigMapList" and int(lst["metadata"]["resourceVersion"]) >= int(md["resourceVersion"])
    assert [i["metadata"]["name"] for i in lst["items"] if i["metadata"]["name"] == "a"] == ["a"]
    d = client.delete(f"/api/v1/namespaces/{ns}/configmaps/a")
    assert d.status == 200 and d.body["kind"] == "Status" and d.body["status"] == "Success"
    r = client.get(f"/api/v1/namespaces/{ns}/configmaps/a")
    assert r.status == 404
    assert r.body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": 'configmaps "a" not found', "reason": "NotFound",
                      "details": {"name": "a", "kind": "configmaps"}, "code": 404}


def test_create_twice_is_already_exists(client, ns):
    assert client.post(SJ.format(ns=ns), sj("x")).status == 201
    r = client.post(SJ.format(ns=ns), sj("x"))
    assert r.status == 409 and r.body["reason"] == "AlreadyExists"
    assert r.body["message"] == 'streamjobs.stator.dev "x" already exists'


def test_stale_update_is_conflict(client, ns):
    created = client.post(SJ.format(ns=ns), sj("x")).body
    first = dict(created, spec=dict(created["spec"], parallelism=2))
    assert client.put(f"{SJ.format(ns=ns)}/x", first).status == 200
    stale = dict(created, spec=dict(created["spec"], parallelism=3))  # still carries the old resourceVersion
    r = client.put(f"{SJ.format(ns=ns)}/x", stale)
    assert r.status == 409 and r.body["reason"] == "Conflict"
    assert r.body["message"] == ('Operation cannot be fulfilled on streamjobs.stator.dev "x": the object has been '
                                 'modified; please apply your changes to the latest version and try again')
    # a merge patch that names a stale resourceVersion is refused the same way
    r = client.patch(f"{SJ.format(ns=ns)}/x", {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                                                "spec": {"parallelism": 4}})
    assert r.status == 409
    # an update without a resourceVersion is unconditional
    fresh = client.get(f"{SJ.format(ns=ns)}/x").body
    fresh["metadata"].pop("resourceVersion")
    fresh["spec"]["parallelism"] = 5
    assert client.put(f"{SJ.format(ns=ns)}/x", fresh).status == 200


def test_lease_replace_with_resource_version_for_leader_election(client, ns):
    path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "stator-operator"},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": "2025-01-01T00:00:00.000000Z",
                      "renewTime": "2025-01-01T00:00:00.000000Z", "leaseTransitions": 0}}
    created = client.post(path, lease).body
    mine = dict(created, spec=dict(created["spec"], renewTime="2025-01-01T00:00:05.000000Z"))
    theirs = dict(created, spec=dict(created["spec"], holderIdentity="b", leaseTransitions=1))
    assert client.put(f"{path}/stator-operator", theirs).status == 200
    r = client.put(f"{path}/stator-operator", mine)
    assert r.status == 409, "a replace with a stale resourceVersion must lose the election"
    assert client.get(f"{path}/stator-operator").body["spec"]["holderIdentity"] == "b"


def test_resource_versions_increase_and_noop_writes_do_not_bump(client, ns):
    a = client.post(SJ.format(ns=ns), sj("x")).body
    b = client.patch(f"{SJ.format(ns=ns)}/x", {"spec": {"parallelism": 2}}).body
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    c = client.patch(f"{SJ.format(ns=ns)}/x", {"spec": {"parallelism": 2}}).body
    assert c["metadata"]["resourceVersion"] == b["metadata"]["resourceVersion"]


def test_generation_bumps_on_spec_changes_only(client, ns):
    p = f"{SJ.format(ns=ns)}/x"
    assert client.post(SJ.format(ns=ns), sj("x")).body["metadata"]["generation"] == 1
    assert client.patch(p, {"metadata": {"labels": {"a": "b"}}}).body["metadata"]["generation"] == 1
    r = client.patch(f"{p}/status", {"status": {"phase": "Running", "observedGeneration": 1}})
    assert r.status == 200 and r.body["metadata"]["generation"] == 1
    assert client.patch(p, {"spec": {"parallelism": 3}}).body["metadata"]["generation"] == 2


def test_status_subresource_separates_spec_and_status(client, ns):
    p = f"{SJ.format(ns=ns)}/x"
    created = client.post(SJ.format(ns=ns), dict(sj("x"), status={"phase": "Sneaky"})).body
    assert "status" not in created, "status is dropped on create when the status subresource is enabled"
    r = client.patch(p, {"spec": {"parallelism": 2}, "status": {"phase": "Ignored"}})
    assert r.body["spec"]["parallelism"] == 2 and "status" not in r.body
    r = client.patch(f"{p}/status", {"spec": {"parallelism": 9}, "status": {"phase": "Running"}})
    assert r.body["status"] == {"phase": "Running"} and r.body["spec"]["parallelism"] == 2
    full = client.get(p).body
    full["status"]["phase"] = "Done"
    full["spec"]["parallelism"] = 7
    r = client.put(f"{p}/status", full)
    assert r.status == 200 and r.body["status"]["phase"] == "Done" and r.body["spec"]["parallelism"] == 2


def test_scale_subresource(client, ns):
    p = f"{SJ.format(ns=ns)}/x"
    client.post(SJ.format(ns=ns), sj("x", parallelism=2))
    client.patch(f"{p}/status", {"status": {"replicas": 2, "selector": "app=x"}})
    sc = client.get(f"{p}/scale").body
    assert sc["kind"] == "Scale" and sc["apiVersion"] == "autoscaling/v1"
    assert sc["spec"] == {"replicas": 2} and sc["status"] == {"replicas": 2, "selector": "app=x"}
    r = client.patch(f"{p}/scale", {"spec": {"replicas": 4}})
    assert r.status == 200 and r.body["spec"]["replicas"] == 4
    obj = client.get(p).body
    assert obj["spec"]["parallelism"] == 4 and obj["metadata"]["generation"] == 2
    sc = client.get(f"{p}/scale").body
    sc["spec"]["replicas"] = 5
    assert client.put(f"{p}/scale", sc).status == 200
    stale = dict(sc, spec={"replicas": 6})
    assert client.put(f"{p}/scale", stale).status == 409


def test_list_pagination_is_consistent(client, ns):
    for i in range(5):
        client.post(f"/api/v1/namespaces/{ns}/configmaps", cm(f"c{i}"))
    page1 = client.get(f"/api/v1/namespaces/{ns}/configmaps", params={"limit": 2}).body
    assert [i["metadata"]["name"] for i in page1["items"]] == ["c0", "c1"]
    assert page1["metadata"]["continue"] and page1["metadata"]["remainingItemCount"] == 4  # + kube-root-ca.crt
    client.post(f"/api/v1/namespaces/{ns}/configmaps", cm("c5"))  # not part of the snapshot
    names = []
    cont = page1["metadata"]["continue"]
    while cont:
        page = client.get(f"/api/v1/namespaces/{ns}/configmaps", params={"limit": 2, "continue": cont}).body
        assert page["metadata"]["resourceVersion"] == page1["metadata"]["resourceVersion"]
        names += [i["metadata"]["name"] for i in page["items"]]
        cont = page["metadata"].get("continue")
    assert names == ["c2", "c3", "c4", "kube-root-ca.crt"]
    # resourceVersion=0 is served from the cache and ignores the limit, as the real server does
    full = client.get(f"/api/v1/namespaces/{ns}/configmaps", params={"limit": 2, "resourceVersion": "0"}).body
    assert len(full["items"]) == 7 and "continue" not in full["metadata"]


def test_label_and_field_selectors(client, ns):
    for name, labels in (("a", {"app": "x", "tier": "db"}), ("b", {"app": "x"}), ("c", {"app": "y"})):
        client.post(f"/api/v1/namespaces/{ns}/configmaps", dict(cm(name), metadata={"name": name, "labels": labels}))

    def names(**params):
        return sorted(i["metadata"]["name"] for i in client.get(f"/api/v1/namespaces/{ns}/configmaps", params=params).body["items"])
    assert names(labelSelector="app=x") == ["a", "b"]
    assert names(labelSelector="app in (x,y),!tier") == ["b", "c"]
    assert names(labelSelector="tier") == ["a"]
    assert names(labelSelector="app!=x") == ["c", "kube-root-ca.crt"]
    assert names(fieldSelector="metadata.name=b") == ["b"]
    assert names(fieldSelector="metadata.name!=b", labelSelector="app") == ["a", "c"]
    r = client.get(f"/api/v1/namespaces/{ns}/configmaps", params={"fieldSelector": "spec.nope=1"})
    assert r.status == 400 and "field label not supported" in r.body["message"]


def test_generate_name_and_missing_namespace(client, ns):
    r = client.post(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"generateName": "gen-"}, "data": {}})
    assert r.status == 201 and r.body["metadata"]["name"].startswith("gen-") and len(r.body["metadata"]["name"]) == 9
    r = client.post("/api/v1/namespaces/nope/configmaps", cm("a"))
    assert r.status == 404 and r.body["message"] == 'namespaces "nope" not found'


def test_invalid_names_are_422(client, ns):
    r = client.post(f"/api/v1/namespaces/{ns}/configmaps", cm("Bad_Name"))
    assert r.status == 422 and r.body["reason"] == "Invalid"
    assert r.body["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                        'a lowercase RFC 1123 subdomain')


def test_discovery_lists_builtins_and_crds(client):
    groups = client.get("/apis").body
    names = [g["name"] for g in groups["groups"]]
    assert {"apps", "coordination.k8s.io", "events.k8s.io", "stator.dev", "apiextensions.k8s.io"} <= set(names)
    core = client.get("/api/v1").body
    res = {r["name"]: r for r in core["resources"]}
    assert res["pods"]["namespaced"] and "watch" in res["pods"]["verbs"]
    assert {"pods/status", "pods/log", "services", "secrets", "persistentvolumeclaims", "events"} <= set(res)
    sjres = {r["name"]: r for r in client.get("/apis/stator.dev/v1alpha1").body["resources"]}
    assert sjres["streamjobs"]["shortNames"] == ["sj"] and sjres["streamjobs"]["kind"] == "StreamJob"
    assert sjres["streamjobs/scale"]["kind"] == "Scale" and "streamjobs/status" in sjres
    agg = client.get("/apis", headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"})
    assert dict(agg.headers)["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    stator = next(i for i in agg.body["items"] if i["metadata"]["name"] == "stator.dev")
    r0 = stator["versions"][0]["resources"][0]
    assert r0["resource"] == "streamjobs" and r0["scope"] == "Namespaced"
    assert {s["subresource"] for s in r0["subresources"]} == {"status", "scale"}


def test_table_uses_printer_columns(client, ns):
    client.post(SJ.format(ns=ns), sj("x", parallelism=3))
    client.patch(f"{SJ.format(ns=ns)}/x/status", {"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True"}]}})
    t = client.get(SJ.format(ns=ns), headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}).body
    assert t["kind"] == "Table"
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Parallelism", "Phase", "Ready", "Age"]
    cells = t["rows"][0]["cells"]
    assert cells[:4] == ["x", 3, "Running", "True"] and cells[4].endswith("s")
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_pod_with_a_missing_service_account_is_forbidden(client, ns):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"serviceAccountName": "stator-operator", "containers": [{"name": "a", "image": "example/app:1"}]}}
    r = client.post(f"/api/v1/namespaces/{ns}/pods", pod)
    assert r.status == 403
    assert r.body["message"] == ('pods "p" is forbidden: error looking up service account '
                                 f'{ns}/stator-operator: serviceaccount "stator-operator" not found')
    client.post(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "stator-operator"}})
    assert client.post(f"/api/v1/namespaces/{ns}/pods", pod).status == 201


def test_limits_that_real_clusters_enforce(client, ns):
    big = "x" * 300000
    r = client.post(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "a", "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": big}}})
    assert r.status == 422 and "metadata.annotations: Too long: must have at most 262144 bytes" in r.body["message"]
    r = client.post(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "b"}, "data": {"k": "y" * 1600000}})
    assert r.status == 500 and "request is too large" in r.body["message"]
    r = client.post(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c"}, "data": {"k": "y" * 3200000}})
    assert r.status == 413


def test_pod_ports_and_resources_are_validated(client, ns):
    def pod(**container):
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"schedulerName": "nobody",
                "containers": [{"name": "a", "image": "example/app:1", **container}]}}
    r = client.post(f"/api/v1/namespaces/{ns}/pods", pod(ports=[{"name": "sidecar-admin-http", "containerPort": 9100}]))
    assert r.status == 422
    assert 'spec.containers[0].ports[0].name: Invalid value: "sidecar-admin-http": must be no more than 15 characters' \
        in r.body["message"]
    r = client.post(f"/api/v1/namespaces/{ns}/pods", pod(resources={"requests": {"memory": "1gb"}}))
    assert r.status == 400 and "quantities must match the regular expression" in r.body["message"]
    r = client.post(f"/api/v1/namespaces/{ns}/pods", pod(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}))
    assert r.status == 422 and "must be less than or equal to cpu limit of 500m" in r.body["message"]
    assert client.post(f"/api/v1/namespaces/{ns}/pods", pod(resources={"requests": {"cpu": "250m", "memory": "64Mi"},
                                                                        "limits": {"memory": "1Gi"}})).status == 201
