"""The API server's semantics, independent of HTTP: create, read, update, patch (incl. server-side apply),
delete (graceful, finalizers, propagation policies), list with pagination and watch with resource versions.

The HTTP layer (`server.py`) and the in-process controllers (`controllers.py`, `kubelet.py`) both go
through this class, so the kubelet's status writes produce the same watch events and managedFields that
a real kubelet's would.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import json
import threading
import time
import uuid

import yaml

from . import errors as E
from .builtins import obj_version, validate_meta, validate_name
from .merge import (ApplyConflict, Managed, PatchError, json_merge_patch, json_patch, ssa_apply,
                    strategic_merge_patch, track_update)
from .registry import Registry, ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import Event, Store
from .util import generate_suffix, micro_time, new_uid, now, rfc3339

IGNORED_META = {"f:name", "f:namespace", "f:uid", "f:resourceVersion", "f:generation", "f:creationTimestamp",
                "f:managedFields", "f:selfLink", "f:deletionTimestamp", "f:deletionGracePeriodSeconds"}

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+json": "apply",
}


class WriteOptions:
    def __init__(self, manager: str = "", dry_run: bool = False, field_validation: str = "Warn",
                 version: str | None = None, force: bool = False):
        self.manager = manager
        self.dry_run = dry_run
        self.field_validation = field_validation or "Warn"
        self.version = version
        self.force = force
        self.warnings: list[str] = []


def keep_path_for(rt: ResourceType, subresource: str):
    def keep(p: tuple) -> bool:
        if not p:
            return False
        if p[0] in ("f:apiVersion", "f:kind"):
            return False
        if p[0] == "f:metadata" and len(p) > 1 and p[1] in IGNORED_META:
            return False
        if subresource == "status":
            return p[0] == "f:status"
        if rt.status and p[0] == "f:status":
            return False
        return True
    return keep


class Api:
    def __init__(self, store: Store | None = None, registry: Registry | None = None):
        from .builtins import strategy_for  # noqa: PLC0415
        self.store = store or Store()
        self.registry = registry or Registry(strategy_for)
        self.lock = self.store.lock
        self._ip = 0
        self._snapshots: dict[str, tuple[float, list[dict], int]] = {}
        self.hooks: list = []  # callables(rt, event_type, obj) run under the lock after each write
        self.stopping = threading.Event()

    # -- context for strategies ---------------------------------------------------------------------

    def allocate_cluster_ip(self) -> str:
        self._ip += 1
        return f"10.96.{(self._ip >> 8) & 255}.{self._ip & 255 or 1}"

    def default_storage_class(self) -> str | None:
        for sc in self.store.iter_all("storageclasses.storage.k8s.io"):
            if (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true":
                return sc["metadata"]["name"]
        return None

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _dec(rt: ResourceType, o: dict | None) -> dict | None:
        return rt.codec.decode(o) if o is not None and rt.codec is not None else o

    @staticmethod
    def _enc(rt: ResourceType, o: dict) -> dict:
        return rt.codec.encode(o) if rt.codec is not None else o

    def _load(self, rt: ResourceType, ns: str, name: str) -> dict | None:
        return self._dec(rt, self.store.get(rt.sgr, ns, name))

    def _s_create(self, rt: ResourceType, obj: dict) -> dict:
        return self._dec(rt, self.store.create(rt.sgr, self._enc(rt, obj)))

    def _s_update(self, rt: ResourceType, obj: dict) -> dict:
        return self._dec(rt, self.store.update(rt.sgr, self._enc(rt, obj)))

    def _s_delete(self, rt: ResourceType, ns: str, name: str) -> dict:
        return self._dec(rt, self.store.delete(rt.sgr, ns, name))

    @staticmethod
    def _ns(rt: ResourceType, ns: str | None) -> str:
        return (ns or "") if rt.namespaced else ""

    def _out(self, rt: ResourceType, obj: dict, version: str | None) -> dict:
        obj["apiVersion"] = rt.api_version(version or obj_version(obj, rt))
        obj["kind"] = rt.kind
        return obj

    def _require_ns(self, rt: ResourceType, ns: str, name: str) -> None:
        if not rt.namespaced:
            return
        nsobj = self.store.peek("namespaces", "", ns)
        if nsobj is None:
            raise E.ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        if nsobj["metadata"].get("deletionTimestamp") or (nsobj.get("status") or {}).get("phase") == "Terminating":
            raise E.ApiError(403, "Forbidden",
                             f'{rt.qualified_resource} "{name}" is forbidden: unable to create new content in '
                             f'namespace {ns} because it is being terminated',
                             {"name": name, "group": rt.group, "kind": rt.plural,
                              "causes": [{"reason": "NamespaceTerminating",
                                          "message": f"namespace {ns} is being terminated",
                                          "field": "metadata.namespace"}]})

    def _run_hooks(self, rt: ResourceType, etype: str, obj: dict, prev: dict | None) -> None:
        for h in self.hooks:
            h(rt, etype, obj, prev)

    def _check_type(self, rt: ResourceType, body: dict, version: str | None) -> None:
        if not isinstance(body, dict):
            raise E.bad_request("the body of the request must be a JSON object")
        av = body.get("apiVersion")
        want = rt.api_version(version)
        if av and av != want:
            raise E.bad_request(f"the API version in the data ({av}) does not match the expected API version ({want})")
        k = body.get("kind")
        if k and k != rt.kind:
            raise E.bad_request(f'{k} in version "{want.rpartition("/")[2]}" cannot be handled as a {rt.kind}: '
                                f"the object provided is unrecognized (must be of type {rt.kind})")

    def _prune(self, rt: ResourceType, obj: dict, opts: WriteOptions, name: str) -> None:
        unknown = rt.strategy.prune(obj)
        if not unknown:
            return
        if opts.field_validation == "Strict":
            v = obj_version(obj, rt)
            fields = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise E.bad_request(f'{rt.kind} in version "{v}" cannot be handled as a {rt.kind}: '
                                f"strict decoding error: {fields}")
        if opts.field_validation == "Warn":
            opts.warnings += [f'unknown field "{u}"' for u in unknown]

    def _decode_checks(self, rt: ResourceType, obj: dict) -> None:
        """Errors the real server gives while decoding the body, before any validation."""
        from .builtins import check_quantities  # noqa: PLC0415
        if rt.crd is None:
            msg = check_quantities(obj)
            if msg:
                v = rt.versions[0]
                raise E.bad_request(f'{rt.kind} in version "{v}" cannot be handled as a {rt.kind}: {msg}')

    def _size_check(self, obj: dict) -> None:
        # etcd refuses values over 1.5 MiB (--max-request-bytes); the API server passes the error on.
        if len(json.dumps(obj, separators=(",", ":"))) > 1572864:
            raise E.internal("etcdserver: request is too large")

    def _validate(self, rt: ResourceType, obj: dict, old: dict | None) -> None:
        name = obj["metadata"].get("name", "")
        errs = []
        if old is None:
            errs += validate_name(name, rt.strategy.name_rule)
        errs += validate_meta(obj, old)
        errs += rt.strategy.validate(obj, old)
        if errs:
            raise E.invalid(rt, name, errs)

    # -- reads -------------------------------------------------------------------------------------

    def get(self, rt: ResourceType, ns: str, name: str, version: str | None = None) -> dict:
        obj = self._load(rt, self._ns(rt, ns), name)
        if obj is None:
            raise E.not_found(rt, name)
        return self._out(rt, obj, version)

    def list(self, rt: ResourceType, ns: str | None, *, label_selector: str = "", field_selector: str = "",
             limit: int = 0, cont: str = "", resource_version: str = "", rv_match: str = "",
             version: str | None = None) -> dict:
        ls = LabelSelector.parse(label_selector)
        fs = FieldSelector.parse(field_selector, rt.gr)
        with self.lock:
            if cont:
                try:
                    tok = json.loads(base64.urlsafe_b64decode(cont.encode() + b"==").decode())
                    sid, start = tok["id"], int(tok["start"])
                except Exception:  # noqa: BLE001
                    raise E.bad_request("continue key is not valid: illegal base64 data") from None
                snap = self._snapshots.get(sid)
                if snap is None:
                    raise E.gone("The provided continue parameter is too old to display a consistent list result. "
                                 "You can start a new list without the continue parameter.")
                _, items, rv = snap
            else:
                if resource_version and resource_version != "0":
                    try:
                        want = int(resource_version)
                    except ValueError:
                        raise E.bad_request(f"invalid resource version: {resource_version}") from None
                    if want > self.store.rv:
                        raise E.ApiError(504, "Timeout", f"Too large resource version: {want}, current: {self.store.rv}",
                                         {"causes": [{"reason": "ResourceVersionTooLarge",
                                                      "message": "Too large resource version"}], "retryAfterSeconds": 1})
                    if rv_match == "Exact" and want != self.store.rv:
                        raise E.gone(f"too old resource version: {want} ({self.store.rv})")
                    if want < self.store.compacted:
                        raise E.gone(f"too old resource version: {want} ({self.store.compacted + 1})")
                all_items, rv = self.store.list(rt.sgr, self._ns(rt, ns) if rt.namespaced else None)
                all_items = [self._dec(rt, o) for o in all_items]
                items = [o for o in all_items if ls.matches(o["metadata"].get("labels")) and fs.matches(o)]
                start = 0
                # The real server serves resourceVersion=0 from its cache and ignores the limit.
                if resource_version == "0":
                    limit = 0
            self._expire_snapshots()
            page = items[start:start + limit] if limit else items[start:]
            meta: dict = {"resourceVersion": str(rv)}
            if limit and start + limit < len(items):
                sid = cont and json.loads(base64.urlsafe_b64decode(cont.encode() + b"==").decode())["id"] or uuid.uuid4().hex
                self._snapshots[sid] = (time.time(), items, rv)
                tok = {"v": "meta.k8s.io/v1", "rv": rv, "start": start + limit, "id": sid}
                meta["continue"] = base64.urlsafe_b64encode(json.dumps(tok).encode()).decode().rstrip("=")
                if not ls and not fs:
                    meta["remainingItemCount"] = len(items) - start - limit
            return {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version(version),
                "metadata": meta,
                "items": [self._out(rt, o, version) for o in page],
            }

    def _expire_snapshots(self) -> None:
        cutoff = time.time() - 300
        for k in [k for k, v in self._snapshots.items() if v[0] < cutoff]:
            del self._snapshots[k]

    def watch(self, rt: ResourceType, ns: str | None, *, label_selector: str = "", field_selector: str = "",
              resource_version: str = "", send_initial_events: bool = False, version: str | None = None):
        ls = LabelSelector.parse(label_selector)
        fs = FieldSelector.parse(field_selector, rt.gr)
        nsf = self._ns(rt, ns) if rt.namespaced else None
        with self.lock:
            initial: list[dict] = []
            since: int | None = None
            if resource_version in ("", "0") or send_initial_events:
                items, rv = self.store.list(rt.sgr, nsf)
                items = [self._dec(rt, o) for o in items]
                initial = [o for o in items if ls.matches(o["metadata"].get("labels")) and fs.matches(o)]
                if send_initial_events and resource_version not in ("", "0") and not resource_version.isdigit():
                    raise E.bad_request(f"invalid resource version: {resource_version}")
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise E.bad_request(f"invalid resource version: {resource_version}") from None
            try:
                watcher, backlog = self.store.register(rt.sgr, nsf, since)
                error = None
            except ValueError as e:
                watcher, backlog, error = None, [], str(e)
            return WatchStream(self, rt, version, ls, fs, initial, backlog, watcher, error, self.store.rv,
                               send_initial_events)

    # -- create ------------------------------------------------------------------------------------

    def create(self, rt: ResourceType, ns: str, body: dict, opts: WriteOptions | None = None,
               managed: Managed | None = None) -> dict:
        opts = opts or WriteOptions()
        self._check_type(rt, body, opts.version)
        obj = copy.deepcopy(body)
        obj["apiVersion"] = rt.api_version(opts.version)
        obj["kind"] = rt.kind
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise E.bad_request("metadata must be an object")
        ns = self._ns(rt, ns)
        if rt.namespaced:
            if md.get("namespace") and md["namespace"] != ns:
                raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        with self.lock:
            if not md.get("name"):
                if md.get("generateName"):
                    for _ in range(10):
                        md["name"] = md["generateName"] + generate_suffix()
                        if self.store.peek(rt.sgr, ns, md["name"]) is None:
                            break
                else:
                    raise E.invalid(rt, "", [E.FieldError("Required", "metadata.name",
                                                          detail="name or generateName is required")])
            name = md["name"]
            if md.get("resourceVersion"):
                raise E.internal("resourceVersion should not be set on objects to be created")
            self._require_ns(rt, ns, name)
            if self.store.peek(rt.sgr, ns, name) is not None:
                raise E.already_exists(rt, name)
            for f in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                md.pop(f, None)
            md["uid"] = new_uid()
            md["creationTimestamp"] = rfc3339()
            if rt.tracks_generation:
                md["generation"] = 1
            else:
                md.pop("generation", None)
            normalize_meta(obj)
            self._decode_checks(rt, obj)
            self._prune(rt, obj, opts, name)
            rt.strategy.prepare_create(obj, self)
            rt.strategy.default(obj, None, self)
            self._validate(rt, obj, None)
            keep = keep_path_for(rt, "")
            if managed is None:
                managed = Managed(md.get("managedFields"))
                managed.entries = []
                track_update(None, obj, rt.type(), managed, opts.manager or "unknown", "", obj["apiVersion"],
                             rfc3339(), keep)
            mf = managed.encode()
            if mf:
                md["managedFields"] = mf
            else:
                md.pop("managedFields", None)
            if opts.dry_run:
                return self._out(rt, obj, opts.version)
            self._size_check(obj)
            stored = self._s_create(rt, obj)
            self._run_hooks(rt, "ADDED", stored, None)
            return self._out(rt, stored, opts.version)

    # -- update ------------------------------------------------------------------------------------

    def update(self, rt: ResourceType, ns: str, name: str, body: dict, opts: WriteOptions | None = None,
               subresource: str = "") -> dict:
        opts = opts or WriteOptions()
        self._check_type(rt, body, opts.version)
        ns = self._ns(rt, ns)
        md = body.get("metadata") or {}
        if md.get("name") and md["name"] != name:
            raise E.bad_request(f"the name of the object ({md['name']}) does not match the name on the URL ({name})")
        if rt.namespaced and md.get("namespace") and md["namespace"] != ns:
            raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        with self.lock:
            old = self._load(rt, ns, name)
            if old is None:
                raise E.not_found(rt, name)
            rv = md.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise E.conflict(rt, name)
            new = copy.deepcopy(body)
            return self._commit_update(rt, old, new, opts, subresource, managed=None)

    def _commit_update(self, rt: ResourceType, old: dict, new: dict, opts: WriteOptions, subresource: str,
                       managed: Managed | None) -> dict:
        """Common tail of update and patch: `new` is the full desired object."""
        name = old["metadata"]["name"]
        new["apiVersion"] = rt.api_version(opts.version)
        new["kind"] = rt.kind
        md = new.setdefault("metadata", {})
        omd = old["metadata"]
        incoming_mf = md.get("managedFields")
        for f in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "resourceVersion"):
            if f in omd:
                md[f] = copy.deepcopy(omd[f])
            else:
                md.pop(f, None)
        md.pop("selfLink", None)
        if subresource == "status":
            base = copy.deepcopy(old)
            if "status" in new:
                base["status"] = new["status"]
            else:
                base.pop("status", None)
            base["apiVersion"], base["kind"] = new["apiVersion"], new["kind"]
            new = base
            md = new["metadata"]
        elif subresource != "*":
            if rt.status and subresource == "":
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            rt.strategy.prepare_update(new, old, self)
        normalize_meta(new)
        self._decode_checks(rt, new)
        self._prune(rt, new, opts, name)
        rt.strategy.default(new, old, self)
        self._validate(rt, new, old)
        if rt.tracks_generation and rt.strategy.spec_changed(new, old):
            md["generation"] = int(omd.get("generation") or 1) + 1
        keep = keep_path_for(rt, "" if subresource == "*" else subresource)
        if managed is None:
            if incoming_mf is not None and incoming_mf != omd.get("managedFields"):
                managed = Managed(incoming_mf)
            else:
                managed = Managed(omd.get("managedFields"))
            track_update(old, new, rt.type(obj_version(new, rt)), managed, opts.manager or "unknown",
                         "" if subresource == "*" else subresource, new["apiVersion"], rfc3339(), keep)
        mf = managed.encode()
        if mf:
            md["managedFields"] = mf
        else:
            md.pop("managedFields", None)
        # A write that changes nothing is not a write: no new resourceVersion, no watch event.
        if _same(new, old):
            return self._out(rt, old, opts.version)
        if opts.dry_run:
            return self._out(rt, new, opts.version)
        ns_held = rt.gr == "namespaces" and bool((new.get("spec") or {}).get("finalizers"))
        if md.get("deletionTimestamp") and not md.get("finalizers") and not md.get("deletionGracePeriodSeconds") \
                and not ns_held:
            gone = self._s_delete(rt, md.get("namespace", ""), name)
            self._run_hooks(rt, "DELETED", gone, old)
            return self._out(rt, old, opts.version)
        self._size_check(new)
        stored = self._s_update(rt, new)
        self._run_hooks(rt, "MODIFIED", stored, old)
        return self._out(rt, stored, opts.version)

    def mutate(self, rt: ResourceType, ns: str, name: str, fn, manager: str, subresource: str = "*",
               uid: str | None = None) -> dict | None:
        """Read-modify-write for in-process controllers, atomic under the store lock. `fn(obj)` edits the
        object in place; returning False skips the write. subresource "*" writes spec and status at once."""
        with self.lock:
            old = self._load(rt, self._ns(rt, ns), name)
            if old is None or (uid and old["metadata"].get("uid") != uid):
                return None
            new = copy.deepcopy(old)
            if fn(new) is False:
                return old
            return self._commit_update(rt, old, new, WriteOptions(manager=manager), subresource, managed=None)

    # -- patch -------------------------------------------------------------------------------------

    def patch(self, rt: ResourceType, ns: str, name: str, content_type: str, raw: bytes | str | dict | list,
              opts: WriteOptions | None = None, subresource: str = "") -> dict:
        opts = opts or WriteOptions()
        ptype = PATCH_TYPES.get((content_type or "").split(";")[0].strip())
        accepted = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        if rt.crd is None:
            accepted.insert(2, "application/strategic-merge-patch+json")
        if ptype is None or (ptype == "strategic" and rt.crd is not None):
            raise E.unsupported_media_type(content_type, accepted)
        if isinstance(raw, (bytes, str)):
            try:
                body = yaml.safe_load(raw) if ptype == "apply" else json.loads(raw)
            except Exception as e:  # noqa: BLE001
                raise E.bad_request(f"error decoding patch: {e}") from None
        else:
            body = raw
        if ptype == "apply":
            if opts.manager == "":
                raise E.bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set")
            return self._apply(rt, ns, name, body, opts, subresource)
        if ptype != "json" and not isinstance(body, dict):
            raise E.bad_request("error decoding patch: the patch must be a JSON object")
        ns = self._ns(rt, ns)
        with self.lock:
            old = self._load(rt, ns, name)
            if old is None:
                raise E.not_found(rt, name)
            base = copy.deepcopy(old)
            base["apiVersion"] = rt.api_version(opts.version or obj_version(old, rt))
            try:
                if ptype == "merge":
                    new = json_merge_patch(base, body)
                elif ptype == "json":
                    new = json_patch(base, body)
                else:
                    new = strategic_merge_patch(base, body, rt.type())
            except PatchError as e:
                raise E.ApiError(422, "Invalid", str(e)) from None
            if not isinstance(new, dict):
                raise E.bad_request("the patch produced something that is not an object")
            nmd = new.get("metadata") or {}
            if nmd.get("name", name) != name:
                raise E.bad_request(f"the name of the object ({nmd.get('name')}) does not match the name on the URL ({name})")
            rv = nmd.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise E.conflict(rt, name)
            return self._commit_update(rt, old, new, opts, subresource, managed=None)

    def _apply(self, rt: ResourceType, ns: str, name: str, cfg: dict, opts: WriteOptions, subresource: str) -> dict:
        if not isinstance(cfg, dict):
            raise E.bad_request("error decoding YAML: the apply configuration must be an object")
        want = rt.api_version(opts.version)
        if not cfg.get("apiVersion") or not cfg.get("kind"):
            raise E.bad_request("invalid object type: /, Kind=" if not cfg.get("kind") else
                                f"invalid object type: {cfg.get('kind')}")
        if cfg["apiVersion"] != want or cfg["kind"] != rt.kind:
            raise E.bad_request(f"the API version in the data ({cfg['apiVersion']}) does not match the expected "
                                f"API version ({want})" if cfg["apiVersion"] != want else
                                f"the kind in the data ({cfg['kind']}) does not match the expected kind ({rt.kind})")
        cmd = cfg.get("metadata") or {}
        if cmd.get("name", name) != name:
            raise E.bad_request(f"the name of the object ({cmd.get('name')}) does not match the name on the URL ({name})")
        ns = self._ns(rt, ns)
        if rt.namespaced and cmd.get("namespace") and cmd["namespace"] != ns:
            raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        cfg = copy.deepcopy(cfg)
        # Fields that the subresource resets are not part of the apply at all.
        if subresource == "status":
            cfg = {k: v for k, v in cfg.items() if k in ("apiVersion", "kind", "metadata", "status")}
            cfg["metadata"] = {k: v for k, v in (cfg.get("metadata") or {}).items() if k in ("name", "namespace")}
        elif rt.status:
            cfg.pop("status", None)
        if rt.crd is not None:
            probe = copy.deepcopy(cfg)
            unknown = rt.strategy.prune(probe)
            if unknown:
                raise E.bad_request(f"failed to create typed patch object ({rt.api_version(opts.version)}, "
                                    f"Kind={rt.kind}): " + "\n".join(f".{u}: field not declared in schema" for u in unknown))
        t = rt.type(opts.version)
        keep = keep_path_for(rt, subresource)
        with self.lock:
            old = self._load(rt, ns, name)
            if old is None:
                if subresource:
                    raise E.not_found(rt, name)
                managed = Managed([])
                live = {"apiVersion": want, "kind": rt.kind, "metadata": {"name": name}}
                if rt.namespaced:
                    live["metadata"]["namespace"] = ns
                try:
                    merged = ssa_apply(live, cfg, t, managed, opts.manager, opts.force, subresource, want,
                                       rfc3339(), keep)
                except ApplyConflict as e:  # cannot happen on create
                    raise self._conflict_error(rt, name, e) from None
                merged.setdefault("metadata", {})["name"] = name
                merged["metadata"].pop("resourceVersion", None)
                return self.create(rt, ns, merged, opts, managed=managed)
            rv = cmd.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise E.conflict(rt, name)
            managed = Managed(old["metadata"].get("managedFields"))
            live = copy.deepcopy(old)
            live["apiVersion"] = want
            try:
                merged = ssa_apply(live, cfg, t, managed, opts.manager, opts.force, subresource, want,
                                   rfc3339(), keep)
            except ApplyConflict as e:
                raise self._conflict_error(rt, name, e) from None
            merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self._commit_update(rt, old, merged, opts, subresource, managed=managed)

    @staticmethod
    def _conflict_error(rt: ResourceType, name: str, e: ApplyConflict) -> E.ApiError:
        from .merge import path_str  # noqa: PLC0415
        from .merge import print_manager  # noqa: PLC0415
        causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {print_manager(m)}", "field": path_str(p)}
                  for m, p in e.conflicts]
        return E.ApiError(409, "Conflict", str(e), {"name": name, "group": rt.group, "kind": rt.plural,
                                                     "causes": causes})

    # -- scale subresource -------------------------------------------------------------------------

    def _scale_paths(self, rt: ResourceType) -> tuple[list[str], list[str], list[str] | None]:
        sc = rt.scale or {}

        def p(s):
            return [x for x in (s or "").split(".") if x]
        return p(sc.get("specReplicasPath")), p(sc.get("statusReplicasPath")), p(sc.get("labelSelectorPath")) or None

    def get_scale(self, rt: ResourceType, ns: str, name: str) -> dict:
        obj = self.get(rt, ns, name)
        return self._to_scale(rt, obj)

    def _to_scale(self, rt: ResourceType, obj: dict) -> dict:
        from .util import get_path  # noqa: PLC0415
        sp, stp, selp = self._scale_paths(rt)
        md = obj["metadata"]
        scale = {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in md},
            "spec": {},
            "status": {"replicas": get_path(obj, stp, 0) or 0},
        }
        r = get_path(obj, sp)
        if r is not None:
            scale["spec"]["replicas"] = r
        if selp:
            sel = get_path(obj, selp)
            if sel is not None:
                scale["status"]["selector"] = sel
        elif rt.crd is None and isinstance(get_path(obj, ["spec", "selector"]), dict):
            ls = get_path(obj, ["spec", "selector"])
            parts = [f"{k}={v}" for k, v in sorted((ls.get("matchLabels") or {}).items())]
            scale["status"]["selector"] = ",".join(parts)
        return scale

    def update_scale(self, rt: ResourceType, ns: str, name: str, scale_or_patch, opts: WriteOptions,
                     content_type: str | None = None) -> dict:
        from .util import set_path  # noqa: PLC0415
        with self.lock:
            obj = self.get(rt, ns, name)
            current = self._to_scale(rt, obj)
            if content_type is not None:
                ptype = PATCH_TYPES.get(content_type.split(";")[0].strip())
                body = scale_or_patch
                if isinstance(body, (bytes, str)):
                    body = yaml.safe_load(body) if ptype == "apply" else json.loads(body)
                try:
                    if ptype == "json":
                        scale = json_patch(current, body)
                    elif ptype in ("merge", "strategic", "apply"):
                        scale = json_merge_patch(current, body)
                    else:
                        raise E.unsupported_media_type(content_type, list(PATCH_TYPES))
                except PatchError as e:
                    raise E.ApiError(422, "Invalid", str(e)) from None
            else:
                scale = scale_or_patch
            rv = (scale.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise E.conflict(rt, name)
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise E.ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                                                 f'{json.dumps(replicas)}: must be greater than or equal to 0',
                                 {"name": name, "group": "autoscaling", "kind": "Scale",
                                  "causes": [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                              "message": "must be greater than or equal to 0"}]})
            sp, _, _ = self._scale_paths(rt)
            new = copy.deepcopy(obj)
            set_path(new, sp, replicas)
            new["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
            old = self._load(rt, self._ns(rt, ns), name)
            out = self._commit_update(rt, old, new, opts, "scale", managed=None)
            return self._to_scale(rt, out)

    # -- delete ------------------------------------------------------------------------------------

    def delete(self, rt: ResourceType, ns: str, name: str, options: dict | None = None,
               dry_run: bool = False) -> tuple[dict, bool]:
        """Returns (body, deleted_now)."""
        options = options or {}
        ns = self._ns(rt, ns)
        with self.lock:
            obj = self._load(rt, ns, name)
            if obj is None:
                raise E.not_found(rt, name)
            md = obj["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise E.conflict(rt, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                           f"UID in object meta: {md.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != md.get("resourceVersion"):
                raise E.conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: "
                                           f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                           f"{md.get('resourceVersion')}")
            policy = options.get("propagationPolicy")
            if policy is None and options.get("orphanDependents") is not None:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            if policy not in (None, "Background", "Foreground", "Orphan"):
                raise E.invalid(rt, name, [E.FieldError("NotSupported", "propagationPolicy", policy,
                                                        supported=["Foreground", "Background", "Orphan", "nil"])])
            grace = options.get("gracePeriodSeconds")
            if rt.graceful:
                spec, status = obj.get("spec") or {}, obj.get("status") or {}
                if grace is None:
                    grace = spec.get("terminationGracePeriodSeconds", 30)
                if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
                    grace = 0
                grace = max(int(grace), 0)
            else:
                grace = 0
            old = copy.deepcopy(obj)
            fins = list(md.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in fins:
                fins.append("foregroundDeletion")
                fins = [f for f in fins if f != "orphan"]
            elif policy == "Orphan" and "orphan" not in fins:
                fins.append("orphan")
                fins = [f for f in fins if f != "foregroundDeletion"]
            elif policy == "Background":
                fins = [f for f in fins if f not in ("orphan", "foregroundDeletion")] if not md.get("deletionTimestamp") else fins
            terminating = bool(md.get("deletionTimestamp"))
            if rt.plural == "namespaces" and not rt.group:
                if name in ("default", "kube-system", "kube-public"):
                    raise E.forbidden(rt, name, "this namespace may not be deleted")
                if (obj.get("spec") or {}).get("finalizers"):
                    if terminating:
                        return self._out(rt, obj, None), False
                    md["deletionTimestamp"] = rfc3339()
                    md["deletionGracePeriodSeconds"] = 0
                    if fins:
                        md["finalizers"] = fins
                    obj.setdefault("status", {})["phase"] = "Terminating"
                    stored = self._s_update(rt, obj)
                    self._run_hooks(rt, "MODIFIED", stored, old)
                    return self._out(rt, stored, None), False
            if not fins and grace == 0 and (not terminating or rt.graceful or not md.get("finalizers")):
                if dry_run:
                    return self._out(rt, obj, None), True
                gone = self._s_delete(rt, ns, name)
                self._run_hooks(rt, "DELETED", gone, old)
                if rt.return_deleted:
                    return self._out(rt, gone, None), True
                return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": md.get("uid")}}, True
            changed = fins != (md.get("finalizers") or [])
            ts = now()
            if not terminating:
                if md.get("generation"):
                    md["generation"] = int(md["generation"]) + 1
                md["deletionTimestamp"] = rfc3339(ts + _dt.timedelta(seconds=grace))
                md["deletionGracePeriodSeconds"] = grace
                changed = True
            elif rt.graceful and grace < int(md.get("deletionGracePeriodSeconds") or 0):
                md["deletionTimestamp"] = rfc3339(ts + _dt.timedelta(seconds=grace))
                md["deletionGracePeriodSeconds"] = grace
                changed = True
            if fins:
                md["finalizers"] = fins
            else:
                md.pop("finalizers", None)
            if not changed or dry_run:
                return self._out(rt, obj, None), False
            if not fins and grace == 0 and not rt.graceful:
                gone = self._s_delete(rt, ns, name)
                self._run_hooks(rt, "DELETED", gone, old)
                return self._out(rt, gone, None), True
            stored = self._s_update(rt, obj)
            self._run_hooks(rt, "MODIFIED", stored, old)
            if not fins and grace == 0:
                # a pod whose grace period was cut to zero by a second delete
                gone = self._s_delete(rt, ns, name)
                self._run_hooks(rt, "DELETED", gone, stored)
                return self._out(rt, gone, None), True
            return self._out(rt, stored, None), False

    def delete_collection(self, rt: ResourceType, ns: str | None, label_selector: str = "",
                          field_selector: str = "", options: dict | None = None) -> dict:
        lst = self.list(rt, ns, label_selector=label_selector, field_selector=field_selector)
        for o in lst["items"]:
            try:
                self.delete(rt, o["metadata"].get("namespace", ""), o["metadata"]["name"], options)
            except E.ApiError as e:
                if e.code != 404:
                    raise
        return lst


def normalize_meta(obj: dict) -> None:
    """ObjectMeta's fields are omitempty: an empty list or map is not stored."""
    md = obj.get("metadata") or {}
    for k in ("labels", "annotations", "finalizers", "ownerReferences", "managedFields", "generateName"):
        if k in md and not md[k]:
            del md[k]


