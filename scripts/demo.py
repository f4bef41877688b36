"""The local demo at this stage of Stator: two sidecar replicas, the word-count app writing keyed
state through them, a clean restart of one replica, and a check that every count is exactly what the
input produces (nothing lost, nothing counted twice).

Run through scripts/demo, which installs and builds what is needed first.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(os.environ.get("STATOR_BIN_DIR", Path.home() / ".cache/stator-target/release"))
PARALLELISM, MAX_PARALLELISM = 2, 128
FIRST, SECOND = 20_000, 30_000
started = time.monotonic()


def step(msg: str) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sidecar:
    def __init__(self, root: Path, index: int):
        self.dir = root / f"replica-{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        token = self.dir / "admin-token"
        token.write_text(secrets.token_hex(16))
        token.chmod(0o600)
        self.socket = self.dir / "run/state.sock"
        self.admin = f"127.0.0.1:{free_port()}"
        self.args = [
            str(BIN / "stator-sidecar"), "--socket", str(self.socket), "--data-dir", str(self.dir / "data"),
            "--replica-index", str(index), "--parallelism", str(PARALLELISM),
            "--max-parallelism", str(MAX_PARALLELISM), "--admin-addr", self.admin,
            "--admin-token-file", str(token), "--log-format", "text",
        ]
        self.log = open(self.dir / "sidecar.log", "ab")
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log, env={**os.environ, "STATOR_LOG": "info"})
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"sidecar exited during start-up; see {self.dir / 'sidecar.log'}")
            try:
                with urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("sidecar not ready within 30 s")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode if self.proc else 0


def wordcount(*args: str, sock: Path) -> str:
    out = subprocess.run([str(BIN / "stator-wordcount"), "--socket", str(sock), *args],
                         check=True, capture_output=True, text=True)
    return out.stdout


def check(replicas: list, records: int) -> None:
    want = json.loads(wordcount("expect", "--records", str(records), sock=Path("/nonexistent")))["counts"]
    got: dict = {}
    for r in replicas:
        report = json.loads(wordcount("report", sock=r.socket))
        overlap = set(got) & set(report["counts"])
        if overlap:
            sys.exit(f"words counted by two replicas: {sorted(overlap)[:5]}")
        got.update(report["counts"])
        step(f"  replica {report['replica']} (key groups {report['keyGroups'][0]}-{report['keyGroups'][1]}): "
             f"{len(report['counts'])} words, input position {report['minOffset']}")
    if got != want:
        diff = {w: (got.get(w), want.get(w)) for w in set(got) | set(want) if got.get(w) != want.get(w)}
        sys.exit(f"FAILED: {len(diff)} counts differ, e.g. {dict(list(diff.items())[:5])}")
    step(f"  every one of {len(want)} word counts matches the input exactly ({sum(want.values())} words)")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="stator-demo-"))
    replicas = [Sidecar(root, i) for i in range(PARALLELISM)]
    try:
        step(f"starting {PARALLELISM} sidecar replicas (maxParallelism {MAX_PARALLELISM}) in {root}")
        for r in replicas:
            r.start()
        step(f"running the word-count app on each replica over records 0..{FIRST}")
        t = time.monotonic()
        for r in replicas:
            wordcount("run", "--records", str(FIRST), "--exit-when-done", sock=r.socket)
        step(f"  done in {time.monotonic() - t:.1f}s")
        check(replicas, FIRST)
        step("restarting replica 0 (SIGTERM, clean shutdown, start on the same data directory)")
        code = replicas[0].stop()
        if code != 0:
            sys.exit(f"sidecar exited {code} on SIGTERM")
        replicas[0].start()
        step(f"resuming the app over records up to {SECOND}: each key group continues from its stored position")
        for r in replicas:
            wordcount("run", "--records", str(SECOND), "--exit-when-done", sock=r.socket)
        check(replicas, SECOND)
        step("demo passed")
    finally:
        for r in replicas:
            r.stop()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
