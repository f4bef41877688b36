"""pytest fixtures of the end-to-end suite and the chart tests (one session, one cluster).

- `cluster` (session): the local cluster (the real control plane and the stand-in kubelet), or the real
  cluster whose kubeconfig STATOR_E2E_KUBECONFIG names.
- `namespace`: a fresh namespace per test that enforces Pod Security `restricted`, deleted afterwards.
- `s3`: moto's S3 server (or STATOR_E2E_S3_ENDPOINT) with a fresh bucket per test.
- `processes`: starts local processes (the operator, say) and stops all of them after the test.
Everything started is stopped, also when a test fails.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e"))

from harness import S3, Cluster, Processes  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = Cluster(workdir=str(tmp_path_factory.mktemp("cluster")))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def no_request_refused(request):
    """On the local cluster, a test fails if the API server refused any request of a service account
    outside kube-system (the operator runs as the chart's): the chart lacks a rule the operator needs."""
    if "cluster" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("cluster")
    if not isinstance(cluster, Cluster) or not cluster.local:
        yield
        return
    cp = cluster.localkube.control_plane
    offset = cp.audit_offset()
    yield
    refused = cp.refused(offset)
    if refused:
        lines = sorted({f"{e['user']['username']} {e['verb']} {_resource(e.get('objectRef') or {})}: "
                        f"{(e.get('responseStatus') or {}).get('message', '')[:200]}" for e in refused})
        pytest.fail("the API server refused requests (a missing RBAC rule in the chart?):\n" + "\n".join(lines))


def _resource(ref: dict) -> str:
    r = ref.get("resource", "")
    if ref.get("subresource"):
        r += "/" + ref["subresource"]
    if ref.get("apiGroup"):
        r += "." + ref["apiGroup"]
    return f"{r} {ref.get('namespace', '')}/{ref.get('name', '')}"


@pytest.fixture
def namespace(cluster):
    name = cluster.create_namespace()
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


@pytest.fixture
def s3(tmp_path):
    s = S3(log_dir=str(tmp_path / "s3"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def processes(tmp_path):
    p = Processes(str(tmp_path / "logs"))
    try:
        yield p
    finally:
        p.stop()
