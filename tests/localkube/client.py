"""A small Kubernetes REST client for the stand-in kubelet and the launcher: JSON over HTTPS with the
credentials of a kubeconfig (client certificate or bearer token, files or inline data), watches as
streams of events. It speaks the API as any client does; nothing here knows the server's insides."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from typing import Iterator

import requests
import yaml


class ApiError(Exception):
    """A non-2xx answer: `code` is the HTTP status, `reason` the Status reason, `message` its message."""

    def __init__(self, code: int, reason: str, message: str):
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


def _materialize(user: dict, key: str, data_key: str, tmpdir: str) -> str | None:
    if user.get(key):
        return user[key]
    if user.get(data_key):
        path = os.path.join(tmpdir, key)
        with open(path, "wb") as f:
            f.write(base64.b64decode(user[data_key]))
        return path
    return None


class Kube:
    """One identity on one API server, from a kubeconfig file (its current context)."""

    def __init__(self, kubeconfig: str, timeout: float = 30.0):
        with open(kubeconfig) as f:
            cfg = yaml.safe_load(f)
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self._tmp = tempfile.mkdtemp(prefix="kube-client-")
        self.server = cluster["server"].rstrip("/")
        self.session = requests.Session()
        # Only the kubeconfig decides: REQUESTS_CA_BUNDLE or proxy variables would override it otherwise.
        self.session.trust_env = False
        ca = _materialize(cluster, "certificate-authority", "certificate-authority-data", self._tmp)
        self.session.verify = ca if ca else not cluster.get("insecure-skip-tls-verify", False)
        cert = _materialize(user, "client-certificate", "client-certificate-data", self._tmp)
        key = _materialize(user, "client-key", "client-key-data", self._tmp)
        if cert and key:
            self.session.cert = (cert, key)
        token = user.get("token")
        if not token and user.get("tokenFile"):
            with open(user["tokenFile"]) as f:
                token = f.read().strip()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["User-Agent"] = "localkube/1.0"
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, params: dict | None = None,
                content_type: str = "application/json", timeout: float | None = None) -> dict:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        r = self.session.request(method, self.server + path, data=data, params=params, headers=headers,
                                 timeout=timeout or self.timeout)
        if r.status_code >= 300:
            raise _error(r.status_code, r.text)
        return r.json() if r.content else {}

    def get(self, path: str, params: dict | None = None) -> dict:
        return self.request("GET", path, params=params)

    def get_opt(self, path: str) -> dict | None:
        try:
            return self.get(path)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def create(self, path: str, obj: dict) -> dict:
        return self.request("POST", path, obj)

    def update(self, path: str, obj: dict) -> dict:
        return self.request("PUT", path, obj)

    def merge_patch(self, path: str, patch: dict) -> dict:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def delete(self, path: str, options: dict | None = None) -> dict:
        return self.request("DELETE", path, options)

    def watch(self, path: str, params: dict | None = None, timeout_seconds: int = 300) -> Iterator[dict]:
        """Yields watch events ({"type", "object"}) until the server ends the stream. An ERROR event
        (410 Gone after compaction, say) is yielded like any other: the caller lists again."""
        q = dict(params or {}, watch="true", timeoutSeconds=str(timeout_seconds), allowWatchBookmarks="true")
        with self.session.get(self.server + path, params=q, stream=True, timeout=(10, timeout_seconds + 30),
                              headers={"Accept": "application/json"}) as r:
            if r.status_code >= 300:
                raise _error(r.status_code, r.text)
            for line in r.iter_lines():
                if line:
                    yield json.loads(line)


def _error(code: int, text: str) -> ApiError:
    try:
        st = json.loads(text)
        return ApiError(code, st.get("reason", ""), st.get("message", text))
    except ValueError:
        return ApiError(code, "", text.strip())


__all__ = ["ApiError", "Kube"]
