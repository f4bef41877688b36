"""Patches (JSON merge, JSON patch, strategic merge) and server-side apply with managedFields.

Field sets are Python sets of paths; a path is a tuple of FieldsV1 path elements: "f:name" for a field,
'k:{"name":"app"}' for an associative-list item, 'v:"x"' for a set item. A path names a member of the
set: a leaf (scalar, atomic list or map, empty map) or a list item. This is the model of
sigs.k8s.io/structured-merge-diff, cut down to what a kube-rs operator and kubectl exercise.
"""

from __future__ import annotations

import copy
import json

from .typemodel import UNTYPED, T

MISSING = object()

# ---------------------------------------------------------------------------------------------------
# JSON merge patch (RFC 7386)


def json_merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = json_merge_patch(out.get(k), v)
    return out


# ---------------------------------------------------------------------------------------------------
# JSON patch (RFC 6902)


class PatchError(Exception):
    pass


def _pointer(p: str) -> list[str]:
    if p == "":
        return []
    if not p.startswith("/"):
        raise PatchError(f'invalid JSON pointer: "{p}"')
    return [s.replace("~1", "/").replace("~0", "~") for s in p[1:].split("/")]


def _walk_parent(doc, parts: list[str], path: str):
    cur = doc
    for seg in parts[:-1]:
        if isinstance(cur, dict):
            if seg not in cur:
                raise PatchError(f"doc is missing path: {path}: missing value")
            cur = cur[seg]
        elif isinstance(cur, list):
            try:
                cur = cur[int(seg)]
            except (ValueError, IndexError):
                raise PatchError(f"doc is missing path: {path}: missing value") from None
        else:
            raise PatchError(f"doc is missing path: {path}: missing value")
    return cur


def _get(doc, path: str):
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _walk_parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        try:
            return parent[int(last)]
        except (ValueError, IndexError):
            pass
    raise PatchError(f"doc is missing path: {path}: missing value")


def _remove(doc, path: str):
    parts = _pointer(path)
    parent = _walk_parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            return parent.pop(int(last))
        except (ValueError, IndexError):
            pass
    raise PatchError(f"unable to remove nonexistent key: {last}: missing value")


def _add(doc, path: str, value, replace: bool = False):
    parts = _pointer(path)
    if not parts:
        return value
    parent = _walk_parent(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing key: {path}: missing value")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise PatchError(f"invalid index: {last}") from None
            if replace:
                if not 0 <= i < len(parent):
                    raise PatchError(f"replace operation does not apply: doc is missing key: {path}: missing value")
                parent[i] = value
            else:
                if not 0 <= i <= len(parent):
                    raise PatchError(f"add operation does not apply: doc is missing path: {path}: missing value")
                parent.insert(i, value)
    else:
        raise PatchError(f"doc is missing path: {path}: missing value")
    return doc


def json_patch(doc, ops) -> dict:
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        path = op.get("path", "")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "move":
            v = _remove(doc, op["from"])
            doc = _add(doc, path, v)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            # As in the API server's JSON patch library (evanphx/json-patch): a missing member tests
            # equal to null. kube-runtime's finalizer helper relies on it to add the first finalizer.
            try:
                current = _get(doc, path)
            except PatchError:
                if op.get("value") is not None:
                    raise
                current = None
            if current != op.get("value"):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc


# ---------------------------------------------------------------------------------------------------
# strategic merge patch (built-in kinds only)


def _strip_directives(v):
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v if not (isinstance(x, dict) and "$patch" in x and len(x) == 1)]
    return v


