"""Per-kind behaviour: defaulting, create/update preparation and validation (the "strategies" of the
real API server), for the built-in kinds the operator uses and for custom resources.

Only the rules a controller can trip over are here: what the real server defaults (so an operator that
compares its desired object to the live one sees the same differences it will see on a cluster), what it
refuses (immutable pod specs, bad names, bad Events), and what it resets (status on the main resource).
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import re

from . import schema as schemamod
from .errors import FieldError
from .util import (DNS1035_LABEL, DNS1035_MSG, DNS1123_LABEL, DNS1123_SUBDOMAIN, LABEL_MSG, LABEL_VALUE,
                   QUALIFIED_NAME, SUBDOMAIN_MSG, generate_suffix)


def validate_name(name: str, rule: str = "subdomain", path: str = "metadata.name") -> list[FieldError]:
    errs = []
    if rule == "label":
        if not DNS1123_LABEL.match(name) or len(name) > 63:
            errs.append(FieldError("Invalid", path, name, LABEL_MSG if len(name) <= 63 else
                                   "must be no more than 63 characters"))
    elif rule == "dns1035":
        if not DNS1035_LABEL.match(name) or len(name) > 63:
            errs.append(FieldError("Invalid", path, name, DNS1035_MSG if len(name) <= 63 else
                                   "must be no more than 63 characters"))
    elif rule == "path":
        if name in (".", "..") or "/" in name or "%" in name:
            errs.append(FieldError("Invalid", path, name, "may not contain '/' or '%'"))
    else:
        if not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
            errs.append(FieldError("Invalid", path, name, SUBDOMAIN_MSG if len(name) <= 253 else
                                   "must be no more than 253 characters"))
    return errs


def _validate_qualified_key(k: str, path: str) -> list[FieldError]:
    prefix, _, name = k.rpartition("/")
    errs = []
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name) or (prefix and not DNS1123_SUBDOMAIN.match(prefix)):
        errs.append(FieldError("Invalid", path, k,
                               "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
                               "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                               "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"))
    return errs


def validate_meta(obj: dict, old: dict | None) -> list[FieldError]:
    md = obj.get("metadata") or {}
    errs = []
    for k, v in (md.get("labels") or {}).items():
        errs += _validate_qualified_key(k, "metadata.labels")
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
            errs.append(FieldError("Invalid", "metadata.labels", v,
                                   "a valid label must be an empty string or consist of alphanumeric characters, "
                                   "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                                   "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                                   "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"))
    for k, v in (md.get("annotations") or {}).items():
        errs += _validate_qualified_key(k, "metadata.annotations")
        if not isinstance(v, str):
            errs.append(FieldError("Invalid", "metadata.annotations", v, "must be a string"))
    total = sum(len(k) + len(v) for k, v in (md.get("annotations") or {}).items() if isinstance(v, str))
    if total > 262144:
        errs.append(FieldError("TooLong", "metadata.annotations", "", "262144"))
        errs[-1].kind = "TooLongAnnotations"
    for ref in md.get("ownerReferences") or []:
        for req in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(req):
                errs.append(FieldError("Invalid", f"metadata.ownerReferences.{req}" if req != "uid" else
                                       "metadata.ownerReferences.uid", ref.get(req, ""),
                                       f"{req} must not be empty" if req != "uid" else "uid must not be empty"))
    controllers = [r for r in md.get("ownerReferences") or [] if r.get("controller")]
    if len(controllers) > 1:
        errs.append(FieldError("Invalid", "metadata.ownerReferences", md.get("ownerReferences"),
                               "Only one reference can have Controller set to true. Found \"true\" in references "
                               "for " + " and ".join(f"{r.get('kind')}/{r.get('name')}" for r in controllers)))
    if old is not None:
        omd = old.get("metadata") or {}
        if omd.get("deletionTimestamp"):
            new_fins = [f for f in md.get("finalizers") or [] if f not in (omd.get("finalizers") or [])]
            if new_fins:
                errs.append(FieldError("Forbidden", "metadata.finalizers",
                                       detail=f"no new finalizers can be added if the object is being deleted, "
                                              f"found new finalizers {new_fins!r}".replace("'", '"')))
    return errs


class Strategy:
    name_rule = "subdomain"

    def __init__(self, rt):
        self.rt = rt

    def prepare_create(self, obj: dict, ctx) -> None:
        if self.rt.status:
            obj.pop("status", None)

    def prepare_update(self, new: dict, old: dict, ctx) -> None:
        pass

    def default(self, obj: dict, old: dict | None, ctx) -> None:
        pass

    def prune(self, obj: dict) -> list[str]:
        return []

    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        return []

    def spec_changed(self, new: dict, old: dict) -> bool:
        """Whether metadata.generation must be bumped."""
        strip = {"metadata", "status", "apiVersion", "kind"}
        a = {k: v for k, v in new.items() if k not in strip}
        b = {k: v for k, v in old.items() if k not in strip}
        return a != b


# ---------------------------------------------------------------------------------------------------
# custom resources


class CustomResourceStrategy(Strategy):
    def prune(self, obj: dict) -> list[str]:
        s = self.rt.schema(obj_version(obj, self.rt))
        schemamod.drop_nulls(obj, s)
        unknown = schemamod.prune(obj, s, root=True)
        return unknown

    def default(self, obj: dict, old: dict | None, ctx) -> None:
        schemamod.apply_defaults(obj, self.rt.schema(obj_version(obj, self.rt)))

    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        s = self.rt.schema(obj_version(obj, self.rt))
        errs = schemamod.validate(obj, s, root=True)
        if errs:
            return errs
        return schemamod.validate_cel(obj, old if old is not None else schemamod.MISSING, s, root=True)

    def spec_changed(self, new: dict, old: dict) -> bool:
        strip = {"metadata", "apiVersion", "kind"}
        if self.rt.status:
            strip.add("status")
        a = {k: v for k, v in new.items() if k not in strip}
        b = {k: v for k, v in old.items() if k not in strip}
        return a != b


def obj_version(obj: dict, rt) -> str:
    av = obj.get("apiVersion") or ""
    v = av.rpartition("/")[2]
    return v if v in rt.versions else rt.versions[0]


# ---------------------------------------------------------------------------------------------------
# pods

IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
QUANTITY_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def validate_port_name(name: str, path: str) -> list[FieldError]:
    if len(name) > 15:
        return [FieldError("Invalid", path, name, "must be no more than 15 characters")]
    if not IANA_SVC_NAME.match(name):
        return [FieldError("Invalid", path, name, "must contain only alpha-numeric characters (a-z, 0-9), and "
                                                   "hyphens (-)")]
    if "--" in name:
        return [FieldError("Invalid", path, name, "must not contain consecutive hyphens")]
    if not re.search(r"[a-z]", name):
        return [FieldError("Invalid", path, name, "must contain at least one letter (a-z)")]
    return []


def quantity_value(q) -> float:
    """The numeric value of a resource quantity (raises ValueError if it is not one)."""
    if isinstance(q, (int, float)) and not isinstance(q, bool):
        return float(q)
    m = QUANTITY.match(str(q))
    if not m:
        raise ValueError(QUANTITY_MSG)
    num, suf = m.group(1), m.group(2)
    mult = {"": 1, "m": 1e-3, "u": 1e-6, "n": 1e-9, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
            "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
    if suf in mult:
        return float(num) * mult[suf]
    em = re.match(r"^[eE]([-+]?[0-9]+)$", suf)
    if em:
        return float(num) * 10 ** int(em.group(1))
    raise ValueError(QUANTITY_MSG)


def check_quantities(obj: dict) -> str | None:
    """The decoding error a real server gives for a malformed quantity in a pod (spec or template)."""
    specs = []
    if obj.get("kind") == "Pod":
        specs.append(obj.get("spec") or {})
    tmpl = ((obj.get("spec") or {}).get("template") or {}).get("spec")
    if isinstance(tmpl, dict):
        specs.append(tmpl)
    for spec in specs:
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            r = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for v in (r.get(kind) or {}).values():
                    try:
                        quantity_value(v)
                    except ValueError:
                        return QUANTITY_MSG
    if obj.get("kind") == "PersistentVolumeClaim":
        for v in (((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).values():
            try:
                quantity_value(v)
            except ValueError:
                return QUANTITY_MSG
    return None


def validate_resources(r: dict, path: str) -> list[FieldError]:
    errs = []
    req, lim = r.get("requests") or {}, r.get("limits") or {}
    for name, v in req.items():
        if name in lim:
            try:
                if quantity_value(v) > quantity_value(lim[name]):
                    errs.append(FieldError("Invalid", f"{path}.requests", v,
                                           f"must be less than or equal to {name} limit of {lim[name]}"))
            except ValueError:
                pass
    return errs

_ALLOWED_POD_UPDATE = ("pod updates may not change fields other than `spec.containers[*].image`,"
                       "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                       "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set "
                       "to 1 if it was previously negative)")

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def _default_probe(p: dict | None) -> None:
    if not isinstance(p, dict):
        return
    p.setdefault("timeoutSeconds", 1)
    p.setdefault("periodSeconds", 10)
    p.setdefault("successThreshold", 1)
    p.setdefault("failureThreshold", 3)
    if isinstance(p.get("httpGet"), dict):
        p["httpGet"].setdefault("scheme", "HTTP")
        p["httpGet"].setdefault("path", "/")


def _default_container(c: dict) -> None:
    image = c.get("image") or ""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        pull = "IfNotPresent"
    elif ":" not in last or last.endswith(":latest"):
        pull = "Always"
    else:
        pull = "IfNotPresent"
    c.setdefault("imagePullPolicy", pull)
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        p.setdefault("protocol", "TCP")
    for e in c.get("env") or []:
        fr = ((e.get("valueFrom") or {}).get("fieldRef"))
        if isinstance(fr, dict):
            fr.setdefault("apiVersion", "v1")
    for pr in ("readinessProbe", "livenessProbe", "startupProbe"):
        _default_probe(c.get(pr))


def default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            _default_container(c)
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        sources = [k for k in v if k != "name"]
        if not sources:
            v["emptyDir"] = {}
        for src in ("secret", "configMap", "downwardAPI", "projected"):
            if isinstance(v.get(src), dict):
                v[src].setdefault("defaultMode", 420)
        for it in (v.get("downwardAPI") or {}).get("items") or []:
            if isinstance(it.get("fieldRef"), dict):
                it["fieldRef"].setdefault("apiVersion", "v1")


def _qos(spec: dict) -> str:
    cs = spec.get("containers") or []
    req_any = False
    guaranteed = bool(cs)
    for c in cs + [c for c in spec.get("initContainers") or []]:
        r = c.get("resources") or {}
        lim, req = r.get("limits") or {}, r.get("requests") or {}
        if lim or req:
            req_any = True
        for res in ("cpu", "memory"):
            if res not in lim or (res in req and req[res] != lim[res]):
                guaranteed = False
    if guaranteed and req_any:
        return "Guaranteed"
    return "Burstable" if req_any else "BestEffort"


class PodStrategy(Strategy):
    def prepare_create(self, obj: dict, ctx) -> None:
        spec = obj.setdefault("spec", {})
        obj["status"] = {"phase": "Pending", "qosClass": _qos(spec)}
        # Admission plugins of a default cluster: ServiceAccount and DefaultTolerationSeconds.
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec["serviceAccount"] = spec["serviceAccountName"]
        ns, sa = obj["metadata"].get("namespace", ""), spec["serviceAccountName"]
        if ctx.store.peek("serviceaccounts", ns, sa) is None:
            from .errors import forbidden  # noqa: PLC0415
            raise forbidden(self.rt, obj["metadata"].get("name", ""),
                            f'error looking up service account {ns}/{sa}: serviceaccount "{sa}" not found')
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        tol = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == key for t in tol if isinstance(t, dict)):
                tol.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        if spec.get("automountServiceAccountToken", True) is not False:
            vname = "kube-api-access-" + generate_suffix(5)
            if not any(SA_MOUNT == m.get("mountPath") for c in spec.get("containers") or []
                       for m in c.get("volumeMounts") or []):
                spec.setdefault("volumes", []).append({"name": vname, "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                        "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
                for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                    c.setdefault("volumeMounts", []).append({"name": vname, "readOnly": True, "mountPath": SA_MOUNT})

    def prepare_update(self, new: dict, old: dict, ctx) -> None:
        new["status"] = copy.deepcopy(old.get("status") or {})

    def default(self, obj: dict, old: dict | None, ctx) -> None:
        if isinstance(obj.get("spec"), dict):
            default_pod_spec(obj["spec"])

    def spec_changed(self, new: dict, old: dict) -> bool:
        return False

    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        spec = obj.get("spec") or {}
        errs: list[FieldError] = []
        cs = spec.get("containers") or []
        if not cs:
            errs.append(FieldError("Required", "spec.containers"))
        vols = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)}
        seen = set()
        for i, v in enumerate(spec.get("volumes") or []):
            n = v.get("name", "")
            if not n:
                errs.append(FieldError("Required", f"spec.volumes[{i}].name"))
            elif not DNS1123_LABEL.match(n) or len(n) > 63:
                errs += validate_name(n, "label", f"spec.volumes[{i}].name")
            elif n in seen:
                errs.append(FieldError("Duplicate", f"spec.volumes[{i}].name", n))
            seen.add(n)
            if isinstance(v.get("persistentVolumeClaim"), dict) and not v["persistentVolumeClaim"].get("claimName"):
                errs.append(FieldError("Required", f"spec.volumes[{i}].persistentVolumeClaim.claimName"))
        names = set()
        for kind in ("initContainers", "containers"):
            for i, c in enumerate(spec.get(kind) or []):
                p = f"spec.{kind}[{i}]"
                n = c.get("name", "")
                if not n:
                    errs.append(FieldError("Required", f"{p}.name"))
                else:
                    errs += validate_name(n, "label", f"{p}.name")
                    if n in names:
                        errs.append(FieldError("Duplicate", f"{p}.name", n))
                    names.add(n)
                if not c.get("image"):
                    errs.append(FieldError("Required", f"{p}.image"))
                rp = c.get("restartPolicy")
                if rp is not None and (kind == "containers" or rp != "Always"):
                    errs.append(FieldError("NotSupported" if kind == "initContainers" else "Forbidden",
                                           f"{p}.restartPolicy", rp, supported=["Always"] if kind == "initContainers" else None))
                for j, m in enumerate(c.get("volumeMounts") or []):
                    if m.get("name") not in vols:
                        errs.append(FieldError("NotFound", f"{p}.volumeMounts[{j}].name", m.get("name")))
                    if not m.get("mountPath"):
                        errs.append(FieldError("Required", f"{p}.volumeMounts[{j}].mountPath"))
                for j, port in enumerate(c.get("ports") or []):
                    cp = port.get("containerPort")
                    if not isinstance(cp, int) or not 1 <= cp <= 65535:
                        errs.append(FieldError("Invalid", f"{p}.ports[{j}].containerPort", cp,
                                               "must be between 1 and 65535, inclusive"))
                    if port.get("name"):
                        errs += validate_port_name(port["name"], f"{p}.ports[{j}].name")
                errs += validate_resources(c.get("resources") or {}, f"{p}.resources")
                for j, e in enumerate(c.get("env") or []):
                    if not e.get("name"):
                        errs.append(FieldError("Required", f"{p}.env[{j}].name"))
                if kind == "initContainers" and rp != "Always":
                    for pr in ("readinessProbe", "livenessProbe", "startupProbe"):
                        if c.get(pr):
                            errs.append(FieldError("Forbidden", f"{p}.{pr}",
                                                   detail="may not be set for init containers without restartPolicy=Always"))
        rp = spec.get("restartPolicy")
        if rp not in ("Always", "OnFailure", "Never"):
            errs.append(FieldError("NotSupported", "spec.restartPolicy", rp, supported=["Always", "OnFailure", "Never"]))
        if old is not None and not errs:
            a, b = copy.deepcopy(spec), copy.deepcopy(old.get("spec") or {})
            for s in (a, b):
                for kind in ("containers", "initContainers"):
                    for c in s.get(kind) or []:
                        c.pop("image", None)
                s.pop("activeDeadlineSeconds", None)
                s.pop("tolerations", None)
                s.pop("terminationGracePeriodSeconds", None)
            # the scheduler binds through a subresource; nodeName may go from unset to set once
            if not b.get("nodeName"):
                a.pop("nodeName", None)
            if a != b:
                errs.append(FieldError("Forbidden", "spec", detail=_ALLOWED_POD_UPDATE))
        return errs


# ---------------------------------------------------------------------------------------------------
# services, secrets, PVCs, namespaces, events, leases


class ServiceStrategy(Strategy):
    name_rule = "dns1035"

    def prepare_create(self, obj: dict, ctx) -> None:
        obj["status"] = {"loadBalancer": {}}
        spec = obj.setdefault("spec", {})
        if spec.get("type", "ClusterIP") != "ExternalName":
            if spec.get("clusterIP") in (None, ""):
                spec["clusterIP"] = ctx.allocate_cluster_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])

    def prepare_update(self, new: dict, old: dict, ctx) -> None:
        new["status"] = copy.deepcopy(old.get("status") or {})
        spec, ospec = new.setdefault("spec", {}), old.get("spec") or {}
        for f in ("clusterIP", "clusterIPs"):
            if spec.get(f) in (None, "", []) and f in ospec:
                spec[f] = copy.deepcopy(ospec[f])

    def default(self, obj: dict, old: dict | None, ctx) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            if "port" in p:
                p.setdefault("targetPort", p["port"])

    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        spec = obj.get("spec") or {}
        errs = []
        ports = spec.get("ports") or []
        if not ports and spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
            errs.append(FieldError("Required", "spec.ports"))
        names = set()
        for i, p in enumerate(ports):
            if len(ports) > 1 and not p.get("name"):
                errs.append(FieldError("Required", f"spec.ports[{i}].name"))
            if p.get("name") in names:
                errs.append(FieldError("Duplicate", f"spec.ports[{i}].name", p.get("name")))
            names.add(p.get("name"))
            if not isinstance(p.get("port"), int) or not 1 <= p["port"] <= 65535:
                errs.append(FieldError("Invalid", f"spec.ports[{i}].port", p.get("port"),
                                       "must be between 1 and 65535, inclusive"))
        if spec.get("type") not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            errs.append(FieldError("NotSupported", "spec.type", spec.get("type"),
                                   supported=["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))
        if old is not None:
            oip = (old.get("spec") or {}).get("clusterIP")
            if oip and spec.get("clusterIP") != oip:
                errs.append(FieldError("Invalid", "spec.clusterIPs[0]", spec.get("clusterIP"),
                                       "may not change once set"))
        return errs


class SecretStrategy(Strategy):
    def default(self, obj: dict, old: dict | None, ctx) -> None:
        obj.setdefault("type", "Opaque")
        sd = obj.pop("stringData", None)
        if sd:
            data = obj.setdefault("data", {})
            for k, v in sd.items():
                data[k] = base64.b64encode(str(v).encode()).decode()

    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        errs = []
        for k, v in (obj.get("data") or {}).items():
            if not re.match(r"^[-._a-zA-Z0-9]+$", k):
                errs.append(FieldError("Invalid", "data", k,
                                       "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"))
            try:
                base64.b64decode(v or "", validate=True)
            except Exception:  # noqa: BLE001
                errs.append(FieldError("Invalid", f"data[{k}]", v, "illegal base64 data"))
        if old is not None:
            if obj.get("type") != old.get("type"):
                errs.append(FieldError("Invalid", "type", obj.get("type"), "field is immutable"))
            if old.get("immutable") and (obj.get("data") != old.get("data") or not obj.get("immutable")):
                errs.append(FieldError("Forbidden", "data", detail="field is immutable when `immutable` is set"))
        return errs


class PVCStrategy(Strategy):
    def prepare_create(self, obj: dict, ctx) -> None:
        obj["status"] = {"phase": "Pending"}
        spec = obj.setdefault("spec", {})
        if "storageClassName" not in spec and ctx.default_storage_class():
            spec["storageClassName"] = ctx.default_storage_class()

    def prepare_update(self, new: dict, old: dict, ctx) -> None:
        new["status"] = copy.deepcopy(old.get("status") or {})

    def default(self, obj: dict, old: dict | None, ctx) -> None:
        obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")

    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        spec = obj.get("spec") or {}
        errs = []
        if not spec.get("accessModes"):
            errs.append(FieldError("Required", "spec.accessModes", detail="at least 1 access mode is required"))
        if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
            errs.append(FieldError("Required", "spec.resources[storage]"))
        if old is not None:
            a, b = copy.deepcopy(spec), copy.deepcopy(old.get("spec") or {})
            for s in (a, b):
                (s.get("resources") or {}).pop("requests", None)
                s.pop("volumeName", None)
            if a != b:
                errs.append(FieldError("Forbidden", "spec", detail="spec is immutable after creation except "
                                                                   "resources.requests and volumeAttributesClassName for bound claims"))
        return errs


class NamespaceStrategy(Strategy):
    name_rule = "label"

    def prepare_create(self, obj: dict, ctx) -> None:
        obj["status"] = {"phase": "Active"}
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]

    def prepare_update(self, new: dict, old: dict, ctx) -> None:
        new["status"] = copy.deepcopy(old.get("status") or {})
        new["spec"] = copy.deepcopy(old.get("spec") or {})
        new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = new["metadata"]["name"]


class CoreEventStrategy(Strategy):
    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        errs = []
        io = obj.get("involvedObject") or {}
        ns = obj.get("metadata", {}).get("namespace")
        if io.get("namespace") and io.get("namespace") != ns:
            errs.append(FieldError("Invalid", "involvedObject.namespace", io.get("namespace"),
                                   "does not match event.namespace"))
        if obj.get("type") and obj["type"] not in ("Normal", "Warning"):
            errs.append(FieldError("NotSupported", "type", obj["type"], supported=["Normal", "Warning"]))
        return errs


class EventsV1Strategy(Strategy):
    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        errs = []
        if not obj.get("eventTime"):
            errs.append(FieldError("Required", "eventTime"))
        for f in ("reportingController", "reportingInstance", "action", "reason"):
            if not obj.get(f):
                errs.append(FieldError("Required", f))
            elif len(obj[f]) > 128:
                errs.append(FieldError("TooLong", f, obj[f], "128"))
        if obj.get("type") not in ("Normal", "Warning"):
            errs.append(FieldError("NotSupported", "type", obj.get("type", ""), supported=["Normal", "Warning"]))
        if len(obj.get("note") or "") > 1024:
            errs.append(FieldError("TooLong", "note", obj["note"], "1024"))
        if old is not None:
            for f in ("eventTime", "reportingController", "reportingInstance", "action", "reason", "type", "regarding"):
                if obj.get(f) != old.get(f):
                    errs.append(FieldError("Invalid", f, obj.get(f), "field is immutable"))
        return errs


class LeaseStrategy(Strategy):
    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        spec = obj.get("spec") or {}
        errs = []
        if "leaseDurationSeconds" in spec and not (isinstance(spec["leaseDurationSeconds"], int)
                                                   and spec["leaseDurationSeconds"] > 0):
            errs.append(FieldError("Invalid", "spec.leaseDurationSeconds", spec["leaseDurationSeconds"],
                                   "must be greater than 0"))
        return errs


class WorkloadStrategy(Strategy):
    """Deployments, ReplicaSets, StatefulSets: defaults for the pod template, status reset."""

    def prepare_create(self, obj: dict, ctx) -> None:
        obj.pop("status", None)

    def prepare_update(self, new: dict, old: dict, ctx) -> None:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)

    def default(self, obj: dict, old: dict | None, ctx) -> None:
        spec = obj.setdefault("spec", {})
        if self.rt.plural != "daemonsets" and self.rt.plural != "jobs":
            spec.setdefault("replicas", 1)
        if self.rt.plural == "deployments":
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        tmpl = spec.get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"])

    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        spec = obj.get("spec") or {}
        errs = []
        sel = spec.get("selector")
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if self.rt.plural != "jobs":
            if not sel:
                errs.append(FieldError("Required", "spec.selector"))
            else:
                from .selectors import LabelSelector  # noqa: PLC0415
                ls = LabelSelector.from_label_selector_object(sel)
                if ls is not None and not ls.matches(labels):
                    errs.append(FieldError("Invalid", "spec.template.metadata.labels", labels,
                                           "`selector` does not match template `labels`"))
            if old is not None and sel != (old.get("spec") or {}).get("selector"):
                errs.append(FieldError("Invalid", "spec.selector", sel, "field is immutable"))
        return errs


class CRDStrategy(Strategy):
    def prepare_create(self, obj: dict, ctx) -> None:
        obj["status"] = {"acceptedNames": {"kind": "", "plural": ""}, "conditions": [], "storedVersions": []}

    def prepare_update(self, new: dict, old: dict, ctx) -> None:
        new["status"] = copy.deepcopy(old.get("status") or {})

    def default(self, obj: dict, old: dict | None, ctx) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("scope", "Namespaced")
        spec.setdefault("conversion", {"strategy": "None"})
        names = spec.setdefault("names", {})
        if names.get("kind"):
            names.setdefault("singular", names["kind"].lower())
            names.setdefault("listKind", names["kind"] + "List")

    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        errs = []
        name = obj["metadata"]["name"]
        if name != f"{names.get('plural')}.{spec.get('group')}":
            errs.append(FieldError("Invalid", "metadata.name", name, "must be spec.names.plural+\".\"+spec.group"))
        for f in ("plural", "kind"):
            if not names.get(f):
                errs.append(FieldError("Required", f"spec.names.{f}"))
        vs = spec.get("versions") or []
        if not vs:
            errs.append(FieldError("Invalid", "spec.versions", vs, "must have exactly one version marked as storage version"))
        elif sum(1 for v in vs if v.get("storage")) != 1:
            errs.append(FieldError("Invalid", "spec.versions", vs, "must have exactly one version marked as storage version"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            errs.append(FieldError("NotSupported", "spec.scope", spec.get("scope"), supported=["Cluster", "Namespaced"]))
        for i, v in enumerate(vs):
            s = (v.get("schema") or {}).get("openAPIV3Schema")
            if not s:
                errs.append(FieldError("Required", f"spec.versions[{i}].schema.openAPIV3Schema",
                                       detail="schemas are required"))
        if old is not None:
            if spec.get("group") != (old.get("spec") or {}).get("group"):
                errs.append(FieldError("Invalid", "spec.group", spec.get("group"), "field is immutable"))
        return errs


def strategy_for(rt) -> Strategy:
    if rt.crd is not None:
        return CustomResourceStrategy(rt)
    table = {
        "pods": PodStrategy, "services": ServiceStrategy, "secrets": SecretStrategy,
        "persistentvolumeclaims": PVCStrategy, "namespaces": NamespaceStrategy, "events": CoreEventStrategy,
        "events.events.k8s.io": EventsV1Strategy, "leases.coordination.k8s.io": LeaseStrategy,
        "deployments.apps": WorkloadStrategy, "replicasets.apps": WorkloadStrategy,
        "statefulsets.apps": WorkloadStrategy, "daemonsets.apps": WorkloadStrategy, "jobs.batch": WorkloadStrategy,
        "customresourcedefinitions.apiextensions.k8s.io": CRDStrategy,
    }
    cls = table.get(rt.gr)
    if cls is None:
        class _S(Strategy):
            pass
        s = _S(rt)
        if rt.plural == "nodes":
            s.name_rule = "subdomain"
        return s
    return cls(rt)


def is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False
