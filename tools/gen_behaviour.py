"""Writes testdata/behaviour.json: the behaviour scenarios every Stator client must pass.

Keys are picked (with an independent murmur3 implementation, PyPI mmh3) so that the scenarios'
"own" keys belong to replica 0 of parallelism 2 and "foreign" keys to replica 1, at maxParallelism 128.
Run: python tools/gen_behaviour.py  (needs `pip install mmh3`)
"""
import json
import mmh3

M, P = 128, 2


def key_group(k: str) -> int:
    return mmh3.hash(k.encode(), 0, signed=False) % M


def owner(k: str) -> int:
    return key_group(k) * P // M


def pick(prefix: str, want_owner: int, n: int):
    out, i = [], 0
    while len(out) < n:
        k = f"{prefix}{i}"
        if owner(k) == want_owner:
            out.append(k)
        i += 1
    return out


own = pick("key-", 0, 12)
foreign = pick("key-", 1, 2)

def err(code, **kw):
    return {"code": code, **kw}


def timer(domain, key, name, time):
    return {"domain": domain, "key": key, "name": name, "time": time}


def due(*timers):
    """Timers as a timers_due answer lists them: by time, then key group, key and name."""
    out = [{"key": k, "name": n, "time": t, "key_group": key_group(k)} for k, n, t in timers]
    return sorted(out, key=lambda x: (x["time"], x["key_group"], x["key"].encode(), x["name"].encode()))


MIB8 = {"repeat": "v", "times": 8 << 20}  # the largest list element
FAR = 4102444800000  # 2100-01-01 in ms: a processing time that is never due in a test

