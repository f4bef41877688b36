"""A kubelet stand-in that runs each pod's containers as local processes.

Every pod gets its own loopback address (127.1.x.y), known before any container starts (status.podIP,
also through the downward API). Volumes are directories under the pod's directory (emptyDir, Secret,
ConfigMap, downward API, projected) or the provisioned PersistentVolume's directory (PVCs), so data on a
PVC survives the pod. Since processes see the host's filesystem, every argument, env value and working
directory that names a path under a volumeMount's mountPath is rewritten to the volume's local directory.

Lifecycle follows the real kubelet: init containers in order; native sidecars (init containers with
restartPolicy Always) start before the app containers, keep running, and stop after them; restart policy
with exponential back-off (CrashLoopBackOff); readiness, liveness and startup probes (HTTP, TCP, exec);
deletion sends SIGTERM to each container's process group, waits for the grace period, then SIGKILL; the
pod goes to a terminal phase and the kubelet then removes it with a zero-grace delete.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from .client import ApiError, Kube
from .images import ImageMap
from .process import die_with_parent
from .util import micro_time, rfc3339

log = logging.getLogger("localkube.kubelet")


# ---------------------------------------------------------------------------------------------------
# $(VAR) expansion, as k8s.io/kubernetes/third_party/forked/golang/expansion


def expand(s: str, lookup) -> str:
    out = []
    checkpoint = 0
    i = 0
    n = len(s)
    while i < n:
        if s[i] == "$" and i + 1 < n:
            out.append(s[checkpoint:i])
            nxt = s[i + 1]
            if nxt == "$":
                out.append("$")
                advance = 1
            elif nxt == "(":
                close = s.find(")", i + 2)
                if close == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = s[i + 2:close]
                    val = lookup(name)
                    out.append(val if val is not None else f"$({name})")
                    advance = close - i
            else:
                out.append("$" + nxt)
                advance = 1
            i += advance
            checkpoint = i + 1
        i += 1
    out.append(s[checkpoint:])
    return "".join(out)


# Where a pod's service-account token, CA and namespace are mounted (kube-api-access-*).
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ConfigError(Exception):
    pass


class MountError(Exception):
    pass


def _b64(s: str) -> bytes:
    return base64.b64decode(s or "")


def _quantity_to_int(q, divisor="1") -> str:
    units = {"m": 0.001, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1024, "Mi": 1024 ** 2,
             "Gi": 1024 ** 3, "Ti": 1024 ** 4}

    def val(x):
        m = re.match(r"^([0-9.]+)([A-Za-z]*)$", str(x))
        if not m:
            return 0.0
        return float(m.group(1)) * units.get(m.group(2), 1)
    import math  # noqa: PLC0415
    return str(int(math.ceil(val(q) / (val(divisor) or 1))))


# ---------------------------------------------------------------------------------------------------
# containers


class Probe:
    def __init__(self, spec: dict | None):
        self.spec = spec
        self.successes = 0
        self.failures = 0
        self.next_at = 0.0
        self.ok: bool | None = None

    def reset(self, started_at: float) -> None:
        self.successes = self.failures = 0
        self.ok = None
        if self.spec:
            self.next_at = started_at + self.spec.get("initialDelaySeconds", 0)


class Container:
    def __init__(self, spec: dict, kind: str):
        self.spec = spec
        self.name = spec["name"]
        self.kind = kind  # "init", "sidecar", "main"
        self.proc: subprocess.Popen | None = None
        self.state = "waiting"
        self.waiting_reason = "PodInitializing" if kind == "main" else "ContainerCreating"
        self.waiting_message = ""
        self.started_at: str | None = None
        self.started_mono = 0.0
        self.terminated: dict | None = None
        self.last_terminated: dict | None = None
        self.restarts = 0
        self.ready = False
        self.started = False
        self.backoff_until = 0.0
        self.backoff = 0.0
        self.log_path: str | None = None
        self.prev_log_path: str | None = None
        self.container_id = ""
        self.pulled = False
        self.image_backoff = 0.0
        self.image_retry_at = 0.0
        self.pull_error = ""
        self.readiness = Probe(spec.get("readinessProbe"))
        self.liveness = Probe(spec.get("livenessProbe"))
        self.startup = Probe(spec.get("startupProbe"))
        self.entry = None
        self.killing = False
        self.restart_pending = False

    @property
    def running(self) -> bool:
        return self.state == "running"

    def status(self) -> dict:
        st = {"name": self.name, "image": self.spec.get("image", ""),
              "imageID": f"localkube://{self.spec.get('image', '')}" if self.pulled else "",
              "ready": self.ready, "restartCount": self.restarts, "started": self.started and self.running}
        if self.container_id:
            st["containerID"] = self.container_id
        if self.state == "running":
            st["state"] = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            st["state"] = {"terminated": dict(self.terminated)}
        else:
            w = {"reason": self.waiting_reason}
            if self.waiting_message:
                w["message"] = self.waiting_message
            st["state"] = {"waiting": w}
        st["lastState"] = {"terminated": dict(self.last_terminated)} if self.last_terminated else {}
        return st


# ---------------------------------------------------------------------------------------------------
# pods


class PodWorker:
    def __init__(self, kubelet: "Kubelet", pod: dict):
        md = pod["metadata"]
        self.thread = threading.Thread(target=self.run, name=f"pod-{md['namespace']}-{md['name']}", daemon=True)
        self.k = kubelet
        self.kube: Kube = kubelet.kube
        self.ns, self.name, self.uid = md["namespace"], md["name"], md["uid"]
        self.dir = os.path.join(kubelet.root, "pods", f"{self.ns}_{self.name}_{self.uid}")
        self.pod = pod
        spec = pod["spec"]
        self.inits = [Container(c, "sidecar" if c.get("restartPolicy") == "Always" else "init")
                      for c in spec.get("initContainers") or []]
        self.mains = [Container(c, "main") for c in spec.get("containers") or []]
        self.ip: str | None = None
        self.volumes: dict[str, str] = {}
        self.volumes_ready = False
        self.stage = "init"
        self.init_index = 0
        self.phase = "Pending"
        self.terminal = False
        self.start_time = rfc3339()
        self.last_status: dict | None = None
        self.stop_now = threading.Event()
        self.removed = False
        self.mount_error = ""
        self.next_volume_refresh = 0.0
        self.sandbox_ready = False
        self.short_dir: str | None = None
        self.tokens: dict[tuple[str, int], tuple[bytes, float]] = {}
        self.last_digest = ""

    @property
    def containers(self) -> list[Container]:
        return self.inits + self.mains

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def find(self, name: str) -> Container | None:
        return next((c for c in self.containers if c.name == name), None)

    # -- main loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001
            log.exception("pod worker %s/%s failed", self.ns, self.name)
        finally:
            self._kill_all(0.0 if self.k.stopping.is_set() else 2.0)
            if self.ip:
                self.k.release_ip(self.ip)
            if self.short_dir:
                shutil.rmtree(self.short_dir, ignore_errors=True)  # symlinks only; their targets stay
            self.k.worker_done(self)

    def _latest(self) -> dict | None:
        p = self.k.pod(self.ns, self.name)
        if p is None or p["metadata"]["uid"] != self.uid:
            return None
        return p

    def _run(self) -> None:
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        pod = self._latest()
        if pod is None:
            return
        self.ip = "127.0.0.1" if pod["spec"].get("hostNetwork") else self.k.alloc_ip()
        self.sandbox_ready = True
        self.pod = pod
        self._write_status()
        while not self.k.stopping.is_set():
            pod = self._latest()
            if pod is None:
                self.removed = True
                self._terminate(2.0)
                return
            self.pod = pod
            if pod["metadata"].get("deletionTimestamp"):
                grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
                self._terminate(grace)
                self._write_status()
                try:
                    self.kube.delete(f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                                     {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
                except (ApiError, OSError) as e:
                    if getattr(e, "code", None) not in (404, 409):
                        log.warning("final delete of %s/%s: %s", self.ns, self.name, e)
                # finalizers may hold the object; wait until it is gone
                while not self.k.stopping.is_set() and self._latest() is not None:
                    time.sleep(0.2)
                return
            if not self.terminal:
                self._step()
            self._write_status()
            time.sleep(self.k.tick)

    def _step(self) -> None:
        now = time.monotonic()
        if not self.volumes_ready or now >= self.next_volume_refresh:
            try:
                self._setup_volumes()
                if not self.volumes_ready:
                    self.volumes_ready = True
                self.mount_error = ""
            except MountError as e:
                if self.mount_error != str(e):
                    self.k.event(self.pod, "Warning", "FailedMount", str(e))
                self.mount_error = str(e)
            self.next_volume_refresh = now + self.k.volume_refresh
        if not self.volumes_ready:
            return
        policy = self.pod["spec"].get("restartPolicy", "Always")
        self._image_changes()
        for c in self.containers:
            self._reap(c, policy)
        if self.stage == "init":
            while self.init_index < len(self.inits):
                c = self.inits[self.init_index]
                if c.kind == "sidecar":
                    self._ensure_running(c)
                    if c.running and c.started:
                        self.init_index += 1
                        continue
                    break
                if c.state == "terminated" and c.terminated.get("exitCode") == 0:
                    self.init_index += 1
                    continue
                if c.state == "terminated" and policy == "Never":
                    self._go_terminal("Failed")
                    return
                self._ensure_running(c)
                break
            if self.init_index >= len(self.inits):
                self.stage = "main"
                for c in self.mains:
                    c.waiting_reason = "ContainerCreating"
        if self.stage == "main":
            for c in self.inits:
                if c.kind == "sidecar":
                    self._ensure_running(c)
            for c in self.mains:
                if c.state == "terminated" and not self._should_restart(c, policy):
                    continue
                self._ensure_running(c)
            if policy != "Always" and self.mains and all(
                    c.state == "terminated" and not self._should_restart(c, policy) for c in self.mains):
                ok = all(c.terminated.get("exitCode") == 0 for c in self.mains)
                self._go_terminal("Succeeded" if ok else "Failed")
                return
        self._probe_all()
        if self.stage == "main" and any(c.running or c.state == "terminated" or c.restarts for c in self.mains):
            self.phase = "Running"

    def _image_changes(self) -> None:
        """An image changed in place (the one mutable field of a container) restarts that container with the
        new image, as the kubelet does ("container definition changed")."""
        spec = self.pod["spec"]
        for c in self.containers:
            kind = "containers" if c.kind == "main" else "initContainers"
            new = next((x for x in spec.get(kind) or [] if x.get("name") == c.name), None)
            if new is None or new.get("image") == c.spec.get("image"):
                continue
            c.spec = dict(c.spec, image=new.get("image"))
            c.pulled = False
            c.image_retry_at = 0.0
            if c.proc is not None and c.proc.poll() is None:
                self.k.event(self.pod, "Normal", "Killing",
                             f"Container {c.name} definition changed, will be restarted", self._field_path(c))
                grace = float(spec.get("terminationGracePeriodSeconds", 30))
                self._stop_containers([c], time.monotonic() + grace)
                c.last_terminated = c.terminated
                c.state = "waiting"
                c.restart_pending = True
                c.backoff_until = 0.0

    def _should_restart(self, c: Container, policy: str) -> bool:
        if c.kind == "sidecar":
            return not self.terminal
        code = (c.terminated or {}).get("exitCode")
        if c.kind == "init":
            return policy != "Never" and code != 0
        if policy == "Always":
            return True
        if policy == "OnFailure":
            return code != 0
        return False

    def _schedule_restart(self, c: Container) -> None:
        """The container waits (CrashLoopBackOff once there is a back-off) before it runs again."""
        c.last_terminated = c.terminated
        c.state = "waiting"
        c.restart_pending = True
        c.backoff_until = time.monotonic() + c.backoff
        if c.backoff > 0:
            self._crashloop(c)
            self.k.event(self.pod, "Warning", "BackOff",
                         f"Back-off restarting failed container {c.name} in pod {self.name}_{self.ns}({self.uid})",
                         self._field_path(c))
        c.backoff = min(self.k.backoff_max, self.k.backoff_base if c.backoff == 0 else c.backoff * 2)

    def _go_terminal(self, phase: str) -> None:
        sidecars = [c for c in reversed(self.inits) if c.kind == "sidecar"]
        self.terminal = True
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        self._stop_containers(sidecars, time.monotonic() + grace, sequential=True)
        self.phase = phase
        for c in self.containers:
            c.ready = False

    # -- containers --------------------------------------------------------------------------------

    def _reap(self, c: Container, policy: str) -> None:
        if c.proc is None or c.proc.poll() is None:
            return
        rc = c.proc.returncode
        c.proc = None
        sig = -rc if rc < 0 else None
        code = 128 + sig if sig else rc
        t = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": c.started_at,
             "finishedAt": rfc3339(), "containerID": c.container_id}
        if sig:
            t["signal"] = sig
        if code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and c.log_path:
            try:
                with open(c.log_path, "rb") as f:
                    data = f.read()[-2048:].decode(errors="replace")
                t["message"] = "\n".join(data.splitlines()[-80:])
            except OSError:
                pass
        c.state = "terminated"
        c.terminated = t
        c.ready = False
        c.started = False
        ran = time.monotonic() - c.started_mono
        if ran > self.k.backoff_max * 2:
            c.backoff = 0.0  # the kubelet forgets the back-off of a container that ran long enough
        if not c.killing and self._should_restart(c, policy):
            self._schedule_restart(c)
        c.killing = False

    def _ensure_running(self, c: Container) -> None:
        if c.running or c.proc is not None:
            return
        now = time.monotonic()
        if c.restart_pending and now < c.backoff_until:
            return self._crashloop(c) if c.backoff_until - now > 0.01 else None
        if not c.pulled:
            image = c.spec.get("image", "")
            if now < c.image_retry_at:
                c.waiting_reason = "ImagePullBackOff"
                c.waiting_message = f'Back-off pulling image "{image}": ErrImagePull: {c.pull_error}'
                return
            c.entry = self.k.images.resolve(image)
            if c.entry is None:
                c.state = "waiting"
                c.waiting_reason = "ErrImagePull"
                c.pull_error = (f'failed to pull and unpack image "{image}": localkube has no image map entry '
                                f'for it (see STATOR_IMAGE_MAP)')
                c.waiting_message = c.pull_error
                c.image_backoff = min(self.k.backoff_max, max(self.k.backoff_base, c.image_backoff * 2))
                c.image_retry_at = now + c.image_backoff
                self.k.event(self.pod, "Warning", "Failed", f'Failed to pull image "{image}": {c.pull_error}',
                             self._field_path(c))
                return
            c.pulled = True
            self.k.event(self.pod, "Normal", "Pulled", f'Container image "{c.spec.get("image")}" already present on machine',
                         self._field_path(c))
        try:
            argv, env, cwd = self._command(c)
        except ConfigError as e:
            c.state = "waiting"
            c.waiting_reason = "CreateContainerConfigError"
            c.waiting_message = str(e)
            return
        if c.restart_pending or c.state == "terminated":
            c.last_terminated = c.terminated
            c.restarts += 1
            c.restart_pending = False
        if c.log_path:
            c.prev_log_path = c.log_path
        c.log_path = os.path.join(self.dir, "logs", f"{c.name}.{c.restarts}.log")
        c.container_id = f"localkube://{self.uid[:8]}-{c.name}-{c.restarts}"
        try:
            with open(c.log_path, "ab") as logf:
                c.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=logf,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent)
        except OSError as e:
            c.proc = None
            c.state = "terminated"
            c.terminated = {"exitCode": 128, "reason": "StartError", "startedAt": rfc3339(), "finishedAt": rfc3339(),
                            "containerID": c.container_id,
                            "message": f'failed to create containerd task: failed to create shim task: OCI runtime create '
                                       f'failed: runc create failed: unable to start container process: exec: '
                                       f'"{argv[0]}": {e.strerror.lower() if e.strerror else e}'}
            self.k.event(self.pod, "Warning", "Failed", f"Error: {c.terminated['message']}", self._field_path(c))
            if self._should_restart(c, self.pod["spec"].get("restartPolicy", "Always")):
                self._schedule_restart(c)
            return
        c.state = "running"
        c.started_at = rfc3339()
        c.started_mono = time.monotonic()
        c.ready = False
        c.started = c.startup.spec is None
        for p in (c.readiness, c.liveness, c.startup):
            p.reset(c.started_mono)
        if c.readiness.spec is None:
            c.ready = c.started
        self.k.event(self.pod, "Normal", "Created", f"Created container: {c.name}", self._field_path(c))
        self.k.event(self.pod, "Normal", "Started", f"Started container {c.name}", self._field_path(c))

    def _crashloop(self, c: Container) -> None:
        delay = c.backoff / 2 if c.backoff > self.k.backoff_base else self.k.backoff_base
        c.state = "waiting"
        c.waiting_reason = "CrashLoopBackOff"
        c.waiting_message = (f"back-off {delay:g}s restarting failed container={c.name} "
                             f"pod={self.name}_{self.ns}({self.uid})")

    def _field_path(self, c: Container) -> str:
        kind = "initContainers" if c.kind != "main" else "containers"
        return f"spec.{kind}{{{c.name}}}"

    # -- environment and command -------------------------------------------------------------------

    def _mounts(self, c: Container) -> list[tuple[str, str]]:
        out = []
        for m in c.spec.get("volumeMounts") or []:
            local = self.volumes.get(m.get("name"))
            if local is None:
                continue
            if m.get("subPath"):
                local = os.path.join(local, m["subPath"])
                if not os.path.exists(local):
                    os.makedirs(local, exist_ok=True)
            out.append((m["mountPath"].rstrip("/") or "/", local))
        out.sort(key=lambda x: len(x[0]), reverse=True)
        return out

    @staticmethod
    def localize(s: str, mounts: list[tuple[str, str]]) -> str:
        """Rewrites paths under mount points to the volumes' local directories, in one pass (longest mount
        path first), so a rewritten path is never rewritten again by a shorter mount such as /tmp."""
        local = {mp: d for mp, d in mounts if mp != "/"}
        if not local:
            return s
        alternatives = "|".join(re.escape(mp) for mp in sorted(local, key=len, reverse=True))
        pattern = r"(?<![\w.\-])(" + alternatives + r")(?=/|$|[\s,;:\"'=])"
        return re.sub(pattern, lambda m: local[m.group(1)], s)

    _BIND_ALL = re.compile(r"(?<![\w.:\[])(0\.0\.0\.0|\[::\])(?=:\d|$)")

    def bind_address(self, s: str) -> str:
        """A pod has its own network namespace: binding all its interfaces reaches only the pod. Here all pods
        share the host's, so a bind-all address (0.0.0.0 or [::], alone or with a port) becomes the pod's
        own address, which keeps pods' ports apart and every server on loopback."""
        return self._BIND_ALL.sub(self.ip or "127.0.0.1", s) if self.ip else s

    def _field(self, path: str) -> str:
        md, spec = self.pod["metadata"], self.pod["spec"]
        m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
        if m:
            return (md.get(m.group(1)) or {}).get(m.group(2), "")
        simple = {
            "metadata.name": md["name"], "metadata.namespace": md["namespace"], "metadata.uid": md["uid"],
            "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.podIP": self.ip or "", "status.podIPs": self.ip or "", "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        if path in ("metadata.labels", "metadata.annotations"):
            d = md.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
        if path not in simple:
            raise ConfigError(f'unsupported fieldPath: {path}')
        return simple[path]

    def _resource_field(self, ref: dict, c: Container) -> str:
        target = c
        if ref.get("containerName"):
            target = self.find(ref["containerName"]) or c
        res = ref.get("resource", "")
        kind, _, name = res.partition(".")
        value = ((target.spec.get("resources") or {}).get(kind) or {}).get(name)
        if value is None:
            value = self.k.allocatable.get(name, "0")
        return _quantity_to_int(value, ref.get("divisor", "1"))

    def _get(self, resource: str, name: str) -> dict | None:
        """A Secret, ConfigMap or claim this pod refers to, read with the node's own credentials (the Node
        authorizer lets a node read only what its pods name)."""
        try:
            return self.kube.get_opt(f"/api/v1/namespaces/{self.ns}/{resource}/{name}")
        except ApiError as e:
            raise ConfigError(f"cannot read {resource[:-1]} {self.ns}/{name}: {e.message}") from None
        except OSError as e:
            raise ConfigError(f"cannot read {resource[:-1]} {self.ns}/{name}: {e}") from None

    def _lookup(self, kind: str, name: str, key: str | None, optional: bool):
        obj = self._get("secrets" if kind == "secret" else "configmaps", name)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind} "{name}" not found')
        if key is None:
            return obj
        if kind == "secret":
            data = obj.get("data") or {}
            if key not in data:
                if optional:
                    return None
                raise ConfigError(f"couldn't find key {key} in Secret {self.ns}/{name}")
            return _b64(data[key]).decode(errors="replace")
        data = obj.get("data") or {}
        if key not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {key} in ConfigMap {self.ns}/{name}")
        return data[key]

    def _env(self, c: Container) -> dict[str, str]:
        env: dict[str, str] = {}
        for ef in c.spec.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            for kind, ref in (("configmap", ef.get("configMapRef")), ("secret", ef.get("secretRef"))):
                if not ref:
                    continue
                obj = self._lookup(kind, ref.get("name", ""), None, bool(ref.get("optional")))
                if obj is None:
                    continue
                for k, v in (obj.get("data") or {}).items():
                    env[prefix + k] = _b64(v).decode(errors="replace") if kind == "secret" else v
        for e in c.spec.get("env") or []:
            name = e["name"]
            if "valueFrom" in e:
                vf = e["valueFrom"]
                if "fieldRef" in vf:
                    val = self._field(vf["fieldRef"]["fieldPath"])
                elif "resourceFieldRef" in vf:
                    val = self._resource_field(vf["resourceFieldRef"], c)
                elif "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    val = self._lookup("secret", r.get("name", ""), r["key"], bool(r.get("optional")))
                elif "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    val = self._lookup("configmap", r.get("name", ""), r["key"], bool(r.get("optional")))
                else:
                    val = None
                if val is None:
                    continue
                env[name] = val
            else:
                env[name] = expand(e.get("value", ""), lambda n, d=dict(env): d.get(n))
        return env

    def _check_non_root(self, c: Container) -> None:
        """runAsNonRoot, as the kubelet checks it: against runAsUser, else the image's USER."""
        pod_sc = self.pod["spec"].get("securityContext") or {}
        sc = c.spec.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        uid = sc.get("runAsUser", pod_sc.get("runAsUser", c.entry.user if c.entry else 0))
        if non_root and uid == 0:
            raise ConfigError(f'container has runAsNonRoot and image will run as root (pod: '
                              f'"{self.name}_{self.ns}({self.uid})", container: {c.name})')

    def _command(self, c: Container) -> tuple[list[str], dict[str, str], str]:
        self._check_non_root(c)
        entry = c.entry
        kenv = self._env(c)
        mounts = self._mounts(c)
        base_dir = os.path.join(self.dir, "containers", c.name)
        os.makedirs(base_dir, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOSTNAME": self.name, "HOME": base_dir}
        env.update(self._in_cluster_env(mounts))
        env.update(entry.env)
        env.update(kenv)
        lookup = kenv.get
        cmd = c.spec.get("command")
        args = c.spec.get("args")
        if cmd:
            argv = [expand(x, lookup) for x in cmd] + [expand(x, lookup) for x in args or []]
        elif args is not None:
            argv = list(entry.command) + [expand(x, lookup) for x in args]
        else:
            argv = list(entry.command) + list(entry.args)
        if not argv:
            raise ConfigError("no command specified")
        if argv[0] in entry.paths:
            argv[0] = entry.paths[argv[0]]
        argv = [argv[0]] + [self.bind_address(self.localize(a, mounts)) for a in argv[1:]]
        argv[0] = self.localize(argv[0], mounts)
        env = {k: self.localize(v, mounts) for k, v in env.items()}
        env.update({k: self.bind_address(env[k]) for k in kenv})
        cwd = base_dir
        wd = c.spec.get("workingDir") or entry.working_dir
        if wd:
            lw = self.localize(wd, mounts)
            cwd = lw if lw != wd else os.path.join(base_dir, "rootfs", wd.lstrip("/"))
            os.makedirs(cwd, exist_ok=True)
        return argv, env, cwd

    # -- volumes -----------------------------------------------------------------------------------

    def _write_files(self, d: str, files: dict[str, bytes], mode: int | None) -> None:
        os.makedirs(d, exist_ok=True)
        for rel, data in files.items():
            p = os.path.join(d, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            try:
                with open(p, "rb") as f:
                    if f.read() == data:
                        continue
            except OSError:
                pass
            tmp = p + ".localkube-tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            if mode is not None:
                os.chmod(tmp, mode | 0o600)
            os.replace(tmp, p)

    def _keyed(self, kind: str, src: dict) -> dict[str, bytes]:
        name = src.get("secretName") if kind == "secret" else src.get("name")
        try:
            obj = self._get("secrets" if kind == "secret" else "configmaps", name or "")
        except ConfigError as e:
            raise MountError(f"MountVolume.SetUp failed for volume: {e}") from None
        if obj is None:
            if src.get("optional"):
                return {}
            raise MountError(f'MountVolume.SetUp failed for volume: {kind} "{name}" not found')
        data = {k: (_b64(v) if kind == "secret" else v.encode()) for k, v in (obj.get("data") or {}).items()}
        if kind == "configmap":
            data.update({k: _b64(v) for k, v in (obj.get("binaryData") or {}).items()})
        items = src.get("items")
        if items:
            out = {}
            for it in items:
                if it["key"] not in data:
                    if src.get("optional"):
                        continue
                    raise MountError(f'MountVolume.SetUp failed: configmap references non-existent config key: {it["key"]}')
                out[it["path"]] = data[it["key"]]
            return out
        return data

    def _downward(self, src: dict) -> dict[str, bytes]:
        out = {}
        for it in src.get("items") or []:
            if "fieldRef" in it:
                try:
                    out[it["path"]] = self._field(it["fieldRef"]["fieldPath"]).encode()
                except ConfigError as e:
                    raise MountError(str(e)) from None
            elif "resourceFieldRef" in it:
                c = self.find(it["resourceFieldRef"].get("containerName", "")) or self.mains[0]
                out[it["path"]] = self._resource_field(it["resourceFieldRef"], c).encode()
        return out

    def _setup_volumes(self) -> None:
        for v in self.pod["spec"].get("volumes") or []:
            name = v["name"]
            d = os.path.join(self.dir, "volumes", name)
            if "emptyDir" in v:
                os.makedirs(d, exist_ok=True)
            elif "persistentVolumeClaim" in v:
                d = self._claim_path(name, v["persistentVolumeClaim"]["claimName"])
            elif "secret" in v:
                self._write_files(d, self._keyed("secret", v["secret"]), v["secret"].get("defaultMode"))
            elif "configMap" in v:
                self._write_files(d, self._keyed("configmap", v["configMap"]), v["configMap"].get("defaultMode"))
            elif "downwardAPI" in v:
                self._write_files(d, self._downward(v["downwardAPI"]), v["downwardAPI"].get("defaultMode"))
            elif "projected" in v:
                files: dict[str, bytes] = {}
                for s in v["projected"].get("sources") or []:
                    if "secret" in s:
                        files.update(self._keyed("secret", dict(s["secret"], secretName=s["secret"].get("name"))))
                    elif "configMap" in s:
                        files.update(self._keyed("configmap", s["configMap"]))
                    elif "downwardAPI" in s:
                        files.update(self._downward(s["downwardAPI"]))
                    elif "serviceAccountToken" in s:
                        files[s["serviceAccountToken"].get("path", "token")] = self._token(s["serviceAccountToken"])
                self._write_files(d, files, v["projected"].get("defaultMode"))
            elif "hostPath" in v:
                d = v["hostPath"]["path"]
                if v["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                    os.makedirs(d, exist_ok=True)
            else:
                os.makedirs(d, exist_ok=True)
            self.volumes[name] = d if "hostPath" in v else self._short(name, d)

    def _claim_path(self, volume: str, claim: str) -> str:
        """The directory of the PersistentVolume bound to `claim` (a host-path or local volume)."""
        try:
            pvc = self._get("persistentvolumeclaims", claim)
        except ConfigError as e:
            raise MountError(str(e)) from None
        if pvc is None:
            raise MountError(f'persistentvolumeclaim "{claim}" not found')
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not pv_name:
            raise MountError(f'Unable to attach or mount volumes: unmounted volumes=[{volume}]: '
                             f'persistentvolumeclaim "{claim}" is not bound')
        try:
            pv = self.kube.get(f"/api/v1/persistentvolumes/{pv_name}")
        except (ApiError, OSError) as e:
            raise MountError(f"MountVolume.SetUp failed for volume {volume}: cannot read persistentvolume "
                             f"{pv_name}: {e}") from None
        spec = pv.get("spec") or {}
        path = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path")
        if not path:
            raise MountError(f"MountVolume.SetUp failed for volume {volume}: persistentvolume {pv_name} is "
                             "neither a hostPath nor a local volume, which is all this kubelet can mount")
        os.makedirs(path, exist_ok=True)
        return path

    def _token(self, src: dict) -> bytes:
        """A service-account token bound to this pod (TokenRequest, as the kubelet asks for it), renewed
        when 80% of its lifetime has passed."""
        audience = src.get("audience") or ""
        ttl = int(src.get("expirationSeconds") or 3607)
        cached = self.tokens.get((audience, ttl))
        if cached and time.monotonic() < cached[1]:
            return cached[0]
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [audience] if audience else None, "expirationSeconds": ttl,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}}}
        try:
            r = self.kube.create(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        except (ApiError, OSError) as e:
            raise MountError(f'MountVolume.SetUp failed: failed to fetch token for service account "{sa}": {e}') from None
        token = r["status"]["token"].encode()
        self.tokens[(audience, ttl)] = (token, time.monotonic() + 0.8 * ttl)
        return token

    def _in_cluster_env(self, mounts: list[tuple[str, str]]) -> dict[str, str]:
        """What a pod's client needs to reach the API server "in cluster". The real kubelet sets
        KUBERNETES_SERVICE_HOST/PORT and the client reads its token at a fixed path; processes here see the
        host's filesystem, so where a container mounts the service-account directory the kubelet also
        writes a kubeconfig naming that directory's token and CA files, and sets KUBECONFIG to it."""
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.k.api_port),
               "KUBERNETES_SERVICE_PORT_HTTPS": str(self.k.api_port)}
        sa_dir = self.localize(SA_DIR, mounts)
        if sa_dir != SA_DIR:
            path = os.path.join(self.dir, "in-cluster.kubeconfig")
            cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
                   "clusters": [{"name": "in-cluster", "cluster": {"server": self.k.kube.server,
                                                                  "certificate-authority": f"{sa_dir}/ca.crt"}}],
                   "users": [{"name": "in-cluster", "user": {"tokenFile": f"{sa_dir}/token"}}],
                   "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "in-cluster",
                                                                   "namespace": self.ns}}]}
            with open(path, "w") as f:
                json.dump(cfg, f)
            env["KUBECONFIG"] = path
        return env

    def _short(self, name: str, target: str) -> str:
        """A short path (a symlink) for a volume: in a container, paths under a mount point are short
        (/var/run/stator/state.sock), and Unix socket paths must stay under 108 bytes."""
        if self.short_dir is None:
            self.short_dir = self.k.new_short_dir()
        link = os.path.join(self.short_dir, name)
        if os.path.islink(link) and os.readlink(link) == target:
            return link
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
        return link

    # -- probes ------------------------------------------------------------------------------------

    def _probe_all(self) -> None:
        now = time.monotonic()
        for c in self.containers:
            if not c.running or c.proc is None:
                continue
            if c.startup.spec and not c.started:
                r = self._run_probe(c, c.startup, now)
                if r is True:
                    c.started = True
                    if c.readiness.spec is None:
                        c.ready = True
                    for p in (c.readiness, c.liveness):
                        p.reset(now)
                elif r is False and c.startup.failures >= c.startup.spec.get("failureThreshold", 3):
                    self.k.event(self.pod, "Normal", "Killing", f"Container {c.name} failed startup probe, will be restarted",
                                 self._field_path(c))
                    self._restart_container(c)
                continue
            if c.liveness.spec:
                r = self._run_probe(c, c.liveness, now)
                if r is False and c.liveness.failures >= c.liveness.spec.get("failureThreshold", 3):
                    self.k.event(self.pod, "Normal", "Killing", f"Container {c.name} failed liveness probe, will be restarted",
                                 self._field_path(c))
                    self._restart_container(c)
                    continue
            if c.readiness.spec:
                r = self._run_probe(c, c.readiness, now)
                if r is True and c.readiness.successes >= c.readiness.spec.get("successThreshold", 1):
                    c.ready = True
                elif r is False and c.readiness.failures >= c.readiness.spec.get("failureThreshold", 3):
                    c.ready = False

    def _restart_container(self, c: Container) -> None:
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        self._stop_containers([c], time.monotonic() + grace)
        c.killing = False
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if c.kind == "sidecar" or policy != "Never":
            self._schedule_restart(c)

    def _run_probe(self, c: Container, p: Probe, now: float) -> bool | None:
        if now < p.next_at:
            return None
        spec = p.spec
        p.next_at = now + spec.get("periodSeconds", 10)
        timeout = spec.get("timeoutSeconds", 1)
        ok, why = False, ""
        try:
            if "httpGet" in spec:
                hg = spec["httpGet"]
                port = self._port(c, hg.get("port"))
                conn_cls = http.client.HTTPSConnection if hg.get("scheme") == "HTTPS" else http.client.HTTPConnection
                kw = {}
                if hg.get("scheme") == "HTTPS":
                    import ssl  # noqa: PLC0415
                    kw["context"] = ssl._create_unverified_context()  # noqa: SLF001  (the kubelet skips verification)
                conn = conn_cls(hg.get("host") or self.ip, port, timeout=timeout, **kw)
                headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
                headers.setdefault("User-Agent", "kube-probe/1.33")
                conn.request("GET", hg.get("path", "/"), headers=headers)
                resp = conn.getresponse()
                body = resp.read(10240)
                conn.close()
                ok = 200 <= resp.status < 400
                if not ok:
                    why = f"HTTP probe failed with statuscode: {resp.status}"
                    _ = body
            elif "tcpSocket" in spec:
                ts = spec["tcpSocket"]
                with socket.create_connection((ts.get("host") or self.ip, self._port(c, ts.get("port"))), timeout=timeout):
                    ok = True
            elif "exec" in spec:
                argv = list(spec["exec"].get("command") or [])
                if c.entry and argv and argv[0] in c.entry.paths:
                    argv[0] = c.entry.paths[argv[0]]
                _, env, cwd = self._command(c)
                mounts = self._mounts(c)
                argv = [self.localize(a, mounts) for a in argv]
                r = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=timeout)
                ok = r.returncode == 0
                if not ok:
                    why = (r.stdout + r.stderr).decode(errors="replace").strip()
            else:
                ok = True  # gRPC probes are not supported: see DIFFERENCES.md
        except (OSError, http.client.HTTPException, subprocess.TimeoutExpired, ConfigError) as e:
            ok, why = False, str(e)
            target = ""
            if "httpGet" in spec:
                hg = spec["httpGet"]
                try:
                    port = self._port(c, hg.get("port"))
                except OSError:
                    port = hg.get("port")
                host = hg.get("host") or self.ip
                target = f'Get "{hg.get("scheme", "HTTP").lower()}://{host}:{port}{hg.get("path", "/")}": '
                addr = f"{host}:{port}"
            elif "tcpSocket" in spec:
                addr = f"{spec['tcpSocket'].get('host') or self.ip}:{spec['tcpSocket'].get('port')}"
            else:
                addr = self.ip
            if isinstance(e, subprocess.TimeoutExpired):
                why = f"command timed out: \"{' '.join(spec['exec'].get('command') or [])}\" timed out after {timeout}s"
            elif isinstance(e, socket.timeout) or "timed out" in str(e):
                why = target + "context deadline exceeded (Client.Timeout exceeded while awaiting headers)" \
                    if target else f"dial tcp {addr}: i/o timeout"
            elif isinstance(e, ConnectionRefusedError):
                why = f"{target}dial tcp {addr}: connect: connection refused"
        if ok:
            p.successes += 1
            p.failures = 0
        else:
            p.failures += 1
            p.successes = 0
            kind = "Readiness" if p is c.readiness else "Liveness" if p is c.liveness else "Startup"
            self.k.event(self.pod, "Warning", "Unhealthy", f"{kind} probe failed: {why}", self._field_path(c))
        p.ok = ok
        return ok

    def _port(self, c: Container, port) -> int:
        if isinstance(port, int):
            return port
        if isinstance(port, str) and port.isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise OSError(f"unable to find port {port!r} in container {c.name}")

    # -- termination -------------------------------------------------------------------------------

    def _pre_stop(self, cs: list[Container], deadline: float) -> None:
        for c in cs:
            hook = ((c.spec.get("lifecycle") or {}).get("preStop")) or {}
            if not hook or not c.running:
                continue
            left = max(0.1, deadline - time.monotonic())
            try:
                if "exec" in hook:
                    argv = list(hook["exec"].get("command") or [])
                    if c.entry and argv and argv[0] in c.entry.paths:
                        argv[0] = c.entry.paths[argv[0]]
                    _, env, cwd = self._command(c)
                    subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=left)
                elif "httpGet" in hook:
                    hg = hook["httpGet"]
                    conn = http.client.HTTPConnection(hg.get("host") or self.ip, self._port(c, hg.get("port")), timeout=left)
                    conn.request("GET", hg.get("path", "/"))
                    conn.getresponse().read()
                    conn.close()
                elif "sleep" in hook:
                    time.sleep(min(left, float(hook["sleep"].get("seconds", 0))))
            except (OSError, subprocess.TimeoutExpired, http.client.HTTPException, ConfigError) as e:
                self.k.event(self.pod, "Warning", "FailedPreStopHook", f"PreStopHook failed: {e}", self._field_path(c))

    def _stop_containers(self, cs: list[Container], deadline: float, sequential: bool = False) -> None:
        """SIGTERM, wait until the deadline, SIGKILL; with `sequential`, one container after another (the
        native sidecars' reverse order)."""
        groups = [[c] for c in cs] if sequential else [cs]
        for group in groups:
            live = [c for c in group if c.proc is not None and c.proc.poll() is None]
            self._pre_stop(live, deadline)
            for c in live:
                c.killing = True
                self.k.event(self.pod, "Normal", "Killing", f"Stopping container {c.name}", self._field_path(c))
                _signal(c.proc, signal.SIGTERM)
            while live and time.monotonic() < deadline:
                live = [c for c in live if c.proc is not None and c.proc.poll() is None]
                if live:
                    time.sleep(0.05)
            for c in live:
                _signal(c.proc, signal.SIGKILL)
            for c in group:
                if c.proc is not None:
                    try:
                        c.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                    self._reap(c, "Never")
                    c.killing = False

    def _terminate(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        self._stop_containers(self.mains + [c for c in self.inits if c.kind == "init"], deadline)
        sidecars = [c for c in reversed(self.inits) if c.kind == "sidecar"]
        # sidecars get what is left of the grace period, at least a moment, as the real kubelet gives them
        self._stop_containers(sidecars, max(deadline, time.monotonic() + min(2.0, grace)) if grace > 0 else deadline,
                   sequential=True)
        self.terminal = True
        for c in self.containers:
            c.ready = False
        if self.mains and all(c.state == "terminated" for c in self.mains):
            self.phase = "Succeeded" if all(c.terminated.get("exitCode") == 0 for c in self.mains) else "Failed"
        elif self.phase not in ("Succeeded", "Failed"):
            self.phase = "Failed"

    def _kill_all(self, grace: float) -> None:
        procs = [c.proc for c in self.containers if c.proc is not None and c.proc.poll() is None]
        for p in procs:
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.05)
        for p in procs:
            _signal(p, signal.SIGKILL)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    # -- status ------------------------------------------------------------------------------------

    def _status(self, old: dict) -> dict:
        st = dict(old)
        st["phase"] = self.phase
        st["hostIP"] = "127.0.0.1"
        st["hostIPs"] = [{"ip": "127.0.0.1"}]
        if self.ip:
            st["podIP"] = self.ip
            st["podIPs"] = [{"ip": self.ip}]
        st["startTime"] = old.get("startTime") or self.start_time
        conds = [dict(c) for c in old.get("conditions") or []]
        init_done = self.stage == "main" or self.terminal and self.init_index >= len(self.inits)
        pending_inits = [c.name for c in self.inits[self.init_index:]] if not init_done else []
        unready = [c.name for c in self.mains + [c for c in self.inits if c.kind == "sidecar"] if not c.ready]
        set_condition(conds, _cond("PodReadyToStartContainers", "True" if self.sandbox_ready and not
                                   (self.terminal and self.removed) else "False"))
        set_condition(conds, _cond("Initialized", "True" if init_done or not self.inits else "False",
                                   "" if init_done or not self.inits else "ContainersNotInitialized",
                                   "" if init_done or not self.inits else f"containers with incomplete status: [{' '.join(pending_inits)}]"))
        if self.terminal:
            set_condition(conds, _cond("Ready", "False", "PodCompleted"))
            set_condition(conds, _cond("ContainersReady", "False", "PodCompleted"))
        elif unready:
            msg = f"containers with unready status: [{' '.join(unready)}]"
            set_condition(conds, _cond("Ready", "False", "ContainersNotReady", msg))
            set_condition(conds, _cond("ContainersReady", "False", "ContainersNotReady", msg))
        else:
            set_condition(conds, _cond("Ready", "True"))
            set_condition(conds, _cond("ContainersReady", "True"))
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        conds.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else 99)
        st["conditions"] = conds
        if self.inits:
            st["initContainerStatuses"] = [c.status() for c in self.inits]
        st["containerStatuses"] = [c.status() for c in self.mains]
        return st

    def _write_status(self) -> None:
        """PUT the pod's status when what this kubelet reports changed (the server normalizes what it stores,
        so the comparison is with what was last sent, without timestamps of unchanged conditions)."""
        pod = self.pod
        new = self._status(pod.get("status") or {})
        digest = json.dumps({k: v for k, v in new.items() if k != "conditions"}, sort_keys=True) + json.dumps(
            [{k: c.get(k) for k in ("type", "status", "reason", "message")} for c in new.get("conditions", [])])
        if digest == self.last_digest:
            return
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": dict(pod["metadata"]), "spec": pod["spec"], "status": new}
        try:
            self.kube.update(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", body)
            self.last_digest = digest
        except ApiError as e:
            if e.code == 409:
                return  # the cache is behind: the next tick sends it again from the newer pod
            if e.code != 404:
                log.warning("status update of %s/%s failed: %s", self.ns, self.name, e.message)
        except OSError as e:
            log.warning("status update of %s/%s failed: %s", self.ns, self.name, e)


def set_condition(conds: list, new: dict) -> bool:
    """Sets a condition by type, keeping its transition time while its status stays the same."""
    for i, c in enumerate(conds):
        if c.get("type") == new["type"]:
            if all(c.get(k) == new.get(k) for k in ("status", "reason", "message")):
                return False
            if c.get("status") == new["status"]:
                new["lastTransitionTime"] = c.get("lastTransitionTime", new["lastTransitionTime"])
            conds[i] = new
            return True
    conds.append(new)
    return True


def _cond(ctype: str, status: str, reason: str = "", message: str = "") -> dict:
    c = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": rfc3339()}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def _signal(proc: subprocess.Popen | None, sig) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass


# ---------------------------------------------------------------------------------------------------


class LogError(Exception):
    """A log request that cannot be served (HTTP 400 with this message, as the kubelet answers)."""


class Kubelet:
    """The node agent: registers its Node and keeps its Lease renewed, binds unscheduled pods to itself
    (with the scheduler's credentials, through the binding subresource), runs the pods bound to it, and
    serves their logs to the API server over HTTPS."""

    def __init__(self, kube: Kube, root: str, images: ImageMap | None = None, node_name: str = "localkube",
                 scheduler: Kube | None = None, backoff_base: float = 10.0, backoff_max: float = 300.0,
                 tick: float = 0.1, volume_refresh: float = 2.0, serving: tuple[str, str] | None = None,
                 client_ca: str | None = None):
        self.kube = kube
        self.scheduler = scheduler
        self.root = root
        self.images = images or ImageMap([])
        self.node_name = node_name
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.tick = tick
        self.volume_refresh = volume_refresh
        self.serving, self.client_ca = serving, client_ca
        self.api_port = int(kube.server.rsplit(":", 1)[1])
        self.allocatable = {"cpu": str(os.cpu_count() or 2), "memory": f"{_mem_kib()}Ki", "pods": "250",
                            "ephemeral-storage": "100Gi"}
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self._pods: dict[tuple[str, str], dict] = {}
        self._pods_synced = threading.Event()
        self._ips_in_use: set[str] = set()
        self._next_ip = 0
        self._events: dict[tuple, str] = {}
        self._finished: set[str] = set()
        self.short_root: str | None = None
        self._short_n = 0
        self.log_server = None
        self.log_port = 0

    # -- addresses ---------------------------------------------------------------------------------

    def new_short_dir(self) -> str:
        with self.lock:
            if self.short_root is None:
                self.short_root = tempfile.mkdtemp(prefix="lk", dir="/tmp" if os.path.isdir("/tmp") else None)
            self._short_n += 1
            d = os.path.join(self.short_root, str(self._short_n))
        os.makedirs(d, exist_ok=True)
        return d

    def alloc_ip(self) -> str:
        with self.lock:
            for _ in range(65000):
                self._next_ip = self._next_ip % 65023 + 1
                n = self._next_ip
                ip = f"127.1.{n // 254}.{n % 254 + 1}"
                if ip not in self._ips_in_use:
                    self._ips_in_use.add(ip)
                    return ip
        raise RuntimeError("out of pod addresses")

    def release_ip(self, ip: str) -> None:
        with self.lock:
            self._ips_in_use.discard(ip)

    # -- start and stop ----------------------------------------------------------------------------

    def start(self) -> "Kubelet":
        os.makedirs(os.path.join(self.root, "pods"), exist_ok=True)
        if self.serving:
            self._serve_logs()
        self._register()
        self._spawn(self._heartbeat, "heartbeat")
        self._spawn(self._watch_pods, "pods")
        self._spawn(self._run, "workers")
        if self.scheduler is not None:
            self._spawn(self._bind_loop, "binder")
        return self

    def _spawn(self, fn, name: str) -> None:
        t = threading.Thread(target=fn, name=f"kubelet-{name}", daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.join(timeout=15)
        if self.log_server is not None:
            self.log_server.shutdown()
        if self.short_root:
            shutil.rmtree(self.short_root, ignore_errors=True)

    # -- the node ----------------------------------------------------------------------------------

    def _node_status(self) -> dict:
        now = rfc3339()

        def cond(t, status, reason, message):
            return {"type": t, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now,
                    "lastTransitionTime": self._started_at}
        return {
            "capacity": dict(self.allocatable), "allocatable": dict(self.allocatable),
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status (localkube)"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
            "nodeInfo": {"machineID": "localkube", "systemUUID": "localkube", "bootID": "localkube",
                         "kernelVersion": os.uname().release, "osImage": "localkube (processes on the host)",
                         "containerRuntimeVersion": "localkube://1.0", "kubeletVersion": self.version,
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        }

    def _register(self) -> None:
        self._started_at = rfc3339()
        self.version = self.kube.get("/version").get("gitVersion", "v0.0.0")
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name,
                             "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                                        "kubernetes.io/arch": "amd64"}},
                "spec": {}, "status": self._node_status()}
        try:
            self.kube.create("/api/v1/nodes", node)
        except ApiError as e:
            if e.code != 409:
                raise
        self._update_node_status()
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": micro_time()}}
        try:
            self.kube.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)
        except ApiError as e:
            if e.code != 409:
                raise

    def _update_node_status(self) -> None:
        node = self.kube.get(f"/api/v1/nodes/{self.node_name}")
        node["status"] = self._node_status()
        self.kube.update(f"/api/v1/nodes/{self.node_name}/status", node)

    def _heartbeat(self) -> None:
        """Renews the node's Lease every 10 s and posts its status every minute, as the kubelet does: the
        node lifecycle controller marks a node whose Lease lapses NotReady and evicts its pods."""
        last_status = time.monotonic()
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        while not self.stopping.wait(10):
            try:
                self.kube.merge_patch(lease_path, {"spec": {"renewTime": micro_time(), "holderIdentity": self.node_name}})
                if time.monotonic() - last_status > 60:
                    self._update_node_status()
                    last_status = time.monotonic()
            except (ApiError, OSError) as e:
                log.warning("node heartbeat failed: %s", e)

    def ready(self) -> bool:
        return self._pods_synced.is_set()

    # -- pods bound to this node -------------------------------------------------------------------

    def pod(self, ns: str, name: str) -> dict | None:
        with self.lock:
            return self._pods.get((ns, name))

    def _watch_pods(self) -> None:
        """List and watch the pods bound to this node into a local cache, as the kubelet's informer does."""
        params = {"fieldSelector": f"spec.nodeName={self.node_name}"}
        while not self.stopping.is_set():
            try:
                lst = self.kube.get("/api/v1/pods", params)
                with self.lock:
                    self._pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): _kinded(p) for p in lst["items"]}
                self._pods_synced.set()
                rv = lst["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    gone = False
                    for ev in self.kube.watch("/api/v1/pods", dict(params, resourceVersion=rv), timeout_seconds=60):
                        if ev["type"] == "ERROR":
                            gone = True
                            break
                        obj = ev["object"]
                        rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] == "BOOKMARK":
                            continue
                        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                        with self.lock:
                            if ev["type"] == "DELETED":
                                self._pods.pop(key, None)
                            else:
                                self._pods[key] = _kinded(obj)
                    if gone:
                        break
            except (ApiError, OSError, ValueError) as e:
                if not self.stopping.is_set():
                    log.warning("pod watch failed (listing again): %s", e)
                    self.stopping.wait(1)

    def _run(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                pods = list(self._pods.values())
            for p in pods:
                uid = p["metadata"]["uid"]
                with self.lock:
                    if uid in self.workers or uid in self._finished:
                        continue
                    w = PodWorker(self, p)
                    self.workers[uid] = w
                w.start()
            self.stopping.wait(0.1)

    def worker_done(self, w: PodWorker) -> None:
        with self.lock:
            self.workers.pop(w.uid, None)
            self._finished.add(w.uid)

    # -- the binder --------------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        """Binds every pod that names no node (and asks for the default scheduler) to this node, with the
        scheduler's credentials, as kube-scheduler does on a one-node cluster. A pod whose claims are
        missing or unbound stays unscheduled (PodScheduled False, Unschedulable) and is tried again."""
        params = {"fieldSelector": "spec.nodeName="}
        while not self.stopping.is_set():
            try:
                lst = self.scheduler.get("/api/v1/pods", params)
                for p in lst["items"]:
                    self._bind(_kinded(p))
                rv = lst["metadata"]["resourceVersion"]
                retry_at = time.monotonic() + 2
                for ev in self.scheduler.watch("/api/v1/pods", dict(params, resourceVersion=rv), timeout_seconds=2):
                    if ev["type"] == "ERROR":
                        break
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._bind(_kinded(ev["object"]))
                    if time.monotonic() > retry_at:
                        break  # list again: unschedulable pods get another try
            except (ApiError, OSError, ValueError) as e:
                if not self.stopping.is_set():
                    log.warning("binder watch failed (listing again): %s", e)
                    self.stopping.wait(1)

    def _unschedulable_reason(self, pod: dict) -> str:
        ns = pod["metadata"]["namespace"]
        for v in pod["spec"].get("volumes") or []:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            pvc = self.scheduler.get_opt(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")
            if pvc is None:
                return f'persistentvolumeclaim "{claim}" not found'
            if (pvc.get("status") or {}).get("phase") != "Bound":
                return "pod has unbound immediate PersistentVolumeClaims"
        return ""

    def _bind(self, pod: dict) -> None:
        md, spec = pod["metadata"], pod["spec"]
        if spec.get("nodeName") or md.get("deletionTimestamp"):
            return
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        ns, name = md["namespace"], md["name"]
        try:
            why = self._unschedulable_reason(pod)
            if why:
                message = (f"0/1 nodes are available: {why}. preemption: 0/1 nodes are available: 1 Preemption is "
                           "not helpful for scheduling.")
                conds = [c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] != "PodScheduled"]
                old = next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "PodScheduled"), {})
                if old.get("message") != message:
                    conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                  "message": message, "lastProbeTime": None, "lastTransitionTime": rfc3339()})
                    pod = dict(pod, status=dict(pod.get("status") or {}, conditions=conds, phase="Pending"))
                    self.scheduler.update(f"/api/v1/namespaces/{ns}/pods/{name}/status", pod)
                    self._create_event(pod, "Warning", "FailedScheduling", message, "",
                                       component="default-scheduler", client=self.scheduler)
                return
            binding = {"apiVersion": "v1", "kind": "Binding",
                       "metadata": {"name": name, "namespace": ns, "uid": md["uid"]},
                       "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}}
            self.scheduler.create(f"/api/v1/namespaces/{ns}/pods/{name}/binding", binding)
        except ApiError as e:
            if e.code not in (404, 409):  # gone, bound already, or changed meanwhile
                log.warning("scheduling %s/%s failed: %s", ns, name, e)
            return
        self._create_event(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {self.node_name}",
                           "", component="default-scheduler", client=self.scheduler)

    # -- events ------------------------------------------------------------------------------------

    def event(self, pod: dict, etype: str, reason: str, message: str, field_path: str = "") -> None:
        self._create_event(pod, etype, reason, message, field_path)

    def _create_event(self, pod: dict, etype: str, reason: str, message: str, field_path: str,
                      component: str = "kubelet", client: Kube | None = None) -> None:
        client = client or self.kube
        md = pod["metadata"]
        ns = md["namespace"]
        key = (md["uid"], etype, reason, message, field_path)
        now = rfc3339()
        try:
            name = self._events.get(key)
            if name:
                try:
                    e = client.get(f"/api/v1/namespaces/{ns}/events/{name}")
                    client.merge_patch(f"/api/v1/namespaces/{ns}/events/{name}",
                                       {"count": int(e.get("count") or 1) + 1, "lastTimestamp": now})
                    return
                except ApiError as err:
                    if err.code != 404:
                        raise
            name = f"{md['name']}.{time.time_ns():x}"
            self._events[key] = name
            io = {"kind": "Pod", "namespace": ns, "name": md["name"], "uid": md["uid"], "apiVersion": "v1",
                  "resourceVersion": md.get("resourceVersion", "")}
            if field_path:
                io["fieldPath"] = field_path
            client.create(f"/api/v1/namespaces/{ns}/events", {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ns}, "involvedObject": io, "reason": reason,
                "message": message, "source": {"component": component, "host": self.node_name},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": etype,
                "reportingComponent": component, "reportingInstance": self.node_name})
        except (ApiError, OSError) as e:
            log.debug("event %s for %s/%s not recorded: %s", reason, ns, md["name"], e)  # e.g. namespace terminating

    # -- logs --------------------------------------------------------------------------------------

    def _worker_for(self, ns: str, name: str) -> PodWorker | None:
        pod = self.pod(ns, name)
        if pod is None:
            return None
        with self.lock:
            return self.workers.get(pod["metadata"]["uid"])

    def logs(self, ns: str, name: str, container: str, previous: bool, follow: bool, tail: int | None):
        w = self._worker_for(ns, name)
        path = None
        c = w.find(container) if w else None
        if c is None:
            pod = self.pod(ns, name)
            if pod is not None:
                d = os.path.join(self.root, "pods", f"{ns}_{name}_{pod['metadata']['uid']}", "logs")
                files = sorted((f for f in os.listdir(d) if f.startswith(container + ".")),
                               key=lambda f: int(f.rsplit(".", 2)[1])) if os.path.isdir(d) else []
                if files:
                    path = os.path.join(d, files[-2] if previous and len(files) > 1 else files[-1])
        else:
            path = c.prev_log_path if previous else c.log_path
        if path is None:
            if previous:
                raise LogError(f'previous terminated container "{container}" in pod "{name}" not found')
            raise LogError(f'container "{container}" in pod "{name}" is waiting to start: '
                           f'{(c.waiting_reason if c else "ContainerCreating")}')
        return self._read(path, c if follow else None, tail)

    def _read(self, path: str, follow_container: Container | None, tail: int | None):
        with open(path, "rb") as f:
            data = f.read()
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        yield data
        if follow_container is None:
            return
        pos = os.path.getsize(path)
        while not self.stopping.is_set():
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
            if chunk:
                pos += len(chunk)
                yield chunk
            elif not follow_container.running or follow_container.log_path != path:
                return
            else:
                time.sleep(0.2)

    def _serve_logs(self) -> None:
        """The kubelet's HTTPS endpoint for `kubectl logs`: the API server proxies
        /api/v1/namespaces/N/pods/P/log to /containerLogs/N/P/C here, authenticating with its client
        certificate, which this server verifies against the cluster CA."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415
        from urllib.parse import parse_qs, urlparse  # noqa: PLC0415
        kubelet = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # noqa: D401
                pass

            def do_GET(self):  # noqa: N802
                u = urlparse(self.path)
                parts = u.path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self._plain(404, b"not found")
                q = {k: v[-1] for k, v in parse_qs(u.query).items()}
                tail = int(q["tailLines"]) if q.get("tailLines", "").lstrip("-").isdigit() else None
                try:
                    chunks = kubelet.logs(parts[1], parts[2], parts[3], q.get("previous") == "true",
                                          q.get("follow") == "true", tail)
                    first = next(chunks, b"")
                except (LogError, OSError) as e:
                    return self._plain(400, str(e).encode())
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in _chain(first, chunks):
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass

            def _plain(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        import ssl  # noqa: PLC0415
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.serving)
        if self.client_ca:
            ctx.load_verify_locations(self.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        self.log_server = srv
        self.log_port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, name="kubelet-logs", daemon=True).start()


def _chain(first, rest):
    yield first
    yield from rest


def _kinded(pod: dict) -> dict:
    pod.setdefault("apiVersion", "v1")
    pod.setdefault("kind", "Pod")
    return pod


def _mem_kib() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 8 * 1024 * 1024


__all__ = ["Kubelet", "expand"]
