"""pytest fixtures of the end-to-end suite.

- `cluster` (session): the local stand-in, or the real cluster whose kubeconfig STATOR_E2E_KUBECONFIG names.
- `namespace`: a fresh namespace per test, deleted afterwards.
- `s3`: moto's S3 server (or STATOR_E2E_S3_ENDPOINT) with a fresh bucket per test.
- `processes`: starts local processes (the operator, say) and stops all of them after the test.
Everything started is stopped, also when a test fails.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import S3, Cluster, Processes  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = Cluster(workdir=str(tmp_path_factory.mktemp("cluster")))
    c.start()
    try:
        yield c
    finally:
        c.stop()


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
