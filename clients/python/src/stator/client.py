"""The synchronous client: one Unix-socket connection to the sidecar of this replica.

Every call is one request and one response. ``Client.pipeline()`` sends many requests before
reading any answer (the sidecar answers in request order), and ``Batch`` collects writes that
apply atomically. A ``Client`` is not thread-safe: give each thread its own, or lock around it.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Union,
)

from . import errors
from .errors import ConnectionFailed, ProtocolError, StatorError, TooLargeError
from .framing import FrameDecoder, encode_frame
from .keygroups import HASH_NAME, Key, key_bytes, key_group, owner
from .model import (
    ListPage,
    MapPage,
    OperatorState,
    ServerInfo,
    State,
    TimeDomain,
    Timer,
    TimerPage,
    TimerStatus,
)
from .v1 import state_pb2 as pb

__all__ = ["Client", "Batch", "Pipeline"]

Value = Union[bytes, bytearray, memoryview]
PathLike = Union[str, "os.PathLike[str]"]

#: Responses larger than this are refused as garbage. The sidecar caps its frames far below.
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
# Reads go into one reused buffer: recv() of a fresh buffer this large costs an mmap and munmap
# per call (measured: 16 us against 2.4 us for recv_into), more than the sidecar's round trip.
_IO_CHUNK_BYTES = 256 * 1024
#: The protocol's page sizes (docs/protocol.md): the default, and the most one page may hold.
_DEFAULT_PAGE_ENTRIES = 1_000
_MAX_PAGE_ENTRIES = 10_000


def _value(value: Value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a value must be bytes, not {type(value).__name__} (encode it first)")


def _values(values: Iterable[Value]) -> list[bytes]:
    if isinstance(values, (bytes, bytearray, memoryview, str)):
        raise TypeError("values must be a sequence of bytes values, not a single value")
    return [_value(v) for v in values]


@dataclass
class _Call:
    """One request to send and how to read its answer."""

    request: pb.Request
    expects: str  # the Response.result field that answers it
    decode: Callable[[Any], Any]
    is_write: bool = False


def _request(**op: Any) -> pb.Request:
    return pb.Request(**op)


# Builders shared by Client (which runs each call at once) and Pipeline (which queues them).


def _hello() -> _Call:
    return _Call(_request(hello=pb.HelloRequest()), "hello", lambda r: r)


def _declare(decls: Sequence[State | OperatorState]) -> _Call:
    states, operator_states = [], []
    for d in decls:
        if isinstance(d, State):
            states.append(d.to_pb())
        elif isinstance(d, OperatorState):
            operator_states.append(d.to_pb())
        else:
            raise TypeError(f"declare takes State and OperatorState values, not {type(d).__name__}")
    req = pb.DeclareRequest(states=states, operator_states=operator_states)
    return _Call(_request(declare=req), "declare", lambda r: None)


def _optional(v: pb.OptionalValue) -> bytes | None:
    return v.value if v.HasField("value") else None


def _get(state: str, key: Key) -> _Call:
    req = pb.GetRequest(state=state, key=key_bytes(key))
    return _Call(_request(get=req), "value", _optional)


def _multi_get(state: str, keys: Iterable[Key]) -> _Call:
    req = pb.MultiGetRequest(state=state, keys=[key_bytes(k) for k in keys])
    return _Call(_request(multi_get=req), "multi_get", lambda r: [_optional(v) for v in r.values])


def _list_get(state: str, key: Key) -> _Call:
    """The whole list in one answer (offset and limit 0); a list too large for one answer is
    refused with TooLargeError and is read with ``Client.list_get``, which pages."""
    req = pb.ListGetRequest(state=state, key=key_bytes(key))
    return _Call(_request(list_get=req), "list", lambda r: list(r.values))


def _list_page(state: str, key: Key, offset: int, limit: int) -> _Call:
    # Offset and limit 0 would ask for the whole list; a page always has a limit.
    req = pb.ListGetRequest(
        state=state, key=key_bytes(key), offset=offset, limit=limit or _DEFAULT_PAGE_ENTRIES
    )
    return _Call(
        _request(list_get=req),
        "list",
        lambda r: ListPage(values=list(r.values), has_more=r.has_more, next_offset=r.next_offset),
    )


def _map_get(state: str, key: Key, map_key: Key) -> _Call:
    req = pb.MapGetRequest(state=state, key=key_bytes(key), map_key=key_bytes(map_key))
    return _Call(_request(map_get=req), "value", _optional)


def _map_contains(state: str, key: Key, map_key: Key) -> _Call:
    req = pb.MapContainsRequest(state=state, key=key_bytes(key), map_key=key_bytes(map_key))
    return _Call(_request(map_contains=req), "contains", lambda r: r.value)


def _map_iter_page(state: str, key: Key, after: Key, start_inclusive: bool, limit: int) -> _Call:
    req = pb.MapIterRequest(
        state=state,
        key=key_bytes(key),
        after=key_bytes(after),
        start_inclusive=start_inclusive,
        limit=limit,
    )
    return _Call(
        _request(map_iter=req),
        "map_iter",
        lambda r: MapPage(
            entries=[(e.map_key, e.value) for e in r.entries],
            has_more=r.has_more,
            next_after=r.next_after,
        ),
    )


def _operator_state_get(name: str) -> _Call:
    req = pb.OperatorStateGetRequest(name=name)
    return _Call(_request(operator_state_get=req), "list", lambda r: list(r.values))


def _domain(domain: TimeDomain | str) -> pb.TimeDomain:
    return TimeDomain(domain).to_pb()


def _timers_due(domain: TimeDomain | str, limit: int) -> _Call:
    req = pb.TimersDueRequest(domain=_domain(domain), limit=limit)
    return _Call(_request(timers_due=req), "timers_due", TimerPage.from_pb)


def _timer_status() -> _Call:
    return _Call(_request(timer_status=pb.TimerStatusRequest()), "timer_status", TimerStatus.from_pb)


def _ping() -> _Call:
    return _Call(_request(ping=pb.PingRequest()), "pong", lambda r: None)


def _write(batch: Batch) -> _Call:
    req = pb.WriteBatch(ops=batch.ops)
    return _Call(_request(write=req), "write", lambda r: r.applied, is_write=True)


class Batch:
    """An atomic write batch: every op applies, in order, or none does.

    Build one with ``client.batch()`` and commit it by leaving a ``with`` block (an exception
    in the block discards it) or by calling ``commit()``; or build an unbound ``Batch()`` and
    pass it to ``client.write``. The op methods chain and take the protocol's field names.
    """

    def __init__(self, client: Client | None = None) -> None:
        self.ops: list[pb.WriteOp] = []
        self._client = client
        #: How many ops the last commit applied.
        self.applied: int | None = None

    def __len__(self) -> int:
        return len(self.ops)

    def value_put(self, state: str, key: Key, value: Value) -> Batch:
        op = pb.ValuePut(state=state, key=key_bytes(key), value=_value(value))
        self.ops.append(pb.WriteOp(value_put=op))
        return self

    def value_clear(self, state: str, key: Key) -> Batch:
        self.ops.append(pb.WriteOp(value_clear=pb.ValueClear(state=state, key=key_bytes(key))))
        return self

    def list_append(self, state: str, key: Key, values: Iterable[Value]) -> Batch:
        op = pb.ListAppend(state=state, key=key_bytes(key), values=_values(values))
        self.ops.append(pb.WriteOp(list_append=op))
        return self

    def list_set(self, state: str, key: Key, values: Iterable[Value]) -> Batch:
        """Replaces the whole list."""
        op = pb.ListSet(state=state, key=key_bytes(key), values=_values(values))
        self.ops.append(pb.WriteOp(list_set=op))
        return self

    def list_clear(self, state: str, key: Key) -> Batch:
        self.ops.append(pb.WriteOp(list_clear=pb.ListClear(state=state, key=key_bytes(key))))
        return self

    def map_put(self, state: str, key: Key, map_key: Key, value: Value) -> Batch:
        op = pb.MapPut(
            state=state, key=key_bytes(key), map_key=key_bytes(map_key), value=_value(value)
        )
        self.ops.append(pb.WriteOp(map_put=op))
        return self

    def map_remove(self, state: str, key: Key, map_key: Key) -> Batch:
        op = pb.MapRemove(state=state, key=key_bytes(key), map_key=key_bytes(map_key))
        self.ops.append(pb.WriteOp(map_remove=op))
        return self

    def map_clear(self, state: str, key: Key) -> Batch:
        self.ops.append(pb.WriteOp(map_clear=pb.MapClear(state=state, key=key_bytes(key))))
        return self

    def operator_state_set(self, name: str, values: Iterable[Value]) -> Batch:
        """Replaces this replica's list for one operator state."""
        op = pb.OperatorStateSet(name=name, values=_values(values))
        self.ops.append(pb.WriteOp(operator_state_set=op))
        return self

    def timer_register(self, domain: TimeDomain | str, key: Key, name: Key, time: int) -> Batch:
        """Registers the timer ``(domain, key, name, time)``; registering it again changes
        nothing. ``time`` is event time in the app's unit, or processing time in ms since the
        Unix epoch."""
        op = pb.TimerRegister(
            domain=_domain(domain), key=key_bytes(key), name=key_bytes(name), time=time
        )
        self.ops.append(pb.WriteOp(timer_register=op))
        return self

    def timer_delete(self, domain: TimeDomain | str, key: Key, name: Key, time: int) -> Batch:
        """Deletes a timer; in the batch of its handler's writes, this fires it exactly once."""
        op = pb.TimerDelete(
            domain=_domain(domain), key=key_bytes(key), name=key_bytes(name), time=time
        )
        self.ops.append(pb.WriteOp(timer_delete=op))
        return self

    def timer_fired(self, timer: Timer) -> Batch:
        """Deletes a timer that ``timers_due`` returned."""
        if timer.domain is None:
            raise ValueError("this timer's domain is unknown to this client")
        return self.timer_delete(timer.domain, timer.key, timer.name, timer.time)

    def watermark_advance(self, watermark: int) -> Batch:
        """Moves this replica's event-time watermark to ``watermark``; a lower value than the
        current one leaves it where it is."""
        op = pb.WatermarkAdvance(watermark=watermark)
        self.ops.append(pb.WriteOp(watermark_advance=op))
        return self

    def commit(self) -> int:
        """Sends the batch and empties it; returns the number of ops applied.

        An empty batch sends nothing. On error nothing was applied and the ops are kept.
        """
        if self._client is None:
            raise RuntimeError("this Batch is not bound to a client; use client.write(batch)")
        if not self.ops:
            self.applied = 0
            return 0
        self.applied = self._client.write(self)
        self.ops = []
        return self.applied

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()


