"""The end-to-end harness: a cluster (the local stand-in, or a real one named by STATOR_E2E_KUBECONFIG),
S3 (moto's server, or an endpoint named by STATOR_E2E_S3_ENDPOINT), and local processes (the operator,
say) that are always stopped, also when a test fails or the test run itself is killed.

Usable from pytest (see conftest.py) and from scripts (the demo): every class has start() and stop() and
is a context manager.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import yaml

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from localkube import LocalKube  # noqa: E402

KUBECTL = os.environ.get("KUBECTL", "kubectl")
DEFAULT_IMAGE_MAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images.yaml")


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(fn, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # noqa: BLE001
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


# ---------------------------------------------------------------------------------------------------
# processes


class ManagedProcess:
    """A local process in its own process group, output to a log file; stop() sends SIGTERM to the
    group, waits, then SIGKILL. It dies with the test process even if that is killed."""

    def __init__(self, argv: list[str], name: str | None = None, env: dict | None = None, cwd: str | None = None,
                 log_dir: str | None = None):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="stator-e2e-logs-")
        self.log_path = os.path.join(self.log_dir, f"{self.name}.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ManagedProcess":
        os.makedirs(self.log_dir, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        def check():
            if text in self.log():
                return True
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not log {text!r} within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, grace: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return self.proc.returncode

    def __enter__(self) -> "ManagedProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Processes:
    """Starts processes and stops every one of them, in reverse order, on stop()."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.started: list[ManagedProcess] = []

    def start(self, argv: list[str], name: str | None = None, env: dict | None = None, cwd: str | None = None,
              ready_log: str | None = None, ready_timeout: float = 30.0) -> ManagedProcess:
        p = ManagedProcess(argv, name=name, env=env, cwd=cwd, log_dir=self.log_dir)
        self.started.append(p)
        p.start()
        if ready_log:
            p.wait_for_log(ready_log, ready_timeout)
        return p

    def stop(self) -> None:
        for p in reversed(self.started):
            p.stop()
        self.started.clear()


# ---------------------------------------------------------------------------------------------------
# S3


