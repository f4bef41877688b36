"""The control-plane loops a cluster runs besides the API server, reduced to what the operator meets:
CRD establishment, namespace lifecycle, a one-node scheduler, a PVC provisioner (WaitForFirstConsumer,
like kind's default storage class) with PVC protection, and the garbage collector (ownerReferences with
background, foreground and orphan propagation)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

from . import errors as E
from .api import Api, WriteOptions
from .store import Event
from .util import rfc3339

log = logging.getLogger("localkube.controllers")

NODE = "localkube"
CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
PVC_FINALIZER = "kubernetes.io/pvc-protection"


def condition(ctype: str, status: str, reason: str = "", message: str = "", probe: bool = False) -> dict:
    c = {"type": ctype, "status": status, "lastTransitionTime": rfc3339()}
    if probe:
        c["lastProbeTime"] = None
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def set_condition(conds: list, new: dict) -> bool:
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


class Controllers:
    def __init__(self, api: Api, data_dir: str, node_name: str = NODE, resync: float = 0.5):
        self.api = api
        self.reg = api.registry
        self.data_dir = data_dir
        self.node_name = node_name
        self.resync = resync
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.watcher = None
        api.hooks.append(self._hook)
        from .workloads import Workloads  # noqa: PLC0415
        self.workloads = Workloads(api)

    def rt(self, gr: str):
        return self.reg.by_gr(gr)

    # -- hooks: run synchronously inside the write, under the store lock ---------------------------

    def _hook(self, rt, etype: str, obj: dict, prev: dict | None) -> None:
        if rt.gr == "namespaces" and etype == "ADDED":
            # at once, so that a pod created right after its namespace finds the default ServiceAccount
            self._namespace_defaults(obj["metadata"]["name"])
        if rt.gr == "customresourcedefinitions.apiextensions.k8s.io":
            if etype == "DELETED":
                self.reg.unregister_crd(f"{obj['spec']['names']['plural']}.{obj['spec']['group']}")
            elif not obj["metadata"].get("deletionTimestamp"):
                try:
                    self.reg.register_crd(obj)
                except Exception:  # noqa: BLE001
                    log.exception("CRD %s could not be registered", obj["metadata"]["name"])

    # -- bootstrap ---------------------------------------------------------------------------------

    def bootstrap(self) -> None:
        api = self.api
        o = WriteOptions(manager="localkube")
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            api.create(self.rt("namespaces"), "", {"metadata": {"name": ns}}, o)
            self._namespace_defaults(ns)
        api.create(self.rt("nodes"), "", {
            "metadata": {"name": self.node_name, "labels": {
                "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/control-plane": ""}},
            "spec": {},
        }, o)
        api.mutate(self.rt("nodes"), "", self.node_name, lambda n: n.update(status={
            "conditions": [condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.node_name}],
            "capacity": {"cpu": str(os.cpu_count() or 2), "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": str(os.cpu_count() or 2), "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "nodeInfo": {"kubeletVersion": "v1.33.0-localkube", "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "localkube://1", "kernelVersion": os.uname().release,
                         "osImage": "localkube", "machineID": "", "systemUUID": "", "bootID": "",
                         "kubeProxyVersion": ""}}), "localkube", "status")
        api.create(self.rt("storageclasses.storage.k8s.io"), "", {
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "localkube.dev/hostpath", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"}, o)
        api.create(self.rt("services"), "default", {
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}, o)

    def _namespace_defaults(self, ns: str) -> None:
        o = WriteOptions(manager="kube-controller-manager")
        for rt, body in ((self.rt("serviceaccounts"), {"metadata": {"name": "default"}}),
                         (self.rt("configmaps"), {"metadata": {"name": "kube-root-ca.crt"},
                                                  "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nlocalkube\n-----END CERTIFICATE-----\n"}})):
            try:
                self.api.create(rt, ns, body, o)
            except E.ApiError:
                pass

    # -- loop --------------------------------------------------------------------------------------

    def start(self) -> None:
        self.watcher, _ = self.api.store.register(None, None, None)
        self.thread = threading.Thread(target=self._run, name="localkube-controllers", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.watcher is not None:
            self.watcher.close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _run(self) -> None:
        import queue  # noqa: PLC0415
        next_sweep = 0.0
        while not self.stop_event.is_set():
            try:
                ev = self.watcher.q.get(timeout=0.1)
            except queue.Empty:
                ev = None
            try:
                if ev is not None:
                    self._on_event(ev)
                if time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = time.monotonic() + self.resync
            except Exception:  # noqa: BLE001
                log.exception("controller loop error")

    def _on_event(self, ev: Event) -> None:
        if ev.gr == "pods" and ev.type != "DELETED":
            self._schedule(ev.obj)
        if ev.type == "DELETED" or ev.obj["metadata"].get("deletionTimestamp"):
            self.sweep()

    def sweep(self) -> None:
        self._crds()
        self._namespaces()
        for p in self.api.store.iter_all("pods"):
            if not p["spec"].get("nodeName"):
                self._schedule(p)
        self._pvcs()
        self.workloads.sync()
        self._gc()

    # -- CRDs --------------------------------------------------------------------------------------

    def _crds(self) -> None:
        crt = self.rt("customresourcedefinitions.apiextensions.k8s.io")
        for crd in list(self.api.store.iter_all(crt.gr)):
            name = crd["metadata"]["name"]
            if crd["metadata"].get("deletionTimestamp"):
                gr = f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
                rt = self.reg.by_gr(gr)
                left = self.api.store.iter_all(gr)
                for o in list(left):
                    if not o["metadata"].get("deletionTimestamp") and rt is not None:
                        self._delete(rt, o, "Background")
                if not self.api.store.iter_all(gr):
                    self.api.mutate(crt, "", name, lambda c: c["metadata"].update(
                        finalizers=[f for f in c["metadata"].get("finalizers") or [] if f != CRD_FINALIZER]),
                        "kube-apiserver")
                continue
            if CRD_FINALIZER not in (crd["metadata"].get("finalizers") or []):
                self.api.mutate(crt, "", name, lambda c: c["metadata"].setdefault("finalizers", []).append(CRD_FINALIZER),
                                "kube-apiserver")
            st = crd.get("status") or {}
            established = any(c.get("type") == "Established" and c.get("status") == "True" for c in st.get("conditions") or [])
            if not established or st.get("acceptedNames", {}).get("plural") != crd["spec"]["names"].get("plural"):
                def est(c):
                    s = c.setdefault("status", {})
                    n = dict(c["spec"]["names"])
                    s["acceptedNames"] = n
                    conds = s.setdefault("conditions", [])
                    set_condition(conds, condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"))
                    set_condition(conds, condition("Established", "True", "InitialNamesAccepted",
                                                   "the initial names have been accepted"))
                    sv = [v["name"] for v in c["spec"]["versions"] if v.get("storage")]
                    s["storedVersions"] = sorted(set((s.get("storedVersions") or []) + sv))
                self.api.mutate(crt, "", name, est, "kube-apiserver", "status")

    # -- namespaces --------------------------------------------------------------------------------

    def _namespaces(self) -> None:
        nrt = self.rt("namespaces")
        for ns in list(self.api.store.iter_all("namespaces")):
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            remaining = 0
            for rt in self.reg.all():
                if not rt.namespaced or rt.storage:
                    continue
                for o in [o for o in self.api.store.iter_all(rt.gr) if o["metadata"].get("namespace") == name]:
                    remaining += 1
                    if not o["metadata"].get("deletionTimestamp"):
                        self._delete(rt, o, "Background")
            if remaining == 0:
                self.api.mutate(nrt, "", name, lambda n: n.setdefault("spec", {}).update(finalizers=[]),
                                "kube-controller-manager")

    # -- scheduling and volumes --------------------------------------------------------------------

    def _schedule(self, pod: dict) -> None:
        if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return
        if pod["spec"].get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        ns, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]
        problem = None
        node = self.api.store.peek("nodes", "", self.node_name) or {}
        labels = node.get("metadata", {}).get("labels") or {}
        for k, v in (pod["spec"].get("nodeSelector") or {}).items():
            if labels.get(k) != v:
                problem = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        if pod["spec"].get("schedulingGates"):
            return
        claims = []
        for v in pod["spec"].get("volumes") or []:
            cn = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if not cn:
                continue
            pvc = self.api.store.peek("persistentvolumeclaims", ns, cn)
            if pvc is None:
                problem = f'0/1 nodes are available: persistentvolumeclaim "{cn}" not found.'
            elif pvc["metadata"].get("deletionTimestamp"):
                problem = f'0/1 nodes are available: persistentvolumeclaim "{cn}" is being deleted.'
            else:
                claims.append(pvc)
        prt = self.rt("pods")
        if problem:
            def unsched(p):
                conds = p.setdefault("status", {}).setdefault("conditions", [])
                if not set_condition(conds, condition("PodScheduled", "False", "Unschedulable", problem, probe=True)):
                    return False
            self.api.mutate(prt, ns, name, unsched, "kube-scheduler", "status", uid=uid)
            return
        for pvc in claims:
            if (pvc.get("status") or {}).get("phase") != "Bound":
                self._provision(pvc)

        def bind(p):
            p["spec"]["nodeName"] = self.node_name
            conds = p.setdefault("status", {}).setdefault("conditions", [])
            set_condition(conds, condition("PodScheduled", "True", probe=True))
        if self.api.mutate(prt, ns, name, bind, "kube-scheduler", "*", uid=uid) is not None:
            self.event(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {self.node_name}",
                       "default-scheduler")

    def event(self, obj: dict, etype: str, reason: str, message: str, component: str) -> None:
        md = obj["metadata"]
        now = rfc3339()
        ert = self.rt("events")
        try:
            self.api.create(ert, md.get("namespace") or "default", {
                "metadata": {"name": f"{md['name']}.{time.time_ns():x}"},
                "involvedObject": {"kind": obj.get("kind", ""), "namespace": md.get("namespace", ""), "name": md["name"],
                                   "uid": md["uid"], "apiVersion": obj.get("apiVersion", ""),
                                   "resourceVersion": md.get("resourceVersion", "")},
                "reason": reason, "message": message, "source": {"component": component},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": etype,
                "reportingComponent": component, "reportingInstance": ""}, WriteOptions(manager=component))
        except E.ApiError:
            pass

    def _provision(self, pvc: dict) -> None:
        md = pvc["metadata"]
        pv_name = f"pvc-{md['uid']}"
        path = os.path.join(self.data_dir, "pv", pv_name)
        os.makedirs(path, exist_ok=True)
        size = ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        modes = pvc["spec"].get("accessModes") or ["ReadWriteOnce"]
        pvrt = self.rt("persistentvolumes")
        if self.api.store.peek(pvrt.gr, "", pv_name) is None:
            self.api.create(pvrt, "", {
                "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": "localkube.dev/hostpath"},
                             "finalizers": ["kubernetes.io/pv-protection"]},
                "spec": {"capacity": {"storage": size}, "accessModes": modes,
                         "persistentVolumeReclaimPolicy": "Delete",
                         "storageClassName": pvc["spec"].get("storageClassName") or "",
                         "volumeMode": pvc["spec"].get("volumeMode", "Filesystem"),
                         "hostPath": {"path": path, "type": "DirectoryOrCreate"},
                         "claimRef": {"kind": "PersistentVolumeClaim", "namespace": md["namespace"], "name": md["name"],
                                      "uid": md["uid"], "apiVersion": "v1"}}},
                WriteOptions(manager="localkube-provisioner"))
            self.api.mutate(pvrt, "", pv_name, lambda p: p.update(status={"phase": "Bound"}), "kube-controller-manager", "status")
        crt = self.rt("persistentvolumeclaims")

        def bind(c):
            c["spec"]["volumeName"] = pv_name
            ann = c["metadata"].setdefault("annotations", {})
            ann["pv.kubernetes.io/bind-completed"] = "yes"
            ann["pv.kubernetes.io/bound-by-controller"] = "yes"
            ann["volume.kubernetes.io/storage-provisioner"] = "localkube.dev/hostpath"
            c["status"] = {"phase": "Bound", "accessModes": modes, "capacity": {"storage": size}}
        self.api.mutate(crt, md["namespace"], md["name"], bind, "kube-controller-manager", "*", uid=md["uid"])

    def pv_path(self, pvc: dict) -> str | None:
        vn = (pvc.get("spec") or {}).get("volumeName")
        if not vn:
            return None
        pv = self.api.store.peek("persistentvolumes", "", vn)
        return ((pv or {}).get("spec") or {}).get("hostPath", {}).get("path")

    def _pvcs(self) -> None:
        crt = self.rt("persistentvolumeclaims")
        pvrt = self.rt("persistentvolumes")
        for pvc in list(self.api.store.iter_all(crt.gr)):
            md = pvc["metadata"]
            sc_name = pvc["spec"].get("storageClassName")
            sc = self.api.store.peek("storageclasses.storage.k8s.io", "", sc_name or "")
            if (not md.get("deletionTimestamp") and (pvc.get("status") or {}).get("phase") != "Bound" and sc
                    and sc.get("volumeBindingMode", "Immediate") == "Immediate"):
                self._provision(pvc)
            if md.get("deletionTimestamp") and PVC_FINALIZER in (md.get("finalizers") or []):
                in_use = any(
                    (v.get("persistentVolumeClaim") or {}).get("claimName") == md["name"]
                    for p in self.api.store.iter_all("pods") if p["metadata"]["namespace"] == md["namespace"]
                    and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                    for v in p["spec"].get("volumes") or [])
                if not in_use:
                    self.api.mutate(crt, md["namespace"], md["name"], lambda c: c["metadata"].update(
                        finalizers=[f for f in c["metadata"].get("finalizers") or [] if f != PVC_FINALIZER]),
                        "kube-controller-manager", uid=md["uid"])
        live_claims = {p["metadata"]["uid"] for p in self.api.store.iter_all(crt.gr)}
        for pv in list(self.api.store.iter_all(pvrt.gr)):
            ref = pv["spec"].get("claimRef") or {}
            if ref.get("uid") and ref["uid"] not in live_claims and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
                path = (pv["spec"].get("hostPath") or {}).get("path")
                name = pv["metadata"]["name"]
                if pv["metadata"].get("finalizers"):
                    self.api.mutate(pvrt, "", name, lambda p: p["metadata"].update(finalizers=[]), "kube-controller-manager")
                if self.api.store.peek(pvrt.gr, "", name) is not None:
                    try:
                        self.api.delete(pvrt, "", name)
                    except E.ApiError:
                        pass
                if path and path.startswith(self.data_dir):
                    shutil.rmtree(path, ignore_errors=True)

    # -- garbage collector -------------------------------------------------------------------------

    def _delete(self, rt, obj: dict, policy: str) -> None:
        md = obj["metadata"]
        try:
            self.api.delete(rt, md.get("namespace", ""), md["name"],
                            {"propagationPolicy": policy, "preconditions": {"uid": md["uid"]}})
        except E.ApiError as e:
            if e.code not in (404, 409):
                raise

    def _owner_exists(self, ref: dict, ns: str) -> bool:
        group = ref.get("apiVersion", "").rpartition("/")[0]
        rt = next((t for t in self.reg.all() if t.group == group and t.kind == ref.get("kind")), None)
        if rt is None:
            return True  # the real collector cannot resolve the kind either, and leaves the dependent alone
        o = self.api.store.peek(rt.gr, ns if rt.namespaced else "", ref.get("name", ""))
        return o is not None and o["metadata"].get("uid") == ref.get("uid")

    def _gc(self) -> None:
        by_owner: dict[str, list] = {}
        objects = []
        for rt in self.reg.all():
            if rt.storage:
                continue  # a view of another kind's objects
            for o in self.api.store.iter_all(rt.gr):
                objects.append((rt, o))
                for ref in o["metadata"].get("ownerReferences") or []:
                    by_owner.setdefault(ref.get("uid"), []).append((rt, o))
        for rt, o in objects:
            md = o["metadata"]
            fins = md.get("finalizers") or []
            if md.get("deletionTimestamp") and "orphan" in fins:
                for drt, dep in by_owner.get(md["uid"], []):
                    dmd = dep["metadata"]
                    self.api.mutate(drt, dmd.get("namespace", ""), dmd["name"], lambda d, u=md["uid"]: d["metadata"].update(
                        ownerReferences=[r for r in d["metadata"].get("ownerReferences") or [] if r.get("uid") != u]),
                        "kube-controller-manager", uid=dmd["uid"])
                self.api.mutate(rt, md.get("namespace", ""), md["name"], lambda d: d["metadata"].update(
                    finalizers=[f for f in d["metadata"].get("finalizers") or [] if f != "orphan"]),
                    "kube-controller-manager", uid=md["uid"])
                continue
            if md.get("deletionTimestamp") and "foregroundDeletion" in fins:
                deps = by_owner.get(md["uid"], [])
                blocking = 0
                for drt, dep in deps:
                    ref = next(r for r in dep["metadata"]["ownerReferences"] if r.get("uid") == md["uid"])
                    if ref.get("blockOwnerDeletion"):
                        blocking += 1
                    if not dep["metadata"].get("deletionTimestamp"):
                        self._delete(drt, dep, "Foreground")
                if blocking == 0:
                    self.api.mutate(rt, md.get("namespace", ""), md["name"], lambda d: d["metadata"].update(
                        finalizers=[f for f in d["metadata"].get("finalizers") or [] if f != "foregroundDeletion"]),
                        "kube-controller-manager", uid=md["uid"])
                continue
            refs = md.get("ownerReferences") or []
            if not refs or md.get("deletionTimestamp"):
                continue
            alive = [r for r in refs if self._owner_exists(r, md.get("namespace", ""))]
            if not alive:
                self._delete(rt, o, "Background")
            elif len(alive) != len(refs):
                self.api.mutate(rt, md.get("namespace", ""), md["name"], lambda d, a=alive: d["metadata"].update(
                    ownerReferences=a), "kube-controller-manager", uid=md["uid"])
