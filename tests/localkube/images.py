"""Image map: which local program stands in for a container image.

A YAML file (or dict) of entries, tried in order; the first whose `image` glob matches wins:

    images:
      - image: "ghcr.io/stator/stator-sidecar:*"      # fnmatch glob on the full image reference
        command: ["${STATOR_BIN_DIR}/stator-sidecar"]  # the image's ENTRYPOINT
        args: []                                        # the image's CMD (optional)
        paths:                                          # in-image paths -> local paths (argv[0] of a command)
          /usr/local/bin/stator-sidecar: "${STATOR_BIN_DIR}/stator-sidecar"
        env: {RUST_LOG: info}                           # the image's ENV (optional)

`${VAR}` and `${VAR:-default}` are expanded from the environment of the kubelet when the map is loaded;
STATOR_BIN_DIR defaults to $CARGO_TARGET_DIR/release, and CARGO_TARGET_DIR to ~/.cache/stator-target.
An image without an entry cannot be "pulled": its pod waits in ErrImagePull / ImagePullBackOff.
"""

from __future__ import annotations

import fnmatch
import os
import re

import yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def default_env() -> dict[str, str]:
    env = dict(os.environ)
    target = env.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/stator-target")
    env.setdefault("CARGO_TARGET_DIR", target)
    env.setdefault("STATOR_BIN_DIR", os.path.join(target, "release"))
    return env


def expand(value, env: dict[str, str]):
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1), m.group(2) if m.group(2) is not None else ""), value)
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, env) for k, v in value.items()}
    return value


class ImageEntry:
    def __init__(self, d: dict):
        self.pattern = d["image"]
        self.command = list(d.get("command") or [])
        self.args = list(d.get("args") or [])
        self.paths = dict(d.get("paths") or {})
        self.env = {k: str(v) for k, v in (d.get("env") or {}).items()}
        self.working_dir = d.get("workingDir")
        # The image's USER (numeric), which runAsNonRoot is checked against; an image without one runs as root.
        self.user = int(d.get("user", 0))

    def matches(self, image: str) -> bool:
        if fnmatch.fnmatchcase(image, self.pattern):
            return True
        # "repo/name" without a tag matches "repo/name:latest", as a runtime would resolve it
        last = image.rsplit("/", 1)[-1]
        if ":" not in last and "@" not in last:
            return fnmatch.fnmatchcase(image + ":latest", self.pattern)
        return False


class ImageMap:
    """Entries are expanded when an image is resolved, so variables that exist only once the cluster
    runs (LOCALKUBE_KUBECONFIG, LOCALKUBE_URL) can be used too."""

    def __init__(self, entries: list[dict] | None = None, env: dict[str, str] | None = None):
        self.raw = list(entries or [])
        self.env = env if env is not None else default_env()

    @classmethod
    def load(cls, path_or_data, env: dict[str, str] | None = None) -> "ImageMap":
        if path_or_data is None:
            return cls([], env)
        if isinstance(path_or_data, (dict, list)):
            data = path_or_data
        else:
            with open(path_or_data) as f:
                data = yaml.safe_load(f) or {}
        entries = data.get("images", []) if isinstance(data, dict) else data
        return cls(entries, env)

    @property
    def entries(self) -> list[ImageEntry]:
        return [ImageEntry(expand(e, self.env)) for e in self.raw]

    def resolve(self, image: str) -> ImageEntry | None:
        for e in self.entries:
            if e.matches(image):
                return e
        return None