scenarios = [
    {
        "name": "value state: put, get, overwrite, clear",
        "steps": [
            {"declare": {"states": [{"name": "v1", "kind": "value"}]}},
            {"get": {"state": "v1", "key": own[0]}, "expect": None},
            {"write": [{"value_put": {"state": "v1", "key": own[0], "value": "one"}}], "expect": 1},
            {"get": {"state": "v1", "key": own[0]}, "expect": "one"},
            {"write": [{"value_put": {"state": "v1", "key": own[0], "value": "two"}}], "expect": 1},
            {"get": {"state": "v1", "key": own[0]}, "expect": "two"},
            {"write": [{"value_clear": {"state": "v1", "key": own[0]}}], "expect": 1},
            {"get": {"state": "v1", "key": own[0]}, "expect": None},
            {"write": [{"value_put": {"state": "v1", "key": "", "value": "empty key is a key"}}], "expect": None, "expect_error": None, "if_owner_of": ""},
        ],
    },
    {
        "name": "multi-get returns values in request order, absent as null",
        "steps": [
            {"declare": {"states": [{"name": "v2", "kind": "value"}]}},
            {"write": [{"value_put": {"state": "v2", "key": own[1], "value": "b"}},
                       {"value_put": {"state": "v2", "key": own[3], "value": "d"}}], "expect": 2},
            {"multi_get": {"state": "v2", "keys": [own[3], own[2], own[1]]}, "expect": ["d", None, "b"]},
        ],
    },
    {
        "name": "list state: append, get, set, clear",
        "steps": [
            {"declare": {"states": [{"name": "l1", "kind": "list"}]}},
            {"list_get": {"state": "l1", "key": own[0]}, "expect": []},
            {"write": [{"list_append": {"state": "l1", "key": own[0], "values": ["a", "b"]}}], "expect": 1},
            {"write": [{"list_append": {"state": "l1", "key": own[0], "values": ["c"]}}], "expect": 1},
            {"list_get": {"state": "l1", "key": own[0]}, "expect": ["a", "b", "c"]},
            {"write": [{"list_set": {"state": "l1", "key": own[0], "values": ["z"]}}], "expect": 1},
            {"list_get": {"state": "l1", "key": own[0]}, "expect": ["z"]},
            {"write": [{"list_clear": {"state": "l1", "key": own[0]}}], "expect": 1},
            {"list_get": {"state": "l1", "key": own[0]}, "expect": []},
        ],
    },
    {
        "name": "map state: put, get, contains, remove, paged iteration, clear",
        "steps": [
            {"declare": {"states": [{"name": "m1", "kind": "map"}]}},
            {"write": [{"map_put": {"state": "m1", "key": own[0], "map_key": mk, "value": f"v-{mk}"}} for mk in ["c", "a", "e", "b", "d"]], "expect": 5},
            {"write": [{"map_put": {"state": "m1", "key": own[1], "map_key": "a", "value": "other key"}}], "expect": 1},
            {"map_get": {"state": "m1", "key": own[0], "map_key": "c"}, "expect": "v-c"},
            {"map_get": {"state": "m1", "key": own[0], "map_key": "x"}, "expect": None},
            {"map_contains": {"state": "m1", "key": own[0], "map_key": "e"}, "expect": True},
            {"map_contains": {"state": "m1", "key": own[0], "map_key": "x"}, "expect": False},
            {"map_iter": {"state": "m1", "key": own[0], "after": "", "start_inclusive": False, "limit": 2},
             "expect": {"entries": [["a", "v-a"], ["b", "v-b"]], "has_more": True, "next_after": "b"}},
            {"map_iter": {"state": "m1", "key": own[0], "after": "b", "start_inclusive": False, "limit": 2},
             "expect": {"entries": [["c", "v-c"], ["d", "v-d"]], "has_more": True, "next_after": "d"}},
            {"map_iter": {"state": "m1", "key": own[0], "after": "d", "start_inclusive": False, "limit": 2},
             "expect": {"entries": [["e", "v-e"]], "has_more": False, "next_after": "e"}},
            {"map_iter": {"state": "m1", "key": own[0], "after": "c", "start_inclusive": True, "limit": 0},
             "expect": {"entries": [["c", "v-c"], ["d", "v-d"], ["e", "v-e"]], "has_more": False, "next_after": "e"}},
            {"write": [{"map_remove": {"state": "m1", "key": own[0], "map_key": "c"}}], "expect": 1},
            {"map_contains": {"state": "m1", "key": own[0], "map_key": "c"}, "expect": False},
            {"write": [{"map_clear": {"state": "m1", "key": own[0]}}], "expect": 1},
            {"map_iter": {"state": "m1", "key": own[0], "after": "", "start_inclusive": False, "limit": 0},
             "expect": {"entries": [], "has_more": False, "next_after": ""}},
            {"map_get": {"state": "m1", "key": own[1], "map_key": "a"}, "expect": "other key"},
        ],
    },
    {
        "name": "TTL: expired entries are hidden in every kind",
        "steps": [
            {"declare": {"states": [{"name": "tv", "kind": "value", "ttl_ms": 800},
                                    {"name": "tl", "kind": "list", "ttl_ms": 800},
                                    {"name": "tm", "kind": "map", "ttl_ms": 800}]}},
            {"write": [{"value_put": {"state": "tv", "key": own[0], "value": "x"}},
                       {"list_append": {"state": "tl", "key": own[0], "values": ["old"]}},
                       {"map_put": {"state": "tm", "key": own[0], "map_key": "old", "value": "1"}}], "expect": 3},
            {"get": {"state": "tv", "key": own[0]}, "expect": "x"},
            {"sleep_ms": 500},
            {"write": [{"list_append": {"state": "tl", "key": own[0], "values": ["new"]}},
                       {"map_put": {"state": "tm", "key": own[0], "map_key": "new", "value": "2"}}], "expect": 2},
            {"list_get": {"state": "tl", "key": own[0]}, "expect": ["old", "new"]},
            {"sleep_ms": 500},
            {"get": {"state": "tv", "key": own[0]}, "expect": None},
            {"list_get": {"state": "tl", "key": own[0]}, "expect": ["new"]},
            {"map_contains": {"state": "tm", "key": own[0], "map_key": "old"}, "expect": False},
            {"map_get": {"state": "tm", "key": own[0], "map_key": "new"}, "expect": "2"},
            {"map_iter": {"state": "tm", "key": own[0], "after": "", "start_inclusive": False, "limit": 0},
             "expect": {"entries": [["new", "2"]], "has_more": False, "next_after": "new"}},
            {"multi_get": {"state": "tv", "keys": [own[0]]}, "expect": [None]},
        ],
    },
    {
        "name": "a failing batch changes nothing",
        "steps": [
            {"declare": {"states": [{"name": "b1", "kind": "value"}, {"name": "b2", "kind": "list"}]}},
            {"write": [{"value_put": {"state": "b1", "key": own[4], "value": "before"}}], "expect": 1},
            {"write": [{"value_put": {"state": "b1", "key": own[4], "value": "after"}},
                       {"list_append": {"state": "b2", "key": own[4], "values": ["x"]}},
                       {"value_put": {"state": "nope", "key": own[4], "value": "y"}}],
             "expect_error": err("UNKNOWN_STATE", op_index=2)},
            {"write": [{"value_put": {"state": "b1", "key": own[4], "value": "after"}},
                       {"value_put": {"state": "b2", "key": own[4], "value": "wrong kind"}}],
             "expect_error": err("WRONG_KIND", op_index=1)},
            {"write": [{"value_put": {"state": "b1", "key": own[4], "value": "after"}},
                       {"value_put": {"state": "b1", "key": foreign[0], "value": "foreign"}}],
             "expect_error": err("WRONG_KEY_GROUP", op_index=1, owner=1)},
            {"get": {"state": "b1", "key": own[4]}, "expect": "before"},
            {"list_get": {"state": "b2", "key": own[4]}, "expect": []},
        ],
    },
    {
        "name": "foreign keys are refused with the owning replica",
        "steps": [
            {"declare": {"states": [{"name": "f1", "kind": "value"}, {"name": "f2", "kind": "map"}]}},
            {"get": {"state": "f1", "key": foreign[0]}, "expect_error": err("WRONG_KEY_GROUP", owner=1)},
            {"map_get": {"state": "f2", "key": foreign[1], "map_key": "a"}, "expect_error": err("WRONG_KEY_GROUP", owner=1)},
            {"multi_get": {"state": "f1", "keys": [own[0], foreign[1]]}, "expect_error": err("WRONG_KEY_GROUP", owner=1)},
        ],
    },
    {
        "name": "unknown states, wrong kinds and conflicting declarations are typed errors",
        "steps": [
            {"declare": {"states": [{"name": "k1", "kind": "map"}]}},
            {"get": {"state": "missing", "key": own[0]}, "expect_error": err("UNKNOWN_STATE")},
            {"get": {"state": "k1", "key": own[0]}, "expect_error": err("WRONG_KIND")},
            {"list_get": {"state": "k1", "key": own[0]}, "expect_error": err("WRONG_KIND")},
            {"declare": {"states": [{"name": "k1", "kind": "value"}]}, "expect_error": err("STATE_CONFLICT")},
            {"declare": {"states": [{"name": "k1", "kind": "map"}]}},
            {"declare": {"states": [{"name": "", "kind": "map"}]}, "expect_error": err("INVALID_ARGUMENT")},
        ],
    },
    {
        "name": "limits are enforced with TOO_LARGE",
        "steps": [
            {"declare": {"states": [{"name": "big", "kind": "value"}]}},
            {"get": {"state": "big", "key": {"repeat": "k", "times": 65537}}, "expect_error": err("TOO_LARGE")},
            {"write": [{"value_put": {"state": "big", "key": own[0], "value": {"repeat": "v", "times": 8388609}}}],
             "expect_error": err("TOO_LARGE", op_index=0)},
            {"write": [{"value_put": {"state": "big", "key": own[0], "value": {"repeat": "v", "times": 8388608}}}], "expect": 1},
            {"write": {"repeat_op": {"value_put": {"state": "big", "key": own[1], "value": "x"}}, "times": 10001},
             "expect_error": err("TOO_LARGE")},
            {"get": {"state": "big", "key": own[1]}, "expect": None},
        ],
    },
    {
        "name": "lists: read in pages, bounded in size at append",
        "steps": [
            {"declare": {"states": [{"name": "lists", "kind": "list"}]}},
            {"write": [{"list_append": {"state": "lists", "key": own[3], "values": list("abcde")}}], "expect": 1},
            {"list_page": {"state": "lists", "key": own[3], "offset": 0, "limit": 2},
             "expect": {"values": ["a", "b"], "has_more": True, "next_offset": 2}},
            {"list_page": {"state": "lists", "key": own[3], "offset": 2, "limit": 2},
             "expect": {"values": ["c", "d"], "has_more": True, "next_offset": 4}},
            {"list_page": {"state": "lists", "key": own[3], "offset": 4, "limit": 2},
             "expect": {"values": ["e"], "has_more": False, "next_offset": 5}},
            {"list_page": {"state": "lists", "key": own[3], "offset": 9, "limit": 2},
             "expect": {"values": [], "has_more": False, "next_offset": 9}},
            # Three 8 MiB elements: more than one frame holds, yet readable (a page at a time).
            *[{"write": [{"list_append": {"state": "lists", "key": own[4], "values": [MIB8]}}], "expect": 1}] * 3,
            {"list_sizes": {"state": "lists", "key": own[4]}, "expect": [8 << 20] * 3},
            # A list holds at most 64 MiB (its elements and 12 bytes each): seven 8 MiB elements...
            *[{"write": [{"list_append": {"state": "lists", "key": own[4], "values": [MIB8]}}], "expect": 1}] * 4,
            # ...and not an eighth; the refused batch changes nothing.
            {"write": [{"list_append": {"state": "lists", "key": own[4], "values": ["x"]}},
                       {"list_append": {"state": "lists", "key": own[4], "values": [MIB8]}}],
             "expect_error": err("TOO_LARGE", op_index=1)},
            {"list_sizes": {"state": "lists", "key": own[4]}, "expect": [8 << 20] * 7},
            # A set replaces the list, and the appends after it in its batch count from there.
            {"write": [{"list_set": {"state": "lists", "key": own[4], "values": ["s"]}},
                       {"list_append": {"state": "lists", "key": own[4], "values": [MIB8]}}], "expect": 2},
            {"list_sizes": {"state": "lists", "key": own[4]}, "expect": [1, 8 << 20]},
        ],
    },
    {
        "name": "timers: event-time timers are due once the watermark reaches them, in time order, until deleted",
        "steps": [
            {"timer_status": {}, "expect": {"watermark": None, "next_event_time": None, "next_processing_time": None}},
            {"timers_due": {"domain": "event", "limit": 0},
             "expect": {"timers": [], "has_more": False, "up_to": None, "next_time": None}},
            {"declare": {"states": [{"name": "fired", "kind": "list"}]}},
            {"write": [{"timer_register": timer("event", own[0], "a", 30)},
                       {"timer_register": timer("event", own[1], "a", 10)},
                       {"timer_register": timer("event", own[2], "b", 20)},
                       {"timer_register": timer("event", own[0], "b", 10)},
                       {"timer_register": timer("event", own[1], "a", 10)}], "expect": 5},
            # No watermark yet: nothing is due, but the earliest time is known.
            {"timers_due": {"domain": "event", "limit": 0},
             "expect": {"timers": [], "has_more": False, "up_to": None, "next_time": 10}},
            {"write": [{"watermark_advance": {"watermark": 15}}], "expect": 1},
            {"timer_status": {}, "expect": {"watermark": 15, "next_event_time": 10, "next_processing_time": None}},
            # Registering the same timer twice made one timer.
            {"timers_due": {"domain": "event", "limit": 0},
             "expect": {"timers": due((own[0], "b", 10), (own[1], "a", 10)), "has_more": False, "up_to": 15, "next_time": 20}},
            # Reading fires nothing: the timers stay until a batch deletes them.
            {"timers_due": {"domain": "event", "limit": 0},
             "expect": {"timers": due((own[0], "b", 10), (own[1], "a", 10)), "has_more": False, "up_to": 15, "next_time": 20}},
            # A batch that fails deletes no timer.
            {"write": [{"timer_delete": timer("event", own[0], "b", 10)},
                       {"list_append": {"state": "nope", "key": own[0], "values": ["x"]}}],
             "expect_error": err("UNKNOWN_STATE", op_index=1)},
            {"timers_due": {"domain": "event", "limit": 1},
             "expect": {"timers": due((own[0], "b", 10), (own[1], "a", 10))[:1], "has_more": True, "up_to": 15, "next_time": 10}},
            # Firing: the handler's writes and the timer's deletion in one batch.
            {"write": [{"list_append": {"state": "fired", "key": own[0], "values": ["b@10"]}},
                       {"timer_delete": timer("event", own[0], "b", 10)},
                       {"list_append": {"state": "fired", "key": own[1], "values": ["a@10"]}},
                       {"timer_delete": timer("event", own[1], "a", 10)}], "expect": 4},
            {"timers_due": {"domain": "event", "limit": 0},
             "expect": {"timers": [], "has_more": False, "up_to": 15, "next_time": 20}},
            # The watermark never moves back.
            {"write": [{"watermark_advance": {"watermark": 12}}], "expect": 1},
            {"timer_status": {}, "expect": {"watermark": 15, "next_event_time": 20, "next_processing_time": None}},
            {"write": [{"watermark_advance": {"watermark": 100}}], "expect": 1},
            {"timers_due": {"domain": "event", "limit": 1},
             "expect": {"timers": due((own[2], "b", 20)), "has_more": True, "up_to": 100, "next_time": 30}},
            # Deleting a timer that does not exist changes nothing.
            {"write": [{"timer_delete": timer("event", own[2], "b", 20)},
                       {"timer_delete": timer("event", own[0], "a", 30)},
                       {"timer_delete": timer("event", own[3], "never", 5)}], "expect": 3},
            {"timers_due": {"domain": "event", "limit": 0},
             "expect": {"timers": [], "has_more": False, "up_to": 100, "next_time": None}},
            # A timer registered at a time already passed is due at once.
            {"write": [{"timer_register": timer("event", own[0], "late", 50)}], "expect": 1},
            {"timers_due": {"domain": "event", "limit": 0},
             "expect": {"timers": due((own[0], "late", 50)), "has_more": False, "up_to": 100, "next_time": None}},
            {"write": [{"timer_delete": timer("event", own[0], "late", 50)}], "expect": 1},
            {"list_get": {"state": "fired", "key": own[0]}, "expect": ["b@10"]},
            {"list_get": {"state": "fired", "key": own[1]}, "expect": ["a@10"]},
        ],
    },
    {
        "name": "timers: processing-time timers follow the sidecar's clock; bad timers are typed errors",
        "steps": [
            {"write": [{"timer_register": timer("processing", own[4], "p", 1000)},
                       {"timer_register": timer("processing", own[5], "p", 2000)},
                       {"timer_register": timer("processing", own[4], "q", FAR)}], "expect": 3},
            # up_to is the sidecar's clock for processing time, so it is not compared.
            {"timers_due": {"domain": "processing", "limit": 0},
             "expect": {"timers": due((own[4], "p", 1000), (own[5], "p", 2000)), "has_more": False, "next_time": FAR}},
            {"write": [{"timer_delete": timer("processing", own[4], "p", 1000)},
                       {"timer_delete": timer("processing", own[5], "p", 2000)}], "expect": 2},
            {"timers_due": {"domain": "processing", "limit": 0},
             "expect": {"timers": [], "has_more": False, "next_time": FAR}},
            # Same key, name and time in the other domain is another timer.
            {"write": [{"timer_register": timer("event", own[4], "q", FAR)}], "expect": 1},
            {"write": [{"timer_delete": timer("processing", own[4], "q", FAR)}], "expect": 1},
            {"timers_due": {"domain": "processing", "limit": 0},
             "expect": {"timers": [], "has_more": False, "next_time": None}},
            {"write": [{"timer_delete": timer("event", own[4], "q", FAR)}], "expect": 1},
            {"write": [{"timer_register": timer("processing", own[6], "x", 1000)},
                       {"timer_register": timer("processing", foreign[0], "x", 1000)}],
             "expect_error": err("WRONG_KEY_GROUP", op_index=1, owner=1)},
            {"write": [{"timer_register": timer("processing", own[6], {"repeat": "n", "times": 65537}, 1000)}],
             "expect_error": err("TOO_LARGE", op_index=0)},
            {"write": [{"timer_register": timer("processing", {"repeat": "k", "times": 65537}, "x", 1000)}],
             "expect_error": err("TOO_LARGE", op_index=0)},
            {"timers_due": {"domain": "processing", "limit": 0},
             "expect": {"timers": [], "has_more": False, "next_time": None}},
        ],
    },
    {
        "name": "operator state: per-replica named lists",
        "steps": [
            {"declare": {"operator_states": [{"name": "offsets", "redistribution": "split"},
                                             {"name": "config", "redistribution": "union"}]}},
            {"operator_state_get": {"name": "offsets"}, "expect": []},
            {"write": [{"operator_state_set": {"name": "offsets", "values": ["p0:10", "p1:20"]}}], "expect": 1},
            {"operator_state_get": {"name": "offsets"}, "expect": ["p0:10", "p1:20"]},
            {"write": [{"operator_state_set": {"name": "offsets", "values": ["p0:11"]}}], "expect": 1},
            {"operator_state_get": {"name": "offsets"}, "expect": ["p0:11"]},
            {"operator_state_get": {"name": "nope"}, "expect_error": err("UNKNOWN_STATE")},
        ],
    },
]

# The empty key only belongs here if replica 0 owns it; otherwise expect the refusal.
for s in scenarios:
    for step in s["steps"]:
        if "if_owner_of" in step:
            k = step.pop("if_owner_of")
            step.pop("expect_error")
            if owner(k) == 0:
                step["expect"] = 1
            else:
                step.pop("expect")
                step["expect_error"] = err("WRONG_KEY_GROUP", op_index=0, owner=owner(k))

doc = {
    "comment": "Behaviour every Stator client must show. See docs/protocol.md#behaviour-suite for the format.",
    "sidecar": {"replica_index": 0, "parallelism": P, "max_parallelism": M},
    "scenarios": scenarios,
}
with open("testdata/behaviour.json", "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
print(f"{len(scenarios)} scenarios; own keys {own[:3]}..., foreign {foreign}")
