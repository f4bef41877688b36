"""Runs testdata/behaviour.json, the scenarios every Stator client must pass, through the public
client API against a real sidecar. The Rust client runs the same file.

Format: docs/protocol.md#behaviour-suite (and tools/gen_behaviour.py, which writes it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from stator import Client, OperatorState, State, StatorError

DOC = json.loads((Path(__file__).resolve().parents[3] / "testdata" / "behaviour.json").read_text())
SCENARIOS = DOC["scenarios"]
BYTE_FIELDS = {"key", "value", "map_key", "after"}
LIST_FIELDS = {"values", "keys"}
#: Ops whose "name" is a timer's name (bytes), not a state's.
TIMER_OPS = {"timer_register", "timer_delete"}


def as_bytes(x: Any) -> bytes:
    """A byte field: a UTF-8 string, or {"repeat": s, "times": n}."""
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, dict) and set(x) == {"repeat", "times"}:
        return (x["repeat"] * x["times"]).encode()
    raise ValueError(f"not a byte field: {x!r}")


def args(fields: dict[str, Any], op: str = "") -> dict[str, Any]:
    """Proto field names and JSON values to the client's keyword arguments."""
    out: dict[str, Any] = {}
    for name, v in fields.items():
        if name in BYTE_FIELDS or (op in TIMER_OPS and name == "name"):
            out[name] = as_bytes(v)
        elif name in LIST_FIELDS:
            out[name] = [as_bytes(x) for x in v]
        else:
            out[name] = v
    return out


def opt(b: bytes | None) -> str | None:
    return None if b is None else b.decode()


def run_step(client: Client, step: dict[str, Any]) -> Any:
    """Performs one step and returns its result in the JSON's shape."""
    kinds = [k for k in step if k not in ("expect", "expect_error")]
    assert len(kinds) == 1, f"a step has exactly one kind: {step}"
    kind = kinds[0]
    body = step[kind]
    if kind == "sleep_ms":
        time.sleep(body / 1000)
        return None
    if kind == "declare":
        decls: list[Any] = [
            State(s["name"], s["kind"], s.get("ttl_ms", 0)) for s in body.get("states", [])
        ]
        decls += [
            OperatorState(s["name"], s["redistribution"]) for s in body.get("operator_states", [])
        ]
        client.declare(*decls)
        return None
    if kind == "write":
        if isinstance(body, dict):
            assert set(body) == {"repeat_op", "times"}, body
            ops = [body["repeat_op"]] * body["times"]
        else:
            ops = body
        with client.batch() as batch:
            for op in ops:
                ((name, fields),) = op.items()
                getattr(batch, name)(**args(fields, name))
        return batch.applied
    a = args(body)
    if kind == "get":
        return opt(client.get(**a))
    if kind == "multi_get":
        return [opt(v) for v in client.multi_get(**a)]
    if kind == "list_get":
        return [v.decode() for v in client.list_get(**a)]
    if kind == "list_sizes":
        return [len(v) for v in client.list_get(**a)]
    if kind == "list_page":
        lp = client.list_page(a.pop("state"), a.pop("key"), **a)
        return {
            "values": [v.decode() for v in lp.values],
            "has_more": lp.has_more,
            "next_offset": lp.next_offset,
        }
    if kind == "map_get":
        return opt(client.map_get(**a))
    if kind == "map_contains":
        return client.map_contains(**a)
    if kind == "map_iter":
        page = client.map_iter_page(a.pop("state"), a.pop("key"), **a)
        return {
            "entries": [[k.decode(), v.decode()] for k, v in page.entries],
            "has_more": page.has_more,
            "next_after": page.next_after.decode(),
        }
    if kind == "operator_state_get":
        return [v.decode() for v in client.operator_state_get(**a)]
    if kind == "timers_due":
        page = client.timers_due(**a)
        out = {
            "timers": [
                {"key": t.key.decode(), "name": t.name.decode(), "time": t.time,
                 "key_group": t.key_group}
                for t in page.timers
            ],
            "has_more": page.has_more,
            "next_time": page.next_time,
        }
        assert all(t.domain and t.domain.value == a["domain"] for t in page.timers), page
        if a["domain"] == "event":  # processing time's up_to is the clock: not compared
            out["up_to"] = page.up_to
        return out
    if kind == "timer_status":
        st = client.timer_status()
        return {
            "watermark": st.watermark,
            "next_event_time": st.next_event_time,
            "next_processing_time": st.next_processing_time,
        }
    raise AssertionError(f"unknown step kind {kind!r}")


@pytest.fixture(scope="module")
def behaviour_sidecar(sidecar):  # type: ignore[no-untyped-def]
    want = DOC["sidecar"]
    assert (want["replica_index"], want["parallelism"], want["max_parallelism"]) == (0, 2, 128), (
        "the shared sidecar fixture no longer matches behaviour.json's; start one to match"
    )
    return sidecar


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_behaviour(behaviour_sidecar, scenario):  # type: ignore[no-untyped-def]
    with Client(behaviour_sidecar.socket_path) as client:
        for i, step in enumerate(scenario["steps"]):
            where = f"step {i}: {json.dumps(step)[:300]}"
            expected_error = step.get("expect_error")
            if expected_error:
                with pytest.raises(StatorError) as e:
                    run_step(client, step)
                err = e.value
                assert err.code.name == expected_error["code"], f"{where}: got {err!r} {err}"
                if "owner" in expected_error:
                    assert getattr(err, "owner", None) == expected_error["owner"], where
                if "op_index" in expected_error:
                    assert err.op_index == expected_error["op_index"], where
                assert not client.closed, f"{where}: an error answer must keep the connection"
            else:
                got = run_step(client, step)
                if "expect" in step:
                    assert got == step["expect"], f"{where}: got {got!r}"


def test_every_scenario_uses_its_own_state_names():
    seen: dict[str, str] = {}
    for s in SCENARIOS:
        for step in s["steps"]:
            for decl in step.get("declare", {}).get("states", []):
                assert seen.setdefault(decl["name"], s["name"]) == s["name"], decl["name"]
