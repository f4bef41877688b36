"""How the client copes when there is no sidecar, or one that misbehaves (a scripted fake)."""

import socket

import pytest

from conftest import SendAndClose, frame, hello_response
from stator import (
    Batch,
    Client,
    ConnectionFailed,
    MalformedError,
    ProtocolError,
    State,
    StatorError,
    TooLargeError,
    UnavailableError,
    WrongKeyGroupError,
)
from stator.framing import encode_varint
from stator.v1 import state_pb2 as pb


def pong(req):
    return frame(pb.Response(id=req.id, pong=pb.PongResponse()))


def test_missing_socket_is_a_clean_connection_error(tmp_path):
    path = tmp_path / "nobody-here.sock"
    with pytest.raises(ConnectionFailed) as e:
        Client(path)
    assert str(path) in str(e.value)
    assert "stator-sidecar running" in str(e.value)
    assert isinstance(e.value, UnavailableError) and isinstance(e.value, StatorError)
    assert e.value.transient


def test_a_client_can_wait_for_a_sidecar_whose_socket_is_not_there_yet(sidecar_factory, tmp_path):
    import os
    import threading
    import time

    sidecar = sidecar_factory(states=["v:value"])
    hidden = sidecar.socket_path + ".later"
    os.rename(sidecar.socket_path, hidden)  # as before the sidecar has restored its state
    threading.Timer(0.5, os.rename, (hidden, sidecar.socket_path)).start()
    started = time.monotonic()
    with Client(sidecar.socket_path, wait=30) as client:
        assert time.monotonic() - started >= 0.4, "it waited for the socket"
        client.ping()
    missing = tmp_path / "nobody.sock"
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="after waiting 0.3 s"):
        Client(missing, wait=0.3)
    assert time.monotonic() - started >= 0.3