def strategic_merge_patch(orig, patch, t: T):
    if not isinstance(patch, dict):
        return _strip_directives(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return MISSING
    out = copy.deepcopy(orig) if isinstance(orig, dict) else {}
    orders: dict[str, list] = {}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list):
                out[field] = [x for x in out[field] if x not in v]
            continue
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
            continue
        ft = t.field(k)
        if isinstance(v, dict):
            r = strategic_merge_patch(out.get(k), v, ft)
            if r is MISSING:
                out.pop(k, None)
            else:
                out[k] = r
        elif isinstance(v, list) and ft.kind == "list" and ft.smp_strategy and "merge" in ft.smp_strategy:
            out[k] = _smp_list(out.get(k) if isinstance(out.get(k), list) else [], v, ft)
        else:
            out[k] = _strip_directives(v)
    for field, order in orders.items():
        if isinstance(out.get(field), list):
            out[field] = _reorder(out[field], order, t.field(field))
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"] or [])
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _smp_list(orig: list, patch: list, t: T) -> list:
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [_strip_directives(x) for x in patch if not (isinstance(x, dict) and x.get("$patch") == "replace")]
    key = t.smp_key
    out = copy.deepcopy(orig)
    if key is None:  # a merging list of primitives
        for x in patch:
            if x not in out:
                out.append(x)
        return out
    for item in patch:
        if not isinstance(item, dict):
            continue
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_strip_directives(item))
        else:
            r = strategic_merge_patch(out[idx], item, t.item())
            if r is MISSING:
                out.pop(idx)
            else:
                out[idx] = r
    return out


def _reorder(items: list, order: list, t: T) -> list:
    key = t.smp_key

    def ident(x):
        return x.get(key) if key and isinstance(x, dict) else x

    wanted = [ident(o) for o in order]
    ranked = [x for w in wanted for x in items if ident(x) == w]
    rest = [x for x in items if ident(x) not in wanted]
    return ranked + rest


# ---------------------------------------------------------------------------------------------------
# field sets


def _key_elem(item: dict, keys: list[str], defaults: dict | None = None) -> str:
    kv = {}
    for k in sorted(keys):
        if k in item:
            kv[k] = item[k]
        elif defaults and k in defaults:
            kv[k] = defaults[k]
    return "k:" + json.dumps(kv, separators=(",", ":"))


def _val_elem(v) -> str:
    return "v:" + json.dumps(v, separators=(",", ":"))


def fieldset(obj, t: T, prefix: tuple = ()) -> set:
    out: set = set()
    _walk(obj, t, prefix, out)
    return out


def _walk(v, t: T, p: tuple, out: set) -> None:
    if isinstance(v, dict) and t.kind in ("struct", "map", "untyped") and not t.atomic:
        if not v and p:
            out.add(p)
        for k, sub in v.items():
            _walk(sub, t.field(k), p + ("f:" + k,), out)
    elif isinstance(v, list) and t.kind == "list" and t.list_type == "map" and all(isinstance(x, dict) for x in v):
        if not v and p:
            out.add(p)
        for item in v:
            kp = p + (_key_elem(item, t.keys, t.key_defaults),)
            out.add(kp)
            for k, sub in item.items():
                _walk(sub, t.item().field(k), kp + ("f:" + k,), out)
    elif isinstance(v, list) and t.kind == "list" and t.list_type == "set":
        if not v and p:
            out.add(p)
        for x in v:
            out.add(p + (_val_elem(x),))
    elif p:
        out.add(p)


def _step(cur, elem: str, t: T | None = None):
    if elem.startswith("f:"):
        if isinstance(cur, dict) and elem[2:] in cur:
            return cur[elem[2:]]
        return MISSING
    if elem.startswith("k:"):
        if not isinstance(cur, list):
            return MISSING
        want = json.loads(elem[2:])
        for x in cur:
            if isinstance(x, dict) and all(_kget(x, k) == v for k, v in want.items()):
                return x
        return MISSING
    if elem.startswith("v:"):
        want = json.loads(elem[2:])
        return want if isinstance(cur, list) and want in cur else MISSING
    return MISSING


_KEY_DEFAULTS = {"protocol": "TCP"}


def _kget(item: dict, k: str):
    # The only list-map key with a default among the types served here is ports' protocol; CRD keys with
    # defaults are already defaulted in stored objects.
    return item.get(k, _KEY_DEFAULTS.get(k))


def value_at(obj, path: tuple):
    cur = obj
    for e in path:
        cur = _step(cur, e)
        if cur is MISSING:
            return MISSING
    return cur


