"""Python client for Stator: Flink-like keyed state served by the ``stator-sidecar``.

Usage::

    from stator import Client, State

    with Client("/run/stator/state.sock") as client:
        client.declare(State("counts", "value"))
        with client.batch() as b:
            b.value_put("counts", "user-42", b"7")
        client.get("counts", "user-42")  # b"7"
"""

from .client import Batch, Client, Pipeline
from .errors import (
    ConnectionFailed,
    ErrorCode,
    InternalError,
    InvalidArgumentError,
    MalformedError,
    ProtocolError,
    StateConflictError,
    StatorError,
    SuspendedError,
    TooLargeError,
    UnavailableError,
    UnknownStateError,
    WrongKeyGroupError,
    WrongKindError,
)
from .keygroups import (
    HASH_NAME,
    KeyGroupRange,
    key_group,
    key_group_range,
    murmur3_x86_32,
    owner,
    owner_of_group,
)
from .model import (
    Kind,
    Limits,
    ListPage,
    MapPage,
    OperatorState,
    Redistribution,
    ServerInfo,
    State,
    TimeDomain,
    Timer,
    TimerPage,
    TimerStatus,
)

__all__ = [
    "Batch",
    "Client",
    "Pipeline",
    "ConnectionFailed",
    "ErrorCode",
    "InternalError",
    "InvalidArgumentError",
    "MalformedError",
    "ProtocolError",
    "StateConflictError",
    "StatorError",
    "SuspendedError",
    "TooLargeError",
    "UnavailableError",
    "UnknownStateError",
    "WrongKeyGroupError",
    "WrongKindError",
    "HASH_NAME",
    "KeyGroupRange",
    "key_group",
    "key_group_range",
    "murmur3_x86_32",
    "owner",
    "owner_of_group",
    "Kind",
    "Limits",
    "ListPage",
    "MapPage",
    "OperatorState",
    "Redistribution",
    "ServerInfo",
    "State",
    "TimeDomain",
    "Timer",
    "TimerPage",
    "TimerStatus",
]
