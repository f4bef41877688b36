"""Server-side printing: `meta.k8s.io/v1 Table` responses, which is what `kubectl get` asks for.

Custom resources get their CRD's additionalPrinterColumns (JSONPath, simple form only, as the real
server supports); built-in kinds get the columns of the real server's printers for the kinds used here.
"""

from __future__ import annotations

import json
import re

from .util import age, parse_time, now, human_duration

NAME_COL = {"name": "Name", "type": "string", "format": "name", "priority": 0,
            "description": "Name must be unique within a namespace. Is required when creating resources, although "
                           "some resources may allow a client to request the generation of an appropriate name "
                           "automatically. Name is primarily intended for creation idempotence and configuration "
                           "definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/"
                           "working-with-objects/names#names"}


def col(name: str, typ: str = "string", priority: int = 0, description: str = "", fmt: str = "") -> dict:
    return {"name": name, "type": typ, "format": fmt, "description": description or name, "priority": priority}


# ---------------------------------------------------------------------------------------------------
# JSONPath (the subset CRD printer columns allow: field access, indexes, wildcards, filters)

_SEG = re.compile(r"""\.([A-Za-z0-9_$\-]+)|\[(\d+|\*)\]|\[\?\(@((?:\.[A-Za-z0-9_\-]+)+)\s*(==|!=)\s*(?:"([^"]*)"|'([^']*)'|([^)\]]+))\)\]|\['([^']+)'\]""")


def jsonpath(obj, path: str) -> list:
    p = path.strip()
    if p.startswith("{") and p.endswith("}"):
        p = p[1:-1]
    if p.startswith("$"):
        p = p[1:]
    cur = [obj]
    pos = 0
    while pos < len(p):
        m = _SEG.match(p, pos)
        if not m:
            return []
        pos = m.end()
        nxt = []
        for c in cur:
            if m.group(1) is not None or m.group(8) is not None:
                key = m.group(1) if m.group(1) is not None else m.group(8)
                if isinstance(c, dict) and key in c:
                    nxt.append(c[key])
            elif m.group(2) is not None:
                if isinstance(c, list):
                    if m.group(2) == "*":
                        nxt.extend(c)
                    elif int(m.group(2)) < len(c):
                        nxt.append(c[int(m.group(2))])
                elif isinstance(c, dict) and m.group(2) == "*":
                    nxt.extend(c.values())
            else:
                fpath = [x for x in m.group(3).split(".") if x]
                want = m.group(5) if m.group(5) is not None else (m.group(6) if m.group(6) is not None else (m.group(7) or "").strip())
                for item in c if isinstance(c, list) else []:
                    v = item
                    for f in fpath:
                        v = v.get(f) if isinstance(v, dict) else None
                    sv = v if isinstance(v, str) else (json.dumps(v) if v is not None else None)
                    if (sv == want) == (m.group(4) == "=="):
                        nxt.append(item)
        cur = nxt
    return cur


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _cr_cell(typ: str, v):
    if v is None:
        return None
    if typ == "string":
        return _fmt(v)
    if typ == "date":
        t = parse_time(v) if isinstance(v, str) else None
        return human_duration((now() - t).total_seconds()) if t else _fmt(v)
    if typ == "integer":
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    if typ == "number":
        return v
    if typ == "boolean":
        return v
    return v


# ---------------------------------------------------------------------------------------------------
# built-in printers


