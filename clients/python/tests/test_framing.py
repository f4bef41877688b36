"""Framing round trips, and refusal of malformed input, without a socket."""

import pytest

from stator import ProtocolError
from stator.framing import FrameDecoder, decode_varint, encode_frame, encode_varint
from stator.v1 import state_pb2 as pb


@pytest.mark.parametrize(
    "value, encoded",
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint_known_encodings(value, encoded):
    assert encode_varint(value) == encoded
    assert decode_varint(encoded) == (value, len(encoded))


def test_frames_match_protobufs_own_delimited_form():
    # protobuf's Python runtime writes the same prefix for the same message.
    from google.protobuf.internal.encoder import _VarintBytes

    msg = pb.Request(id=7, get=pb.GetRequest(state="s", key=b"k" * 300)).SerializeToString()
    assert encode_frame(msg) == _VarintBytes(len(msg)) + msg


def test_round_trips_pipelined_frames_split_anywhere():
    msgs = [pb.Request(id=i * 1_000_003, ping=pb.PingRequest()) for i in range(50)]
    msgs.append(
        pb.Request(
            id=1,
            write=pb.WriteBatch(
                ops=[pb.WriteOp(value_put=pb.ValuePut(state="s", key=b"k", value=b"v" * 20_000))]
            ),
        )
    )
    whole = b"".join(encode_frame(m.SerializeToString()) for m in msgs)
    for chunk in [1, 2, 3, 7, 64, 4096, len(whole)]:
        decoder = FrameDecoder(1 << 20)
        got = []
        for i in range(0, len(whole), chunk):
            got += decoder.feed(whole[i : i + chunk])
        assert decoder.pending == 0
        decoder.finish()
        assert [pb.Request.FromString(f) for f in got] == msgs


def test_empty_message_is_a_frame():
    assert FrameDecoder(10).feed(b"\x00\x00") == [b"", b""]


def test_waits_for_incomplete_prefix_and_body():
    decoder = FrameDecoder(1 << 20)
    assert decoder.feed(b"\x80") == []
    assert decoder.feed(b"\x01") == []  # length 128, no body yet
    assert decoder.feed(b"x" * 127) == []
    assert decoder.feed(b"x") == [b"x" * 128]


def test_refuses_huge_length_before_reading_body():
    with pytest.raises(ProtocolError, match="exceeds the limit of 1024"):
        FrameDecoder(1024).feed(b"\xff\xff\xff\xff\x0f")


def test_refuses_overlong_varint():
    with pytest.raises(ProtocolError, match="not a valid varint"):
        FrameDecoder(1024).feed(b"\x80" * 11)


def test_refuses_varint_above_64_bits():
    with pytest.raises(ProtocolError, match="not a valid varint"):
        FrameDecoder(1024).feed(b"\xff" * 9 + b"\x02")


def test_stream_ending_inside_a_frame_is_an_error():
    decoder = FrameDecoder(1024)
    decoder.feed(b"\x05ab")
    with pytest.raises(ProtocolError, match="inside a frame"):
        decoder.finish()


def test_encode_varint_refuses_out_of_range():
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            encode_varint(bad)
