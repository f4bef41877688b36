"""kube-rs (the operator's client library) against the stand-in: Controller, watcher/reflector, server-side
apply of objects and status, merge-patch finalizers, kube-runtime's event Recorder, Lease concurrency.

The probe is a small Rust program in tests/localkube/kube-probe. It is built on demand, not by this test:

    CARGO_TARGET_DIR=~/.cache/stator-target/kube-probe cargo build --manifest-path tests/localkube/kube-probe/Cargo.toml

and found there, or where LOCALKUBE_KUBE_PROBE points. Without it the test is skipped.
"""

from __future__ import annotations

import os
import subprocess

import pytest


def probe_binary() -> str | None:
    explicit = os.environ.get("LOCALKUBE_KUBE_PROBE")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/stator-target")
    for p in (os.path.join(target, "kube-probe", "debug", "localkube-kube-probe"),
              os.path.join(target, "debug", "localkube-kube-probe")):
        if os.path.exists(p):
            return p
    return None


def test_kube_rs_controller_runs_without_errors_or_busy_loops(cluster, client, ns):
    binary = probe_binary()
    if binary is None:
        pytest.skip("kube-probe not built (see this module's docstring)")
    r = subprocess.run([binary, ns], env={**os.environ, "KUBECONFIG": cluster.kubeconfig}, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PROBE OK" in r.stdout
    assert "reconcile error" not in r.stderr, r.stderr
    evs = client.get(f"/apis/events.k8s.io/v1/namespaces/{ns}/events").body["items"]
    assert any(e["reason"] == "Reconciled" and e["reportingController"] == "stator.dev/probe" for e in evs)
