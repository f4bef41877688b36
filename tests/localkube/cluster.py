"""`LocalKube`: a one-node Kubernetes cluster on loopback for tests and the demo: the real control plane
(etcd, kube-apiserver, kube-controller-manager; see controlplane.py) and the stand-in kubelet (see
kubelet.py) in its own process, which runs pods' containers as local processes."""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time

import yaml

from .client import ApiError, Kube
from .controlplane import ControlPlane
from .process import ManagedProcess

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Claims without a class get this one: host-path volumes made by kube-controller-manager's provisioner.
STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
}


# Where kube-controller-manager's host-path provisioner creates a volume for each claim.
HOSTPATH_ROOT = "/tmp/hostpath_pv"


class LocalKube:
    def __init__(self, workdir: str | None = None, image_map: str | None = None,
                 crds: list[str] | tuple[str, ...] = (), kubelet: bool = True, backoff_base: float = 10.0,
                 backoff_max: float = 300.0, node_name: str = "localkube"):
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="localkube-")
        os.makedirs(self.workdir, exist_ok=True)
        self.image_map = image_map or os.environ.get("STATOR_IMAGE_MAP")
        self.crd_patterns = list(crds)
        self.with_kubelet = kubelet
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.node_name = node_name
        self.control_plane = ControlPlane(os.path.join(self.workdir, "controlplane"), node_name=node_name)
        self.kubelet: ManagedProcess | None = None
        self.kube: Kube | None = None

    @property
    def kubeconfig(self) -> str:
        """The admin's kubeconfig (system:masters): for tests and people, never for the operator."""
        return self.control_plane.kubeconfig("admin")

    @property
    def url(self) -> str:
        return self.control_plane.server

    @property
    def kubelet_dir(self) -> str:
        return os.path.join(self.workdir, "kubelet")

    def start(self) -> "LocalKube":
        t0 = time.monotonic()
        self.control_plane.start()
        self.kube = Kube(self.kubeconfig)
        if self.with_kubelet:
            self._start_kubelet()
        self._ensure(STORAGE_CLASS, "/apis/storage.k8s.io/v1/storageclasses")
        for pattern in self.crd_patterns:
            for path in sorted(glob.glob(pattern)):
                with open(path) as f:
                    for doc in yaml.safe_load_all(f):
                        if doc:
                            self._ensure(doc, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
                            self._wait_established(doc["metadata"]["name"])
        self._wait(lambda: self.kube.get_opt("/api/v1/namespaces/default/serviceaccounts/default"),
                   "the default ServiceAccount", 60)
        self.ready_seconds = time.monotonic() - t0
        return self

    def _start_kubelet(self) -> None:
        cp = self.control_plane
        cert, key = cp.pki.issue("kubelet-serving", f"system:node:{self.node_name}", ["system:nodes"], server=True,
                                 client=False, ips=["127.0.0.1"], dns=[self.node_name, "localhost"])
        argv = [sys.executable, "-m", "localkube", "kubelet", "--kubeconfig", cp.kubeconfig("node"),
                "--scheduler-kubeconfig", cp.kubeconfig("scheduler"), "--dir", self.kubelet_dir,
                "--node-name", self.node_name, "--serving-cert", cert, "--serving-key", key,
                "--client-ca", cp.pki.ca_cert, "--backoff-base", str(self.backoff_base),
                "--backoff-max", str(self.backoff_max)]
        if self.image_map:
            argv += ["--image-map", self.image_map]
        env = {"PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.kubelet = ManagedProcess(argv, name="kubelet", env=env, cwd=TESTS, log_dir=cp.logs)
        self.kubelet.start()

        def node_ready():
            if not self.kubelet.alive:
                raise RuntimeError(f"the kubelet exited:\n{self.kubelet.log()[-4000:]}")
            node = self.kube.get_opt(f"/api/v1/nodes/{self.node_name}")
            conds = ((node or {}).get("status") or {}).get("conditions") or []
            taints = ((node or {}).get("spec") or {}).get("taints") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds) and not any(
                t["key"] == "node.kubernetes.io/not-ready" for t in taints)
        self._wait(node_ready, f"node {self.node_name} Ready", 90)

    def _ensure(self, obj: dict, collection: str) -> None:
        try:
            self.kube.create(collection, obj)
        except ApiError as e:
            if e.code != 409:
                raise

    def _wait_established(self, name: str) -> None:
        def established():
            crd = self.kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            return any(c["type"] == "Established" and c["status"] == "True"
                       for c in (crd.get("status") or {}).get("conditions") or [])
        self._wait(established, f"CRD {name} established", 30)

    def _wait(self, fn, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.control_plane.check_alive()
            try:
                if fn():
                    return
            except (ApiError, OSError) as e:
                last = e
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last error: {last}; "
                           f"logs in {self.control_plane.logs}")

    def stop(self) -> None:
        volumes = self.host_path_volumes()
        if self.kubelet is not None:
            self.kubelet.stop(grace=30)
            self.kubelet = None
        self.control_plane.stop()
        # The host-path provisioner's volumes live outside the work dir, and the claims and volumes
        # that name them went with this cluster's etcd: remove them too, or every run leaves its
        # pods' state behind (gigabytes after a few benchmark runs).
        for path in volumes:
            shutil.rmtree(path, ignore_errors=True)

    def host_path_volumes(self) -> list[str]:
        """The directories of this cluster's provisioned host-path volumes (under HOSTPATH_ROOT)."""
        try:
            pvs = self.kube.get("/api/v1/persistentvolumes")["items"] if self.kube else []
        except (ApiError, OSError):
            return []
        paths = [((pv.get("spec") or {}).get("hostPath") or {}).get("path") or "" for pv in pvs]
        return [p for p in paths if os.path.dirname(os.path.normpath(p)) == HOSTPATH_ROOT]

    def cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalKube":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
