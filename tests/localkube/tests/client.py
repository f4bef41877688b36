"""A raw HTTP client for the conformance tests: no Kubernetes client library between the test and the
server, so the tests see exactly what goes over the wire."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse

import yaml


class Response:
    def __init__(self, status: int, headers, raw: bytes):
        self.status = status
        self.headers = headers
        self.raw = raw
        try:
            self.body = json.loads(raw) if raw.strip() else None
        except ValueError:
            self.body = raw.decode(errors="replace")

    @property
    def warnings(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "warning"]

    def __repr__(self) -> str:
        return f"<Response {self.status} {str(self.body)[:300]}>"


class Client:
    """HTTPS with the client certificate of a kubeconfig (the launcher writes them with file paths)."""

    def __init__(self, kubeconfig: str):
        with open(kubeconfig) as f:
            cfg = yaml.safe_load(f)
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        u = urllib.parse.urlsplit(cluster["server"])
        self.host, self.port = u.hostname, u.port
        self.ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.ctx.load_cert_chain(user["client-certificate"], user["client-key"])

    def connection(self, timeout: float = 30) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ctx)

    def request(self, method: str, path: str, body=None, params: dict | None = None,
                content_type: str = "application/json", headers: dict | None = None) -> Response:
        if params:
            path += "?" + urllib.parse.urlencode(params)
        conn = self.connection()
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        h = {"Accept": "application/json"}
        if data is not None:
            h["Content-Type"] = content_type
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        out = Response(resp.status, resp.getheaders(), resp.read())
        conn.close()
        return out

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body, **kw):
        return self.request("PUT", path, body, **kw)

    def patch(self, path, body, content_type="application/merge-patch+json", **kw):
        return self.request("PATCH", path, body, content_type=content_type, **kw)

    def apply(self, path, body, manager="test", force=False, **kw):
        params = {"fieldManager": manager}
        if force:
            params["force"] = "true"
        params.update(kw.pop("params", {}) or {})
        return self.request("PATCH", path, body, params=params, content_type="application/apply-patch+yaml", **kw)

    def delete(self, path, body=None, **kw):
        return self.request("DELETE", path, body, **kw)

    def watch(self, path: str, params: dict | None = None, accept: str = "application/json") -> "Watch":
        return Watch(self, path, params or {}, accept)


class Watch:
    def __init__(self, client: Client, path: str, params: dict, accept: str):
        params = dict(params)
        params.setdefault("watch", "true")
        self.conn = client.connection()
        self.conn.request("GET", path + "?" + urllib.parse.urlencode(params), headers={"Accept": accept})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status

    def next(self, timeout: float = 10.0) -> dict | None:
        """The next event, or None when the server closed the stream."""
        self.conn.sock.settimeout(timeout)
        try:
            line = self.resp.readline()
        except socket.timeout:
            raise TimeoutError("no watch event in time") from None
        if not line:
            return None
        return json.loads(line)

    def collect(self, n: int, timeout: float = 10.0, skip_bookmarks: bool = True) -> list[dict]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            ev = self.next(max(0.1, deadline - time.monotonic()))
            if ev is None:
                break
            if skip_bookmarks and ev["type"] == "BOOKMARK":
                continue
            out.append(ev)
        return out

    def close(self) -> None:
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def wait_for(fn, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")
