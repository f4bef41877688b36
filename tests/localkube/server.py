"""HTTP front end of the API server stand-in: routing, discovery (legacy and aggregated), OpenAPI v3
(enough for kubectl to see that the server validates fields itself), content negotiation for Tables, and
chunked watch streams. Plain HTTP on loopback, no authentication.
"""

from __future__ import annotations

import hashlib
import json
import logging
import select
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import errors as E
from . import tables
from .api import Api, WriteOptions
from .registry import ResourceType

log = logging.getLogger("localkube.server")

K8S_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-localkube", "gitCommit": "localkube",
               "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2",
               "compiler": "gc", "platform": "linux/amd64", "emulationMajor": "1", "emulationMinor": "33",
               "minCompatibilityMajor": "1", "minCompatibilityMinor": "32"}

SUB_VERBS = ["get", "patch", "update"]
MAX_BODY = 3 * 1024 * 1024  # the API server's request body limit


def _params(query: str) -> dict[str, str]:
    return {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("1", "true", "t", "yes")


class Route:
    def __init__(self):
        self.kind = ""  # discovery-core, discovery-groups, discovery-group, discovery-gv, resource, other
        self.group = ""
        self.version = ""
        self.rt: ResourceType | None = None
        self.namespace = ""
        self.name = ""
        self.sub = ""
        self.watch_prefix = False


class Server:
    """Owns the listening socket and the handler threads."""

    def __init__(self, api: Api, host: str = "127.0.0.1", port: int = 0, log_provider=None,
                 bookmark_interval: float = 10.0):
        self.api = api
        self.log_provider = log_provider
        self.bookmark_interval = bookmark_interval
        handler = type("Handler", (Handler,), {"srv": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="localkube-http", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- discovery documents -----------------------------------------------------------------------

    def api_resource_list(self, group: str, version: str) -> dict:
        res = []
        for rt in self.api.registry.in_group_version(group, version):
            res.append({"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                        "kind": rt.kind, "verbs": rt.verbs, **({"shortNames": rt.short_names} if rt.short_names else {}),
                        **({"categories": rt.categories} if rt.categories else {}),
                        "storageVersionHash": hashlib.sha256(rt.gr.encode()).hexdigest()[:11]})
            if rt.status:
                res.append({"name": f"{rt.plural}/status", "singularName": "", "namespaced": rt.namespaced,
                            "kind": rt.kind, "verbs": SUB_VERBS})
            if rt.scale:
                res.append({"name": f"{rt.plural}/scale", "singularName": "", "namespaced": rt.namespaced,
                            "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": SUB_VERBS})
            if rt.log:
                res.append({"name": f"{rt.plural}/log", "singularName": "", "namespaced": True, "kind": "Pod",
                            "verbs": ["get"]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res}

    def group_doc(self, group: str) -> dict:
        vs = self.api.registry.versions_of(group)
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in vs]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    def aggregated(self, core: bool, v2: bool) -> dict:
        items = []
        groups = [""] if core else self.api.registry.groups()
        for g in groups:
            versions = []
            for v in self.api.registry.versions_of(g):
                resources = []
                for rt in self.api.registry.in_group_version(g, v):
                    r = {"resource": rt.plural, "responseKind": {"group": g, "version": v, "kind": rt.kind},
                         "scope": "Namespaced" if rt.namespaced else "Cluster", "singularResource": rt.singular,
                         "verbs": rt.verbs}
                    if rt.short_names:
                        r["shortNames"] = rt.short_names
                    if rt.categories:
                        r["categories"] = rt.categories
                    subs = []
                    if rt.status:
                        subs.append({"subresource": "status", "responseKind": {"group": g, "version": v, "kind": rt.kind},
                                     "verbs": SUB_VERBS})
                    if rt.scale:
                        subs.append({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1",
                                                                              "kind": "Scale"}, "verbs": SUB_VERBS})
                    if rt.log:
                        subs.append({"subresource": "log", "responseKind": {"group": "", "version": "v1", "kind": "Pod"},
                                     "verbs": ["get"]})
                    if subs:
                        r["subresources"] = subs
                    resources.append(r)
                versions.append({"version": v, "resources": resources, "freshness": "Current"})
            items.append({"metadata": {"name": g, "creationTimestamp": None}, "versions": versions})
        return {"kind": "APIGroupDiscoveryList",
                "apiVersion": "apidiscovery.k8s.io/v2" if v2 else "apidiscovery.k8s.io/v2beta1",
                "metadata": {}, "items": items}

    def openapi_root(self) -> dict:
        paths = {}
        for key in ["api/v1"] + [f"apis/{g}/{v}" for g in self.api.registry.groups()
                                 for v in self.api.registry.versions_of(g)]:
            doc = json.dumps(self.openapi_gv(key), sort_keys=True).encode()
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={hashlib.sha512(doc).hexdigest()[:128].upper()}"}
        return {"paths": paths}

    def openapi_gv(self, key: str) -> dict:
        parts = key.split("/")
        if parts[0] == "api":
            group, version = "", parts[1]
        else:
            group, version = parts[1], parts[2]
        paths: dict = {}
        schemas: dict = {}
        params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")]
        for rt in self.api.registry.in_group_version(group, version):
            gvk = {"group": group, "version": version, "kind": rt.kind}
            prefix = f"/{key}" + ("/namespaces/{namespace}" if rt.namespaced else "")
            sname = (".".join(reversed(group.split("."))) if group else "io.k8s.api.core") + f".{version}.{rt.kind}"
            ref = {"$ref": f"#/components/schemas/{sname}"}
            content_types = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
            body = {"content": {ct: {"schema": ref} for ct in content_types}, "required": True}
            item_ops = {
                "get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "get",
                        "responses": {"200": {"content": {"application/json": {"schema": ref}}}}},
                "put": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "put", "parameters": params,
                        "requestBody": {"content": {"application/json": {"schema": ref}}, "required": True}},
                "patch": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "patch", "parameters": params,
                          "requestBody": body},
                "delete": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "delete"},
            }
            paths[f"{prefix}/{rt.plural}/{{name}}"] = item_ops
            paths[f"{prefix}/{rt.plural}"] = {
                "get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "list"},
                "post": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "post", "parameters": params,
                         "requestBody": {"content": {"application/json": {"schema": ref}}, "required": True}},
            }
            if rt.status:
                paths[f"{prefix}/{rt.plural}/{{name}}/status"] = {k: v for k, v in item_ops.items() if k != "delete"}
            s = dict(rt.schema(version) or {"type": "object"})
            s["x-kubernetes-group-version-kind"] = [gvk]
            schemas[sname] = s
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": K8S_VERSION["gitVersion"]},
                "paths": paths, "components": {"schemas": schemas}}

    # -- routing -----------------------------------------------------------------------------------

    def route(self, path: str) -> Route:
        r = Route()
        parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            r.kind = "other"
            return r
        if parts[0] == "api":
            if len(parts) == 1:
                r.kind = "discovery-core"
                return r
            r.group, r.version, rest = "", parts[1], parts[2:]
            if r.version != "v1":
                r.kind = "notfound"
                return r
        else:
            if len(parts) == 1:
                r.kind = "discovery-groups"
                return r
            r.group = parts[1]
            if len(parts) == 2:
                r.kind = "discovery-group"
                return r
            r.version, rest = parts[2], parts[3:]
        if not rest:
            r.kind = "discovery-gv"
            return r
        if rest[0] == "watch":
            r.watch_prefix = True
            rest = rest[1:]
        reg = self.api.registry
        if len(rest) >= 3 and rest[0] == "namespaces":
            cand = reg.lookup(r.group, r.version, rest[2])
            if cand is not None and cand.namespaced:
                r.namespace = rest[1]
                rest = rest[2:]
        if not rest:
            r.kind = "notfound"
            return r
        r.rt = reg.lookup(r.group, r.version, rest[0])
        if r.rt is None:
            r.kind = "notfound"
            return r
        r.kind = "resource"
        if len(rest) > 1:
            r.name = rest[1]
        if len(rest) > 2:
            r.sub = "/".join(rest[2:])
        return r


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    srv: Server

    def log_message(self, fmt, *args):  # noqa: D102
        log.debug("%s %s", self.address_string(), fmt % args)

    # -- response helpers --------------------------------------------------------------------------

    def _send(self, code: int, body, content_type: str = "application/json", warnings: list[str] | None = None):
        data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for w in warnings or []:
            self.send_header("Warning", '299 - ' + json.dumps(w))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, e: E.ApiError):
        self._send(e.code, e.status())

    def _body(self) -> bytes:
        if self._drained:
            return b""
        self._drained = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline().strip()
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            self.rfile.read(n)
            raise E.ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}")
        return self.rfile.read(n) if n else b""

    def _json_body(self):
        raw = self._body()
        if not raw:
            return None
        ct = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if ct == "application/vnd.kubernetes.protobuf":
            from .protobuf import decode_object  # noqa: PLC0415
            try:
                return decode_object(raw)
            except (ValueError, IndexError) as e:
                raise E.ApiError(415, "UnsupportedMediaType", str(e)) from None
        try:
            if ct in ("application/yaml", "application/apply-patch+yaml"):
                import yaml  # noqa: PLC0415
                return yaml.safe_load(raw)
            return json.loads(raw)
        except Exception as e:  # noqa: BLE001
            if ct == "application/vnd.kubernetes.protobuf":
                raise E.unsupported_media_type(ct, ["application/json", "application/yaml"]) from None
            raise E.bad_request(f"error decoding request body: {e}") from None

    def _manager(self, q: dict) -> str:
        fm = q.get("fieldManager")
        if fm:
            return fm
        ua = self.headers.get("User-Agent") or "unknown"
        return ua.split("/")[0][:128]

    def _opts(self, q: dict, version: str) -> WriteOptions:
        dry = q.get("dryRun")
        return WriteOptions(manager=self._manager(q), dry_run=dry == "All", field_validation=q.get("fieldValidation") or "Warn",
                            version=version, force=_truthy(q.get("force")))

    # -- verbs -------------------------------------------------------------------------------------

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str):
        self._drained = False
        url = urllib.parse.urlsplit(self.path)
        q = _params(url.query)
        try:
            self._handle(method, url.path, q)
        except E.ApiError as e:
            try:
                self._body_drain()
                self._error(e)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001
            log.exception("internal error on %s %s", method, self.path)
            try:
                self._error(E.internal(str(e)))
            except OSError:
                pass

    def _body_drain(self):
        if self.command in ("POST", "PUT", "PATCH", "DELETE"):
            try:
                self._body()
            except Exception:  # noqa: BLE001
                pass

    def _handle(self, method: str, path: str, q: dict):
        srv = self.srv
        accept = self.headers.get("Accept") or ""
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return self._send(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return self._send(200, K8S_VERSION)
        if path == "/openapi/v3" or path == "/openapi/v3/":
            return self._send(200, srv.openapi_root())
        if path.startswith("/openapi/v3/"):
            key = path[len("/openapi/v3/"):]
            valid = ["api/v1"] + [f"apis/{g}/{v}" for g in srv.api.registry.groups() for v in srv.api.registry.versions_of(g)]
            if key not in valid:
                raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
            return self._send(200, srv.openapi_gv(key))
        r = srv.route(path)
        if r.kind == "discovery-core":
            if "as=APIGroupDiscoveryList" in accept:
                v2 = "v=v2;" in accept or accept.rstrip().endswith("v=v2")
                return self._send(200, srv.aggregated(True, v2),
                                  f"application/json;g=apidiscovery.k8s.io;v={'v2' if v2 else 'v2beta1'};as=APIGroupDiscoveryList")
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{srv.host}:{srv.port}"}]})
        if r.kind == "discovery-groups":
            if "as=APIGroupDiscoveryList" in accept:
                v2 = "v=v2;" in accept or accept.rstrip().endswith("v=v2")
                return self._send(200, srv.aggregated(False, v2),
                                  f"application/json;g=apidiscovery.k8s.io;v={'v2' if v2 else 'v2beta1'};as=APIGroupDiscoveryList")
            groups = [srv.group_doc(g) for g in srv.api.registry.groups()]
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if r.kind == "discovery-group":
            if not srv.api.registry.versions_of(r.group):
                raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
            return self._send(200, {"kind": "APIGroup", "apiVersion": "v1", **srv.group_doc(r.group)})
        if r.kind == "discovery-gv":
            if not srv.api.registry.in_group_version(r.group, r.version):
                raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
            return self._send(200, srv.api_resource_list(r.group, r.version))
        if r.kind != "resource":
            raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return self._resource(method, r, q, accept)

    def _resource(self, method: str, r: Route, q: dict, accept: str):
        api, rt = self.srv.api, r.rt
        if rt.namespaced is False and r.namespace:
            raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
        table = "as=Table" in accept
        if r.sub:
            return self._subresource(method, r, q, accept)
        if r.name == "" and method == "GET":
            if r.watch_prefix or _truthy(q.get("watch")):
                return self._watch(r, q, table)
            if rt.namespaced and not r.namespace:
                lst = api.list(rt, None, label_selector=q.get("labelSelector", ""),
                               field_selector=q.get("fieldSelector", ""), limit=int(q.get("limit") or 0),
                               cont=q.get("continue", ""), resource_version=q.get("resourceVersion", ""),
                               rv_match=q.get("resourceVersionMatch", ""), version=r.version)
            else:
                lst = api.list(rt, r.namespace, label_selector=q.get("labelSelector", ""),
                               field_selector=q.get("fieldSelector", ""), limit=int(q.get("limit") or 0),
                               cont=q.get("continue", ""), resource_version=q.get("resourceVersion", ""),
                               rv_match=q.get("resourceVersionMatch", ""), version=r.version)
            if table:
                return self._send(200, tables.table(rt, lst["items"], r.version, q.get("includeObject", "Metadata"),
                                                    lst["metadata"]), "application/json;as=Table;v=v1;g=meta.k8s.io")
            return self._send(200, lst)
        if r.name and method == "GET":
            if r.watch_prefix or _truthy(q.get("watch")):
                q["fieldSelector"] = f"metadata.name={r.name}"
                return self._watch(r, q, table)
            obj = api.get(rt, r.namespace, r.name, r.version)
            if table:
                return self._send(200, tables.table(rt, [obj], r.version, q.get("includeObject", "Metadata"),
                                                    {"resourceVersion": obj["metadata"].get("resourceVersion")}),
                                  "application/json;as=Table;v=v1;g=meta.k8s.io")
            return self._send(200, obj)
        if method == "POST" and not r.name and rt.group in ("authorization.k8s.io", "authentication.k8s.io"):
            try:
                body = self._json_body() or {}
            except E.ApiError:
                body = {}  # a protobuf review: its content does not matter, everything is allowed
            return self._review(rt, body)
        if method == "POST" and not r.name:
            if rt.namespaced and not r.namespace:
                raise E.method_not_allowed()
            body = self._json_body()
            opts = self._opts(q, r.version)
            obj = api.create(rt, r.namespace, body or {}, opts)
            return self._send(201 if not opts.dry_run else 200, obj, warnings=opts.warnings)
        if method == "PUT" and r.name:
            body = self._json_body()
            opts = self._opts(q, r.version)
            obj = api.update(rt, r.namespace, r.name, body or {}, opts)
            return self._send(200, obj, warnings=opts.warnings)
        if method == "PATCH" and r.name:
            raw = self._body()
            opts = self._opts(q, r.version)
            existed = api.store.peek(rt.sgr, r.namespace if rt.namespaced else "", r.name) is not None
            obj = api.patch(rt, r.namespace, r.name, self.headers.get("Content-Type", ""), raw, opts)
            return self._send(200 if existed else 201, obj, warnings=opts.warnings)
        if method == "DELETE" and r.name:
            raw = self._body()
            opts = json.loads(raw) if raw.strip() else {}
            for k in ("propagationPolicy",):
                if q.get(k):
                    opts[k] = q[k]
            if q.get("gracePeriodSeconds"):
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            if q.get("orphanDependents"):
                opts["orphanDependents"] = _truthy(q["orphanDependents"])
            body, _ = api.delete(rt, r.namespace, r.name, opts, dry_run=q.get("dryRun") == "All")
            return self._send(200, body)
        if method == "DELETE" and not r.name:
            raw = self._body()
            opts = json.loads(raw) if raw.strip() else {}
            lst = api.delete_collection(rt, r.namespace or None, q.get("labelSelector", ""),
                                        q.get("fieldSelector", ""), opts)
            return self._send(200, lst)
        raise E.method_not_allowed()

    def _review(self, rt: ResourceType, body: dict):
        """Access reviews: nothing is authorized here, so everything is allowed (see DIFFERENCES.md)."""
        out = {"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"creationTimestamp": None},
               "spec": body.get("spec") or {}}
        if rt.kind == "SelfSubjectRulesReview":
            out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                             "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
        elif rt.kind == "SelfSubjectReview":
            out["status"] = {"userInfo": {"username": "localkube-admin", "groups": ["system:masters",
                                                                                   "system:authenticated"]}}
        else:
            out["status"] = {"allowed": True, "reason": "localkube does not authorize requests"}
        return self._send(201, out)

    def _subresource(self, method: str, r: Route, q: dict, accept: str):
        api, rt = self.srv.api, r.rt
        if r.sub == "status" and rt.status:
            if method == "GET":
                return self._send(200, api.get(rt, r.namespace, r.name, r.version))
            opts = self._opts(q, r.version)
            if method == "PUT":
                obj = api.update(rt, r.namespace, r.name, self._json_body() or {}, opts, subresource="status")
                return self._send(200, obj, warnings=opts.warnings)
            if method == "PATCH":
                obj = api.patch(rt, r.namespace, r.name, self.headers.get("Content-Type", ""), self._body(), opts,
                                subresource="status")
                return self._send(200, obj, warnings=opts.warnings)
        if r.sub == "scale" and rt.scale:
            if method == "GET":
                return self._send(200, api.get_scale(rt, r.namespace, r.name))
            opts = self._opts(q, r.version)
            if method == "PUT":
                return self._send(200, api.update_scale(rt, r.namespace, r.name, self._json_body() or {}, opts))
            if method == "PATCH":
                return self._send(200, api.update_scale(rt, r.namespace, r.name, self._body(), opts,
                                                        content_type=self.headers.get("Content-Type", "")))
        if r.sub == "log" and rt.log and method == "GET":
            return self._logs(r, q)
        if r.sub == "finalize" and rt.plural == "namespaces" and method == "PUT":
            body = self._json_body() or {}
            obj = api.get(rt, "", r.name)
            obj["spec"] = body.get("spec") or {}
            with api.lock:
                old = api.store.get(rt.gr, "", r.name)
                new = api.store.get(rt.gr, "", r.name)
                new["spec"] = obj["spec"]
                stored = api.store.update(rt.gr, new)
                api._run_hooks(rt, "MODIFIED", stored, old)
            return self._send(200, api._out(rt, stored, r.version))
        raise E.ApiError(404, "NotFound", "the server could not find the requested resource", {})

    def _logs(self, r: Route, q: dict):
        api = self.srv.api
        pod = api.get(r.rt, r.namespace, r.name)
        spec = pod.get("spec") or {}
        container = q.get("container")
        if not container:
            cs = spec.get("containers") or []
            if len(cs) == 1:
                container = cs[0]["name"]
            else:
                names = " ".join(c["name"] for c in cs)
                inits = " ".join(c["name"] for c in spec.get("initContainers") or [])
                msg = f"a container name must be specified for pod {r.name}, choose one of: [{names}]"
                if inits:
                    msg += f" or one of the init containers: [{inits}]"
                raise E.bad_request(msg)
        all_names = [c["name"] for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])]
        if container not in all_names:
            raise E.bad_request(f"container {container} is not valid for pod {r.name}")
        if self.srv.log_provider is None:
            raise E.bad_request(f'container "{container}" in pod "{r.name}" is waiting to start: no kubelet')
        follow = _truthy(q.get("follow"))
        tail = int(q["tailLines"]) if q.get("tailLines") else None
        chunks = self.srv.log_provider(r.namespace, r.name, container, _truthy(q.get("previous")), follow, tail)
        if not follow:
            return self._send(200, b"".join(chunks), "text/plain")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for c in chunks:
            if c:
                self._chunk(c)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- watch -------------------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if r:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True
        return False

    def _watch(self, r: Route, q: dict, table: bool):
        api, rt = self.srv.api, r.rt
        timeout = int(q.get("timeoutSeconds") or 1800)
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        send_initial = _truthy(q.get("sendInitialEvents"))
        if send_initial and q.get("resourceVersionMatch") != "NotOlderThan":
            raise E.invalid(rt, "", [E.FieldError("Forbidden", "resourceVersionMatch",
                                                  detail="sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")])
        ws = api.watch(rt, r.namespace or None, label_selector=q.get("labelSelector", ""),
                       field_selector=q.get("fieldSelector", ""), resource_version=q.get("resourceVersion", ""),
                       send_initial_events=send_initial, version=r.version)
        ctype = "application/json;as=Table;v=v1;g=meta.k8s.io" if table else "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()
        first = [True]

        def emit(etype: str, obj: dict) -> None:
            if table and etype in ("ADDED", "MODIFIED", "DELETED"):
                obj = tables.table(rt, [obj], r.version, q.get("includeObject", "Metadata"),
                                   {"resourceVersion": obj["metadata"].get("resourceVersion")}, headers=first[0])
                first[0] = False
            self._chunk((json.dumps({"type": etype, "object": obj}) + "\n").encode())

        try:
            if ws.error:
                emit("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": ws.error, "reason": "Expired", "code": 410})
                return
            for o in ws.initial:
                emit("ADDED", ws.out(o))
            if send_initial:
                emit("BOOKMARK", ws.bookmark(ws.last_rv, initial_end=True))
            for ev in ws.backlog:
                t = ws.translate(ev)
                ws.last_rv = ev.rv
                if t:
                    emit(t[0], ws.out(t[1]))
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + self.srv.bookmark_interval
            import queue as _q  # noqa: PLC0415
            while not self.srv.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    ev = ws.watcher.q.get(timeout=min(0.5, left))
                except _q.Empty:
                    if self._client_gone():
                        return
                    if bookmarks and time.monotonic() >= next_bookmark:
                        with api.lock:
                            if ws.watcher.q.empty():
                                rv = api.store.rv
                            else:
                                rv = None
                        if rv is not None:
                            emit("BOOKMARK", ws.bookmark(rv))
                        next_bookmark = time.monotonic() + self.srv.bookmark_interval
                    continue
                if ev is None:
                    return
                ws.last_rv = ev.rv
                t = ws.translate(ev)
                if t:
                    emit(t[0], ws.out(t[1]))
            if bookmarks and not self.srv.stopping.is_set():
                with api.lock:
                    rv = api.store.rv if ws.watcher.q.empty() else None
                if rv is not None:
                    emit("BOOKMARK", ws.bookmark(rv))
        finally:
            ws.close()
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass
        self.close_connection = True
