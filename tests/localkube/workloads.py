"""Deployment and ReplicaSet controllers, enough for a chart's Deployment (the operator) to run here:
ReplicaSets per pod-template hash, RollingUpdate (the new ReplicaSet scales up, old ones scale down once
the new pods are ready) and Recreate, revision annotations, history limit, and the status fields that
`kubectl rollout status` reads. No surge/unavailability arithmetic, no pause, no rollback."""

from __future__ import annotations

import copy
import hashlib
import json
import logging

from . import errors as E
from .api import Api, WriteOptions
from .controllers import condition, set_condition

log = logging.getLogger("localkube.workloads")

SAFE = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: dict) -> str:
    h = int.from_bytes(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()[:8], "big")
    out = ""
    for _ in range(10):
        out += SAFE[h % len(SAFE)]
        h //= len(SAFE)
    return out


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _owned_by(obj: dict, uid: str) -> bool:
    return any(r.get("uid") == uid and r.get("controller") for r in obj["metadata"].get("ownerReferences") or [])


class Workloads:
    def __init__(self, api: Api):
        self.api = api
        self.rs_rt = api.registry.by_gr("replicasets.apps")
        self.dep_rt = api.registry.by_gr("deployments.apps")
        self.pod_rt = api.registry.by_gr("pods")

    def sync(self) -> None:
        for d in list(self.api.store.iter_all(self.dep_rt.gr)):
            try:
                self._deployment(copy.deepcopy(d))
            except E.ApiError as e:
                log.debug("deployment %s: %s", d["metadata"]["name"], e.message)
        for rs in list(self.api.store.iter_all(self.rs_rt.gr)):
            try:
                self._replicaset(copy.deepcopy(rs))
            except E.ApiError as e:
                log.debug("replicaset %s: %s", rs["metadata"]["name"], e.message)

    # -- ReplicaSets -------------------------------------------------------------------------------

    def _replicaset(self, rs: dict) -> None:
        md = rs["metadata"]
        if md.get("deletionTimestamp"):
            return
        ns, uid = md["namespace"], md["uid"]
        want = int((rs.get("spec") or {}).get("replicas", 1))
        pods = [p for p in self.api.store.iter_all("pods") if p["metadata"].get("namespace") == ns and _owned_by(p, uid)]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        tmpl = rs["spec"].get("template") or {}
        for _ in range(max(0, want - len(live))):
            pmd = copy.deepcopy(tmpl.get("metadata") or {})
            pmd["generateName"] = md["name"] + "-"
            pmd["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": md["name"], "uid": uid,
                                       "controller": True, "blockOwnerDeletion": True}]
            self.api.create(self.pod_rt, ns, {"apiVersion": "v1", "kind": "Pod", "metadata": pmd,
                                              "spec": copy.deepcopy(tmpl.get("spec") or {})},
                            WriteOptions(manager="kube-controller-manager"))
        if len(live) > want:
            victims = sorted(live, key=lambda p: (_ready(p), p["metadata"]["creationTimestamp"]))
            for p in victims[:len(live) - want]:
                try:
                    self.api.delete(self.pod_rt, ns, p["metadata"]["name"], {"preconditions": {"uid": p["metadata"]["uid"]}})
                except E.ApiError:
                    pass
        ready = sum(1 for p in live if _ready(p))
        status = {"replicas": len(live), "fullyLabeledReplicas": len(live), "readyReplicas": ready,
                  "availableReplicas": ready, "observedGeneration": md.get("generation", 1)}
        status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}

        def put(o):
            if o.get("status") == status:
                return False
            o["status"] = status
        self.api.mutate(self.rs_rt, ns, md["name"], put, "kube-controller-manager", "status", uid=uid)

    # -- Deployments -------------------------------------------------------------------------------

    def _deployment(self, d: dict) -> None:
        md = d["metadata"]
        if md.get("deletionTimestamp"):
            return
        ns, uid, name = md["namespace"], md["uid"], md["name"]
        spec = d.get("spec") or {}
        want = int(spec.get("replicas", 1))
        tmpl = copy.deepcopy(spec.get("template") or {})
        h = template_hash(tmpl)
        owned = [r for r in self.api.store.iter_all(self.rs_rt.gr) if r["metadata"].get("namespace") == ns
                 and _owned_by(r, uid)]
        new = next((r for r in owned if (r["metadata"].get("labels") or {}).get("pod-template-hash") == h), None)
        olds = [r for r in owned if r is not new]
        revs = [int((r["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0")) for r in owned]
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        old_pods = sum(int((r.get("status") or {}).get("replicas", 0)) for r in olds)
        if new is None:
            rev = str(max(revs + [0]) + 1)
            labels = dict((tmpl.get("metadata") or {}).get("labels") or {}, **{"pod-template-hash": h})
            tmpl.setdefault("metadata", {})["labels"] = labels
            sel = copy.deepcopy(spec.get("selector") or {})
            sel.setdefault("matchLabels", {})["pod-template-hash"] = h
            start = 0 if strategy == "Recreate" and old_pods else want
            new = self.api.create(self.rs_rt, ns, {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"{name}-{h}", "labels": labels,
                             "annotations": {"deployment.kubernetes.io/revision": rev,
                                             "deployment.kubernetes.io/desired-replicas": str(want)},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                                                  "controller": True, "blockOwnerDeletion": True}]},
                "spec": {"replicas": start, "selector": sel, "template": tmpl}},
                WriteOptions(manager="kube-controller-manager"))
        new_ready = int((new.get("status") or {}).get("readyReplicas", 0))
        if strategy == "Recreate":
            for r in olds:
                self._scale(r, 0)
            self._scale(new, want if old_pods == 0 else 0)
        else:
            self._scale(new, want)
            if new_ready >= want:
                for r in olds:
                    self._scale(r, 0)
        keep = int(spec.get("revisionHistoryLimit", 10))
        idle = sorted((r for r in olds if not (r.get("spec") or {}).get("replicas") and not (r.get("status") or {}).get("replicas")),
                      key=lambda r: int((r["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0")))
        for r in idle[:max(0, len(idle) - keep)]:
            try:
                self.api.delete(self.rs_rt, ns, r["metadata"]["name"])
            except E.ApiError:
                pass
        total = sum(int((r.get("status") or {}).get("replicas", 0)) for r in owned if r is not new) + \
            int((new.get("status") or {}).get("replicas", 0))
        avail = sum(int((r.get("status") or {}).get("availableReplicas", 0)) for r in owned)
        updated = int((new.get("status") or {}).get("replicas", 0))

        def put(o):
            st = copy.deepcopy(o.get("status") or {})
            st.update({"observedGeneration": o["metadata"].get("generation", 1), "replicas": total,
                       "updatedReplicas": updated, "readyReplicas": new_ready if not olds else avail,
                       "availableReplicas": avail})
            unavailable = max(0, want - avail)
            if unavailable:
                st["unavailableReplicas"] = unavailable
            else:
                st.pop("unavailableReplicas", None)
            for k in ("readyReplicas", "availableReplicas", "updatedReplicas", "replicas"):
                if not st.get(k):
                    st.pop(k, None)
            conds = st.setdefault("conditions", [])
            set_condition(conds, condition("Available", "True" if avail >= want else "False",
                                           "MinimumReplicasAvailable" if avail >= want else "MinimumReplicasUnavailable",
                                           "Deployment has minimum availability." if avail >= want else
                                           "Deployment does not have minimum availability."))
            done = updated == want and avail >= want and total == updated
            set_condition(conds, condition("Progressing", "True", "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                                           f'ReplicaSet "{new["metadata"]["name"]}" has successfully progressed.' if done
                                           else f'ReplicaSet "{new["metadata"]["name"]}" is progressing.'))
            for c in conds:
                c.setdefault("lastUpdateTime", c.get("lastTransitionTime"))
            if st == o.get("status"):
                return False
            o["status"] = st
        self.api.mutate(self.dep_rt, ns, name, put, "kube-controller-manager", "status", uid=uid)
        if (md.get("annotations") or {}).get("deployment.kubernetes.io/revision") != \
                (new["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision"):
            rev = (new["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
            self.api.mutate(self.dep_rt, ns, name, lambda o: o["metadata"].setdefault("annotations", {}).update(
                {"deployment.kubernetes.io/revision": rev}), "kube-controller-manager", uid=uid)

    def _scale(self, rs: dict, n: int) -> None:
        if int((rs.get("spec") or {}).get("replicas", 0)) == n:
            return

        def f(o):
            o["spec"]["replicas"] = n
        self.api.mutate(self.rs_rt, rs["metadata"]["namespace"], rs["metadata"]["name"], f, "kube-controller-manager",
                        uid=rs["metadata"]["uid"])
