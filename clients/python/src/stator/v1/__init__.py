"""The state protocol's messages, generated from ``proto/stator/v1/state.proto``.

Do not edit ``state_pb2.py``; regenerate it with ``scripts/gen_proto.py``.
"""
