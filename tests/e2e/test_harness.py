"""The harness itself: each fixture works and cleans up after itself."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

from harness import ManagedProcess, render_chart, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))


def test_cluster_answers_kubectl(cluster, namespace):
    out = cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}},
                        namespace=namespace)
    assert out.strip() == "configmap/c created"
    assert cluster.get("configmap", "c", namespace)["data"] == {"k": "v"}


def test_s3_bucket_round_trip(s3):
    c = s3.client()
    c.put_object(Bucket=s3.bucket, Key="a/b", Body=b"hello")
    assert c.get_object(Bucket=s3.bucket, Key="a/b")["Body"].read() == b"hello"
    assert s3.keys("a/") == ["a/b"]
    assert s3.env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


def test_processes_are_stopped_with_their_children(processes, tmp_path):
    script = tmp_path / "parent.sh"
    script.write_text("sleep 300 &\necho $! > " + str(tmp_path / "child") + "\necho ready\nwait\n")
    p = processes.start(["/bin/sh", str(script)], name="parent", ready_log="ready")
    child = int((tmp_path / "child").read_text())
    assert p.alive and os.path.exists(f"/proc/{child}")
    processes.stop()
    assert not p.alive
    wait_until(lambda: not os.path.exists(f"/proc/{child}") or "Z" in open(f"/proc/{child}/stat").read().split()[2],
               timeout=5, what="child gone")


def test_a_process_ignoring_sigterm_is_killed(tmp_path):
    p = ManagedProcess([sys.executable, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                        "print('up', flush=True); time.sleep(60)"], log_dir=str(tmp_path))
    p.start()
    p.wait_for_log("up")
    t = time.monotonic()
    assert p.stop(grace=1) == -9
    assert time.monotonic() - t < 5


def test_helm_chart_renders_and_installs(cluster, namespace, tmp_path):
    pytest.importorskip("helm_python")
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: {{ .Release.Name }}-config
          namespace: {{ .Release.Namespace }}
        data:
          greeting: {{ .Values.greeting | quote }}
        """))
    rendered = render_chart(str(chart), "rel", namespace, {"greeting": "hi"})
    assert "rel-config" in rendered["manifests"]
    cluster.helm_install(str(chart), "rel", namespace, {"greeting": "hi"})
    cm = cluster.get("configmap", "rel-config", namespace)
    assert cm["data"] == {"greeting": "hi"}
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert cm["metadata"]["annotations"]["meta.helm.sh/release-name"] == "rel"
