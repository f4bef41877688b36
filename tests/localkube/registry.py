"""Resource types the server knows: the built-in catalog and the types that CRDs define."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from . import schema as schemamod
from .typemodel import T, builtin_type


@dataclass
class ResourceType:
    group: str
    versions: list[str]
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status: bool = False
    scale: dict | None = None  # specReplicasPath, statusReplicasPath, labelSelectorPath (CRD style)
    log: bool = False
    tracks_generation: bool = False
    return_deleted: bool = False
    graceful: bool = False
    verbs: list[str] = field(default_factory=lambda: ["create", "delete", "deletecollection", "get", "list",
                                                      "patch", "update", "watch"])
    crd: dict | None = None
    schemas: dict[str, dict] = field(default_factory=dict)  # version -> openAPIV3Schema (CRs)
    columns: dict[str, list] = field(default_factory=dict)  # version -> additionalPrinterColumns (CRs)
    strategy: object = None
    types: dict[str, T] = field(default_factory=dict)
    storage: str = ""  # group resource this kind is stored as, when it is another kind's view
    codec: object = None  # encode(external) -> stored, decode(stored) -> external

    @property
    def sgr(self) -> str:
        return self.storage or self.gr

    def __post_init__(self):
        if not self.singular:
            self.singular = self.kind.lower()

    @property
    def gr(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_resource(self) -> str:
        return self.gr

    @property
    def storage_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str | None = None) -> str:
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def type(self, version: str | None = None) -> T:
        v = version or self.versions[0]
        if v not in self.types:
            if self.crd is not None:
                self.types[v] = schemamod.type_from_schema(self.schemas.get(v), root=True)
            else:
                self.types[v] = builtin_type(self.gr)
        return self.types[v]

    def schema(self, version: str | None = None) -> dict | None:
        return self.schemas.get(version or self.versions[0])


class EventsV1Codec:
    """events.k8s.io/v1 Events are a view of core/v1 Events, as in the real API server (the field mapping of
    k8s.io/kubernetes/pkg/apis/events/v1's conversions)."""

    PAIRS = [("regarding", "involvedObject"), ("note", "message"), ("reportingController", "reportingComponent"),
             ("deprecatedCount", "count"), ("deprecatedFirstTimestamp", "firstTimestamp"),
             ("deprecatedLastTimestamp", "lastTimestamp"), ("deprecatedSource", "source")]
    SAME = ["reason", "type", "eventTime", "action", "reportingInstance", "related", "series"]

    def encode(self, ext: dict) -> dict:
        core = {"apiVersion": "v1", "kind": "Event", "metadata": ext.get("metadata", {})}
        for e, c in self.PAIRS:
            if ext.get(e) is not None:
                core[c] = ext[e]
        for k in self.SAME:
            if ext.get(k) is not None:
                core[k] = ext[k]
        core.setdefault("involvedObject", {})
        return core

    def decode(self, core: dict) -> dict:
        ext = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": core.get("metadata", {})}
        for e, c in self.PAIRS:
            if core.get(c) not in (None, {}, "") or (c == "involvedObject" and c in core):
                ext[e] = core[c]
        for k in self.SAME:
            if core.get(k) is not None:
                ext[k] = core[k]
        return ext


def _b(group, versions, kind, plural, namespaced, **kw) -> ResourceType:
    return ResourceType(group=group, versions=versions, kind=kind, plural=plural, namespaced=namespaced, **kw)


def builtin_catalog() -> list[ResourceType]:
    return [
        _b("", ["v1"], "Pod", "pods", True, short_names=["po"], categories=["all"], status=True, log=True,
           return_deleted=True, graceful=True),
        _b("", ["v1"], "Service", "services", True, short_names=["svc"], categories=["all"], status=True,
           return_deleted=True),
        _b("", ["v1"], "Secret", "secrets", True),
        _b("", ["v1"], "ConfigMap", "configmaps", True, short_names=["cm"]),
        _b("", ["v1"], "PersistentVolumeClaim", "persistentvolumeclaims", True, short_names=["pvc"], status=True),
        _b("", ["v1"], "PersistentVolume", "persistentvolumes", False, short_names=["pv"], status=True),
        _b("", ["v1"], "Event", "events", True, short_names=["ev"]),
        _b("", ["v1"], "Namespace", "namespaces", False, short_names=["ns"], status=True, return_deleted=True),
        _b("", ["v1"], "Node", "nodes", False, short_names=["no"], status=True),
        _b("", ["v1"], "ServiceAccount", "serviceaccounts", True, short_names=["sa"]),
        _b("", ["v1"], "Endpoints", "endpoints", True, short_names=["ep"], singular="endpoints"),
        _b("apps", ["v1"], "Deployment", "deployments", True, short_names=["deploy"], categories=["all"],
           status=True, scale={"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                               "labelSelectorPath": ".status.selector"}, tracks_generation=True),
        _b("apps", ["v1"], "ReplicaSet", "replicasets", True, short_names=["rs"], categories=["all"], status=True,
           scale={"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
           tracks_generation=True),
        _b("apps", ["v1"], "StatefulSet", "statefulsets", True, short_names=["sts"], categories=["all"],
           status=True, scale={"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
           tracks_generation=True),
        _b("apps", ["v1"], "DaemonSet", "daemonsets", True, short_names=["ds"], categories=["all"], status=True,
           tracks_generation=True),
        _b("batch", ["v1"], "Job", "jobs", True, categories=["all"], status=True, tracks_generation=True),
        _b("coordination.k8s.io", ["v1"], "Lease", "leases", True),
        _b("events.k8s.io", ["v1"], "Event", "events", True, short_names=["ev"], storage="events",
           codec=EventsV1Codec()),
        _b("discovery.k8s.io", ["v1"], "EndpointSlice", "endpointslices", True),
        _b("policy", ["v1"], "PodDisruptionBudget", "poddisruptionbudgets", True, short_names=["pdb"], status=True,
           tracks_generation=True),
        _b("networking.k8s.io", ["v1"], "NetworkPolicy", "networkpolicies", True, short_names=["netpol"],
           tracks_generation=True),
        _b("storage.k8s.io", ["v1"], "StorageClass", "storageclasses", False, short_names=["sc"]),
        _b("scheduling.k8s.io", ["v1"], "PriorityClass", "priorityclasses", False, short_names=["pc"]),
        _b("rbac.authorization.k8s.io", ["v1"], "Role", "roles", True),
        _b("rbac.authorization.k8s.io", ["v1"], "RoleBinding", "rolebindings", True),
        _b("rbac.authorization.k8s.io", ["v1"], "ClusterRole", "clusterroles", False),
        _b("rbac.authorization.k8s.io", ["v1"], "ClusterRoleBinding", "clusterrolebindings", False),
        _b("authorization.k8s.io", ["v1"], "SelfSubjectAccessReview", "selfsubjectaccessreviews", False,
           verbs=["create"]),
        _b("authorization.k8s.io", ["v1"], "SubjectAccessReview", "subjectaccessreviews", False, verbs=["create"]),
        _b("authorization.k8s.io", ["v1"], "SelfSubjectRulesReview", "selfsubjectrulesreviews", False,
           verbs=["create"]),
        _b("authentication.k8s.io", ["v1"], "SelfSubjectReview", "selfsubjectreviews", False, verbs=["create"]),
        _b("apiextensions.k8s.io", ["v1"], "CustomResourceDefinition", "customresourcedefinitions", False,
           short_names=["crd", "crds"], categories=["api-extensions"], status=True, tracks_generation=True),
    ]


# Preferred order of groups in discovery, as the real server lists them.
GROUP_ORDER = ["", "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io", "batch", "policy",
               "rbac.authorization.k8s.io", "storage.k8s.io", "apiextensions.k8s.io", "scheduling.k8s.io",
               "coordination.k8s.io", "discovery.k8s.io", "networking.k8s.io"]


class Registry:
    def __init__(self, strategy_for):
        self.lock = threading.RLock()
        self._types: list[ResourceType] = []
        self.strategy_for = strategy_for
        for rt in builtin_catalog():
            rt.strategy = strategy_for(rt)
            self._types.append(rt)
        self.generation = 0  # bumped whenever the set of types changes (discovery caching)

    def all(self) -> list[ResourceType]:
        with self.lock:
            return list(self._types)

    def groups(self) -> list[str]:
        gs = []
        for rt in self.all():
            if rt.group and rt.group not in gs:
                gs.append(rt.group)
        known = [g for g in GROUP_ORDER if g in gs]
        return known + [g for g in gs if g not in known]

    def versions_of(self, group: str) -> list[str]:
        vs: list[str] = []
        for rt in self.all():
            if rt.group == group:
                for v in rt.versions:
                    if v not in vs:
                        vs.append(v)
        return vs

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self.all() if rt.group == group and version in rt.versions]

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rt in self.all():
            if rt.group == group and rt.plural == plural and version in rt.versions:
                return rt
        return None

    def by_gr(self, gr: str) -> ResourceType | None:
        for rt in self.all():
            if rt.gr == gr:
                return rt
        return None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self.all():
            if rt.group == group and rt.kind == kind and version in rt.versions:
                return rt
        return None

    # -- CRDs --------------------------------------------------------------------------------------

    def register_crd(self, crd: dict) -> ResourceType:
        spec = crd["spec"]
        names = spec["names"]
        served = [v for v in spec["versions"] if v.get("served", True)]
        storage = [v for v in served if v.get("storage")] or served[:1]
        versions = [storage[0]["name"]] + [v["name"] for v in served if v["name"] != storage[0]["name"]]
        vs = {v["name"]: v for v in spec["versions"]}
        sv = vs[versions[0]]
        subs = sv.get("subresources") or {}
        rt = ResourceType(
            group=spec["group"], versions=versions, kind=names["kind"], plural=names["plural"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced", singular=names.get("singular") or "",
            short_names=list(names.get("shortNames") or []), categories=list(names.get("categories") or []),
            status="status" in subs, scale=subs.get("scale"), tracks_generation=True, crd=crd,
        )
        for v in spec["versions"]:
            rt.schemas[v["name"]] = (v.get("schema") or {}).get("openAPIV3Schema") or {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True}
            rt.columns[v["name"]] = list(v.get("additionalPrinterColumns") or [])
        rt.strategy = self.strategy_for(rt)
        with self.lock:
            self._types = [t for t in self._types if not (t.crd is not None and t.gr == rt.gr)]
            self._types.append(rt)
            self.generation += 1
        return rt

    def unregister_crd(self, gr: str) -> None:
        with self.lock:
            self._types = [t for t in self._types if not (t.crd is not None and t.gr == gr)]
            self.generation += 1