class S3:
    """moto's S3 server on loopback, or an existing endpoint (STATOR_E2E_S3_ENDPOINT with
    STATOR_E2E_S3_ACCESS_KEY / STATOR_E2E_S3_SECRET_KEY / STATOR_E2E_S3_REGION)."""

    def __init__(self, bucket: str | None = None, log_dir: str | None = None):
        self.bucket = bucket or f"stator-e2e-{uuid.uuid4().hex[:8]}"
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="stator-e2e-s3-")
        self.proc: ManagedProcess | None = None
        ext = os.environ.get("STATOR_E2E_S3_ENDPOINT")
        self.external = bool(ext)
        self.endpoint = ext or ""
        self.access_key = os.environ.get("STATOR_E2E_S3_ACCESS_KEY", "testing")
        self.secret_key = os.environ.get("STATOR_E2E_S3_SECRET_KEY", "testing")
        self.region = os.environ.get("STATOR_E2E_S3_REGION", "us-east-1")

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process that talks to this S3 (AWS SDK conventions)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_ENDPOINT_URL_S3": self.endpoint}

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    def start(self) -> "S3":
        if not self.external:
            port = free_port()
            moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
            argv = [moto] if os.path.exists(moto) else [sys.executable, "-m", "moto.server"]
            self.proc = ManagedProcess(argv + ["-H", "127.0.0.1", "-p", str(port)], name="moto", log_dir=self.log_dir)
            self.proc.start()
            self.endpoint = f"http://127.0.0.1:{port}"

            def up():
                if not self.proc.alive:
                    raise RuntimeError(f"moto_server exited:\n{self.proc.log()}")
                with urllib.request.urlopen(self.endpoint + "/", timeout=1) as r:
                    return r.status == 200
            wait_until(up, timeout=30, what="moto_server")
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        import boto3  # noqa: PLC0415  (installed with moto)
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def keys(self, prefix: str = "") -> list[str]:
        out, token = [], None
        c = self.client()
        while True:
            kw = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            r = c.list_objects_v2(**kw)
            out += [o["Key"] for o in r.get("Contents", [])]
            if not r.get("IsTruncated"):
                return out
            token = r["NextContinuationToken"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        elif self.external:
            try:
                c = self.client()
                for k in self.keys():
                    c.delete_object(Bucket=self.bucket, Key=k)
                c.delete_bucket(Bucket=self.bucket)
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> "S3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------
# clusters


class Cluster:
    """A Kubernetes cluster to run against: `kubeconfig`, `kubectl(...)`, and helpers. `local` says whether it
    is the stand-in (pods run as local processes, `localkube` is the LocalKube object)."""

    def __init__(self, kubeconfig: str | None = None, workdir: str | None = None, image_map: str | None = None,
                 crds: list[str] | None = None):
        self.external_kubeconfig = kubeconfig or os.environ.get("STATOR_E2E_KUBECONFIG")
        self.local = not self.external_kubeconfig
        self.workdir = workdir or tempfile.mkdtemp(prefix="stator-e2e-")
        self.image_map = image_map or os.environ.get("STATOR_IMAGE_MAP") or DEFAULT_IMAGE_MAP
        self.crds = crds if crds is not None else [os.path.join(REPO, "crds", "*.yaml")]
        self.localkube: LocalKube | None = None
        self.kubeconfig = self.external_kubeconfig or ""
        self.cache_dir = os.path.join(self.workdir, "kubectl-cache")

    def start(self) -> "Cluster":
        if self.local:
            self.localkube = LocalKube(workdir=os.path.join(self.workdir, "localkube"), image_map=self.image_map,
                                       crds=self.crds)
            self.localkube.start()
            self.kubeconfig = self.localkube.kubeconfig
        else:
            import glob  # noqa: PLC0415
            for pattern in self.crds:
                for path in sorted(glob.glob(pattern)):
                    self.kubectl("apply", "--server-side", "--force-conflicts", "-f", path)
            self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        return self

    def stop(self) -> None:
        if self.localkube is not None:
            self.localkube.stop()
            self.localkube = None

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """Environment for a local process (the operator) that talks to this cluster."""
        return {"KUBECONFIG": self.kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120,
                namespace: str | None = None) -> subprocess.CompletedProcess:
        cmd = [KUBECTL, "--kubeconfig", self.kubeconfig, "--cache-dir", self.cache_dir]
        if namespace:
            cmd += ["-n", namespace]
        cmd += list(args)
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def apply(self, manifest: str | dict | list, namespace: str | None = None, server_side: bool = False) -> str:
        if isinstance(manifest, dict):
            manifest = yaml.safe_dump(manifest)
        elif isinstance(manifest, list):
            manifest = yaml.safe_dump_all(manifest)
        args = ["apply", "-f", "-"] + (["--server-side"] if server_side else [])
        return self.kubectl(*args, input=manifest, namespace=namespace).stdout

    def get(self, kind: str, name: str | None = None, namespace: str | None = None, check: bool = True):
        args = ["get", kind] + ([name] if name else []) + ["-o", "json"]
        r = self.kubectl(*args, namespace=namespace, check=check)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def create_namespace(self, prefix: str = "e2e") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        return name

    def delete_namespace(self, name: str, wait: bool = False) -> None:
        self.kubectl("delete", "namespace", name, f"--wait={'true' if wait else 'false'}", "--ignore-not-found",
                     check=False)

    def wait(self, what: str, condition: str, namespace: str | None = None, timeout: str = "120s") -> None:
        seconds = float(timeout.rstrip("s")) if timeout.endswith("s") else 120.0
        self.kubectl("wait", f"--for={condition}", what, f"--timeout={timeout}", namespace=namespace,
                     timeout=seconds + 30)

    def helm_install(self, chart_dir: str, release: str, namespace: str, values: dict | None = None,
                     include_crds: bool = True) -> str:
        """Renders the chart with the real Helm engine (helm-python-sdk) and applies it with kubectl, as
        `helm install` would create it (without Helm's release bookkeeping)."""
        rendered = render_chart(chart_dir, release, namespace, values)
        out = ""
        if include_crds:
            for crd in rendered["crds"]:
                out += self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crd).stdout
        if rendered["manifests"].strip():
            out += self.kubectl("apply", "-f", "-", input=rendered["manifests"], namespace=namespace).stdout
        return out


HELM_INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
    "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
    "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration"]


def _helm():
    try:
        import helm_python as helm  # noqa: PLC0415  (PyPI: helm-python-sdk)
    except ImportError:
        import helm  # noqa: PLC0415
    return helm


def render_chart(chart_dir: str, release: str, namespace: str, values: dict | None = None) -> dict:
    """Renders a chart with the real Helm engine (helm-python-sdk) as `helm install` would: templates in
    Helm's install order, each object labelled and annotated as Helm-managed, NOTES.txt and hooks left out.
    Returns {"manifests": "<YAML stream>", "objects": [...], "crds": ["<crd yaml>", ...]}."""
    helm = _helm()
    chart = helm.Chart.load(chart_dir)
    rendered = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    objects = []
    for path in sorted(rendered):
        if not path.endswith((".yaml", ".yml", ".json")):
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if not doc:
                continue
            md = doc.setdefault("metadata", {})
            if "helm.sh/hook" in (md.get("annotations") or {}):
                continue
            md.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
            md.setdefault("annotations", {}).update({"meta.helm.sh/release-name": release,
                                                     "meta.helm.sh/release-namespace": namespace})
            objects.append(doc)
    order = {k: i for i, k in enumerate(HELM_INSTALL_ORDER)}
    objects.sort(key=lambda o: order.get(o.get("kind"), len(order)))
    crds = [c["data"] for c in chart.crds if c.get("data")]
    return {"manifests": yaml.safe_dump_all(objects, sort_keys=False) if objects else "", "objects": objects,
            "crds": crds}


__all__ = ["Cluster", "S3", "ManagedProcess", "Processes", "render_chart", "free_port", "wait_until", "REPO",
           "shutil"]