def remove_path(obj, path: tuple) -> None:
    """Removes one member. A list or map that this empties becomes null, which the server then drops
    (structured-merge-diff's removingWalker followed by null pruning)."""
    parent = value_at(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if parent is MISSING:
        return
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [x for x in parent if not (isinstance(x, dict) and all(_kget(x, k) == v for k, v in want.items()))]
    elif last.startswith("v:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [x for x in parent if x != want]
    else:
        return
    if not parent and len(path) > 1 and path[-2].startswith("f:"):
        grand = value_at(obj, path[:-2]) if len(path) > 2 else obj
        if isinstance(grand, dict):
            grand.pop(path[-2][2:], None)


def encode_fields(paths: set) -> dict:
    root: dict = {}
    for p in sorted(paths):
        node = root
        for e in p:
            node = node.setdefault(e, {})
        node.setdefault("\0member", True)
    return _finish(root)


def _finish(node: dict) -> dict:
    out: dict = {}
    member = node.pop("\0member", False)
    children = {k: _finish(v) for k, v in node.items()}
    if member and children:
        out["."] = {}
    for k in sorted(children):
        out[k] = children[k]
    return out


def decode_fields(f: dict, prefix: tuple = ()) -> set:
    out: set = set()
    for k, v in (f or {}).items():
        if k == ".":
            out.add(prefix)
        elif not v:
            out.add(prefix + (k,))
        else:
            out |= decode_fields(v, prefix + (k,))
    return out


def path_str(path: tuple) -> str:
    """The form the real server uses in conflict messages: .spec.containers[name="app"].image"""
    s = ""
    for e in path:
        if e.startswith("f:"):
            s += "." + e[2:]
        elif e.startswith("k:"):
            kv = json.loads(e[2:])
            s += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in kv.items()) + "]"
        elif e.startswith("v:"):
            s += "[=" + e[2:] + "]"
    return s


# ---------------------------------------------------------------------------------------------------
# server-side apply


def ssa_merge(live, cfg, t: T):
    if isinstance(cfg, dict) and isinstance(live, dict) and t.kind in ("struct", "map", "untyped") and not t.atomic:
        out = copy.deepcopy(live)
        for k, v in cfg.items():
            out[k] = ssa_merge(live.get(k, MISSING), v, t.field(k))
        return out
    if isinstance(cfg, list) and isinstance(live, list) and t.kind == "list":
        if t.list_type == "map" and all(isinstance(x, dict) for x in cfg + live):
            out = copy.deepcopy(live)
            for item in cfg:
                ke = _key_elem(item, t.keys, t.key_defaults)
                idx = next((i for i, o in enumerate(out) if _key_elem(o, t.keys, t.key_defaults) == ke), None)
                if idx is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[idx] = ssa_merge(out[idx], item, t.item())
            return out
        if t.list_type == "set":
            return copy.deepcopy(live) + [copy.deepcopy(x) for x in cfg if x not in live]
    return copy.deepcopy(cfg)


def print_manager(e: dict) -> str:
    """fieldmanager's printManager: how a manager is named in conflict messages."""
    out = json.dumps(e["manager"])
    if e.get("subresource"):
        out += f' with subresource {json.dumps(e["subresource"])}'
    if e.get("operation") == "Update":
        out += f' using {e.get("apiVersion", "")}'
        if e.get("time"):
            out += f' at {e["time"]}'
    return out


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[dict, tuple]]):
        self.conflicts = conflicts
        if len(conflicts) == 1:
            e, p = conflicts[0]
            msg = f"Apply failed with 1 conflict: conflict with {print_manager(e)}: {path_str(p)}"
        else:
            by: dict[str, list] = {}
            for e, p in conflicts:
                by.setdefault(print_manager(e), []).append(p)
            lines = []
            for m in sorted(by):
                lines.append(f"conflicts with {m}:")
                lines += [f"- {path_str(p)}" for p in by[m]]
            msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
        super().__init__(msg)


