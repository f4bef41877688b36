"""The client against a real sidecar: hello, routing, batches, iteration and pipelining."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from stator import (
    HASH_NAME,
    Batch,
    Client,
    Kind,
    OperatorState,
    Redistribution,
    State,
    TimeDomain,
    UnknownStateError,
    WrongKeyGroupError,
    owner,
)
from stator.framing import FrameDecoder, encode_frame
from stator.v1 import state_pb2 as pb


@pytest.fixture
def client(sidecar):  # type: ignore[no-untyped-def]
    with Client(sidecar.socket_path) as c:
        yield c


def own_keys(client: Client, n: int, prefix: str = "k") -> list:
    keys, i = [], 0
    while len(keys) < n:
        k = f"{prefix}{i}".encode()
        if client.owns(k):
            keys.append(k)
        i += 1
    return keys


def test_hello_describes_the_replica(client):
    info = client.info
    assert (info.replica_index, info.parallelism, info.max_parallelism) == (0, 2, 128)
    assert (info.key_groups.start, info.key_groups.end) == (0, 63)
    assert info.key_group_hash == HASH_NAME
    assert info.limits.max_frame_bytes > info.limits.max_value_bytes > 0
    assert 0 < info.limits.default_page_entries <= info.limits.max_page_entries
    assert info.server_version


def test_routing_agrees_with_the_sidecar_on_every_key(client):
    client.declare(State("route", "value"))
    keys = [f"user-{i}".encode() for i in range(300)] + ["ключ", "", b"\x00\xff"]
    p = client.pipeline()
    for k in keys:
        p.get("route", k)
    results = p.execute(raise_on_error=False)
    for k, r in zip(keys, results):
        if client.owns(k):
            assert r is None, k
        else:
            assert isinstance(r, WrongKeyGroupError), k
            assert r.owner == client.owner(k) == owner(k, 2, 128) == 1
            assert r.key_group == client.key_group(k)


def test_wrong_key_group_names_the_owner(client):
    client.declare(State("wkg", "value"))
    foreign = next(f"x{i}" for i in range(1000) if client.owner(f"x{i}") == 1)
    with pytest.raises(WrongKeyGroupError) as e:
        client.get("wkg", foreign)
    assert e.value.owner == 1
    assert e.value.key_group == client.key_group(foreign)
    assert e.value.key_group not in client.info.key_groups
    client.ping()  # the connection is still good


def test_batch_mixes_every_kind_atomically(client):
    client.declare(
        State("bv", "value"),
        State("bl", Kind.LIST),
        State("bm", "map"),
        OperatorState("bo", Redistribution.SPLIT),
    )
    k = own_keys(client, 1)[0]
    with client.batch() as b:
        (
            b.value_put("bv", k, b"1")
            .list_append("bl", k, [b"a", b"b"])
            .map_put("bm", k, "f", b"x")
            .operator_state_set("bo", [b"pos:7"])
        )
    assert b.applied == 4
    assert client.get("bv", k) == b"1"
    assert client.list_get("bl", k) == [b"a", b"b"]
    assert client.map_get("bm", k, "f") == b"x"
    assert client.operator_state_get("bo") == [b"pos:7"]

    b = client.batch().value_put("bv", k, b"2").value_put("nope", k, b"3")
    with pytest.raises(UnknownStateError) as e:
        b.commit()
    assert e.value.op_index == 1
    assert client.get("bv", k) == b"1", "a failed batch applies nothing"
    assert len(b) == 2, "a failed batch keeps its ops"

    assert client.write(Batch().value_clear("bv", k).list_clear("bl", k).map_clear("bm", k)) == 3
    assert client.get("bv", k) is None and client.list_get("bl", k) == []


def test_declared_states_show_in_hello(client):
    client.declare(State("seen-in-hello", "list", ttl_ms=1234), OperatorState("seen-op", "union"))
    info = client.hello()
    assert State("seen-in-hello", Kind.LIST, 1234) in info.states
    assert OperatorState("seen-op", "union") in info.operator_states
    assert client.info is info


def test_states_from_the_command_line(sidecar_factory):
    s = sidecar_factory(
        replica_index=1,
        parallelism=3,
        max_parallelism=16,
        states=["cli-v:value", "cli-m:map:60000"],
        operator_states=["cli-o:union"],
    )
    with Client(s.socket_path) as c:
        assert (c.info.replica_index, c.info.parallelism, c.info.max_parallelism) == (1, 3, 16)
        assert (c.info.key_groups.start, c.info.key_groups.end) == (6, 10)
        assert State("cli-v", "value") in c.info.states
        assert State("cli-m", "map", 60000) in c.info.states
        assert OperatorState("cli-o", "union") in c.info.operator_states
        k = own_keys(c, 1)[0]
        assert c.write(c.batch().map_put("cli-m", k, "a", b"1")) == 1
        assert c.map_get("cli-m", k, "a") == b"1"


def test_map_iter_walks_every_page(client):
    client.declare(State("iter", "map"))
    k = own_keys(client, 1)[0]
    n = client.info.limits.default_page_entries * 2 + 7
    entries = [(struct.pack(">I", i), b"v%d" % i) for i in range(n)]
    b = client.batch()
    for mk, v in reversed(entries):
        b.map_put("iter", k, mk, v)
    b.commit()
    assert list(client.map_iter("iter", k)) == entries
    assert list(client.map_iter("iter", k, page_size=3)) == entries
    assert list(client.map_iter("iter", k, after=entries[9][0], page_size=4)) == entries[10:]
    assert (
        list(client.map_iter("iter", k, after=entries[9][0], start_inclusive=True, page_size=4))
        == entries[9:]
    )
    page = client.map_iter_page("iter", k, limit=5)
    assert page.entries == entries[:5] and page.has_more and page.next_after == entries[4][0]
    assert list(client.map_iter("iter", own_keys(client, 2)[1])) == []


def test_pipeline_many_requests_in_order(client):
    client.declare(State("pipe", "value"))
    keys = own_keys(client, 2000, prefix="p")
    p = client.pipeline()
    for i, k in enumerate(keys):
        p.write(Batch().value_put("pipe", k, b"%d" % i))
    for k in keys:
        p.get("pipe", k)
    p.ping()
    results = p.execute()
    assert results[: len(keys)] == [1] * len(keys)
    assert results[len(keys) : -1] == [b"%d" % i for i in range(len(keys))]
    assert results[-1] is None
    assert len(p) == 0, "execute empties the pipeline"


def test_pipeline_larger_than_the_socket_buffers_does_not_deadlock(client):
    # The answers (2000 x 16 KiB) far exceed what the socket buffers hold while requests are
    # still being sent; the client must read while it writes.
    client.declare(State("bigpipe", "value"))
    k = own_keys(client, 1)[0]
    value = bytes(range(256)) * 64
    client.write(client.batch().value_put("bigpipe", k, value))
    p = client.pipeline()
    for _ in range(2000):
        p.get("bigpipe", k)
    results = p.execute()
    assert len(results) == 2000 and all(r == value for r in results)


def test_pipeline_errors_in_place_or_raised_after_reading_all(client):
    client.declare(State("perr", "value"))
    k = own_keys(client, 1)[0]
    p = client.pipeline().get("perr", k).get("no-such-state", k).ping()
    got = p.execute(raise_on_error=False)
    assert got[0] is None and isinstance(got[1], UnknownStateError) and got[2] is None
    p = client.pipeline().get("no-such-state", k).write(Batch().value_put("perr", k, b"w"))
    with pytest.raises(UnknownStateError):
        p.execute()
    assert client.get("perr", k) == b"w", "the other requests still ran"


def test_multi_get_and_map_contains(client):
    client.declare(State("mg", "value"), State("mc", "map"))
    a, b, c = own_keys(client, 3, prefix="mg")
    client.write(
        client.batch().value_put("mg", a, b"A").value_put("mg", c, b"").map_put("mc", a, b"", b"")
    )
    assert client.multi_get("mg", [c, b, a]) == [b"", None, b"A"], "an empty value is not absent"
    assert client.multi_get("mg", []) == []
    assert client.map_contains("mc", a, b"") is True
    assert client.map_get("mc", a, b"") == b""


def test_malformed_frame_gets_an_error_or_a_close_never_a_hang(sidecar):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(sidecar.socket_path)
        raw.sendall(encode_frame(b"\xff\xff\xff\xff"))  # not a Request
        decoder = FrameDecoder(1 << 20)
        frames = []
        while True:
            data = raw.recv(4096)
            if not data:
                break
            frames += decoder.feed(data)
        # Whatever came before the close must be a MALFORMED error.
        for f in frames:
            resp = pb.Response.FromString(f)
            assert resp.WhichOneof("result") == "error" and resp.error.code == pb.MALFORMED
    with Client(sidecar.socket_path) as c:
        c.ping()  # the sidecar survived


def test_processing_timers_wait_sleeps_until_due_and_fires_once(sidecar_factory):
    # Its own sidecar: timers belong to the replica, and behaviour.json's expect a fresh one.
    s = sidecar_factory()
    with Client(s.socket_path) as c:
        c.declare(State("fired", "list"))
        now = c.timer_status().now_ms
        with c.batch() as b:
            b.timer_register("processing", "k", "soon", now + 300)
            b.timer_register(TimeDomain.PROCESSING, "k", "later", now + 60_000)
        started = time.monotonic()
        page = c.wait_processing_timers(max_wait=10)
        waited = time.monotonic() - started
        assert [(t.name, t.time) for t in page.timers] == [(b"soon", now + 300)]
        assert page.up_to is not None and page.up_to >= now + 300
        assert page.next_time == now + 60_000 and not page.has_more
        assert 0.1 < waited < 3, f"woke when due, after {waited:.2f} s"
        with c.batch() as b:
            b.list_append("fired", "k", [b"soon"]).timer_fired(page.timers[0])
        # Nothing due: waits out its deadline and returns an empty page.
        assert c.wait_processing_timers(max_wait=0.2).timers == []
        p = c.pipeline()
        p.timers_due("processing").timer_status()
        due, status = p.execute()
        assert due.timers == [] and status.next_processing_time == now + 60_000
        assert c.list_get("fired", "k") == [b"soon"]


def test_timer_arguments_are_checked_before_sending(client):
    with pytest.raises(ValueError):
        Batch().timer_register("wall-clock", "k", "n", 1)
    with pytest.raises(ValueError):
        client.timers_due("sometime")
