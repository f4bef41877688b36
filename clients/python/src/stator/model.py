"""Plain values the client takes and returns: state declarations, server info, map pages,
timers."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .keygroups import KeyGroupRange
from .v1 import state_pb2 as pb

__all__ = [
    "Kind",
    "Redistribution",
    "State",
    "OperatorState",
    "Limits",
    "ServerInfo",
    "MapPage",
    "TimeDomain",
    "Timer",
    "TimerPage",
    "TimerStatus",
]


class Kind(enum.Enum):
    """The kind of a keyed state."""

    VALUE = "value"
    LIST = "list"
    MAP = "map"

    def to_pb(self) -> pb.StateKind:
        return _KIND_TO_PB[self]

    @classmethod
    def from_pb(cls, kind: int) -> Kind | None:
        return _PB_TO_KIND.get(kind)


class Redistribution(enum.Enum):
    """How an operator-state list is spread over the replicas after a rescale."""

    SPLIT = "split"
    UNION = "union"

    def to_pb(self) -> pb.Redistribution:
        return _REDIST_TO_PB[self]

    @classmethod
    def from_pb(cls, r: int) -> Redistribution | None:
        return _PB_TO_REDIST.get(r)


_KIND_TO_PB = {
    Kind.VALUE: pb.STATE_KIND_VALUE,
    Kind.LIST: pb.STATE_KIND_LIST,
    Kind.MAP: pb.STATE_KIND_MAP,
}
_PB_TO_KIND: dict[int, Kind] = {v: k for k, v in _KIND_TO_PB.items()}
_REDIST_TO_PB = {
    Redistribution.SPLIT: pb.REDISTRIBUTION_SPLIT,
    Redistribution.UNION: pb.REDISTRIBUTION_UNION,
}
_PB_TO_REDIST: dict[int, Redistribution] = {v: k for k, v in _REDIST_TO_PB.items()}


@dataclass(frozen=True)
class State:
    """A keyed state declaration: ``State("counts", "value", ttl_ms=60_000)``.

    ``ttl_ms`` counts from each write; 0 means entries never expire. ``kind`` is ``None`` only
    in a hello from a newer sidecar with a kind this client does not know.
    """

    name: str
    kind: Kind | None
    ttl_ms: int = 0

    def __init__(self, name: str, kind: Kind | str | None, ttl_ms: int = 0) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kind", Kind(kind) if kind is not None else None)
        object.__setattr__(self, "ttl_ms", ttl_ms)
        if ttl_ms < 0:
            raise ValueError(f"ttl_ms must not be negative, got {ttl_ms}")

    def to_pb(self) -> pb.StateDecl:
        if self.kind is None:
            raise ValueError(f"state {self.name!r} has no kind")
        return pb.StateDecl(name=self.name, kind=self.kind.to_pb(), ttl_ms=self.ttl_ms)

    @classmethod
    def from_pb(cls, decl: pb.StateDecl) -> State:
        return cls(decl.name, Kind.from_pb(decl.kind), decl.ttl_ms)


@dataclass(frozen=True)
class OperatorState:
    """An operator-state declaration: ``OperatorState("offsets", "split")``."""

    name: str
    redistribution: Redistribution | None

    def __init__(self, name: str, redistribution: Redistribution | str | None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(
            self,
            "redistribution",
            Redistribution(redistribution) if redistribution is not None else None,
        )

    def to_pb(self) -> pb.OperatorStateDecl:
        if self.redistribution is None:
            raise ValueError(f"operator state {self.name!r} has no redistribution")
        return pb.OperatorStateDecl(name=self.name, redistribution=self.redistribution.to_pb())

    @classmethod
    def from_pb(cls, decl: pb.OperatorStateDecl) -> OperatorState:
        return cls(decl.name, Redistribution.from_pb(decl.redistribution))


@dataclass(frozen=True)
class Limits:
    """The limits the sidecar enforces; larger requests fail with ``TooLargeError``."""

    max_frame_bytes: int
    max_key_bytes: int
    max_value_bytes: int
    max_batch_ops: int
    max_page_entries: int
    default_page_entries: int
    #: The most stored bytes of one list (elements plus 12 bytes each); 0 from an older sidecar.
    max_list_bytes: int = 0
    #: The most key and value bytes of one page; 0 from an older sidecar.
    max_page_bytes: int = 0

    @classmethod
    def from_pb(cls, limits: pb.Limits) -> Limits:
        return cls(
            max_frame_bytes=limits.max_frame_bytes,
            max_key_bytes=limits.max_key_bytes,
            max_value_bytes=limits.max_value_bytes,
            max_batch_ops=limits.max_batch_ops,
            max_page_entries=limits.max_page_entries,
            default_page_entries=limits.default_page_entries,
            max_list_bytes=limits.max_list_bytes,
            max_page_bytes=limits.max_page_bytes,
        )


@dataclass(frozen=True)
class ServerInfo:
    """What the sidecar said in its hello: where this replica sits and what it holds."""

    replica_index: int
    parallelism: int
    max_parallelism: int
    key_groups: KeyGroupRange
    states: list[State]
    operator_states: list[OperatorState]
    limits: Limits
    key_group_hash: str
    server_version: str

    @classmethod
    def from_pb(cls, hello: pb.HelloResponse) -> ServerInfo:
        return cls(
            replica_index=hello.replica_index,
            parallelism=hello.parallelism,
            max_parallelism=hello.max_parallelism,
            key_groups=KeyGroupRange(hello.key_group_start, hello.key_group_end),
            states=[State.from_pb(s) for s in hello.states],
            operator_states=[OperatorState.from_pb(s) for s in hello.operator_states],
            limits=Limits.from_pb(hello.limits),
            key_group_hash=hello.key_group_hash,
            server_version=hello.server_version,
        )


@dataclass(frozen=True)
class ListPage:
    """One page of a list. Continue with ``offset=next_offset`` while ``has_more``."""

    values: list[bytes] = field(default_factory=list)
    has_more: bool = False
    next_offset: int = 0


@dataclass(frozen=True)
class MapPage:
    """One page of a map iteration. Continue with ``after=next_after`` while ``has_more``."""

    entries: list[tuple[bytes, bytes]] = field(default_factory=list)
    has_more: bool = False
    next_after: bytes = b""


class TimeDomain(enum.Enum):
    """The clock a timer follows: ``EVENT`` fires once the replica's watermark reaches it,
    ``PROCESSING`` once the sidecar's wall clock (ms since the Unix epoch) does."""

    EVENT = "event"
    PROCESSING = "processing"

    def to_pb(self) -> pb.TimeDomain:
        return _DOMAIN_TO_PB[self]

    @classmethod
    def from_pb(cls, domain: int) -> TimeDomain | None:
        return _PB_TO_DOMAIN.get(domain)