class Managed:
    """Decoded metadata.managedFields."""

    def __init__(self, entries: list[dict] | None):
        self.entries = []
        for e in entries or []:
            if not e or not e.get("manager") and not e.get("fieldsV1"):
                continue
            self.entries.append({
                "manager": e.get("manager", ""),
                "operation": e.get("operation", "Update"),
                "apiVersion": e.get("apiVersion", ""),
                "time": e.get("time"),
                "subresource": e.get("subresource", ""),
                "fields": decode_fields(e.get("fieldsV1") or {}),
            })

    def find(self, manager: str, operation: str, subresource: str):
        for e in self.entries:
            if e["manager"] == manager and e["operation"] == operation and e["subresource"] == subresource:
                return e
        return None

    def encode(self) -> list[dict]:
        out = []
        for e in self.entries:
            if not e["fields"]:
                continue
            d = {"manager": e["manager"], "operation": e["operation"], "apiVersion": e["apiVersion"]}
            if e["time"]:
                d["time"] = e["time"]
            d["fieldsType"] = "FieldsV1"
            d["fieldsV1"] = encode_fields(e["fields"])
            if e["subresource"]:
                d["subresource"] = e["subresource"]
            out.append(d)
        return out


def ssa_apply(live: dict, cfg: dict, t: T, managed: Managed, manager: str, force: bool, subresource: str,
              api_version: str, now: str, keep) -> dict:
    """Merges `cfg` into `live` for `manager` and updates `managed` in place. `keep(path)` says whether a
    path is tracked at all (apiVersion, kind, metadata.name... and reset fields are not).
    Raises ApplyConflict."""
    cfg_set = {p for p in fieldset(cfg, t) if keep(p)}
    merged = ssa_merge(live, cfg, t)
    me = managed.find(manager, "Apply", subresource)
    conflicts = []
    for e in managed.entries:
        if e is me:
            continue
        for p in sorted(e["fields"] & cfg_set):
            if value_at(live, p) != value_at(merged, p):
                conflicts.append((e, p))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    for e, p in conflicts:
        e["fields"].discard(p)
    prev = me["fields"] if me else set()
    others: set = set()
    for e in managed.entries:
        if e is not me:
            others |= e["fields"]
    for p in sorted(prev - cfg_set, key=len):
        if p in others or any(o[:len(p)] == p for o in others) or any(c[:len(p)] == p for c in cfg_set):
            continue
        remove_path(merged, p)
    if me is None:
        me = {"manager": manager, "operation": "Apply", "apiVersion": api_version, "time": now,
              "subresource": subresource, "fields": set()}
        managed.entries.append(me)
    if me["fields"] != cfg_set or me["apiVersion"] != api_version:
        me["time"] = now
    me["fields"] = cfg_set
    me["apiVersion"] = api_version
    managed.entries = [e for e in managed.entries if e["fields"]]
    return merged


def track_update(old: dict | None, new: dict, t: T, managed: Managed, manager: str, subresource: str,
                 api_version: str, now: str, keep) -> None:
    """Records a non-apply write (create, update, or a patch other than apply) in `managed`."""
    new_set = {p for p in fieldset(new, t) if keep(p)}
    if old is None:
        changed, removed = new_set, set()
    else:
        old_set = {p for p in fieldset(old, t) if keep(p)}
        changed = {p for p in new_set if p not in old_set or value_at(old, p) != value_at(new, p)}
        removed = old_set - new_set
    if not changed and not removed:
        return
    me = managed.find(manager, "Update", subresource)
    for e in managed.entries:
        if e is me:
            continue
        e["fields"] -= changed
        e["fields"] -= removed
    if changed:
        if me is None:
            me = {"manager": manager, "operation": "Update", "apiVersion": api_version, "time": now,
                  "subresource": subresource, "fields": set()}
            managed.entries.append(me)
        me["fields"] = (me["fields"] - removed) | changed
        me["time"] = now
        me["apiVersion"] = api_version
    elif me is not None:
        me["fields"] -= removed
    managed.entries = [e for e in managed.entries if e["fields"]]


__all__ = ["json_merge_patch", "json_patch", "strategic_merge_patch", "ssa_apply", "track_update", "Managed",
           "ApplyConflict", "PatchError", "MISSING", "UNTYPED"]
