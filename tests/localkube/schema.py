"""CRD structural schemas: pruning, defaulting, OpenAPI validation and CEL rules (x-kubernetes-validations),
with error messages shaped like the real API server's (kube-openapi's validator as wrapped by
apiextensions-apiserver). CEL runs on cel-python, which lacks Kubernetes' CEL extension libraries: a rule that
does not compile there is skipped with a warning rather than rejecting valid objects (see DIFFERENCES.md).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading

from .errors import FieldError
from .typemodel import LATOMIC, OBJECT_META, SCALAR, UNTYPED, T

log = logging.getLogger("localkube.schema")

# ---------------------------------------------------------------------------------------------------
# type model for server-side apply


def type_from_schema(s: dict | None, root: bool = False) -> T:
    if not s:
        return UNTYPED
    typ = s.get("type")
    if root:
        fields = {k: type_from_schema(v) for k, v in (s.get("properties") or {}).items()}
        fields["metadata"] = OBJECT_META
        return T("struct", fields=fields, schema=s,
                 preserve_unknown=bool(s.get("x-kubernetes-preserve-unknown-fields")))
    if typ == "object" or "properties" in s or "additionalProperties" in s:
        atomic = s.get("x-kubernetes-map-type") == "atomic"
        if s.get("properties"):
            return T("struct", fields={k: type_from_schema(v) for k, v in s["properties"].items()},
                     atomic=atomic, schema=s, preserve_unknown=bool(s.get("x-kubernetes-preserve-unknown-fields")))
        ap = s.get("additionalProperties")
        if isinstance(ap, dict):
            return T("map", elem=type_from_schema(ap), atomic=atomic, schema=s)
        if s.get("x-kubernetes-embedded-resource"):
            return T("struct", fields={"metadata": OBJECT_META}, atomic=atomic, schema=s)
        return T("map", elem=UNTYPED, atomic=atomic, schema=s)
    if typ == "array":
        lt = s.get("x-kubernetes-list-type", "atomic")
        item = type_from_schema(s.get("items"))
        if lt == "map":
            keys = s.get("x-kubernetes-list-map-keys") or []
            props = (s.get("items") or {}).get("properties") or {}
            kd = {k: props[k]["default"] for k in keys if "default" in (props.get(k) or {})}
            return T("list", elem=item, list_type="map", keys=keys, smp_key=keys[0] if keys else None,
                     smp_strategy="merge", schema=s, key_defaults=kd)
        if lt == "set":
            return T("list", elem=SCALAR, list_type="set", schema=s)
        return LATOMIC(item)
    if s.get("x-kubernetes-preserve-unknown-fields") and not typ:
        return UNTYPED
    return SCALAR


# ---------------------------------------------------------------------------------------------------
# pruning and defaulting


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def prune(obj, s: dict | None, path: str = "", root: bool = False) -> list[str]:
    """Drops fields the schema does not declare; returns their paths (for fieldValidation Strict/Warn)."""
    unknown: list[str] = []
    if s is None:
        return unknown
    if isinstance(obj, dict):
        props = s.get("properties") or {}
        ap = s.get("additionalProperties")
        keep_unknown = bool(s.get("x-kubernetes-preserve-unknown-fields")) or ap is True
        embedded = root or bool(s.get("x-kubernetes-embedded-resource"))
        for k in list(obj.keys()):
            if embedded and k in ("apiVersion", "kind", "metadata"):
                continue
            if k in props:
                unknown += prune(obj[k], props[k], _join(path, k))
            elif isinstance(ap, dict):
                unknown += prune(obj[k], ap, _join(path, k))
            elif not keep_unknown:
                unknown.append(_join(path, k))
                del obj[k]
    elif isinstance(obj, list) and isinstance(s.get("items"), dict):
        for i, v in enumerate(obj):
            unknown += prune(v, s["items"], f"{path}[{i}]")
    return unknown


def drop_nulls(obj, s: dict | None):
    """Null values of non-nullable fields are dropped before defaulting (and then defaulted, if the schema
    has a default), as apiextensions' PruneNonNullableNullsWithoutDefaults and defaulting do."""
    if s is None:
        return
    if isinstance(obj, dict):
        props = s.get("properties") or {}
        ap = s.get("additionalProperties")
        for k in list(obj.keys()):
            sub = props.get(k) if k in props else (ap if isinstance(ap, dict) else None)
            if obj[k] is None and sub is not None and not sub.get("nullable"):
                del obj[k]
            elif sub is not None:
                drop_nulls(obj[k], sub)
    elif isinstance(obj, list) and isinstance(s.get("items"), dict):
        for v in obj:
            drop_nulls(v, s["items"])


