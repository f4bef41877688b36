"""Fixtures for the stand-in kubelet's own tests: one local cluster (the real control plane and the
stand-in kubelet) for the session, a fresh namespace per test, and a raw HTTPS client with the admin's
certificate."""

from __future__ import annotations

import itertools
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # tests/, so `import localkube` works

from localkube import LocalKube  # noqa: E402
from localkube.tests.client import Client, wait_for  # noqa: E402

FIXTURES = os.path.join(HERE, "fixtures")


def image_map(dir: str) -> str:
    """The fixture app (fixtures/app.py) stands in for every image these tests use."""
    import yaml  # noqa: PLC0415
    app = [sys.executable, os.path.join(FIXTURES, "app.py")]
    path = os.path.join(dir, "image-map.yaml")
    data = {"images": [
        {"image": "example/app:*", "command": app},
        {"image": "example/nonroot:*", "command": app, "user": 1000},
        {"image": "example/sidecar:*", "command": app + ["sidecar"],
         "paths": {"/usr/local/bin/sidecar": sys.executable}},
        {"image": "example/shell:*", "command": ["/bin/sh", "-c"]},
    ]}
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("localkube"))
    lk = LocalKube(workdir=work, image_map=image_map(work), backoff_base=1.0, backoff_max=4.0)
    lk.start()
    try:
        yield lk
    finally:
        lk.stop()


@pytest.fixture(scope="session")
def client(cluster) -> Client:
    return Client(cluster.kubeconfig)


_ns_counter = itertools.count(1)


@pytest.fixture
def ns(client, request) -> str:
    name = f"t{next(_ns_counter)}-{request.node.name.lower().replace('_', '-')[:40].strip('-')}"
    r = client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status == 201, r
    wait_for(lambda: client.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").status == 200,
             timeout=60, what="the namespace's default ServiceAccount")
    yield name
    client.delete(f"/api/v1/namespaces/{name}")
