"""Decoding of the protobuf request bodies that kubectl's typed commands send (`kubectl create namespace`,
`create secret`, `create configmap`, `create serviceaccount`), for the few kinds listed below. Responses
are always JSON, which every client accepts. Other kinds in protobuf get 415 (see DIFFERENCES.md).

Wire format: the "k8s\\0" magic, then runtime.Unknown{typeMeta{apiVersion, kind}, raw}, where raw is the
object's message as in k8s.io/api's generated.proto.
"""

from __future__ import annotations

import base64
import datetime as _dt

MAGIC = b"k8s\x00"


def _varint(b: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        if not c & 0x80:
            return result, i
        shift += 7


def fields(b: bytes) -> list[tuple[int, int, object]]:
    out, i = [], 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        out.append((num, wt, v))
    return out


# A schema maps field numbers to (name, type); type is "string", "bytes", "int", "bool", "time", a nested
# schema dict, ("map", key type, value type), or ("repeated", type).

TIME = "time"
OWNER_REF = {1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"), 5: ("apiVersion", "string"),
             6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
OBJECT_META = {1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
               5: ("uid", "string"), 6: ("resourceVersion", "string"), 7: ("generation", "int"),
               8: ("creationTimestamp", TIME), 9: ("deletionTimestamp", TIME),
               10: ("deletionGracePeriodSeconds", "int"), 11: ("labels", ("map", "string", "string")),
               12: ("annotations", ("map", "string", "string")), 13: ("ownerReferences", ("repeated", OWNER_REF)),
               14: ("finalizers", ("repeated", "string"))}
LOCAL_REF = {1: ("name", "string")}
KINDS = {
    "Namespace": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", ("repeated", "string"))})},
    "Secret": {1: ("metadata", OBJECT_META), 2: ("data", ("map", "string", "bytes")), 3: ("type", "string"),
               4: ("stringData", ("map", "string", "string")), 5: ("immutable", "bool")},
    "ConfigMap": {1: ("metadata", OBJECT_META), 2: ("data", ("map", "string", "string")),
                  3: ("binaryData", ("map", "string", "bytes")), 4: ("immutable", "bool")},
    "ServiceAccount": {1: ("metadata", OBJECT_META), 2: ("secrets", ("repeated", {1: ("kind", "string"),
                                                                                  2: ("namespace", "string"),
                                                                                  3: ("name", "string")})),
                       3: ("imagePullSecrets", ("repeated", LOCAL_REF)),
                       4: ("automountServiceAccountToken", "bool")},
}


def _scalar(t, wt, v):
    if t == "string":
        return v.decode()
    if t == "bytes":
        return base64.b64encode(v).decode()
    if t == "int":
        return v - (1 << 64) if v >= 1 << 63 else v
    if t == "bool":
        return bool(v)
    if t == TIME:
        f = {n: x for n, _, x in fields(v)}
        t0 = _dt.datetime.fromtimestamp(f.get(1, 0), _dt.timezone.utc)
        return t0.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(t, dict):
        return decode(v, t)
    raise ValueError(t)


def decode(b: bytes, schema: dict) -> dict:
    out: dict = {}
    for num, wt, v in fields(b):
        if num not in schema:
            continue
        name, t = schema[num]
        if isinstance(t, tuple) and t[0] == "map":
            entry = {n: x for n, _, x in fields(v)}
            k = _scalar(t[1], 2, entry.get(1, b""))
            out.setdefault(name, {})[k] = _scalar(t[2], 2, entry.get(2, b""))
        elif isinstance(t, tuple) and t[0] == "repeated":
            out.setdefault(name, []).append(_scalar(t[1], wt, v))
        else:
            out[name] = _scalar(t, wt, v)
    return out


def decode_object(body: bytes) -> dict:
    """The JSON form of a protobuf-encoded object; ValueError for kinds not decoded here."""
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf message")
    unknown = {n: v for n, _, v in fields(body[len(MAGIC):])}
    tm = {n: v for n, _, v in fields(unknown.get(1, b""))}
    api_version, kind = tm.get(1, b"").decode(), tm.get(2, b"").decode()
    if kind not in KINDS:
        raise ValueError(f"protobuf bodies of kind {kind!r} are not decoded by localkube; send JSON or YAML "
                         f"(kubectl apply -f) instead")
    obj = {"apiVersion": api_version, "kind": kind}
    obj.update(decode(unknown.get(2, b""), KINDS[kind]))
    return obj
