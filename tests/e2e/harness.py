"""The end-to-end harness: a cluster (the local stand-in, or a real one named by STATOR_E2E_KUBECONFIG),
S3 (moto's server, or an endpoint named by STATOR_E2E_S3_ENDPOINT), and local processes (the operator,
say) that are always stopped, also when a test fails or the test run itself is killed.

Usable from pytest (see conftest.py) and from scripts (the demo): every class has start() and stop() and
is a context manager.
"""

from __future__ import annotations

import json
import os
import shutil
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
from localkube.process import ManagedProcess  # noqa: E402

KUBECTL = os.environ.get("KUBECTL", "kubectl")
DEFAULT_IMAGE_MAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images.yaml")


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


CHART = os.path.join(REPO, "charts", "stator")
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
# Every namespace a test makes enforces the `restricted` Pod Security Standard, so every pod the operator
# builds must pass it, as on a hardened cluster.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
              "pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/audit": "restricted"}


class Cluster:
    """A Kubernetes cluster to run against: `kubeconfig` (an admin's, for the tests themselves),
    `kubectl(...)`, and helpers. `local` says whether it is the local cluster (the real control plane with
    the stand-in kubelet: pods run as local processes, `localkube` is the LocalKube object).

    The operator never runs with the admin's credentials: `operator_kubeconfig()` applies the chart's own
    ServiceAccount and RBAC and returns a kubeconfig with that ServiceAccount's token."""

    def __init__(self, kubeconfig: str | None = None, workdir: str | None = None, image_map: str | None = None,
                 crds: list[str] | None = None, kubelet: bool = True):
        self.external_kubeconfig = kubeconfig or os.environ.get("STATOR_E2E_KUBECONFIG")
        self.local = not self.external_kubeconfig
        self.workdir = workdir or tempfile.mkdtemp(prefix="stator-e2e-")
        self.image_map = image_map or os.environ.get("STATOR_IMAGE_MAP") or DEFAULT_IMAGE_MAP
        self.crds = crds if crds is not None else [os.path.join(REPO, "crds", "*.yaml")]
        self.with_kubelet = kubelet
        self.localkube: LocalKube | None = None
        self.kubeconfig = self.external_kubeconfig or ""
        self.cache_dir = os.path.join(self.workdir, "kubectl-cache")
        self._identities: dict[str, str] = {}

    def start(self) -> "Cluster":
        if self.local:
            self.localkube = LocalKube(workdir=os.path.join(self.workdir, "localkube"), image_map=self.image_map,
                                       crds=self.crds, kubelet=self.with_kubelet)
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
        """Environment for a local tool that acts as the cluster's admin (kubectl, say); not the operator."""
        return {"KUBECONFIG": self.kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120,
                namespace: str | None = None, kubeconfig: str | None = None) -> subprocess.CompletedProcess:
        cmd = [KUBECTL, "--kubeconfig", kubeconfig or self.kubeconfig, "--cache-dir", self.cache_dir]
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

    def create_namespace(self, prefix: str = "e2e", name: str | None = None) -> str:
        """A new namespace that enforces Pod Security `restricted`; returns once its default ServiceAccount
        exists (pods cannot be created before)."""
        name = name or f"{prefix}-{uuid.uuid4().hex[:6]}"
        existing = self.get("namespace", name, check=False)
        if existing is None:
            self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}})
        wait_until(lambda: self.get("serviceaccount", "default", name, check=False), timeout=60,
                   what=f"the default ServiceAccount of {name}")
        return name

    def delete_namespace(self, name: str, wait: bool = False) -> None:
        self.kubectl("delete", "namespace", name, f"--wait={'true' if wait else 'false'}", "--ignore-not-found",
                     check=False)

    def wait(self, what: str, condition: str, namespace: str | None = None, timeout: str = "120s") -> None:
        seconds = float(timeout.rstrip("s")) if timeout.endswith("s") else 120.0
        self.kubectl("wait", f"--for={condition}", what, f"--timeout={timeout}", namespace=namespace,
                     timeout=seconds + 30)

    def watch_until(self, collection: str, name: str, predicate, timeout: float = 60.0) -> dict:
        """Watches one object (`collection` is its API path, e.g. /apis/stator.dev/v1alpha1/namespaces/ns/streamjobs)
        and returns the first version of it for which `predicate` holds. A watch sees every write, so a
        state that lasts only one write is not missed, as it can be by polling."""
        from localkube.client import Kube  # noqa: PLC0415
        kube = Kube(self.kubeconfig)
        deadline = time.monotonic() + timeout
        params = {"fieldSelector": f"metadata.name={name}"}
        while time.monotonic() < deadline:
            lst = kube.get(collection, params)
            for obj in lst["items"]:
                if predicate(obj):
                    return obj
            rv = lst["metadata"]["resourceVersion"]
            left = max(1, int(deadline - time.monotonic()))
            for ev in kube.watch(collection, dict(params, resourceVersion=rv), timeout_seconds=left):
                if ev["type"] == "ERROR":
                    break
                if ev["type"] in ("ADDED", "MODIFIED") and predicate(ev["object"]):
                    return ev["object"]
        raise TimeoutError(f"timed out after {timeout}s watching {collection}/{name}")

    def operator_kubeconfig(self, release: str = "stator-e2e", namespace: str = "stator-e2e",
                            values: dict | None = None) -> str:
        """Applies the ServiceAccount and RBAC that the chart (rendered with `values`) gives the operator,
        and returns a kubeconfig that authenticates as that ServiceAccount (a TokenRequest token): the
        operator runs with exactly the chart's permissions, so a rule it needs and the chart lacks fails."""
        key = json.dumps([release, namespace, values], sort_keys=True)
        if key in self._identities:
            return self._identities[key]
        self.create_namespace(name=namespace)
        rendered = render_chart(CHART, release, namespace, values)
        objects = [o for o in rendered["objects"] if o.get("kind") in RBAC_KINDS]
        self.apply(objects)
        sa = next(o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount")
        token = self.kubectl("create", "token", sa, "--duration=24h", namespace=namespace).stdout.strip()
        with open(self.kubeconfig) as f:
            admin = yaml.safe_load(f)
        ctx = next(c["context"] for c in admin["contexts"] if c["name"] == admin["current-context"])
        server = next(c["cluster"] for c in admin["clusters"] if c["name"] == ctx["cluster"])
        path = os.path.join(self.workdir, f"operator-{uuid.uuid4().hex[:8]}.kubeconfig")
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": sa,
               "clusters": [{"name": "cluster", "cluster": server}],
               "users": [{"name": sa, "user": {"token": token}}],
               "contexts": [{"name": sa, "context": {"cluster": "cluster", "user": sa, "namespace": namespace}}]}
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        os.chmod(path, 0o600)
        self._identities[key] = path
        return path

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
            out += self.kubectl("apply", "-f", "-", input=rendered["manifests"]).stdout
        return out

    def helm_uninstall(self, chart_dir: str, release: str, namespace: str, values: dict | None = None) -> None:
        """Deletes what helm_install created (but the CRD, which `helm uninstall` keeps too), in Helm's
        uninstall order (the reverse of the install order: workloads before the RBAC they run with), and
        waits for the workloads' pods to be gone before deleting the rest: a terminating operator still
        renews or releases its lease, and with its Role already deleted that request would be refused,
        which the e2e suite counts as a missing rule."""
        objects = list(reversed(render_chart(chart_dir, release, namespace, values)["objects"]))
        workloads = [o for o in objects if o.get("kind") in WORKLOAD_KINDS]
        rest = [o for o in objects if o.get("kind") not in WORKLOAD_KINDS]
        if workloads:
            self.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                         input=yaml.safe_dump_all(workloads, sort_keys=False), check=False)
            for ns in sorted({o["metadata"].get("namespace", namespace) for o in workloads}):
                self.kubectl("wait", "--for=delete", "pod", "-l", f"app.kubernetes.io/instance={release}",
                             "--timeout=120s", namespace=ns, check=False, timeout=150)
        if rest:
            self.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                         input=yaml.safe_dump_all(rest, sort_keys=False), check=False)


HELM_INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
    "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
    "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration"]


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "Job", "CronJob"}


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                  "StorageClass", "PersistentVolume", "IngressClass", "APIService", "MutatingWebhookConfiguration",
                  "ValidatingWebhookConfiguration"}


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
            if doc.get("kind") not in CLUSTER_SCOPED:
                md.setdefault("namespace", namespace)  # as Helm installs an object that names none
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
