"""Label selectors (k8s.io/apimachinery/pkg/labels) and field selectors."""

from __future__ import annotations

import re

from .errors import bad_request

_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


class LabelSelector:
    """A parsed label selector: a list of (key, op, values) requirements, all of which must match."""

    def __init__(self, reqs: list[tuple[str, str, list[str]]]):
        self.reqs = reqs

    @classmethod
    def parse(cls, text: str | None) -> "LabelSelector":
        if not text or not text.strip():
            return cls([])
        toks = _TOKEN.findall(text)
        reqs: list[tuple[str, str, list[str]]] = []
        i = 0

        def err():
            return bad_request(f"unable to parse requirement: found '{text}', expected valid label selector")

        while i < len(toks):
            if toks[i] == "!":
                if i + 1 >= len(toks):
                    raise err()
                reqs.append((toks[i + 1], "!", []))
                i += 2
            else:
                key = toks[i]
                i += 1
                if i >= len(toks) or toks[i] == ",":
                    reqs.append((key, "exists", []))
                elif toks[i] in ("=", "==", "!="):
                    op = "!=" if toks[i] == "!=" else "="
                    if i + 1 < len(toks) and toks[i + 1] not in (",",):
                        reqs.append((key, op, [toks[i + 1]]))
                        i += 2
                    else:
                        reqs.append((key, op, [""]))
                        i += 1
                elif toks[i] in ("in", "notin"):
                    op = toks[i]
                    i += 1
                    if i >= len(toks) or toks[i] != "(":
                        raise err()
                    i += 1
                    vals = []
                    while i < len(toks) and toks[i] != ")":
                        if toks[i] != ",":
                            vals.append(toks[i])
                        i += 1
                    if i >= len(toks):
                        raise err()
                    i += 1
                    reqs.append((key, op, vals))
                else:
                    raise err()
            if i < len(toks):
                if toks[i] != ",":
                    raise err()
                i += 1
        return cls(reqs)

    @classmethod
    def from_label_selector_object(cls, sel: dict | None) -> "LabelSelector | None":
        """metav1.LabelSelector; None selects nothing, {} selects everything."""
        if sel is None:
            return None
        reqs = [(k, "=", [v]) for k, v in (sel.get("matchLabels") or {}).items()]
        for e in sel.get("matchExpressions") or []:
            op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}[e["operator"]]
            reqs.append((e["key"], op, list(e.get("values") or [])))
        return cls(reqs)

    def matches(self, labels: dict | None) -> bool:
        labels = labels or {}
        for key, op, vals in self.reqs:
            has = key in labels
            v = labels.get(key)
            if op == "=" and not (has and v == vals[0]):
                return False
            if op == "!=" and has and v == vals[0]:
                return False
            if op == "in" and not (has and v in vals):
                return False
            if op == "notin" and has and v in vals:
                return False
            if op == "exists" and not has:
                return False
            if op == "!" and has:
                return False
        return True

    def __bool__(self) -> bool:
        return bool(self.reqs)


# Field labels each kind supports besides metadata.name and metadata.namespace (the real API server's
# registered field label conversion functions, reduced to what is useful here).
EXTRA_FIELDS = {
    "pods": {
        "spec.nodeName": ["spec", "nodeName"],
        "spec.restartPolicy": ["spec", "restartPolicy"],
        "spec.schedulerName": ["spec", "schedulerName"],
        "spec.serviceAccountName": ["spec", "serviceAccountName"],
        "status.phase": ["status", "phase"],
        "status.podIP": ["status", "podIP"],
        "status.nominatedNodeName": ["status", "nominatedNodeName"],
    },
    "events": {
        "involvedObject.kind": ["involvedObject", "kind"],
        "involvedObject.namespace": ["involvedObject", "namespace"],
        "involvedObject.name": ["involvedObject", "name"],
        "involvedObject.uid": ["involvedObject", "uid"],
        "involvedObject.apiVersion": ["involvedObject", "apiVersion"],
        "involvedObject.resourceVersion": ["involvedObject", "resourceVersion"],
        "involvedObject.fieldPath": ["involvedObject", "fieldPath"],
        "reason": ["reason"],
        "reportingComponent": ["reportingComponent"],
        "source": ["source", "component"],
        "type": ["type"],
    },
    "events.events.k8s.io": {
        "regarding.kind": ["regarding", "kind"],
        "regarding.namespace": ["regarding", "namespace"],
        "regarding.name": ["regarding", "name"],
        "regarding.uid": ["regarding", "uid"],
        "reason": ["reason"],
        "reportingController": ["reportingController"],
        "type": ["type"],
    },
    "secrets": {"type": ["type"]},
    "namespaces": {"status.phase": ["status", "phase"]},
    "nodes": {"spec.unschedulable": ["spec", "unschedulable"]},
}


class FieldSelector:
    def __init__(self, reqs: list[tuple[list[str], str, str]]):
        self.reqs = reqs

    @classmethod
    def parse(cls, text: str | None, resource: str) -> "FieldSelector":
        if not text or not text.strip():
            return cls([])
        allowed = {"metadata.name": ["metadata", "name"], "metadata.namespace": ["metadata", "namespace"]}
        allowed.update(EXTRA_FIELDS.get(resource, {}))
        reqs = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            m = re.match(r"^([^!=]+)(!=|==|=)(.*)$", part)
            if not m:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
            field, op, val = m.group(1).strip(), m.group(2), m.group(3).strip()
            if field not in allowed:
                raise bad_request(f'field label not supported: {field}')
            reqs.append((allowed[field], "!=" if op == "!=" else "=", val))
        return cls(reqs)

    def matches(self, obj: dict) -> bool:
        for path, op, val in self.reqs:
            cur = obj
            for p in path:
                cur = cur.get(p) if isinstance(cur, dict) else None
            if isinstance(cur, bool):
                cur = "true" if cur else "false"
            s = "" if cur is None else str(cur)
            if (s == val) != (op == "="):
                return False
        return True

    def single_name(self) -> str | None:
        for path, op, val in self.reqs:
            if path == ["metadata", "name"] and op == "=":
                return val
        return None

    def __bool__(self) -> bool:
        return bool(self.reqs)
