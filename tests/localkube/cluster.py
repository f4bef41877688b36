"""`LocalKube`: the whole stand-in (API server, controllers, kubelet) in one object that tests start
and stop, and that `python -m localkube serve` runs for a person."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile

import yaml

from . import errors as E
from .api import Api, WriteOptions
from .controllers import Controllers
from .images import ImageMap
from .kubelet import Kubelet
from .server import Server
from .store import Store

log = logging.getLogger("localkube")


class LocalKube:
    def __init__(self, workdir: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 image_map=None, crds: list[str] | tuple[str, ...] = (), kubelet: bool = True,
                 backoff_base: float = 10.0, backoff_max: float = 300.0, history: int = 10000,
                 bookmark_interval: float = 10.0, kubeconfig: str | None = None):
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="localkube-")
        os.makedirs(self.workdir, exist_ok=True)
        self.host, self.port = host, port
        self.image_map = image_map if isinstance(image_map, ImageMap) else ImageMap.load(
            image_map if image_map is not None else os.environ.get("STATOR_IMAGE_MAP"))
        self.crd_patterns = list(crds)
        self.with_kubelet = kubelet
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.history = history
        self.bookmark_interval = bookmark_interval
        self.kubeconfig = kubeconfig or os.path.join(self.workdir, "kubeconfig")
        self.api: Api | None = None
        self.server: Server | None = None
        self.controllers: Controllers | None = None
        self.kubelet: Kubelet | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "LocalKube":
        self.api = Api(Store(history=self.history))
        self.controllers = Controllers(self.api, data_dir=os.path.join(self.workdir, "data"))
        self.controllers.bootstrap()
        if self.with_kubelet:
            self.kubelet = Kubelet(self.api, self.controllers, os.path.join(self.workdir, "kubelet"), self.image_map,
                                   backoff_base=self.backoff_base, backoff_max=self.backoff_max)
        self.server = Server(self.api, self.host, self.port, log_provider=self.kubelet.logs if self.kubelet else None,
                             bookmark_interval=self.bookmark_interval)
        self.server.start()
        self.image_map.env.update(LOCALKUBE_URL=self.url, LOCALKUBE_KUBECONFIG=self.kubeconfig)
        self.controllers.start()
        if self.kubelet:
            self.kubelet.start()
        for pattern in self.crd_patterns:
            for path in sorted(glob.glob(pattern)):
                self.apply_file(path)
        self._write_kubeconfig()
        return self

    def stop(self) -> None:
        if self.kubelet:
            self.kubelet.stop()
        if self.controllers:
            self.controllers.stop()
        if self.server:
            self.server.stop()

    def cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalKube":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "localkube", "cluster": {"server": self.url}}],
            "users": [{"name": "localkube", "user": {}}],
            "contexts": [{"name": "localkube", "context": {"cluster": "localkube", "user": "localkube",
                                                           "namespace": "default"}}],
            "current-context": "localkube",
        }
        tmp = self.kubeconfig + ".tmp"
        with open(tmp, "w") as f:
            yaml.safe_dump(cfg, f)
        os.replace(tmp, self.kubeconfig)

    def apply_file(self, path: str, namespace: str = "default") -> list[dict]:
        """Creates or replaces every object in a YAML file (in-process; CRDs are established at once)."""
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        return [self.apply_object(d, namespace) for d in docs]

    def apply_object(self, obj: dict, namespace: str = "default") -> dict:
        rt = self.api.registry.by_kind(obj["apiVersion"], obj["kind"])
        if rt is None:
            raise E.ApiError(404, "NotFound", f'no matches for kind "{obj["kind"]}" in version "{obj["apiVersion"]}"')
        ns = (obj.get("metadata") or {}).get("namespace") or namespace
        return self.api.patch(rt, ns, obj["metadata"]["name"], "application/apply-patch+yaml", obj,
                              WriteOptions(manager="localkube", force=True,
                                           version=obj["apiVersion"].rpartition("/")[2]))
