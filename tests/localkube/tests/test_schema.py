"""CRD schemas: validation (422 with the real server's messages), CEL rules, defaults and pruning."""

from __future__ import annotations

SJ = "/apis/stator.dev/v1alpha1/namespaces/{ns}/streamjobs"


def sj(name, **spec):
    return {"apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob", "metadata": {"name": name},
            "spec": {"image": "example/app:1", **spec}}


def test_schema_violation_is_422(client, ns):
    r = client.post(SJ.format(ns=ns), sj("x", parallelism=0))
    assert r.status == 422 and r.body["reason"] == "Invalid"
    assert r.body["message"] == ('StreamJob.stator.dev "x" is invalid: spec.parallelism: Invalid value: 0: '
                                 'spec.parallelism in body should be greater than or equal to 1')
    assert r.body["details"] == {"name": "x", "kind": "StreamJob", "group": "stator.dev", "causes": [
        {"reason": "FieldValueInvalid", "message": "Invalid value: 0: spec.parallelism in body should be greater than or equal to 1",
         "field": "spec.parallelism"}]}


def test_several_violations_are_listed(client, ns):
    body = sj("x", parallelism="two", upgradeMode="yolo")
    del body["spec"]["image"]
    r = client.post(SJ.format(ns=ns), body)
    assert r.status == 422
    msg = r.body["message"]
    assert msg.startswith('StreamJob.stator.dev "x" is invalid: [')
    assert 'spec.parallelism: Invalid value: "string": spec.parallelism in body must be of type integer: "string"' in msg
    assert 'spec.upgradeMode: Unsupported value: "yolo": supported values: "stateless", "savepoint", "lastState"' in msg
    assert "spec.image: Required value" in msg


def test_cel_rule_and_immutable_field(client, ns):
    r = client.post(SJ.format(ns=ns), sj("x", parallelism=5, maxParallelism=4))
    assert r.status == 422
    assert r.body["message"] == ('StreamJob.stator.dev "x" is invalid: spec: Invalid value: "object": '
                                 'parallelism must not exceed maxParallelism')
    assert client.post(SJ.format(ns=ns), sj("y", maxParallelism=64)).status == 201
    r = client.patch(f"{SJ.format(ns=ns)}/y", {"spec": {"maxParallelism": 32}})
    assert r.status == 422
    assert r.body["message"] == ('StreamJob.stator.dev "y" is invalid: spec.maxParallelism: Invalid value: "integer": '
                                 'maxParallelism is immutable')
    assert client.patch(f"{SJ.format(ns=ns)}/y", {"spec": {"parallelism": 3}}).status == 200


def test_defaults_are_applied(client, ns):
    r = client.post(SJ.format(ns=ns), sj("x"))
    assert r.body["spec"] == {"image": "example/app:1", "parallelism": 1, "maxParallelism": 128,
                              "upgradeMode": "savepoint", "suspend": False}


def test_unknown_fields_are_pruned_with_a_warning_or_refused_when_strict(client, ns):
    r = client.post(SJ.format(ns=ns), dict(sj("x", bogus=1), extra={"a": 1}))
    assert r.status == 201 and "bogus" not in r.body["spec"] and "extra" not in r.body
    assert any('unknown field \\"spec.bogus\\"' in w for w in r.warnings), r.warnings
    r = client.post(SJ.format(ns=ns), sj("y", bogus=1), params={"fieldValidation": "Strict"})
    assert r.status == 400
    assert r.body["message"] == ('StreamJob in version "v1alpha1" cannot be handled as a StreamJob: '
                                 'strict decoding error: unknown field "spec.bogus"')
    r = client.post(SJ.format(ns=ns), sj("z", podTemplate={"anything": {"goes": [1]}}))
    assert r.body["spec"]["podTemplate"] == {"anything": {"goes": [1]}}, "x-kubernetes-preserve-unknown-fields keeps them"


def test_events_v1_are_validated_like_the_real_server(client, ns):
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
          "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "stator.dev/operator",
          "reportingInstance": "stator-operator-abc", "action": "Reconcile", "reason": "Scaled", "type": "Normal",
          "note": "scaled to 3", "regarding": {"apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob", "name": "x",
                                              "namespace": ns}}
    assert client.post(f"/apis/events.k8s.io/v1/namespaces/{ns}/events", ev).status == 201
    r = client.patch(f"/apis/events.k8s.io/v1/namespaces/{ns}/events/e1",
                     {"series": {"count": 2, "lastObservedTime": "2025-01-01T00:00:05.000000Z"}})
    assert r.status == 200 and r.body["series"]["count"] == 2
    bad = dict(ev, metadata={"name": "e2"})
    del bad["reportingController"]
    r = client.post(f"/apis/events.k8s.io/v1/namespaces/{ns}/events", bad)
    assert r.status == 422 and "reportingController: Required value" in r.body["message"]


def test_events_v1_and_core_events_are_one_collection(client, kubectl, ns):
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
          "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "stator.dev/operator",
          "reportingInstance": "op-0", "action": "Scale", "reason": "Rescaled", "type": "Normal",
          "note": "parallelism 2 -> 3", "regarding": {"apiVersion": "stator.dev/v1alpha1", "kind": "StreamJob",
                                                     "name": "wc", "namespace": ns}}
    assert client.post(f"/apis/events.k8s.io/v1/namespaces/{ns}/events", ev).status == 201
    core = client.get(f"/api/v1/namespaces/{ns}/events/e1").body
    assert core["apiVersion"] == "v1" and core["message"] == "parallelism 2 -> 3"
    assert core["involvedObject"]["name"] == "wc" and core["reportingComponent"] == "stator.dev/operator"
    lst = client.get(f"/api/v1/namespaces/{ns}/events", params={"fieldSelector": "involvedObject.name=wc"}).body
    assert [e["metadata"]["name"] for e in lst["items"]] == ["e1"]
    out = kubectl("get", "events", "-n", ns).stdout
    assert "Rescaled" in out and "streamjob/wc" in out and "parallelism 2 -> 3" in out
    v1 = client.get(f"/apis/events.k8s.io/v1/namespaces/{ns}/events/e1").body
    assert v1["note"] == "parallelism 2 -> 3" and v1["regarding"]["kind"] == "StreamJob"


def test_string_formats_are_checked(client, ns):
    client.post(SJ.format(ns=ns), sj("x"))
    r = client.patch(f"{SJ.format(ns=ns)}/x/status", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}]}})
    assert r.status == 422
    assert ('status.conditions[0].lastTransitionTime: Invalid value: "yesterday": status.conditions[0].'
            'lastTransitionTime in body must be of type date-time: "yesterday"') in r.body["message"]
    r = client.patch(f"{SJ.format(ns=ns)}/x/status", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}})
    assert r.status == 200
