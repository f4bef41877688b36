"""The committed state_pb2 files must be what the generator makes from the .proto today."""

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
GENERATOR = PACKAGE / "scripts" / "gen_proto.py"
FILES = ["stator/v1/state_pb2.py", "stator/v1/state_pb2.pyi"]


def test_generated_code_matches_the_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="regenerating needs grpcio-tools")
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], check=True)
    for name in FILES:
        fresh = (tmp_path / name).read_text()
        committed = (PACKAGE / "src" / name).read_text()
        assert fresh == committed, (
            f"src/{name} is stale: run `python clients/python/scripts/gen_proto.py` and commit it"
        )