def test_socket_without_listener_is_a_clean_connection_error(tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        Client(path)


def test_socket_path_from_environment(fake_sidecar, monkeypatch):
    fake = fake_sidecar(pong)
    monkeypatch.setenv("STATOR_SOCKET", fake.socket_path)
    with Client() as client:
        client.ping()
    monkeypatch.delenv("STATOR_SOCKET")
    with pytest.raises(ValueError, match="STATOR_SOCKET"):
        Client()


def test_hello_fills_info_and_routing(fake_sidecar):
    fake = fake_sidecar(pong)
    with Client(fake.socket_path) as client:
        assert (client.info.replica_index, client.info.parallelism) == (0, 2)
        assert (client.info.key_groups.start, client.info.key_groups.end) == (0, 63)
        assert client.info.limits.max_batch_ops == 100
        for key in ["a", b"b", "user-42", ""]:
            assert client.owns(key) == (client.owner(key) == 0)
    assert client.closed


def test_refuses_a_sidecar_with_another_hash(fake_sidecar):
    fake = fake_sidecar(pong, hello=lambda r: frame(hello_response(r.id, key_group_hash="fnv1a")))
    with pytest.raises(ProtocolError, match="fnv1a"):
        Client(fake.socket_path)


def test_answer_with_wrong_id_closes_the_connection(fake_sidecar):
    fake = fake_sidecar(lambda r: frame(pb.Response(id=r.id + 1, pong=pb.PongResponse())))
    client = Client(fake.socket_path)
    with pytest.raises(ProtocolError, match="expected the answer to request"):
        client.ping()
    assert client.closed
    with pytest.raises(ConnectionFailed, match="closed"):
        client.ping()


def test_frame_rejection_with_id_zero_raises_its_code(fake_sidecar):
    def reject(req):
        err = pb.Error(code=pb.MALFORMED, message="cannot decode request")
        return SendAndClose(frame(pb.Response(id=0, error=err)))

    client = Client(fake_sidecar(reject).socket_path)
    with pytest.raises(MalformedError, match="cannot decode request") as e:
        client.ping()
    assert not isinstance(e.value, ProtocolError), "the sidecar's own verdict, not the client's"
    assert client.closed


def test_answer_of_the_wrong_type_is_refused(fake_sidecar):
    fake = fake_sidecar(lambda r: frame(pb.Response(id=r.id, pong=pb.PongResponse())))
    client = Client(fake.socket_path)
    with pytest.raises(ProtocolError, match="answered a value request with pong"):
        client.get("s", "k")
    assert client.closed


def test_undecodable_answer_is_refused(fake_sidecar):
    fake = fake_sidecar(lambda r: encode_varint(3) + b"\xff\xff\xff")
    client = Client(fake.socket_path)
    with pytest.raises(ProtocolError, match="cannot decode"):
        client.ping()
    assert client.closed


def test_huge_length_prefix_is_refused_without_buffering(fake_sidecar):
    fake = fake_sidecar(lambda r: encode_varint(1 << 40))
    client = Client(fake.socket_path, max_response_bytes=1 << 20)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        client.ping()


def test_connection_closed_mid_frame(fake_sidecar):
    fake = fake_sidecar(
        lambda r: SendAndClose(frame(pb.Response(id=r.id, pong=pb.PongResponse()))[:1])
    )
    client = Client(fake.socket_path)
    with pytest.raises(ProtocolError, match="inside a frame"):
        client.ping()
    assert client.closed


def test_connection_closed_by_the_sidecar(fake_sidecar):
    fake = fake_sidecar(lambda r: None)
    client = Client(fake.socket_path)
    with pytest.raises(ConnectionFailed, match="closed the connection"):
        client.ping()


def test_silent_sidecar_times_out_and_closes(fake_sidecar):
    fake = fake_sidecar(lambda r: b"")
    client = Client(fake.socket_path, timeout=0.2)
    with pytest.raises(ConnectionFailed, match="no answer"):
        client.ping()
    assert client.closed


def test_wrong_key_group_error_fields(fake_sidecar):
    def refuse(req):
        err = pb.Error(
            code=pb.WRONG_KEY_GROUP,
            message="key group 100 belongs to replica 1",
            key_group=100,
            owner=1,
            op_index=2,
        )
        return frame(pb.Response(id=req.id, error=err))

    fake = fake_sidecar(refuse)
    client = Client(fake.socket_path)
    with pytest.raises(WrongKeyGroupError) as e:
        client.get("s", "k")
    assert (e.value.owner, e.value.key_group, e.value.op_index) == (1, 100, None)
    with pytest.raises(WrongKeyGroupError) as e:
        client.write(Batch().value_put("s", "a", b"1"))
    assert e.value.op_index == 2, "op_index is kept for write batches"
    assert "WRONG_KEY_GROUP" in str(e.value) and "batch op 2" in str(e.value)
    assert not client.closed, "an error answer leaves the connection usable"


def test_unknown_error_code_is_still_an_error(fake_sidecar):
    def refuse(req):
        return frame(pb.Response(id=req.id, error=pb.Error(code=99, message="new")))

    client = Client(fake_sidecar(refuse).socket_path)
    with pytest.raises(StatorError, match="unknown error code 99"):
        client.ping()


def test_request_above_the_frame_limit_is_refused_before_sending(fake_sidecar):
    fake = fake_sidecar(pong)
    client = Client(fake.socket_path)  # the fake's frame limit is 1 MiB
    with pytest.raises(TooLargeError, match="frame limit"):
        client.write(Batch().value_put("s", "k", b"x" * (1 << 20)))
    client.ping()
    assert [r.WhichOneof("op") for r in fake.requests] == ["hello", "ping"]


def test_values_must_be_bytes_and_keys_bytes_or_str():
    with pytest.raises(TypeError, match="encode it first"):
        Batch().value_put("s", "k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a single value"):
        Batch().list_append("s", "k", b"abc")
    with pytest.raises(TypeError, match="key must be bytes or str"):
        Batch().value_clear("s", 42)  # type: ignore[arg-type]


def test_unbound_batch_cannot_commit():
    with pytest.raises(RuntimeError, match="client.write"):
        Batch().value_put("s", "k", b"v").commit()


def test_batch_discarded_when_the_block_raises(fake_sidecar):
    fake = fake_sidecar(pong)
    client = Client(fake.socket_path)
    with pytest.raises(KeyError), client.batch() as b:
        b.value_put("s", "k", b"v")
        raise KeyError("app failure")
    assert [r.WhichOneof("op") for r in fake.requests] == ["hello"]


def test_declare_builds_both_kinds_of_declaration(fake_sidecar):
    fake = fake_sidecar(lambda r: frame(pb.Response(id=r.id, declare=pb.DeclareResponse())))
    from stator import OperatorState

    client = Client(fake.socket_path)
    client.declare(State("v", "value", ttl_ms=5), State("m", "map"), OperatorState("o", "union"))
    req = fake.requests[-1].declare
    assert [(s.name, s.kind, s.ttl_ms) for s in req.states] == [
        ("v", pb.STATE_KIND_VALUE, 5),
        ("m", pb.STATE_KIND_MAP, 0),
    ]
    assert [(s.name, s.redistribution) for s in req.operator_states] == [
        ("o", pb.REDISTRIBUTION_UNION)
    ]
    with pytest.raises(ValueError):
        State("x", "tree")
