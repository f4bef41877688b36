"""Patches and server-side apply as a kube-rs operator uses them."""

from __future__ import annotations

import yaml

SJ = "/apis/stator.dev/v1alpha1/namespaces/{ns}/streamjobs"


def sj(name, **spec):
    return {"apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob", "metadata": {"name": name},
            "spec": {"image": "example/app:1", **spec}}


def managers(obj):
    return {(m["manager"], m["operation"], m.get("subresource", "")) for m in obj["metadata"].get("managedFields", [])}


def test_merge_patch_adds_and_removes_finalizers(client, ns):
    client.post(SJ.format(ns=ns), sj("x"))
    p = f"{SJ.format(ns=ns)}/x"
    r = client.patch(p, {"metadata": {"finalizers": ["stator.dev/savepoint"]}})
    assert r.body["metadata"]["finalizers"] == ["stator.dev/savepoint"]
    r = client.patch(p, {"metadata": {"finalizers": None}})
    assert "finalizers" not in r.body["metadata"]


def test_json_patch_with_test_op(client, ns):
    client.post(SJ.format(ns=ns), sj("x"))
    p = f"{SJ.format(ns=ns)}/x"
    ops = [{"op": "test", "path": "/spec/parallelism", "value": 1}, {"op": "replace", "path": "/spec/parallelism", "value": 2}]
    r = client.patch(p, ops, content_type="application/json-patch+json")
    assert r.status == 200 and r.body["spec"]["parallelism"] == 2
    r = client.patch(p, ops, content_type="application/json-patch+json")
    assert r.status == 422


def test_json_patch_test_of_a_missing_member_equals_null(client, ns):
    # kube-runtime adds the first finalizer this way; the real API server accepts it.
    client.post(SJ.format(ns=ns), sj("x"))
    p = f"{SJ.format(ns=ns)}/x"
    ops = [{"op": "test", "path": "/metadata/finalizers", "value": None},
           {"op": "add", "path": "/metadata/finalizers", "value": ["stator.dev/cleanup"]}]
    r = client.patch(p, ops, content_type="application/json-patch+json")
    assert r.status == 200 and r.body["metadata"]["finalizers"] == ["stator.dev/cleanup"]
    # With the member present, the same test fails.
    r = client.patch(p, ops, content_type="application/json-patch+json")
    assert r.status == 422


def test_strategic_merge_patch_merges_containers_by_name(client, ns):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"schedulerName": "nobody", "containers": [
               {"name": "a", "image": "example/app:1", "env": [{"name": "X", "value": "1"}]},
               {"name": "b", "image": "example/app:1"}]}}
    client.post(f"/api/v1/namespaces/{ns}/pods", pod)
    r = client.patch(f"/api/v1/namespaces/{ns}/pods/p", {"spec": {"containers": [{"name": "b", "image": "example/app:2"}]}},
                     content_type="application/strategic-merge-patch+json")
    assert r.status == 200, r
    cs = {c["name"]: c for c in r.body["spec"]["containers"]}
    assert cs["a"]["image"] == "example/app:1" and cs["b"]["image"] == "example/app:2"
    assert cs["a"]["env"] == [{"name": "X", "value": "1"}]
    r = client.patch(f"{SJ.format(ns=ns)}", {}, content_type="application/strategic-merge-patch+json")
    client.post(SJ.format(ns=ns), sj("x"))
    r = client.patch(f"{SJ.format(ns=ns)}/x", {"spec": {}}, content_type="application/strategic-merge-patch+json")
    assert r.status == 415, "custom resources do not take strategic merge patches"


def test_pod_spec_is_immutable_except_images(client, ns):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"schedulerName": "nobody", "containers": [{"name": "a", "image": "example/app:1"}]}}
    client.post(f"/api/v1/namespaces/{ns}/pods", pod)
    r = client.patch(f"/api/v1/namespaces/{ns}/pods/p",
                     {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]}},
                     content_type="application/strategic-merge-patch+json")
    assert r.status == 422 and "pod updates may not change fields other than" in r.body["message"]


