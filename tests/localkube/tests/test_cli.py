"""`python -m localkube serve`: prints where it is, serves kubectl, and on SIGTERM stops every process it
started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import yaml

from .client import wait_for
from .conftest import FIXTURES, KUBECTL, image_map

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_serve_runs_pods_and_stops_them_on_sigterm(tmp_path):
    imap = tmp_path / "images.yaml"
    imap.write_text(yaml.safe_dump(image_map()))
    proc = subprocess.Popen([sys.executable, "-m", "localkube", "serve", "--dir", str(tmp_path / "lk"),
                             "--image-map", str(imap), "--crds", os.path.join(FIXTURES, "*-crd.yaml")],
                            cwd=TESTS_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        m = re.match(r"^localkube ready: url=(http://127\.0\.0\.1:\d+) kubeconfig=(\S+) dir=(\S+)$", line.strip())
        assert m, line
        kc = m.group(2)

        def k(*a, **kw):
            return subprocess.run([KUBECTL, "--kubeconfig", kc, "--cache-dir", str(tmp_path / "cache"), *a],
                                  capture_output=True, text=True, **kw)
        assert "streamjobs.stator.dev" in k("get", "crd").stdout
        marker = tmp_path / "marker"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "app", "image": "example/app:1", "env": [{"name": "IGNORE_TERM", "value": "1"},
                                                              {"name": "MARKER", "value": str(marker)}]}],
            "terminationGracePeriodSeconds": 30}}
        assert k("apply", "-f", "-", input=json.dumps(pod)).returncode == 0
        wait_for(lambda: marker.exists() and marker.read_text().startswith("started"), what="container started")
        pid = int(marker.read_text().split()[1])
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "localkube stopped" in out, out
        assert time.monotonic() - t < 10, "a stopping stand-in does not wait out pods' grace periods"
        assert not os.path.exists(f"/proc/{pid}"), "the container process is gone"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