def _same(a: dict, b: dict) -> bool:
    a = dict(a, metadata={k: v for k, v in a["metadata"].items() if k != "resourceVersion"})
    b = dict(b, metadata={k: v for k, v in b["metadata"].items() if k != "resourceVersion"})
    a.pop("apiVersion", None)
    b.pop("apiVersion", None)
    return a == b


class WatchStream:
    """One watch: initial events (synthetic ADDED), the backlog since the requested version, then live
    events. Selector transitions are turned into ADDED/DELETED as the real watch cache does."""

    def __init__(self, api: Api, rt: ResourceType, version, ls: LabelSelector, fs: FieldSelector,
                 initial: list[dict], backlog: list[Event], watcher, error: str | None, start_rv: int,
                 send_initial_events: bool):
        self.api, self.rt, self.version, self.ls, self.fs = api, rt, version, ls, fs
        self.initial, self.backlog, self.watcher, self.error = initial, backlog, watcher, error
        self.last_rv = start_rv
        self.send_initial_events = send_initial_events

    def _match(self, o: dict | None) -> bool:
        return o is not None and self.ls.matches(o["metadata"].get("labels")) and self.fs.matches(o)

    def translate(self, ev: Event) -> tuple[str, dict] | None:
        if self.rt.codec is not None:
            ev = Event(ev.rv, ev.type, ev.gr, ev.namespace, ev.name, self.rt.codec.decode(copy.deepcopy(ev.obj)),
                       self.rt.codec.decode(copy.deepcopy(ev.prev)) if ev.prev is not None else None)
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if self._match(ev.obj) else None
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if self._match(ev.obj) or self._match(ev.prev) else None
        now_m, was_m = self._match(ev.obj), self._match(ev.prev)
        if now_m and was_m:
            return ("MODIFIED", ev.obj)
        if now_m:
            return ("ADDED", ev.obj)
        if was_m:
            return ("DELETED", ev.obj)
        return None

    def out(self, obj: dict) -> dict:
        return self.api._out(self.rt, copy.deepcopy(obj), self.version)

    def bookmark(self, rv: int, initial_end: bool = False) -> dict:
        md: dict = {"resourceVersion": str(rv)}
        if initial_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": self.rt.kind, "apiVersion": self.rt.api_version(self.version), "metadata": md}

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()


__all__ = ["Api", "WriteOptions", "WatchStream", "micro_time"]