def test_server_side_apply_creates_updates_and_removes_fields(client, ns):
    p = f"{SJ.format(ns=ns)}/x"
    cfg = sj("x", parallelism=2, config={"a": "1", "b": "2"}, env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    r = client.apply(p, yaml.safe_dump(cfg), manager="stator-operator", force=True)
    assert r.status == 201, r
    assert managers(r.body) == {("stator-operator", "Apply", "")}
    mf = r.body["metadata"]["managedFields"][0]
    assert mf["fieldsType"] == "FieldsV1" and mf["apiVersion"] == "stator.dev/v1alpha1"
    assert mf["fieldsV1"]["f:spec"]["f:env"]['k:{"name":"A"}'] == {".": {}, "f:name": {}, "f:value": {}}
    # another manager sets a field; the operator's next apply leaves it alone
    client.patch(p, {"metadata": {"labels": {"team": "data"}}, "spec": {"savepointNonce": "n1"}},
                 params={"fieldManager": "kubectl-edit"})
    cfg2 = sj("x", parallelism=3, config={"a": "1"}, env=[{"name": "A", "value": "1"}])
    r = client.apply(p, yaml.safe_dump(cfg2), manager="stator-operator", force=True)
    assert r.status == 200
    spec = r.body["spec"]
    assert spec["parallelism"] == 3
    assert spec["config"] == {"a": "1"}, "a field the manager no longer applies is removed"
    assert spec["env"] == [{"name": "A", "value": "1"}], "so is an associative list item"
    assert spec["savepointNonce"] == "n1" and r.body["metadata"]["labels"] == {"team": "data"}
    assert ("kubectl-edit", "Update", "") in managers(r.body)
    # applying the same configuration again writes nothing
    again = client.apply(p, yaml.safe_dump(cfg2), manager="stator-operator", force=True)
    assert again.body["metadata"]["resourceVersion"] == r.body["metadata"]["resourceVersion"]


def test_server_side_apply_conflicts_without_force(client, ns):
    p = f"{SJ.format(ns=ns)}/x"
    client.apply(p, yaml.safe_dump(sj("x", parallelism=2)), manager="stator-operator")
    r = client.apply(p, yaml.safe_dump(sj("x", parallelism=5)), manager="someone-else")
    assert r.status == 409 and r.body["reason"] == "Conflict"
    assert r.body["message"] == ('Apply failed with 1 conflict: conflict with "stator-operator": .spec.parallelism')
    assert r.body["details"]["causes"][0] == {"reason": "FieldManagerConflict",
                                              "message": 'conflict with "stator-operator"', "field": ".spec.parallelism"}
    r = client.apply(p, yaml.safe_dump(sj("x", parallelism=5)), manager="someone-else", force=True)
    assert r.status == 200 and r.body["spec"]["parallelism"] == 5
    fields = {m["manager"]: m["fieldsV1"] for m in r.body["metadata"]["managedFields"]}
    assert "f:parallelism" not in fields["stator-operator"]["f:spec"], "force takes the field over"
    # the same value applied by two managers is shared, not a conflict
    r = client.apply(p, yaml.safe_dump(sj("x", parallelism=5)), manager="third")
    assert r.status == 200


def test_apply_to_status_subresource(client, ns):
    p = f"{SJ.format(ns=ns)}/x"
    client.apply(p, yaml.safe_dump(sj("x")), manager="stator-operator", force=True)
    st = {"apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob", "metadata": {"name": "x"},
          "status": {"phase": "Running", "observedGeneration": 1,
                     "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"}]}}
    r = client.apply(f"{p}/status", yaml.safe_dump(st), manager="stator-operator", force=True)
    assert r.status == 200 and r.body["status"]["phase"] == "Running"
    assert ("stator-operator", "Apply", "status") in managers(r.body)
    st["status"] = {"phase": "Upgrading", "observedGeneration": 1}
    r = client.apply(f"{p}/status", yaml.safe_dump(st), manager="stator-operator", force=True)
    assert r.body["status"] == {"phase": "Upgrading", "observedGeneration": 1}, "dropped conditions are removed"
    # status in an apply to the main resource is ignored
    r = client.apply(p, yaml.safe_dump(dict(sj("x"), status={"phase": "Nope"})), manager="stator-operator", force=True)
    assert r.body["status"]["phase"] == "Upgrading"


def test_apply_with_unknown_field_is_rejected(client, ns):
    r = client.apply(f"{SJ.format(ns=ns)}/x", yaml.safe_dump(sj("x", bogus=1)), manager="stator-operator", force=True)
    assert r.status == 400 and ".spec.bogus: field not declared in schema" in r.body["message"]


def test_apply_pod_twice_with_server_defaults_is_a_noop(client, ns):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "x"}},
           "spec": {"schedulerName": "nobody", "containers": [
               {"name": "app", "image": "example/app:1", "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}}}],
               "volumes": [{"name": "d", "emptyDir": {}}]}}
    path = f"/api/v1/namespaces/{ns}/pods/p"
    a = client.apply(path, yaml.safe_dump(pod), manager="stator-operator", force=True)
    assert a.status == 201
    c = a.body["spec"]["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent" and c["terminationMessagePath"] == "/dev/termination-log"
    assert c["readinessProbe"]["periodSeconds"] == 10 and c["ports"][0]["protocol"] == "TCP"
    assert a.body["spec"]["restartPolicy"] == "Always" and a.body["spec"]["terminationGracePeriodSeconds"] == 30
    b = client.apply(path, yaml.safe_dump(pod), manager="stator-operator", force=True)
    assert b.status == 200 and b.body["metadata"]["resourceVersion"] == a.body["metadata"]["resourceVersion"]
