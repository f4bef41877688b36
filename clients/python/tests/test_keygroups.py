"""The published key-group vectors, and the formulas' invariants."""

import json
import os
from pathlib import Path

import pytest

from stator import HASH_NAME, key_group, key_group_range, murmur3_x86_32, owner, owner_of_group
from stator.keygroups import murmur3_x86_32_py

VECTORS = json.loads(
    (Path(__file__).resolve().parents[3] / "testdata" / "keygroup_vectors.json").read_text()
)


def test_vectors_name_the_hash_the_client_implements():
    assert VECTORS["hash"] == HASH_NAME


@pytest.mark.parametrize("impl", [murmur3_x86_32, murmur3_x86_32_py], ids=["default", "pure"])
@pytest.mark.parametrize("v", VECTORS["hashes"], ids=lambda v: v["key_hex"][:16] or "empty")
def test_hash_matches_published_vector(v, impl):
    assert impl(bytes.fromhex(v["key_hex"])) == v["hash"]


def test_owner_and_key_group_match_every_published_vector():
    assert VECTORS["owners"]
    for v in VECTORS["owners"]:
        key = bytes.fromhex(v["key_hex"])
        assert key_group(key, v["max_parallelism"]) == v["key_group"], v
        assert owner(key, v["parallelism"], v["max_parallelism"]) == v["owner"], v


def test_ranges_match_every_published_vector():
    assert VECTORS["ranges"]
    for v in VECTORS["ranges"]:
        r = key_group_range(v["index"], v["parallelism"], v["max_parallelism"])
        assert (r.start, r.end) == (v["start"], v["end"]), v


def test_str_keys_hash_as_their_utf8_bytes():
    assert key_group("résumé", 128) == key_group("résumé".encode(), 128)
    assert owner(bytearray(b"user-42"), 3, 128) == owner("user-42", 3, 128)


@pytest.mark.parametrize(
    "p, m",
    [(p, m) for m in [1, 2, 7, 128, 1000, 32768] for p in [1, 2, 3, 5, 16, 128, 1000] if p <= m],
)
def test_ranges_partition_all_groups_and_agree_with_owner(p, m):
    expected_start = 0
    for i in range(p):
        r = key_group_range(i, p, m)
        assert r.start == expected_start and r.end >= r.start
        assert owner_of_group(r.start, p, m) == i and owner_of_group(r.end, p, m) == i
        expected_start = r.end + 1
    assert expected_start == m


def test_invalid_layouts_are_refused():
    for bad in [
        lambda: key_group(b"k", 0),
        lambda: owner(b"k", 3, 2),
        lambda: key_group_range(2, 2, 128),
        lambda: key_group(b"k", 32769),
    ]:
        with pytest.raises(ValueError):
            bad()


def test_pure_python_hash_agrees_with_mmh3_on_random_keys():
    mmh3 = pytest.importorskip("mmh3")
    for n in range(500):
        key = os.urandom(n % 67)
        assert murmur3_x86_32_py(key) == mmh3.hash(key, 0, signed=False), key.hex()
