"""Deletion: finalizers, deletionTimestamp, ownerReferences and cascading deletion."""

from __future__ import annotations

from .client import wait_for

SJ = "/apis/stator.dev/v1alpha1/namespaces/{ns}/streamjobs"


def sj(name):
    return {"apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob", "metadata": {"name": name},
            "spec": {"image": "example/app:1"}}


def owned_cm(name, owner, block=False):
    ref = {"apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob", "name": owner["metadata"]["name"],
           "uid": owner["metadata"]["uid"], "controller": True}
    if block:
        ref["blockOwnerDeletion"] = True
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "ownerReferences": [ref]}}


def exists(client, path):
    return client.get(path).status == 200


def test_finalizer_holds_deletion(client, ns):
    p = f"{SJ.format(ns=ns)}/x"
    body = sj("x")
    body["metadata"]["finalizers"] = ["stator.dev/savepoint"]
    created = client.post(SJ.format(ns=ns), body).body
    r = client.delete(p)
    assert r.status == 200 and r.body["metadata"]["deletionTimestamp"]
    held = client.get(p).body
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["generation"] == created["metadata"]["generation"] + 1
    r = client.patch(p, {"metadata": {"finalizers": ["stator.dev/savepoint", "another"]}})
    assert r.status == 422 and "no new finalizers can be added if the object is being deleted" in r.body["message"]
    assert client.patch(p, {"spec": {"parallelism": 2}}).status == 200, "a deleting object can still be updated"
    r = client.patch(p, {"metadata": {"finalizers": None}})
    assert r.status == 200
    assert client.get(p).status == 404, "removing the last finalizer completes the deletion"


def test_background_cascading_deletion(client, ns):
    owner = client.post(SJ.format(ns=ns), sj("x")).body
    for i in range(3):
        assert client.post(f"/api/v1/namespaces/{ns}/configmaps", owned_cm(f"d{i}", owner)).status == 201
    client.delete(f"{SJ.format(ns=ns)}/x", {"propagationPolicy": "Background"})
    wait_for(lambda: not any(exists(client, f"/api/v1/namespaces/{ns}/configmaps/d{i}") for i in range(3)),
             what="dependents deleted")


def test_foreground_deletion_waits_for_blocking_dependents(client, ns):
    owner = client.post(SJ.format(ns=ns), sj("x")).body
    dep = owned_cm("dep", owner, block=True)
    dep["metadata"]["finalizers"] = ["test/hold"]
    client.post(f"/api/v1/namespaces/{ns}/configmaps", dep)
    r = client.delete(f"{SJ.format(ns=ns)}/x", {"propagationPolicy": "Foreground"})
    assert "foregroundDeletion" in r.body["metadata"]["finalizers"]
    wait_for(lambda: client.get(f"/api/v1/namespaces/{ns}/configmaps/dep").body["metadata"].get("deletionTimestamp"),
             what="dependent marked for deletion")
    assert exists(client, f"{SJ.format(ns=ns)}/x"), "the owner waits for its blocking dependent"
    client.patch(f"/api/v1/namespaces/{ns}/configmaps/dep", {"metadata": {"finalizers": None}})
    wait_for(lambda: not exists(client, f"{SJ.format(ns=ns)}/x"), what="owner deleted after its dependent")


def test_orphan_deletion_keeps_dependents(client, ns):
    owner = client.post(SJ.format(ns=ns), sj("x")).body
    client.post(f"/api/v1/namespaces/{ns}/configmaps", owned_cm("dep", owner))
    client.delete(f"{SJ.format(ns=ns)}/x", {"propagationPolicy": "Orphan"})
    wait_for(lambda: not exists(client, f"{SJ.format(ns=ns)}/x"), what="owner deleted")
    dep = client.get(f"/api/v1/namespaces/{ns}/configmaps/dep").body
    assert "ownerReferences" not in dep["metadata"]


def test_dependent_of_a_missing_owner_is_collected(client, ns):
    ghost = {"metadata": {"name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}}
    client.post(f"/api/v1/namespaces/{ns}/configmaps", owned_cm("dep", ghost))
    wait_for(lambda: not exists(client, f"/api/v1/namespaces/{ns}/configmaps/dep"), what="orphan collected")


def test_deleting_a_namespace_deletes_its_contents(client):
    client.post("/api/v1/namespaces", {"metadata": {"name": "doomed"}})
    client.post("/api/v1/namespaces/doomed/configmaps", {"metadata": {"name": "c"}})
    r = client.delete("/api/v1/namespaces/doomed")
    assert r.status == 200 and r.body["status"]["phase"] == "Terminating"
    r = client.post("/api/v1/namespaces/doomed/configmaps", {"metadata": {"name": "d"}})
    assert r.status in (403, 404)
    wait_for(lambda: client.get("/api/v1/namespaces/doomed").status == 404, what="namespace gone")
    assert client.delete("/api/v1/namespaces/default").status == 403


def test_preconditions_on_delete(client, ns):
    created = client.post(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c"}}).body
    r = client.delete(f"/api/v1/namespaces/{ns}/configmaps/c", {"preconditions": {"uid": "other"}})
    assert r.status == 409 and "Precondition failed: UID in precondition: other" in r.body["message"]
    r = client.delete(f"/api/v1/namespaces/{ns}/configmaps/c", {"preconditions": {"uid": created["metadata"]["uid"]}})
    assert r.status == 200
