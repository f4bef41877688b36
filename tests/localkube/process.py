"""Local processes that never outlive the test run: each runs in its own process group with its output
in a log file; stop() sends SIGTERM to the group, waits, then SIGKILL; and each gets SIGKILL if the
thread that started it dies (PR_SET_PDEATHSIG), even when the test run is killed."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import tempfile
import time


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the thread that started it ends, however it ends."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


class ManagedProcess:
    """A local process in its own process group, output to `log_path`."""

    def __init__(self, argv: list[str], name: str | None = None, env: dict | None = None, cwd: str | None = None,
                 log_dir: str | None = None):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="stator-logs-")
        self.log_path = os.path.join(self.log_dir, f"{self.name}.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ManagedProcess":
        os.makedirs(self.log_dir, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=die_with_parent)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not log {text!r} within {timeout}s:\n{self.log()[-4000:]}")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return self.proc.returncode

    def __enter__(self) -> "ManagedProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