def apply_defaults(obj, s: dict | None):
    if s is None:
        return
    if isinstance(obj, dict):
        for k, sub in (s.get("properties") or {}).items():
            if k not in obj and "default" in sub:
                obj[k] = copy.deepcopy(sub["default"])
            if k in obj:
                apply_defaults(obj[k], sub)
        ap = s.get("additionalProperties")
        if isinstance(ap, dict):
            for k in obj:
                if not (s.get("properties") and k in s["properties"]):
                    apply_defaults(obj[k], ap)
    elif isinstance(obj, list) and isinstance(s.get("items"), dict):
        for v in obj:
            apply_defaults(v, s["items"])


# ---------------------------------------------------------------------------------------------------
# OpenAPI validation

_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


def _json_type(v) -> str:
    if v is None:
        return "null"
    return _JSON_TYPE.get(type(v), "object")


def _num(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def _is_b64(v: str) -> bool:
    import base64  # noqa: PLC0415
    try:
        base64.b64decode(v, validate=True)
        return True
    except ValueError:
        return False


# The string formats kube-openapi's validator checks (a subset: the ones a controller's types produce).
_FORMATS = {
    "date-time": lambda v: bool(_DATE_TIME.match(v)),
    "date": lambda v: bool(re.match(r"^\d{4}-\d{2}-\d{2}$", v)),
    "uuid": lambda v: bool(_UUID.match(v)),
    "byte": _is_b64,
}


def validate(obj, s: dict | None, path: str = "", root: bool = False) -> list[FieldError]:
    errs: list[FieldError] = []
    if s is None:
        return errs
    typ = s.get("type")
    if obj is None:
        if s.get("nullable"):
            return errs
        if typ:
            return [FieldError("Invalid", path, "null", f"{path} in body must be of type {typ}: \"null\"")]
        return errs
    if s.get("x-kubernetes-int-or-string"):
        if not (isinstance(obj, (int, str)) and not isinstance(obj, bool)):
            return [FieldError("Invalid", path, _json_type(obj),
                               f"{path} in body must be of type integer,string: \"{_json_type(obj)}\"")]
    elif typ:
        jt = _json_type(obj)
        ok = jt == typ or (typ == "number" and jt == "integer") or (typ == "integer" and jt == "number"
                                                                    and float(obj).is_integer())
        if not ok:
            return [FieldError("Invalid", path, jt, f"{path} in body must be of type {typ}: \"{jt}\"")]
    if "enum" in s and obj not in s["enum"]:
        errs.append(FieldError("NotSupported", path, obj, supported=s["enum"]))
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if "minimum" in s:
            if s.get("exclusiveMinimum") and not obj > s["minimum"]:
                errs.append(FieldError("Invalid", path, obj, f"{path} in body should be greater than {_num(s['minimum'])}"))
            elif not obj >= s["minimum"]:
                errs.append(FieldError("Invalid", path, obj,
                                       f"{path} in body should be greater than or equal to {_num(s['minimum'])}"))
        if "maximum" in s:
            if s.get("exclusiveMaximum") and not obj < s["maximum"]:
                errs.append(FieldError("Invalid", path, obj, f"{path} in body should be less than {_num(s['maximum'])}"))
            elif not obj <= s["maximum"]:
                errs.append(FieldError("Invalid", path, obj,
                                       f"{path} in body should be less than or equal to {_num(s['maximum'])}"))
        if "multipleOf" in s and s["multipleOf"] and (obj / s["multipleOf"]) % 1 != 0:
            errs.append(FieldError("Invalid", path, obj, f"{path} in body should be a multiple of {_num(s['multipleOf'])}"))
    if isinstance(obj, str) and s.get("format") in _FORMATS and not _FORMATS[s["format"]](obj):
        errs.append(FieldError("Invalid", path, obj, f"{path} in body must be of type {s['format']}: {json.dumps(obj)}"))
    if isinstance(obj, str):
        if "maxLength" in s and len(obj) > s["maxLength"]:
            errs.append(FieldError("TooLong", path, obj, str(s["maxLength"])))
        if "minLength" in s and len(obj) < s["minLength"]:
            errs.append(FieldError("Invalid", path, obj, f"{path} in body should be at least {s['minLength']} chars long"))
        if "pattern" in s and not re.search(s["pattern"], obj):
            errs.append(FieldError("Invalid", path, obj, f"{path} in body should match '{s['pattern']}'"))
    if isinstance(obj, list):
        if "maxItems" in s and len(obj) > s["maxItems"]:
            errs.append(FieldError("TooMany", path, len(obj), str(s["maxItems"])))
        if "minItems" in s and len(obj) < s["minItems"]:
            errs.append(FieldError("Invalid", path, len(obj), f"{path} in body should have at least {s['minItems']} items"))
        lt = s.get("x-kubernetes-list-type")
        if lt == "set":
            seen = []
            for i, v in enumerate(obj):
                if v in seen:
                    errs.append(FieldError("Duplicate", f"{path}[{i}]", v))
                seen.append(v)
        elif lt == "map":
            keys = s.get("x-kubernetes-list-map-keys") or []
            seen = []
            for i, v in enumerate(obj):
                if isinstance(v, dict):
                    kv = {k: v.get(k) for k in keys}
                    if kv in seen:
                        errs.append(FieldError("Duplicate", f"{path}[{i}]", kv))
                    seen.append(kv)
        if s.get("uniqueItems"):
            seen = []
            for i, v in enumerate(obj):
                if v in seen:
                    errs.append(FieldError("Duplicate", f"{path}[{i}]", v))
                seen.append(v)
        if isinstance(s.get("items"), dict):
            for i, v in enumerate(obj):
                errs += validate(v, s["items"], f"{path}[{i}]")
    if isinstance(obj, dict):
        props = s.get("properties") or {}
        for req in s.get("required") or []:
            if req not in obj:
                errs.append(FieldError("Required", _join(path, req), detail=""))
        if "maxProperties" in s and len(obj) > s["maxProperties"]:
            errs.append(FieldError("TooMany", path, len(obj), str(s["maxProperties"])))
        if "minProperties" in s and len(obj) < s["minProperties"]:
            errs.append(FieldError("Invalid", path, len(obj),
                                   f"{path} in body should have at least {s['minProperties']} properties"))
        ap = s.get("additionalProperties")
        for k, v in obj.items():
            if root and k in ("apiVersion", "kind", "metadata"):
                continue
            if k in props:
                errs += validate(v, props[k], _join(path, k))
            elif isinstance(ap, dict):
                errs += validate(v, ap, _join(path, k))
    for key in ("allOf", "anyOf", "oneOf"):
        subs = s.get(key)
        if not subs:
            continue
        results = [validate(obj, sub, path) for sub in subs]
        if key == "allOf":
            for r in results:
                errs += r
        elif key == "anyOf" and not any(not r for r in results):
            errs.append(FieldError("Invalid", path, obj, f"{path} in body must match at least one schema in anyOf"))
        elif key == "oneOf" and sum(1 for r in results if not r) != 1:
            errs.append(FieldError("Invalid", path, obj, f"{path} in body must match exactly one schema in oneOf"))
    if "not" in s and not validate(obj, s["not"], path):
        errs.append(FieldError("Invalid", path, obj, f"{path} in body must not match the schema in not"))
    return errs


# ---------------------------------------------------------------------------------------------------
# CEL validation rules

_cel_lock = threading.Lock()
_cel_cache: dict[str, object] = {}
_cel_env = None


def _program(expr: str):
    global _cel_env
    with _cel_lock:
        if expr in _cel_cache:
            return _cel_cache[expr]
        try:
            import celpy  # noqa: PLC0415  (optional at import time so the rest works without it)
            if _cel_env is None:
                _cel_env = celpy.Environment()
            prog = _cel_env.program(_cel_env.compile(expr))
        except Exception as e:  # noqa: BLE001
            log.warning("CEL rule %r does not compile here and is skipped: %s", expr, e)
            prog = None
        _cel_cache[expr] = prog
        return prog


def _to_cel(v):
    import celpy  # noqa: PLC0415
    return celpy.json_to_cel(v)


def _cel_value_to_py(v):
    if isinstance(v, bool):
        return v
    return str(v)


_REASON_KIND = {
    "FieldValueInvalid": "Invalid",
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required",
    "FieldValueDuplicate": "Duplicate",
}

_MISSING = object()


def _schema_type_name(s: dict) -> str:
    if s.get("x-kubernetes-int-or-string"):
        return "integer-or-string"
    return s.get("type") or "object"


def validate_cel(obj, old, s: dict | None, path: str = "", root: bool = False) -> list[FieldError]:
    """Evaluates x-kubernetes-validations at every level. `old` is _MISSING when there is no correlated
    old value, in which case transition rules (those naming oldSelf) are not evaluated."""
    errs: list[FieldError] = []
    if s is None or obj is None:
        return errs
    if isinstance(obj, dict):
        props = s.get("properties") or {}
        ap = s.get("additionalProperties")
        for k, v in obj.items():
            if root and k in ("apiVersion", "kind"):
                continue
            sub = props.get(k) if k in props else (ap if isinstance(ap, dict) else None)
            if sub is None:
                continue
            ov = old.get(k, _MISSING) if isinstance(old, dict) else _MISSING
            errs += validate_cel(v, ov, sub, _join(path, k))
    elif isinstance(obj, list) and isinstance(s.get("items"), dict):
        items = s["items"]
        lt = s.get("x-kubernetes-list-type")
        keys = s.get("x-kubernetes-list-map-keys") or []
        for i, v in enumerate(obj):
            ov = _MISSING
            if isinstance(old, list):
                if lt == "map" and isinstance(v, dict):
                    for o in old:
                        if isinstance(o, dict) and all(o.get(k) == v.get(k) for k in keys):
                            ov = o
                            break
                elif lt == "set" and v in old:
                    ov = v
            errs += validate_cel(v, ov, items, f"{path}[{i}]")
    for rule in s.get("x-kubernetes-validations") or []:
        expr = rule.get("rule", "")
        transition = bool(re.search(r"\boldSelf\b", expr))
        if transition and old is _MISSING:
            continue
        prog = _program(expr)
        if prog is None:
            continue
        act = {"self": _to_cel(obj)}
        if transition:
            act["oldSelf"] = _to_cel(old)
        try:
            result = prog.evaluate(act)
            ok = bool(result) if not isinstance(result, Exception) else None
            err_text = str(result) if isinstance(result, Exception) else None
        except Exception as e:  # noqa: BLE001
            ok, err_text = None, str(e)
        fpath = path
        if rule.get("fieldPath"):
            fpath = path + rule["fieldPath"] if rule["fieldPath"].startswith(".") else _join(path, rule["fieldPath"])
        tname = _schema_type_name(s)
        if ok is None:
            errs.append(FieldError("Invalid", fpath, tname, f"{err_text}"))
            continue
        if ok:
            continue
        msg = rule.get("message") or f"failed rule: {expr}"
        if rule.get("messageExpression"):
            mp = _program(rule["messageExpression"])
            if mp is not None:
                try:
                    m = mp.evaluate(act)
                    if not isinstance(m, Exception) and str(m).strip():
                        msg = str(m)
                except Exception:  # noqa: BLE001
                    pass
        kind = _REASON_KIND.get(rule.get("reason", "FieldValueInvalid"), "Invalid")
        if kind == "Invalid":
            errs.append(FieldError("Invalid", fpath, tname, msg))
        elif kind == "Duplicate":
            errs.append(FieldError("Duplicate", fpath, tname))
        else:
            errs.append(FieldError(kind, fpath, detail=msg))
    return errs


def strip_for_openapi(s):
    """A copy of a schema suitable for serving in OpenAPI documents."""
    return json.loads(json.dumps(s))


MISSING = _MISSING
