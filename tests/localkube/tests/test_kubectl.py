"""The real kubectl on the machine drives the stand-in."""

from __future__ import annotations

import json
import os
import textwrap

from .client import wait_for

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def sj_yaml(name, parallelism=2, extra=""):
    return textwrap.dedent(f"""\
        apiVersion: stator.dev/v1alpha1
        kind: StreamJob
        metadata:
          name: {name}
        spec:
          image: example/app:1
          parallelism: {parallelism}
        """) + extra


def test_apply_get_yaml_scale_delete_custom_resource(kubectl, ns):
    r = kubectl("apply", "-n", ns, "-f", "-", input=sj_yaml("wc"))
    assert r.stdout.strip() == "streamjob.stator.dev/wc created"
    r = kubectl("get", "sj", "-n", ns)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PARALLELISM", "PHASE", "READY", "AGE"]
    assert lines[1].split()[:2] == ["wc", "2"]
    obj = json.loads(kubectl("get", "streamjob", "wc", "-n", ns, "-o", "json").stdout)
    assert obj["spec"]["maxParallelism"] == 128 and obj["metadata"]["generation"] == 1
    y = kubectl("get", "sj", "wc", "-n", ns, "-o", "yaml").stdout
    assert "kind: StreamJob" in y and "parallelism: 2" in y
    assert kubectl("scale", "sj/wc", "-n", ns, "--replicas=5").stdout.strip() == "streamjob.stator.dev/wc scaled"
    assert json.loads(kubectl("get", "sj", "wc", "-n", ns, "-o", "json").stdout)["spec"]["parallelism"] == 5
    r = kubectl("apply", "-n", ns, "-f", "-", input=sj_yaml("wc", 3))
    assert r.stdout.strip() == "streamjob.stator.dev/wc configured"
    r = kubectl("apply", "-n", ns, "-f", "-", input=sj_yaml("wc", 3))
    assert r.stdout.strip() == "streamjob.stator.dev/wc unchanged"
    r = kubectl("delete", "sj", "wc", "-n", ns)
    assert r.stdout.strip() == 'streamjob.stator.dev "wc" deleted'
    assert "No resources found" in kubectl("get", "sj", "-n", ns).stderr


def test_kubectl_reports_422_and_strict_field_errors(kubectl, ns):
    r = kubectl("apply", "-n", ns, "-f", "-", input=sj_yaml("bad", 0), check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == ('The StreamJob "bad" is invalid: spec.parallelism: Invalid value: 0: '
                                'spec.parallelism in body should be greater than or equal to 1')
    r = kubectl("apply", "-n", ns, "-f", "-", input=sj_yaml("unk", 1, "  bogus: 1\n"), check=False)
    assert r.returncode == 1 and 'strict decoding error: unknown field "spec.bogus"' in r.stderr


def test_server_side_apply_from_kubectl(kubectl, ns):
    r = kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=sj_yaml("ssa"))
    assert r.stdout.strip() == "streamjob.stator.dev/ssa serverside-applied"
    obj = json.loads(kubectl("get", "sj", "ssa", "-n", ns, "-o", "json", "--show-managed-fields").stdout)
    assert obj["metadata"]["managedFields"][0]["manager"] == "kubectl"
    r = kubectl("apply", "--server-side", "--field-manager=other", "-n", ns, "-f", "-", input=sj_yaml("ssa", 4),
                check=False)
    assert r.returncode != 0 and "conflict" in r.stderr.lower()


