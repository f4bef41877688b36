"""Just enough of each type's shape to merge it the way the real API server does.

Server-side apply and managedFields need to know which lists are associative (and by which keys), which
are sets and which maps are atomic; strategic merge patch needs each list's merge key. For CRDs this comes
from the structural schema (`x-kubernetes-list-type` and friends, see `schema.py`); for the built-in kinds
it is written down here for the fields the operator and kubectl touch. Anything not described is
"untyped": maps merge key by key, lists are atomic.
"""

from __future__ import annotations


class T:
    """A type node: struct (named fields), map (uniform values), list, or scalar."""

    __slots__ = ("kind", "fields", "elem", "atomic", "list_type", "keys", "smp_key", "smp_strategy",
                 "preserve_unknown", "schema", "key_defaults")

    def __init__(self, kind: str, fields=None, elem=None, atomic=False, list_type="atomic", keys=None,
                 smp_key=None, smp_strategy=None, preserve_unknown=True, schema=None, key_defaults=None):
        self.kind = kind  # "struct", "map", "list", "scalar", "untyped"
        self.fields = fields or {}
        self.elem = elem
        self.atomic = atomic  # for struct/map: x-kubernetes-map-type: atomic
        self.list_type = list_type  # atomic | set | map
        self.keys = keys or []
        self.smp_key = smp_key
        self.smp_strategy = smp_strategy
        self.preserve_unknown = preserve_unknown  # struct: unknown fields are untyped, not errors
        self.schema = schema
        self.key_defaults = key_defaults or {}  # associative-list keys that default when absent

    def field(self, name: str) -> "T":
        if self.kind == "struct":
            return self.fields.get(name, UNTYPED)
        if self.kind == "map":
            return self.elem or UNTYPED
        return UNTYPED

    def item(self) -> "T":
        return self.elem or UNTYPED

    @property
    def is_mapish(self) -> bool:
        return self.kind in ("struct", "map", "untyped")


UNTYPED = T("untyped")
SCALAR = T("scalar")


def S(**fields) -> T:
    return T("struct", fields={k.rstrip("_"): v for k, v in fields.items()})


def M(elem: T = SCALAR, atomic: bool = False) -> T:
    return T("map", elem=elem, atomic=atomic)


def LMAP(elem: T, keys: list[str], smp_key: str | None = None, smp_strategy: str = "merge",
         key_defaults: dict | None = None) -> T:
    return T("list", elem=elem, list_type="map", keys=keys, smp_key=smp_key or keys[0], smp_strategy=smp_strategy,
             key_defaults=key_defaults)


def LSET(smp: bool = True) -> T:
    return T("list", elem=SCALAR, list_type="set", smp_strategy="merge" if smp else None)


def LATOMIC(elem: T = UNTYPED) -> T:
    return T("list", elem=elem, list_type="atomic")


ATOMIC_MAP = T("map", elem=SCALAR, atomic=True)

OWNER_REF = S()
OBJECT_META = S(
    labels=M(),
    annotations=M(),
    finalizers=LSET(),
    ownerReferences=LMAP(OWNER_REF, ["uid"]),
    managedFields=LATOMIC(),
)
CONDITIONS = LMAP(S(), ["type"])
LABEL_SELECTOR = S(matchLabels=M(), matchExpressions=LATOMIC())

