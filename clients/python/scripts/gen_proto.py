"""Regenerates the protocol messages (src/stator/v1/state_pb2.py and .pyi) from the contract.

Run from anywhere: python clients/python/scripts/gen_proto.py [--out DIR]
Needs grpcio-tools (its bundled protoc decides the generated code, so CI pins its version).
tests/test_generated.py runs this into a temp dir and fails when the committed files drift.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
REPO_ROOT = PACKAGE_ROOT.parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILE = "stator/v1/state.proto"
#: The generated files, relative to the output (source) root.
GENERATED = ["stator/v1/state_pb2.py", "stator/v1/state_pb2.pyi"]


def generate(out: Path) -> None:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        str(PROTO_ROOT / PROTO_FILE),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGE_ROOT / "src")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