def test_builtin_kinds_pods_and_logs(kubectl, ns):
    manifest = textwrap.dedent("""\
        apiVersion: v1
        kind: Service
        metadata: {name: job}
        spec:
          clusterIP: None
          selector: {app: job}
          ports: [{name: admin, port: 9100}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: job-0, labels: {app: job}}
        spec:
          terminationGracePeriodSeconds: 3
          containers:
            - name: app
              image: example/app:1
              env:
                - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
              readinessProbe:
                httpGet: {path: /readyz, port: 8080}
                periodSeconds: 1
        """)
    r = kubectl("apply", "-n", ns, "-f", "-", input=manifest)
    assert r.stdout.splitlines() == ["service/job created", "pod/job-0 created"]
    kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/job-0", "--timeout=30s")
    out = kubectl("get", "pods", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert out[1].split()[:4] == ["job-0", "1/1", "Running", "0"]
    svc = kubectl("get", "svc", "job", "-n", ns).stdout.splitlines()[1].split()
    assert svc[:3] == ["job", "ClusterIP", "None"]
    logs = wait_for(lambda: kubectl("logs", "job-0", "-n", ns).stdout, what="logs")
    assert "app starting" in logs
    r = kubectl("delete", "pod", "job-0", "-n", ns)
    assert r.stdout.strip() == 'pod "job-0" deleted'
    assert kubectl("get", "pod", "job-0", "-n", ns, check=False).returncode == 1


def test_kubectl_apply_updates_builtin_with_strategic_merge(kubectl, ns):
    cm = textwrap.dedent("""\
        apiVersion: v1
        kind: Secret
        metadata: {name: admin, labels: {a: "1"}}
        stringData: {token: one}
        """)
    kubectl("apply", "-n", ns, "-f", "-", input=cm)
    r = kubectl("apply", "-n", ns, "-f", "-", input=cm.replace("one", "two").replace('a: "1"', 'b: "2"'))
    assert r.stdout.strip() == "secret/admin configured"
    obj = json.loads(kubectl("get", "secret", "admin", "-n", ns, "-o", "json").stdout)
    assert obj["metadata"]["labels"] == {"b": "2"} and obj["data"]["token"] == "dHdv"


def test_kubectl_get_events_and_describe_free_basics(kubectl, ns):
    assert kubectl("get", "events", "-n", ns).returncode == 0
    assert kubectl("get", "nodes").stdout.splitlines()[1].split()[:2] == ["localkube", "Ready"]
    assert kubectl("api-resources").stdout.count("streamjobs") == 1
    assert "v1.33" in kubectl("version").stdout


def test_deployment_rolls_out_and_updates(kubectl, ns):
    manifest = textwrap.dedent("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: op}
        spec:
          replicas: 1
          selector: {matchLabels: {app: op}}
          template:
            metadata: {labels: {app: op}}
            spec:
              terminationGracePeriodSeconds: 2
              containers:
                - name: op
                  image: example/app:1
                  env:
                    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
                  readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}
        """)
    kubectl("apply", "-n", ns, "-f", "-", input=manifest)
    kubectl("rollout", "status", "-n", ns, "deploy/op", "--timeout=30s")
    first = json.loads(kubectl("get", "pods", "-n", ns, "-l", "app=op", "-o", "json").stdout)["items"]
    assert len(first) == 1 and first[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    kubectl("set", "env", "-n", ns, "deploy/op", "X=1")
    kubectl("rollout", "status", "-n", ns, "deploy/op", "--timeout=30s")
    pods = wait_for(lambda: (lambda items: items if len(items) == 1 and items[0]["metadata"]["name"] != first[0]["metadata"]["name"]
                             else None)(json.loads(kubectl("get", "pods", "-n", ns, "-l", "app=op", "-o", "json").stdout)["items"]),
                    what="old pod replaced")
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["X"] == "1"
    rs = json.loads(kubectl("get", "rs", "-n", ns, "-o", "json").stdout)["items"]
    assert sorted(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for r in rs) == ["1", "2"]
    kubectl("delete", "deploy", "op", "-n", ns)
    wait_for(lambda: not json.loads(kubectl("get", "pods,rs", "-n", ns, "-o", "json").stdout)["items"],
             what="pods and replicasets collected")


def test_auth_can_i_and_explain(kubectl):
    assert kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    assert "parallelism\t<integer>" in kubectl("explain", "sj.spec").stdout