ENV = LMAP(S(), ["name"])
PROBE = S(httpGet=S(httpHeaders=LATOMIC()), exec_=S(command=LATOMIC()))
CONTAINER = S(
    command=LATOMIC(SCALAR),
    args=LATOMIC(SCALAR),
    env=ENV,
    envFrom=LATOMIC(),
    ports=LMAP(S(), ["containerPort", "protocol"], smp_key="containerPort", key_defaults={"protocol": "TCP"}),
    volumeMounts=LMAP(S(), ["mountPath"]),
    volumeDevices=LMAP(S(), ["devicePath"]),
    resources=S(limits=M(), requests=M(), claims=LMAP(S(), ["name"])),
    resizePolicy=LATOMIC(),
    readinessProbe=PROBE,
    livenessProbe=PROBE,
    startupProbe=PROBE,
)
VOLUME = S()
POD_SPEC = S(
    containers=LMAP(CONTAINER, ["name"]),
    initContainers=LMAP(CONTAINER, ["name"]),
    ephemeralContainers=LMAP(CONTAINER, ["name"]),
    volumes=LMAP(VOLUME, ["name"], smp_strategy="merge,retainKeys"),
    imagePullSecrets=LMAP(S(), ["name"]),
    hostAliases=LMAP(S(), ["ip"]),
    tolerations=LATOMIC(),
    nodeSelector=ATOMIC_MAP,
    readinessGates=LATOMIC(),
    topologySpreadConstraints=LMAP(S(), ["topologyKey", "whenUnsatisfiable"], smp_key="topologyKey"),
    resourceClaims=LMAP(S(), ["name"], smp_strategy="merge,retainKeys"),
    schedulingGates=LMAP(S(), ["name"]),
)
POD_STATUS = S(
    conditions=CONDITIONS,
    containerStatuses=LATOMIC(),
    initContainerStatuses=LATOMIC(),
    ephemeralContainerStatuses=LATOMIC(),
    podIPs=LMAP(S(), ["ip"]),
    hostIPs=LMAP(S(), ["ip"]),
)
POD_TEMPLATE = S(metadata=OBJECT_META, spec=POD_SPEC)


def _obj(spec: T | None = None, status: T | None = None, **extra) -> T:
    fields = {"metadata": OBJECT_META}
    if spec is not None:
        fields["spec"] = spec
    if status is not None:
        fields["status"] = status
    fields.update(extra)
    return T("struct", fields=fields)


BUILTIN_TYPES: dict[str, T] = {
    "pods": _obj(POD_SPEC, POD_STATUS),
    "services": _obj(S(ports=LMAP(S(), ["port", "protocol"], smp_key="port", key_defaults={"protocol": "TCP"}), selector=ATOMIC_MAP,
                       clusterIPs=LATOMIC(SCALAR), externalIPs=LATOMIC(SCALAR), ipFamilies=LATOMIC(SCALAR)),
                     S(conditions=CONDITIONS)),
    "secrets": _obj(data=M(), stringData=M()),
    "configmaps": _obj(data=M(), binaryData=M()),
    "persistentvolumeclaims": _obj(S(accessModes=LATOMIC(SCALAR), selector=LABEL_SELECTOR),
                                   S(conditions=CONDITIONS, accessModes=LATOMIC(SCALAR))),
    "namespaces": _obj(S(finalizers=LATOMIC(SCALAR)), S(conditions=CONDITIONS)),
    "nodes": _obj(S(taints=LATOMIC()), S(conditions=CONDITIONS, addresses=LMAP(S(), ["type"]))),
    "deployments.apps": _obj(S(selector=LABEL_SELECTOR, template=POD_TEMPLATE,
                          strategy=T("struct", smp_strategy="retainKeys")), S(conditions=CONDITIONS)),
    "statefulsets.apps": _obj(S(selector=LABEL_SELECTOR, template=POD_TEMPLATE, volumeClaimTemplates=LATOMIC()),
                         S(conditions=CONDITIONS)),
    "replicasets.apps": _obj(S(selector=LABEL_SELECTOR, template=POD_TEMPLATE), S(conditions=CONDITIONS)),
    "daemonsets.apps": _obj(S(selector=LABEL_SELECTOR, template=POD_TEMPLATE), S(conditions=CONDITIONS)),
    "jobs.batch": _obj(S(selector=LABEL_SELECTOR, template=POD_TEMPLATE), S(conditions=CONDITIONS)),
    "customresourcedefinitions.apiextensions.k8s.io": _obj(S(versions=LATOMIC()), S(conditions=CONDITIONS)),
}


def builtin_type(gr: str) -> T:
    return BUILTIN_TYPES.get(gr) or _obj()
