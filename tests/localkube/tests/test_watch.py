"""List and watch with resource versions, the way kube-runtime's watcher and kubectl use them."""

from __future__ import annotations

import time

from .client import wait_for

CM = "/api/v1/namespaces/{ns}/configmaps"


def cm(name, labels=None, **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}}, "data": data}


def test_watch_delivers_create_update_delete_in_order_with_versions(client, ns):
    path = CM.format(ns=ns)
    lst = client.get(path).body
    w = client.watch(path, {"resourceVersion": lst["metadata"]["resourceVersion"], "allowWatchBookmarks": "true",
                            "timeoutSeconds": "30"})
    try:
        created = client.post(path, cm("a", k="1")).body
        updated = client.put(f"{path}/a", dict(created, data={"k": "2"})).body
        deleted_at = client.delete(f"{path}/a")
        evs = w.collect(3)
    finally:
        w.close()
    assert [e["type"] for e in evs] == ["ADDED", "MODIFIED", "DELETED"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert evs[0]["object"]["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert evs[1]["object"]["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]
    assert evs[1]["object"]["data"] == {"k": "2"}
    assert rvs[2] > rvs[1], "a DELETED event carries the deletion's own resourceVersion"
    assert evs[2]["object"]["kind"] == "ConfigMap" and deleted_at.status == 200


def test_watch_from_old_version_replays_history(client, ns):
    path = CM.format(ns=ns)
    start = client.get(path).body["metadata"]["resourceVersion"]
    client.post(path, cm("a"))
    client.post(path, cm("b"))
    w = client.watch(path, {"resourceVersion": start})
    try:
        evs = w.collect(2)
    finally:
        w.close()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_without_version_starts_with_current_state(client, ns):
    path = CM.format(ns=ns)
    client.post(path, cm("a"))
    w = client.watch(path, {"fieldSelector": "metadata.name=a"})
    try:
        ev = w.collect(1)[0]
    finally:
        w.close()
    assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "a"


def test_too_old_resource_version_is_410_gone(cluster, client, ns):
    path = CM.format(ns=ns)
    old = client.get(path).body["metadata"]["resourceVersion"]
    client.post(path, cm("a"))
    cluster.api.store.compact()  # as etcd compaction would
    w = client.watch(path, {"resourceVersion": old})
    try:
        assert w.status == 200
        ev = w.next()
        assert ev["type"] == "ERROR"
        assert ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
        assert ev["object"]["message"].startswith(f"too old resource version: {old} (")
        assert w.next() is None, "the stream ends after the error"
    finally:
        w.close()
    r = client.get(path, params={"resourceVersion": old, "resourceVersionMatch": "NotOlderThan"})
    assert r.status == 410 and r.body["reason"] == "Expired"


def test_bookmarks_when_asked_and_timeout_closes_the_stream(client, ns):
    path = CM.format(ns=ns)
    rv = client.get(path).body["metadata"]["resourceVersion"]
    w = client.watch(path, {"resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "3"})
    try:
        marks = []
        while True:
            ev = w.next(timeout=10)
            if ev is None:
                break
            assert ev["type"] == "BOOKMARK"
            marks.append(ev)
    finally:
        w.close()
    assert marks, "the server sends bookmarks to a client that allows them"
    assert marks[0]["object"]["kind"] == "ConfigMap" and int(marks[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)
    w = client.watch(path, {"resourceVersion": rv, "timeoutSeconds": "2"})
    try:
        assert w.next(timeout=10) is None, "no bookmarks unless allowed"
    finally:
        w.close()


def test_label_selector_watch_turns_transitions_into_added_and_deleted(client, ns):
    path = CM.format(ns=ns)
    rv = client.get(path).body["metadata"]["resourceVersion"]
    w = client.watch(path, {"resourceVersion": rv, "labelSelector": "owned=yes"})
    try:
        client.post(path, cm("a", {"owned": "no"}))
        client.patch(f"{path}/a", {"metadata": {"labels": {"owned": "yes"}}})
        client.patch(f"{path}/a", {"data": {"x": "1"}})
        client.patch(f"{path}/a", {"metadata": {"labels": {"owned": "no"}}})
        evs = w.collect(3)
    finally:
        w.close()
    assert [e["type"] for e in evs] == ["ADDED", "MODIFIED", "DELETED"]


def test_streaming_list_sends_initial_events_then_a_marked_bookmark(client, ns):
    path = CM.format(ns=ns)
    client.post(path, cm("a"))
    w = client.watch(path, {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
                            "allowWatchBookmarks": "true"})
    try:
        seen = []
        while True:
            ev = w.next()
            seen.append(ev)
            if ev["type"] == "BOOKMARK":
                break
    finally:
        w.close()
    assert {e["object"]["metadata"]["name"] for e in seen[:-1]} == {"a", "kube-root-ca.crt"}
    assert seen[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_all_namespaces_and_kube_runtime_style_relist(client, ns):
    # kube-runtime: list with limit (paged) and resourceVersion, then watch from the list's version
    first = client.get("/api/v1/configmaps", params={"limit": "1"}).body
    items = list(first["items"])
    cont = first["metadata"].get("continue")
    while cont:
        page = client.get("/api/v1/configmaps", params={"limit": "1", "continue": cont}).body
        items += page["items"]
        cont = page["metadata"].get("continue")
    assert any(i["metadata"]["namespace"] == ns for i in items)
    w = client.watch("/api/v1/configmaps", {"resourceVersion": first["metadata"]["resourceVersion"],
                                            "allowWatchBookmarks": "true", "timeoutSeconds": "290"})
    try:
        client.post(CM.format(ns=ns), cm("later"))
        ev = w.collect(1)[0]
    finally:
        w.close()
    assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "later"


def test_watch_threads_end_when_clients_go_away(cluster, client, ns):
    before = len(cluster.api.store.watchers)
    ws = [client.watch(CM.format(ns=ns), {"resourceVersion": "0"}) for _ in range(5)]
    wait_for(lambda: len(cluster.api.store.watchers) >= before + 5, what="watchers registered")
    for w in ws:
        w.close()
    wait_for(lambda: len(cluster.api.store.watchers) <= before, timeout=10, what="watchers released")
    time.sleep(0)