class Client:
    """A connection to the Stator sidecar of this replica.

    ``Client(path)`` connects and says hello: ``client.info`` then tells the replica's index,
    the parallelism and its key-group range. Keys and map keys are bytes or ``str`` (encoded as
    UTF-8); values are bytes. Failed requests raise a ``StatorError`` subclass; a broken
    connection raises ``ConnectionFailed`` and closes the client for good.

    ``timeout`` bounds each wait for the sidecar, in seconds (``None`` waits forever). A
    timeout closes the connection, since an answer might still arrive for the abandoned request.

    ``wait`` is how long to wait, in seconds, for the sidecar's socket to appear and accept
    (``None``: as long as it takes; default 0: fail at once). A sidecar creates its socket only
    once its state is restored (a warm handover's standby only once it is promoted), and the
    app container usually starts before: an app waits with ``Client(wait=None)``.
    """

    def __init__(
        self,
        socket_path: PathLike | None = None,
        *,
        timeout: float | None = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        wait: float | None = 0.0,
    ) -> None:
        if socket_path is None:
            socket_path = os.environ.get("STATOR_SOCKET")
            if not socket_path:
                raise ValueError("no socket path given and STATOR_SOCKET is not set")
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self._decoder = FrameDecoder(max_response_bytes)
        self._recv_buf = bytearray(_IO_CHUNK_BYTES)
        self._recv_view = memoryview(self._recv_buf)
        self._next_id = 1
        self._max_frame_bytes = 0  # unknown until the hello
        self._sock: socket.socket | None = None
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                sock.close()
                if deadline is None or time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                if isinstance(e, FileNotFoundError):
                    waited = f" after waiting {wait:g} s" if wait else ""
                    raise ConnectionFailed(
                        f"no sidecar socket at {self.socket_path}{waited}"
                        " (is stator-sidecar running?)"
                    ) from None
                raise ConnectionFailed(
                    f"cannot connect to the sidecar at {self.socket_path}: {e.strerror or e}"
                ) from e
            except OSError as e:  # also timeouts
                sock.close()
                reason = e.strerror or str(e) or type(e).__name__
                raise ConnectionFailed(
                    f"cannot connect to the sidecar at {self.socket_path}: {reason}"
                ) from e
        self._sock = sock
        try:
            self.info: ServerInfo = self.hello()
        except BaseException:
            self.close()
            raise

    # Lifecycle

    def close(self) -> None:
        """Closes the connection. Safe to call more than once."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<stator.Client {self.socket_path} {state}>"

    # Routing

    def key_group(self, key: Key) -> int:
        """The key group of ``key`` in this job."""
        return key_group(key, self.info.max_parallelism)

    def owner(self, key: Key) -> int:
        """The index of the replica that owns ``key`` in this job."""
        return owner(key, self.info.parallelism, self.info.max_parallelism)

    def owns(self, key: Key) -> bool:
        """Whether this replica owns ``key``; other keys are refused with WrongKeyGroupError."""
        return self.key_group(key) in self.info.key_groups

    # Requests

    def hello(self) -> ServerInfo:
        """Asks the sidecar where it stands (also refreshes ``info``, e.g. its declared states).

        Refuses a sidecar that hashes keys differently: routing would disagree with it.
        """
        info = ServerInfo.from_pb(self._call(_hello()))
        if info.key_group_hash != HASH_NAME:
            self.close()
            raise ProtocolError(
                f"the sidecar hashes keys with {info.key_group_hash!r}; "
                f"this client only knows {HASH_NAME!r}"
            )
        self.info = info
        self._max_frame_bytes = info.limits.max_frame_bytes
        return info

    def declare(self, *decls: State | OperatorState) -> None:
        """Declares keyed and operator states. Re-declaring the same state is a no-op; another
        kind raises StateConflictError; another TTL applies to future writes."""
        self._call(_declare(decls))

    def get(self, state: str, key: Key) -> bytes | None:
        """The value of ``key`` in a value state, or ``None``."""
        return self._call(_get(state, key))  # type: ignore[no-any-return]

    def multi_get(self, state: str, keys: Iterable[Key]) -> list[bytes | None]:
        """The values of many keys of one value state, in the order asked (``None`` if absent)."""
        return self._call(_multi_get(state, keys))  # type: ignore[no-any-return]

    def list_get(self, state: str, key: Key) -> list[bytes]:
        """The list of ``key`` in a list state (empty if none), read a page at a time (one
        request for a list of up to about 4 MiB). Pages are not one snapshot: see
        ``list_page``."""
        out: list[bytes] = []
        offset = 0
        while True:
            page = self.list_page(state, key, offset=offset, limit=_MAX_PAGE_ENTRIES)
            out.extend(page.values)
            if not page.has_more:
                return out
            if page.next_offset <= offset:
                raise ProtocolError("the sidecar said has_more but its list page made no progress")
            offset = page.next_offset

    def list_page(self, state: str, key: Key, *, offset: int = 0, limit: int = 0) -> ListPage:
        """At most ``limit`` elements (0: the sidecar's default) of the list of ``key`` from
        index ``offset``, and at most about 4 MiB of them. Appends between pages are seen at the
        end; elements that expire between pages shift the later offsets."""
        return self._call(_list_page(state, key, offset, limit))  # type: ignore[no-any-return]

    def map_get(self, state: str, key: Key, map_key: Key) -> bytes | None:
        """The value under ``map_key`` in the map of ``key``, or ``None``."""
        return self._call(_map_get(state, key, map_key))  # type: ignore[no-any-return]

    def map_contains(self, state: str, key: Key, map_key: Key) -> bool:
        """Whether the map of ``key`` holds ``map_key``."""
        return self._call(_map_contains(state, key, map_key))  # type: ignore[no-any-return]

    def map_iter_page(
        self,
        state: str,
        key: Key,
        *,
        after: Key = b"",
        start_inclusive: bool = False,
        limit: int = 0,
    ) -> MapPage:
        """One page of the map of ``key`` in map-key byte order: entries after ``after`` (or from
        it, with ``start_inclusive``), at most ``limit`` (0: the sidecar's default)."""
        return self._call(  # type: ignore[no-any-return]
            _map_iter_page(state, key, after, start_inclusive, limit)
        )

    def map_iter(
        self,
        state: str,
        key: Key,
        *,
        after: Key = b"",
        start_inclusive: bool = False,
        page_size: int = 0,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(map_key, value)`` of the map of ``key``, fetched a page at a time.

        The iteration is not a snapshot: writes between pages may or may not be seen.
        """
        page = self.map_iter_page(
            state, key, after=after, start_inclusive=start_inclusive, limit=page_size
        )
        while True:
            yield from page.entries
            if not page.has_more:
                return
            if not page.entries and page.next_after == key_bytes(after):
                raise ProtocolError("the sidecar said has_more but its page made no progress")
            after = page.next_after
            page = self.map_iter_page(state, key, after=after, limit=page_size)

    def operator_state_get(self, name: str) -> list[bytes]:
        """This replica's list for one operator state."""
        return self._call(_operator_state_get(name))  # type: ignore[no-any-return]

    def ping(self) -> None:
        """A round trip that touches no state."""
        self._call(_ping())

    def timers_due(self, domain: TimeDomain | str, limit: int = 0) -> TimerPage:
        """The due timers of ``domain``, earliest first: event timers at or below the watermark,
        processing timers at or below the sidecar's clock; at most ``limit`` (0: the sidecar's
        default). Reading changes nothing: a timer stays until a batch deletes it."""
        return self._call(_timers_due(domain, limit))  # type: ignore[no-any-return]

    def wait_processing_timers(self, *, limit: int = 0, max_wait: float) -> TimerPage:
        """The due processing-time timers, waiting up to ``max_wait`` seconds for the first to
        become due. Sleeps until the earliest timer's time as the sidecar said, rather than
        polling; a timer registered meanwhile on another connection is seen when it wakes.
        Returns an empty page when none became due in time."""
        deadline = time.monotonic() + max_wait
        while True:
            page = self.timers_due(TimeDomain.PROCESSING, limit)
            left = deadline - time.monotonic()
            if page.timers or left <= 0:
                return page
            pause = left
            if page.next_time is not None and page.up_to is not None:
                pause = min(left, max(0.001, (page.next_time - page.up_to) / 1000))
            time.sleep(pause)

    def timer_status(self) -> TimerStatus:
        """The watermark, the earliest timer of each domain and the sidecar's clock."""
        return self._call(_timer_status())  # type: ignore[no-any-return]

    def write(self, batch: Batch) -> int:
        """Applies ``batch`` atomically; returns the number of ops applied."""
        return self._call(_write(batch))  # type: ignore[no-any-return]

    def batch(self) -> Batch:
        """A new write batch bound to this client; see ``Batch``."""
        return Batch(self)

    def pipeline(self) -> Pipeline:
        """A pipeline on this connection; see ``Pipeline``."""
        return Pipeline(self)

    # Transport

    def _call(self, call: _Call) -> Any:
        (result,) = self._run([call], raise_on_error=True)
        return result

    def _run(self, calls: Sequence[_Call], *, raise_on_error: bool) -> list[Any]:
        """Sends ``calls``, reads their answers, and decodes them in order.

        Errors the sidecar answers with leave the connection usable; they are raised (the first
        one, after every answer has been read) or returned in place. Anything that leaves the
        connection in an unknown state closes it.
        """
        if self._sock is None:
            raise ConnectionFailed(f"the connection to {self.socket_path} is closed")
        if not calls:
            return []
        frames = []
        for call in calls:
            call.request.id = self._next_id
            self._next_id += 1
            data = call.request.SerializeToString()
            if self._max_frame_bytes and len(data) > self._max_frame_bytes:
                # Refused here, before anything is sent, so the connection stays in step.
                raise TooLargeError(
                    f"request of {len(data)} bytes exceeds the sidecar's frame limit of "
                    f"{self._max_frame_bytes} bytes"
                )
            frames.append(encode_frame(data))
        try:
            responses = self._exchange(b"".join(frames), len(calls))
        except BaseException:
            self.close()
            raise
        results: list[Any] = []
        first_error: StatorError | None = None
        for call, resp in zip(calls, responses):
            if resp.id != call.request.id:
                self.close()
                if resp.id == 0 and resp.WhichOneof("result") == "error":
                    # The sidecar rejected a frame it could not read (id unknown to it), and
                    # closed the connection.
                    e = resp.error
                    raise errors.from_wire(
                        e.code, e.message, owner=e.owner, key_group=e.key_group, op_index=None
                    )
                raise ProtocolError(
                    f"expected the answer to request {call.request.id}, got {resp.id}"
                )
            kind = resp.WhichOneof("result")
            if kind == "error":
                e = resp.error
                err = errors.from_wire(
                    e.code,
                    e.message,
                    owner=e.owner,
                    key_group=e.key_group,
                    op_index=e.op_index if call.is_write else None,
                )
                if e.code == pb.MALFORMED:
                    self.close()  # the sidecar closes the connection after MALFORMED
                first_error = first_error or err
                results.append(err)
            elif kind == call.expects:
                results.append(call.decode(getattr(resp, kind)))
            else:
                self.close()
                raise ProtocolError(f"the sidecar answered a {call.expects} request with {kind}")
        if raise_on_error and first_error is not None:
            raise first_error
        return results

    def _exchange(self, out: bytes, count: int) -> list[pb.Response]:
        sock = self._sock
        assert sock is not None
        try:
            if count == 1:
                # One request: the sidecar reads it whole before answering, so sending it all
                # first cannot deadlock.
                sock.sendall(out)
                frames: list[bytes] = []
                while not frames:
                    frames = self._receive(sock)
            else:
                frames = self._exchange_interleaved(sock, out, count)
        except socket.timeout:
            raise ConnectionFailed(
                f"no answer from the sidecar at {self.socket_path} within {self.timeout} s"
            ) from None
        except OSError as e:
            raise ConnectionFailed(
                f"connection to the sidecar at {self.socket_path} broke: {e.strerror or e}"
            ) from e
        if len(frames) != count:
            raise ProtocolError(f"expected {count} answers, got {len(frames)}")
        responses = []
        for frame in frames:
            resp = pb.Response()
            try:
                resp.ParseFromString(frame)
            except Exception as e:  # protobuf raises DecodeError, but not only that
                raise ProtocolError(f"cannot decode an answer from the sidecar: {e}") from e
            responses.append(resp)
        return responses

    def _exchange_interleaved(self, sock: socket.socket, out: bytes, count: int) -> list[bytes]:
        # Many requests: keep reading answers while sending, or both sides could block on
        # full socket buffers, the sidecar writing answers and this client writing requests.
        view = memoryview(out)
        sent = 0
        frames: list[bytes] = []
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while len(frames) < count:
                events = sel.select(self.timeout)
                if not events:
                    raise socket.timeout()
                mask = events[0][1]
                if mask & selectors.EVENT_WRITE and sent < len(out):
                    sent += sock.send(view[sent : sent + _IO_CHUNK_BYTES])
                    if sent == len(out):
                        sel.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    frames += self._receive(sock)
        return frames

    def _receive(self, sock: socket.socket) -> list[bytes]:
        n = sock.recv_into(self._recv_buf)
        if not n:
            self._decoder.finish()
            raise ConnectionFailed(f"the sidecar at {self.socket_path} closed the connection")
        return self._decoder.feed(self._recv_view[:n])


class Pipeline:
    """Requests queued on one connection, sent together, answered in order.

    ``p = client.pipeline(); p.get("s", k1); p.get("s", k2); a, b = p.execute()``. The methods
    mirror ``Client``'s and chain. ``execute`` raises the first error after reading every answer
    (the other requests still ran; writes are not undone), or with ``raise_on_error=False``
    returns errors in place of results.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._calls: list[_Call] = []

    def __len__(self) -> int:
        return len(self._calls)

    def _add(self, call: _Call) -> Pipeline:
        self._calls.append(call)
        return self

    def declare(self, *decls: State | OperatorState) -> Pipeline:
        return self._add(_declare(decls))

    def get(self, state: str, key: Key) -> Pipeline:
        return self._add(_get(state, key))

    def multi_get(self, state: str, keys: Iterable[Key]) -> Pipeline:
        return self._add(_multi_get(state, keys))

    def list_get(self, state: str, key: Key) -> Pipeline:
        return self._add(_list_get(state, key))

    def map_get(self, state: str, key: Key, map_key: Key) -> Pipeline:
        return self._add(_map_get(state, key, map_key))

    def map_contains(self, state: str, key: Key, map_key: Key) -> Pipeline:
        return self._add(_map_contains(state, key, map_key))

    def map_iter_page(
        self,
        state: str,
        key: Key,
        *,
        after: Key = b"",
        start_inclusive: bool = False,
        limit: int = 0,
    ) -> Pipeline:
        return self._add(_map_iter_page(state, key, after, start_inclusive, limit))

    def operator_state_get(self, name: str) -> Pipeline:
        return self._add(_operator_state_get(name))

    def ping(self) -> Pipeline:
        return self._add(_ping())

    def timers_due(self, domain: TimeDomain | str, limit: int = 0) -> Pipeline:
        return self._add(_timers_due(domain, limit))

    def timer_status(self) -> Pipeline:
        return self._add(_timer_status())

    def write(self, batch: Batch) -> Pipeline:
        return self._add(_write(batch))

    def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        """Sends every queued request and returns the results in order; empties the pipeline."""
        calls, self._calls = self._calls, []
        return self._client._run(calls, raise_on_error=raise_on_error)
