"""Writes the seed corpus of the `requests` fuzz target: one file per request kind, plus
pipelines and damaged frames. Run: python sidecar/fuzz/seeds.py (needs the Python client's
dependencies, e.g. the venv of scripts/setup)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "clients" / "python" / "src"))

from google.protobuf.internal.encoder import _VarintBytes  # noqa: E402
from stator.v1 import state_pb2 as pb  # noqa: E402


def frame(**op: object) -> bytes:
    body = pb.Request(id=7, **op).SerializeToString()
    return _VarintBytes(len(body)) + body


def write(*ops: pb.WriteOp) -> bytes:
    return frame(write=pb.WriteBatch(ops=list(ops)))


E, P = pb.TIME_DOMAIN_EVENT, pb.TIME_DOMAIN_PROCESSING
seeds = {
    "hello": frame(hello=pb.HelloRequest()),
    "ping": frame(ping=pb.PingRequest()),
    "declare": frame(declare=pb.DeclareRequest(
        states=[pb.StateDecl(name="n", kind=pb.STATE_KIND_MAP, ttl_ms=5)],
        operator_states=[pb.OperatorStateDecl(name="u", redistribution=pb.REDISTRIBUTION_UNION)])),
    "get": frame(get=pb.GetRequest(state="v", key=b"key-0")),
    "multi_get": frame(multi_get=pb.MultiGetRequest(state="v", keys=[b"key-0", b"key-6", b""])),
    "list_get": frame(list_get=pb.ListGetRequest(state="l", key=b"key-0")),
    "list_page": frame(list_get=pb.ListGetRequest(state="l", key=b"key-0", offset=1, limit=2)),
    "map_get": frame(map_get=pb.MapGetRequest(state="m", key=b"key-0", map_key=b"a")),
    "map_contains": frame(map_contains=pb.MapContainsRequest(state="m", key=b"key-0", map_key=b"a")),
    "map_iter": frame(map_iter=pb.MapIterRequest(state="m", key=b"key-0", after=b"a", limit=3)),
    "operator_state_get": frame(operator_state_get=pb.OperatorStateGetRequest(name="o")),
    "timers_due": frame(timers_due=pb.TimersDueRequest(domain=E, limit=5)),
    "timer_status": frame(timer_status=pb.TimerStatusRequest()),
    "write_values": write(
        pb.WriteOp(value_put=pb.ValuePut(state="v", key=b"key-0", value=b"x")),
        pb.WriteOp(value_put=pb.ValuePut(state="t", key=b"key-1", value=b"y")),
        pb.WriteOp(value_clear=pb.ValueClear(state="v", key=b"key-2"))),
    "write_lists": write(
        pb.WriteOp(list_append=pb.ListAppend(state="l", key=b"key-0", values=[b"a", b"b"])),
        pb.WriteOp(list_set=pb.ListSet(state="l", key=b"key-1", values=[b"c"])),
        pb.WriteOp(list_clear=pb.ListClear(state="l", key=b"key-2"))),
    "write_maps": write(
        pb.WriteOp(map_put=pb.MapPut(state="m", key=b"key-0", map_key=b"a", value=b"1")),
        pb.WriteOp(map_remove=pb.MapRemove(state="m", key=b"key-0", map_key=b"b")),
        pb.WriteOp(map_clear=pb.MapClear(state="m", key=b"key-1"))),
    "write_operator": write(pb.WriteOp(operator_state_set=pb.OperatorStateSet(name="o", values=[b"p"]))),
    "write_timers": write(
        pb.WriteOp(timer_register=pb.TimerRegister(domain=E, key=b"key-0", name=b"n", time=3)),
        pb.WriteOp(timer_register=pb.TimerRegister(domain=P, key=b"key-1", name=b"n", time=1)),
        pb.WriteOp(watermark_advance=pb.WatermarkAdvance(watermark=9)),
        pb.WriteOp(timer_delete=pb.TimerDelete(domain=E, key=b"key-0", name=b"n", time=3))),
    "write_foreign_key": write(pb.WriteOp(value_put=pb.ValuePut(state="v", key=b"key-6", value=b"x"))),
    "write_unknown_state": write(pb.WriteOp(value_put=pb.ValuePut(state="nope", key=b"k", value=b"x"))),
    "empty_op": write(pb.WriteOp()),
    "no_op": frame(),
}
seeds["pipeline"] = seeds["write_values"] + seeds["get"] + seeds["write_lists"] + seeds["list_get"]
seeds["truncated"] = seeds["write_maps"][:-3]
seeds["bad_varint"] = b"\xff" * 11
seeds["huge_length"] = _VarintBytes(1 << 30)
seeds["garbage_body"] = b"\x05\xff\xff\xff\xff\xff"

out = HERE / "corpus" / "requests"
out.mkdir(parents=True, exist_ok=True)
for name, data in seeds.items():
    (out / f"seed-{name}").write_bytes(data)
print(f"wrote {len(seeds)} seeds to {out}")
