"""Fixtures: a real sidecar process, and a scripted fake one for the client's own failure paths.

The real sidecar binary comes from ``STATOR_SIDECAR_BIN``, falling back to the release build in
``${CARGO_TARGET_DIR:-~/.cache/stator-target}``. Tests that need it are skipped when it is absent,
unless ``STATOR_SIDECAR_BIN`` is set: then a missing binary fails them (set it in CI).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

from stator.framing import FrameDecoder, encode_frame
from stator.keygroups import HASH_NAME, key_group_range
from stator.v1 import state_pb2 as pb

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def sidecar_binary() -> Path:
    explicit = os.environ.get("STATOR_SIDECAR_BIN")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            pytest.fail(f"STATOR_SIDECAR_BIN={explicit} does not exist")
        return path
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache" / "stator-target")
    path = Path(target) / "release" / "stator-sidecar"
    if not path.is_file():
        pytest.skip(f"no sidecar binary at {path} (build it or set STATOR_SIDECAR_BIN)")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sidecar:
    """A running stator-sidecar in its own temp dir."""

    socket_path: str
    admin_addr: str
    dir: Path
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> int:
        """SIGTERM, then wait; kills it if it does not stop in time. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"sidecar did not stop within {STOP_TIMEOUT_S} s of SIGTERM; killed it.\n"
                    + self.log_tail()
                ) from None
        return self.process.returncode


def start_sidecar(
    *,
    replica_index: int = 0,
    parallelism: int = 1,
    max_parallelism: int = 128,
    states: Sequence[str] = (),
    operator_states: Sequence[str] = (),
) -> Sidecar:
    """Starts a sidecar and waits until /readyz answers 200. The caller must ``stop()`` it."""
    binary = sidecar_binary()
    # A short path: Unix socket paths are limited to about 100 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="stator-py-"))
    sock = workdir / "state.sock"
    admin = f"127.0.0.1:{_free_port()}"
    args = [
        str(binary),
        "--socket",
        str(sock),
        "--data-dir",
        str(workdir / "data"),
        "--replica-index",
        str(replica_index),
        "--parallelism",
        str(parallelism),
        "--max-parallelism",
        str(max_parallelism),
        "--admin-addr",
        admin,
    ]
    for s in states:
        args += ["--state", s]
    for s in operator_states:
        args += ["--operator-state", s]
    # The sidecar reads STATOR_* variables too; keep the caller's out of the test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATOR_")}
    log_path = workdir / "sidecar.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    sidecar = Sidecar(str(sock), admin, workdir, process, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            log = sidecar.log_tail()
            shutil.rmtree(workdir, ignore_errors=True)
            raise AssertionError(
                f"sidecar exited with {process.returncode} before it was ready:\n{log}"
            )
        try:
            with urllib.request.urlopen(f"http://{admin}/readyz", timeout=1) as resp:
                if resp.status == 200 and sock.exists():
                    return sidecar
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            log = sidecar.log_tail()
            try:
                sidecar.stop()
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            raise AssertionError(f"sidecar not ready within {READY_TIMEOUT_S} s:\n{log}")
        time.sleep(0.05)


@pytest.fixture
def sidecar_factory() -> Iterator[Callable[..., Sidecar]]:
    """Starts sidecars on demand; stops every one, also when the test fails."""
    started: list[Sidecar] = []

    def start(**kwargs) -> Sidecar:  # type: ignore[no-untyped-def]
        s = start_sidecar(**kwargs)
        started.append(s)
        return s

    yield start
    _stop_all(started)


@pytest.fixture(scope="session")
def sidecar() -> Iterator[Sidecar]:
    """The shared sidecar: replica 0 of parallelism 2, maxParallelism 128 (behaviour.json's).
    Tests using it declare state names of their own."""
    s = start_sidecar(replica_index=0, parallelism=2, max_parallelism=128)
    yield s
    _stop_all([s])


def _stop_all(sidecars: Sequence[Sidecar]) -> None:
    problems = []
    for s in sidecars:
        try:
            code = s.stop()
            if code != 0:
                problems.append(f"sidecar exited with {code} after SIGTERM:\n{s.log_tail()}")
        except AssertionError as e:
            problems.append(str(e))
        finally:
            shutil.rmtree(s.dir, ignore_errors=True)
    if problems:
        raise AssertionError("\n\n".join(problems))


# A scripted fake sidecar, for what a real one should never do.

Handler = Callable[[pb.Request], Optional[bytes]]


class SendAndClose(bytes):
    """A handler's answer after which the fake closes the connection."""


def hello_response(req_id: int, **overrides) -> pb.Response:  # type: ignore[no-untyped-def]
    r = key_group_range(0, 2, 128)
    hello = pb.HelloResponse(
        replica_index=0,
        parallelism=2,
        max_parallelism=128,
        key_group_start=r.start,
        key_group_end=r.end,
        limits=pb.Limits(
            max_frame_bytes=1 << 20,
            max_key_bytes=1024,
            max_value_bytes=1 << 19,
            max_batch_ops=100,
            max_page_entries=100,
            default_page_entries=10,
        ),
        key_group_hash=HASH_NAME,
        server_version="fake",
    )
    for k, v in overrides.items():
        setattr(hello, k, v)
    return pb.Response(id=req_id, hello=hello)


def frame(resp: pb.Response) -> bytes:
    return encode_frame(resp.SerializeToString())


@dataclass
class FakeSidecar:
    """Serves one connection: answers hello correctly, and everything else with ``handler``
    (which returns the raw bytes to send, or None to close the connection)."""

    socket_path: str
    handler: Handler
    requests: list[pb.Request] = field(default_factory=list)


@pytest.fixture
def fake_sidecar() -> Iterator[Callable[[Handler], FakeSidecar]]:
    workdir = Path(tempfile.mkdtemp(prefix="stator-fake-"))
    servers: list[socket.socket] = []
    conns: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(handler: Handler, hello: Handler | None = None) -> FakeSidecar:
        path = str(workdir / f"fake{len(servers)}.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        servers.append(server)
        fake = FakeSidecar(path, handler)

        def serve() -> None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            decoder = FrameDecoder(1 << 24)
            with conn:
                while True:
                    try:
                        data = conn.recv(1 << 16)
                    except OSError:
                        return
                    if not data:
                        return
                    for f in decoder.feed(data):
                        req = pb.Request.FromString(f)
                        fake.requests.append(req)
                        if req.WhichOneof("op") == "hello":
                            out = (hello or (lambda r: frame(hello_response(r.id))))(req)
                        else:
                            out = handler(req)
                        if out is None:
                            return
                        conn.sendall(out)
                        if isinstance(out, SendAndClose):
                            return

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return fake

    yield start
    # shutdown() wakes threads blocked in accept() or recv(); close() alone may not.
    for s in servers + conns:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
    for t in threads:
        t.join(5)
    shutil.rmtree(workdir, ignore_errors=True)