def _pod_row(p: dict) -> list:
    spec, st = p.get("spec") or {}, p.get("status") or {}
    reason = st.get("reason") or st.get("phase") or ""
    restarts = 0
    restartable_restarts = 0
    last_restart = None
    total = len(spec.get("containers") or [])
    ready = 0
    inits = spec.get("initContainers") or []
    sidecars = {c["name"] for c in inits if c.get("restartPolicy") == "Always"}
    total += len(sidecars)
    initializing = False
    for i, cs in enumerate(st.get("initContainerStatuses") or []):
        restarts += cs.get("restartCount", 0)
        lt = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if lt and (last_restart is None or lt > last_restart):
            last_restart = lt
        state = cs.get("state") or {}
        if cs["name"] in sidecars:
            restartable_restarts += cs.get("restartCount", 0)
            if cs.get("started") and cs.get("ready"):
                ready += 1
        if "terminated" in state and state["terminated"].get("exitCode") == 0:
            continue
        if cs["name"] in sidecars and cs.get("started"):
            continue
        if "terminated" in state:
            t = state["terminated"]
            reason = "Init:" + (t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}"))
        elif "waiting" in state and (state["waiting"].get("reason") or "") not in ("", "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{len(inits)}"
        initializing = True
        break
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    if not initializing or conds.get("Initialized") == "True":
        restarts = restartable_restarts
        has_running = False
        for cs in reversed(st.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            lt = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
            if lt and (last_restart is None or lt > last_restart):
                last_restart = lt
            state = cs.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif "terminated" in state and state["terminated"].get("reason"):
                reason = state["terminated"]["reason"]
            elif "terminated" in state:
                t = state["terminated"]
                reason = f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}"
            elif cs.get("ready") and "running" in state:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if conds.get("Ready") == "True" else "NotReady"
    if p["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    rs = str(restarts)
    if restarts and last_restart:
        rs = f"{restarts} ({age(last_restart)} ago)"
    return [f"{ready}/{total}", reason, rs, age(p["metadata"].get("creationTimestamp")), st.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>", st.get("nominatedNodeName") or "<none>",
            "<none>" if not spec.get("readinessGates") else f"{sum(1 for g in spec['readinessGates'] if conds.get(g.get('conditionType')) == 'True')}/{len(spec['readinessGates'])}"]


def _svc_row(s: dict) -> list:
    spec = s.get("spec") or {}
    ports = ",".join(f"{p.get('port')}{('/' + p['protocol']) if p.get('protocol') else ''}" if not p.get("nodePort")
                     else f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    sel = spec.get("selector")
    return [spec.get("type", ""), spec.get("clusterIP") or "<none>",
            ",".join(spec.get("externalIPs") or []) or "<none>", ports or "<none>",
            age(s["metadata"].get("creationTimestamp")),
            ",".join(f"{k}={v}" for k, v in sorted(sel.items())) if sel else "<none>"]


def _event_row(e: dict) -> list:
    io = e.get("involvedObject") or e.get("regarding") or {}
    last = e.get("lastTimestamp") or (e.get("series") or {}).get("lastObservedTime") or e.get("eventTime") \
        or e["metadata"].get("creationTimestamp")
    first = e.get("firstTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp")
    src = e.get("source") or {}
    return [age(last), e.get("type", ""), e.get("reason", ""), f"{(io.get('kind') or '').lower()}/{io.get('name', '')}",
            io.get("fieldPath", ""), src.get("component") or e.get("reportingComponent") or e.get("reportingController", ""),
            e.get("message") or e.get("note", ""), age(first), e.get("count") or (e.get("series") or {}).get("count") or 1,
            e["metadata"]["name"]]


BUILTIN = {
    "pods": ([col("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
              col("Status", description="The aggregate status of the containers in this pod."),
              col("Restarts", description="The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
              col("Age"), col("IP", priority=1), col("Node", priority=1), col("Nominated Node", priority=1),
              col("Readiness Gates", priority=1)], _pod_row),
    "services": ([col("Type"), col("Cluster-IP"), col("External-IP"), col("Port(s)"), col("Age"),
                  col("Selector", priority=1)], _svc_row),
    "secrets": ([col("Type"), col("Data", "integer"), col("Age")],
                lambda o: [o.get("type", ""), len(o.get("data") or {}), age(o["metadata"].get("creationTimestamp"))]),
    "configmaps": ([col("Data", "integer"), col("Age")],
                   lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o["metadata"].get("creationTimestamp"))]),
    "persistentvolumeclaims": ([col("Status"), col("Volume"), col("Capacity"), col("Access Modes"), col("StorageClass"),
                                col("VolumeAttributesClass"), col("Age"), col("VolumeMode", priority=1)],
                               lambda o: [(o.get("status") or {}).get("phase", ""), (o.get("spec") or {}).get("volumeName", ""),
                                          ((o.get("status") or {}).get("capacity") or {}).get("storage", ""),
                                          ",".join({"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}.get(m, m)
                                                   for m in (o.get("status") or {}).get("accessModes") or []),
                                          (o.get("spec") or {}).get("storageClassName") or "<unset>", "<unset>",
                                          age(o["metadata"].get("creationTimestamp")), (o.get("spec") or {}).get("volumeMode", "")]),
    "namespaces": ([col("Status"), col("Age")],
                   lambda o: [(o.get("status") or {}).get("phase", ""), age(o["metadata"].get("creationTimestamp"))]),
    "nodes": ([col("Status"), col("Roles"), col("Age"), col("Version")],
              lambda o: ["Ready" if any(c.get("type") == "Ready" and c.get("status") == "True" for c in (o.get("status") or {}).get("conditions") or []) else "NotReady",
                         "control-plane", age(o["metadata"].get("creationTimestamp")),
                         ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")]),
    "leases.coordination.k8s.io": ([col("Holder"), col("Age")],
                                   lambda o: [(o.get("spec") or {}).get("holderIdentity", ""), age(o["metadata"].get("creationTimestamp"))]),
    "deployments.apps": ([col("Ready"), col("Up-to-date", "integer"), col("Available", "integer"), col("Age")],
                         lambda o: [f"{(o.get('status') or {}).get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 0)}",
                                    (o.get("status") or {}).get("updatedReplicas", 0), (o.get("status") or {}).get("availableReplicas", 0),
                                    age(o["metadata"].get("creationTimestamp"))]),
    "replicasets.apps": ([col("Desired", "integer"), col("Current", "integer"), col("Ready", "integer"), col("Age")],
                         lambda o: [(o.get("spec") or {}).get("replicas", 0), (o.get("status") or {}).get("replicas", 0),
                                    (o.get("status") or {}).get("readyReplicas", 0), age(o["metadata"].get("creationTimestamp"))]),
    "storageclasses.storage.k8s.io": ([col("Provisioner"), col("ReclaimPolicy"), col("VolumeBindingMode"),
                                       col("AllowVolumeExpansion"), col("Age")],
                                      lambda o: [o.get("provisioner", ""), o.get("reclaimPolicy", "Delete"),
                                                 o.get("volumeBindingMode", "Immediate"),
                                                 "true" if o.get("allowVolumeExpansion") else "false",
                                                 age(o["metadata"].get("creationTimestamp"))]),
    "persistentvolumes": ([col("Capacity"), col("Access Modes"), col("Reclaim Policy"), col("Status"), col("Claim"),
                           col("StorageClass"), col("VolumeAttributesClass"), col("Reason"), col("Age")],
                          lambda o: [((o.get("spec") or {}).get("capacity") or {}).get("storage", ""),
                                     ",".join({"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                                               "ReadWriteOncePod": "RWOP"}.get(m, m) for m in (o.get("spec") or {}).get("accessModes") or []),
                                     (o.get("spec") or {}).get("persistentVolumeReclaimPolicy", ""),
                                     (o.get("status") or {}).get("phase", ""),
                                     "/".join(x for x in (((o.get("spec") or {}).get("claimRef") or {}).get("namespace", ""),
                                                          ((o.get("spec") or {}).get("claimRef") or {}).get("name", "")) if x),
                                     (o.get("spec") or {}).get("storageClassName", ""), "<unset>", "",
                                     age(o["metadata"].get("creationTimestamp"))]),
    "serviceaccounts": ([col("Secrets", "integer"), col("Age")],
                        lambda o: [len(o.get("secrets") or []), age(o["metadata"].get("creationTimestamp"))]),
}
EVENT_COLS = [col("Last Seen"), col("Type"), col("Reason"), col("Object"), col("Subobject", priority=1),
              col("Source", priority=1), col("Message"), col("First Seen", priority=1), col("Count", "integer", priority=1),
              col("Name", priority=1)]


def columns(rt, version: str) -> list[dict]:
    if rt.crd is not None:
        cols = rt.columns.get(version) or []
        if not cols:
            return [NAME_COL, col("Age", "date", description="Creation timestamp")]
        return [NAME_COL] + [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                              "description": c.get("description", ""), "priority": c.get("priority", 0)} for c in cols]
    if rt.plural == "events":
        return EVENT_COLS
    if rt.gr in BUILTIN:
        return [NAME_COL] + BUILTIN[rt.gr][0]
    return [NAME_COL, col("Created At", "date", description="CreationTimestamp is a timestamp representing the server time when this object was created.")]


def row(rt, obj: dict, version: str) -> list:
    name = obj["metadata"]["name"]
    if rt.crd is not None:
        cols = rt.columns.get(version) or []
        if not cols:
            return [name, age(obj["metadata"].get("creationTimestamp"))]
        cells = [name]
        for c in cols:
            res = jsonpath(obj, c.get("jsonPath", ""))
            cells.append(_cr_cell(c.get("type", "string"), res[0] if res else None))
        return cells
    if rt.plural == "events":
        return _event_row(obj)
    if rt.gr in BUILTIN:
        return [name] + BUILTIN[rt.gr][1](obj)
    return [name, obj["metadata"].get("creationTimestamp")]


def partial_metadata(obj: dict) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def table(rt, objs: list[dict], version: str, include_object: str = "Metadata", list_meta: dict | None = None,
          headers: bool = True) -> dict:
    rows = []
    for o in objs:
        r = {"cells": row(rt, o, version)}
        if include_object == "Object":
            r["object"] = o
        elif include_object != "None":
            r["object"] = partial_metadata(o)
        rows.append(r)
    t = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta or {}}
    if headers:
        t["columnDefinitions"] = columns(rt, version)
    t["rows"] = rows
    return t
