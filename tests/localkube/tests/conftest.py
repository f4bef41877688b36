"""Fixtures for the conformance suite: one stand-in for the session, a fresh namespace per test, the real
kubectl, and a raw HTTP client."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # tests/, so `import localkube` works

from localkube import LocalKube  # noqa: E402
from localkube.tests.client import Client  # noqa: E402

FIXTURES = os.path.join(HERE, "fixtures")
KUBECTL = os.environ.get("KUBECTL", "kubectl")


def image_map() -> dict:
    app = [sys.executable, os.path.join(FIXTURES, "app.py")]
    return {"images": [
        {"image": "example/app:*", "command": app},
        {"image": "example/sidecar:*", "command": app + ["sidecar"],
         "paths": {"/usr/local/bin/sidecar": sys.executable}},
        {"image": "example/shell:*", "command": ["/bin/sh", "-c"]},
    ]}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    lk = LocalKube(workdir=str(tmp_path_factory.mktemp("localkube")), image_map=image_map(),
                   crds=[os.path.join(FIXTURES, "*-crd.yaml")], backoff_base=1.0, backoff_max=4.0,
                   bookmark_interval=1.0)
    lk.start()
    try:
        yield lk
    finally:
        lk.stop()


@pytest.fixture(scope="session")
def client(cluster) -> Client:
    return Client(cluster.url)


_ns_counter = itertools.count(1)


@pytest.fixture
def ns(client, request) -> str:
    name = f"t{next(_ns_counter)}-{request.node.name.lower().replace('_', '-')[:40].strip('-')}"
    r = client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status == 201, r
    yield name
    client.delete(f"/api/v1/namespaces/{name}")


class Kubectl:
    def __init__(self, kubeconfig: str, cache_dir: str):
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir

    def __call__(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60):
        cmd = [KUBECTL, "--kubeconfig", self.kubeconfig, "--cache-dir", self.cache_dir, *args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r


@pytest.fixture(scope="session")
def kubectl(cluster, tmp_path_factory) -> Kubectl:
    return Kubectl(cluster.kubeconfig, str(tmp_path_factory.mktemp("kubectl-cache")))