_DOMAIN_TO_PB = {
    TimeDomain.EVENT: pb.TIME_DOMAIN_EVENT,
    TimeDomain.PROCESSING: pb.TIME_DOMAIN_PROCESSING,
}
_PB_TO_DOMAIN: dict[int, TimeDomain] = {v: k for k, v in _DOMAIN_TO_PB.items()}


@dataclass(frozen=True)
class Timer:
    """A due timer. Fire it with ``batch.timer_fired(timer)`` in the batch of its handler's
    writes: exactly once, however often the app crashes before that batch commits."""

    domain: TimeDomain | None
    key: bytes
    name: bytes
    time: int
    key_group: int

    @classmethod
    def from_pb(cls, t: pb.Timer) -> Timer:
        return cls(TimeDomain.from_pb(t.domain), t.key, t.name, t.time, t.key_group)


@dataclass(frozen=True)
class TimerPage:
    """Due timers, earliest first.

    ``has_more``: more are due than the page holds (ask again once these are deleted).
    ``up_to``: what they were due up to, the watermark or the sidecar's clock (``None`` for
    event time before any watermark). ``next_time``: the earliest timer of the domain not in the
    page, a due one with ``has_more``, else the next to become due (``None``: there is none).
    """

    timers: list[Timer] = field(default_factory=list)
    has_more: bool = False
    up_to: int | None = None
    next_time: int | None = None

    @classmethod
    def from_pb(cls, r: pb.TimersDueResponse) -> TimerPage:
        return cls(
            timers=[Timer.from_pb(t) for t in r.timers],
            has_more=r.has_more,
            up_to=r.up_to if r.HasField("up_to") else None,
            next_time=r.next_time if r.HasField("next_time") else None,
        )


@dataclass(frozen=True)
class TimerStatus:
    """The replica's watermark, its earliest timer per domain, and the sidecar's clock."""

    watermark: int | None
    next_event_time: int | None
    next_processing_time: int | None
    now_ms: int

    @classmethod
    def from_pb(cls, r: pb.TimerStatusResponse) -> TimerStatus:
        def opt(name: str) -> int | None:
            return getattr(r, name) if r.HasField(name) else None

        return cls(
            watermark=opt("watermark"),
            next_event_time=opt("next_event_time"),
            next_processing_time=opt("next_processing_time"),
            now_ms=r.now_ms,
        )
