from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_KIND_UNSPECIFIED: _ClassVar[StateKind]
    STATE_KIND_VALUE: _ClassVar[StateKind]
    STATE_KIND_LIST: _ClassVar[StateKind]
    STATE_KIND_MAP: _ClassVar[StateKind]

class Redistribution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REDISTRIBUTION_UNSPECIFIED: _ClassVar[Redistribution]
    REDISTRIBUTION_SPLIT: _ClassVar[Redistribution]
    REDISTRIBUTION_UNION: _ClassVar[Redistribution]

class TimeDomain(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIME_DOMAIN_UNSPECIFIED: _ClassVar[TimeDomain]
    TIME_DOMAIN_EVENT: _ClassVar[TimeDomain]
    TIME_DOMAIN_PROCESSING: _ClassVar[TimeDomain]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    MALFORMED: _ClassVar[ErrorCode]
    TOO_LARGE: _ClassVar[ErrorCode]
    WRONG_KEY_GROUP: _ClassVar[ErrorCode]
    UNKNOWN_STATE: _ClassVar[ErrorCode]
    WRONG_KIND: _ClassVar[ErrorCode]
    STATE_CONFLICT: _ClassVar[ErrorCode]
    SUSPENDED: _ClassVar[ErrorCode]
    INVALID_ARGUMENT: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    UNAVAILABLE: _ClassVar[ErrorCode]
STATE_KIND_UNSPECIFIED: StateKind
STATE_KIND_VALUE: StateKind
STATE_KIND_LIST: StateKind
STATE_KIND_MAP: StateKind
REDISTRIBUTION_UNSPECIFIED: Redistribution
REDISTRIBUTION_SPLIT: Redistribution
REDISTRIBUTION_UNION: Redistribution
TIME_DOMAIN_UNSPECIFIED: TimeDomain
TIME_DOMAIN_EVENT: TimeDomain
TIME_DOMAIN_PROCESSING: TimeDomain
ERROR_CODE_UNSPECIFIED: ErrorCode
MALFORMED: ErrorCode
TOO_LARGE: ErrorCode
WRONG_KEY_GROUP: ErrorCode
UNKNOWN_STATE: ErrorCode
WRONG_KIND: ErrorCode
STATE_CONFLICT: ErrorCode
SUSPENDED: ErrorCode
INVALID_ARGUMENT: ErrorCode
INTERNAL: ErrorCode
UNAVAILABLE: ErrorCode

class StateDecl(_message.Message):
    __slots__ = ("name", "kind", "ttl_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: StateKind
    ttl_ms: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[StateKind, str]] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class OperatorStateDecl(_message.Message):
    __slots__ = ("name", "redistribution")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REDISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    redistribution: Redistribution
    def __init__(self, name: _Optional[str] = ..., redistribution: _Optional[_Union[Redistribution, str]] = ...) -> None: ...

class Timer(_message.Message):
    __slots__ = ("domain", "key", "name", "time", "key_group")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_GROUP_FIELD_NUMBER: _ClassVar[int]
    domain: TimeDomain
    key: bytes
    name: bytes
    time: int
    key_group: int
    def __init__(self, domain: _Optional[_Union[TimeDomain, str]] = ..., key: _Optional[bytes] = ..., name: _Optional[bytes] = ..., time: _Optional[int] = ..., key_group: _Optional[int] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("id", "hello", "declare", "get", "multi_get", "write", "list_get", "map_get", "map_contains", "map_iter", "operator_state_get", "ping", "timers_due", "timer_status")
    ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    DECLARE_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    MULTI_GET_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    LIST_GET_FIELD_NUMBER: _ClassVar[int]
    MAP_GET_FIELD_NUMBER: _ClassVar[int]
    MAP_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    MAP_ITER_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_STATE_GET_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    TIMERS_DUE_FIELD_NUMBER: _ClassVar[int]
    TIMER_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: int
    hello: HelloRequest
    declare: DeclareRequest
    get: GetRequest
    multi_get: MultiGetRequest
    write: WriteBatch
    list_get: ListGetRequest
    map_get: MapGetRequest
    map_contains: MapContainsRequest
    map_iter: MapIterRequest
    operator_state_get: OperatorStateGetRequest
    ping: PingRequest
    timers_due: TimersDueRequest
    timer_status: TimerStatusRequest
    def __init__(self, id: _Optional[int] = ..., hello: _Optional[_Union[HelloRequest, _Mapping]] = ..., declare: _Optional[_Union[DeclareRequest, _Mapping]] = ..., get: _Optional[_Union[GetRequest, _Mapping]] = ..., multi_get: _Optional[_Union[MultiGetRequest, _Mapping]] = ..., write: _Optional[_Union[WriteBatch, _Mapping]] = ..., list_get: _Optional[_Union[ListGetRequest, _Mapping]] = ..., map_get: _Optional[_Union[MapGetRequest, _Mapping]] = ..., map_contains: _Optional[_Union[MapContainsRequest, _Mapping]] = ..., map_iter: _Optional[_Union[MapIterRequest, _Mapping]] = ..., operator_state_get: _Optional[_Union[OperatorStateGetRequest, _Mapping]] = ..., ping: _Optional[_Union[PingRequest, _Mapping]] = ..., timers_due: _Optional[_Union[TimersDueRequest, _Mapping]] = ..., timer_status: _Optional[_Union[TimerStatusRequest, _Mapping]] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeclareRequest(_message.Message):
    __slots__ = ("states", "operator_states")
    STATES_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedCompositeFieldContainer[StateDecl]
    operator_states: _containers.RepeatedCompositeFieldContainer[OperatorStateDecl]
    def __init__(self, states: _Optional[_Iterable[_Union[StateDecl, _Mapping]]] = ..., operator_states: _Optional[_Iterable[_Union[OperatorStateDecl, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("state", "key")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class MultiGetRequest(_message.Message):
    __slots__ = ("state", "keys")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    state: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, state: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ListGetRequest(_message.Message):
    __slots__ = ("state", "key", "offset", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    offset: int
    limit: int
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ..., offset: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class MapGetRequest(_message.Message):
    __slots__ = ("state", "key", "map_key")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MAP_KEY_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    map_key: bytes
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ..., map_key: _Optional[bytes] = ...) -> None: ...

class MapContainsRequest(_message.Message):
    __slots__ = ("state", "key", "map_key")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MAP_KEY_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    map_key: bytes
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ..., map_key: _Optional[bytes] = ...) -> None: ...

class MapIterRequest(_message.Message):
    __slots__ = ("state", "key", "after", "start_inclusive", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    START_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    after: bytes
    start_inclusive: bool
    limit: int
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ..., after: _Optional[bytes] = ..., start_inclusive: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class OperatorStateGetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TimersDueRequest(_message.Message):
    __slots__ = ("domain", "limit")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    domain: TimeDomain
    limit: int
    def __init__(self, domain: _Optional[_Union[TimeDomain, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class TimerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WriteBatch(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[WriteOp]
    def __init__(self, ops: _Optional[_Iterable[_Union[WriteOp, _Mapping]]] = ...) -> None: ...

class WriteOp(_message.Message):
    __slots__ = ("value_put", "value_clear", "list_append", "list_set", "list_clear", "map_put", "map_remove", "map_clear", "operator_state_set", "timer_register", "timer_delete", "watermark_advance")
    VALUE_PUT_FIELD_NUMBER: _ClassVar[int]
    VALUE_CLEAR_FIELD_NUMBER: _ClassVar[int]
    LIST_APPEND_FIELD_NUMBER: _ClassVar[int]
    LIST_SET_FIELD_NUMBER: _ClassVar[int]
    LIST_CLEAR_FIELD_NUMBER: _ClassVar[int]
    MAP_PUT_FIELD_NUMBER: _ClassVar[int]
    MAP_REMOVE_FIELD_NUMBER: _ClassVar[int]
    MAP_CLEAR_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_STATE_SET_FIELD_NUMBER: _ClassVar[int]
    TIMER_REGISTER_FIELD_NUMBER: _ClassVar[int]
    TIMER_DELETE_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_ADVANCE_FIELD_NUMBER: _ClassVar[int]
    value_put: ValuePut
    value_clear: ValueClear
    list_append: ListAppend
    list_set: ListSet
    list_clear: ListClear
    map_put: MapPut
    map_remove: MapRemove
    map_clear: MapClear
    operator_state_set: OperatorStateSet
    timer_register: TimerRegister
    timer_delete: TimerDelete
    watermark_advance: WatermarkAdvance
    def __init__(self, value_put: _Optional[_Union[ValuePut, _Mapping]] = ..., value_clear: _Optional[_Union[ValueClear, _Mapping]] = ..., list_append: _Optional[_Union[ListAppend, _Mapping]] = ..., list_set: _Optional[_Union[ListSet, _Mapping]] = ..., list_clear: _Optional[_Union[ListClear, _Mapping]] = ..., map_put: _Optional[_Union[MapPut, _Mapping]] = ..., map_remove: _Optional[_Union[MapRemove, _Mapping]] = ..., map_clear: _Optional[_Union[MapClear, _Mapping]] = ..., operator_state_set: _Optional[_Union[OperatorStateSet, _Mapping]] = ..., timer_register: _Optional[_Union[TimerRegister, _Mapping]] = ..., timer_delete: _Optional[_Union[TimerDelete, _Mapping]] = ..., watermark_advance: _Optional[_Union[WatermarkAdvance, _Mapping]] = ...) -> None: ...

class ValuePut(_message.Message):
    __slots__ = ("state", "key", "value")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    value: bytes
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class ValueClear(_message.Message):
    __slots__ = ("state", "key")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class ListAppend(_message.Message):
    __slots__ = ("state", "key", "values")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ListSet(_message.Message):
    __slots__ = ("state", "key", "values")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ListClear(_message.Message):
    __slots__ = ("state", "key")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class MapPut(_message.Message):
    __slots__ = ("state", "key", "map_key", "value")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MAP_KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    map_key: bytes
    value: bytes
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ..., map_key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class MapRemove(_message.Message):
    __slots__ = ("state", "key", "map_key")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MAP_KEY_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    map_key: bytes
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ..., map_key: _Optional[bytes] = ...) -> None: ...

class MapClear(_message.Message):
    __slots__ = ("state", "key")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    state: str
    key: bytes
    def __init__(self, state: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class OperatorStateSet(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class TimerRegister(_message.Message):
    __slots__ = ("domain", "key", "name", "time")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    domain: TimeDomain
    key: bytes
    name: bytes
    time: int
    def __init__(self, domain: _Optional[_Union[TimeDomain, str]] = ..., key: _Optional[bytes] = ..., name: _Optional[bytes] = ..., time: _Optional[int] = ...) -> None: ...

class TimerDelete(_message.Message):
    __slots__ = ("domain", "key", "name", "time")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    domain: TimeDomain
    key: bytes
    name: bytes
    time: int
    def __init__(self, domain: _Optional[_Union[TimeDomain, str]] = ..., key: _Optional[bytes] = ..., name: _Optional[bytes] = ..., time: _Optional[int] = ...) -> None: ...

class WatermarkAdvance(_message.Message):
    __slots__ = ("watermark",)
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    watermark: int
    def __init__(self, watermark: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "key_group", "owner", "op_index")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    KEY_GROUP_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    OP_INDEX_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    key_group: int
    owner: int
    op_index: int
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., key_group: _Optional[int] = ..., owner: _Optional[int] = ..., op_index: _Optional[int] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("id", "error", "hello", "declare", "value", "multi_get", "write", "list", "contains", "map_iter", "pong", "timers_due", "timer_status")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    DECLARE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MULTI_GET_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_FIELD_NUMBER: _ClassVar[int]
    MAP_ITER_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    TIMERS_DUE_FIELD_NUMBER: _ClassVar[int]
    TIMER_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: int
    error: Error
    hello: HelloResponse
    declare: DeclareResponse
    value: OptionalValue
    multi_get: MultiGetResponse
    write: WriteResponse
    list: ListValue
    contains: BoolValue
    map_iter: MapIterResponse
    pong: PongResponse
    timers_due: TimersDueResponse
    timer_status: TimerStatusResponse
    def __init__(self, id: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., hello: _Optional[_Union[HelloResponse, _Mapping]] = ..., declare: _Optional[_Union[DeclareResponse, _Mapping]] = ..., value: _Optional[_Union[OptionalValue, _Mapping]] = ..., multi_get: _Optional[_Union[MultiGetResponse, _Mapping]] = ..., write: _Optional[_Union[WriteResponse, _Mapping]] = ..., list: _Optional[_Union[ListValue, _Mapping]] = ..., contains: _Optional[_Union[BoolValue, _Mapping]] = ..., map_iter: _Optional[_Union[MapIterResponse, _Mapping]] = ..., pong: _Optional[_Union[PongResponse, _Mapping]] = ..., timers_due: _Optional[_Union[TimersDueResponse, _Mapping]] = ..., timer_status: _Optional[_Union[TimerStatusResponse, _Mapping]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_frame_bytes", "max_key_bytes", "max_value_bytes", "max_batch_ops", "max_page_entries", "default_page_entries", "max_list_bytes", "max_page_bytes")
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_OPS_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PAGE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_LIST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_frame_bytes: int
    max_key_bytes: int
    max_value_bytes: int
    max_batch_ops: int
    max_page_entries: int
    default_page_entries: int
    max_list_bytes: int
    max_page_bytes: int
    def __init__(self, max_frame_bytes: _Optional[int] = ..., max_key_bytes: _Optional[int] = ..., max_value_bytes: _Optional[int] = ..., max_batch_ops: _Optional[int] = ..., max_page_entries: _Optional[int] = ..., default_page_entries: _Optional[int] = ..., max_list_bytes: _Optional[int] = ..., max_page_bytes: _Optional[int] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("replica_index", "parallelism", "max_parallelism", "key_group_start", "key_group_end", "states", "operator_states", "limits", "key_group_hash", "server_version")
    REPLICA_INDEX_FIELD_NUMBER: _ClassVar[int]
    PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    KEY_GROUP_START_FIELD_NUMBER: _ClassVar[int]
    KEY_GROUP_END_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_STATES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    KEY_GROUP_HASH_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    replica_index: int
    parallelism: int
    max_parallelism: int
    key_group_start: int
    key_group_end: int
    states: _containers.RepeatedCompositeFieldContainer[StateDecl]
    operator_states: _containers.RepeatedCompositeFieldContainer[OperatorStateDecl]
    limits: Limits
    key_group_hash: str
    server_version: str
    def __init__(self, replica_index: _Optional[int] = ..., parallelism: _Optional[int] = ..., max_parallelism: _Optional[int] = ..., key_group_start: _Optional[int] = ..., key_group_end: _Optional[int] = ..., states: _Optional[_Iterable[_Union[StateDecl, _Mapping]]] = ..., operator_states: _Optional[_Iterable[_Union[OperatorStateDecl, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., key_group_hash: _Optional[str] = ..., server_version: _Optional[str] = ...) -> None: ...

class DeclareResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OptionalValue(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    def __init__(self, value: _Optional[bytes] = ...) -> None: ...

class MultiGetResponse(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[OptionalValue]
    def __init__(self, values: _Optional[_Iterable[_Union[OptionalValue, _Mapping]]] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: int
    def __init__(self, applied: _Optional[int] = ...) -> None: ...

class ListValue(_message.Message):
    __slots__ = ("values", "has_more", "next_offset")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    has_more: bool
    next_offset: int
    def __init__(self, values: _Optional[_Iterable[bytes]] = ..., has_more: _Optional[bool] = ..., next_offset: _Optional[int] = ...) -> None: ...

class BoolValue(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bool
    def __init__(self, value: _Optional[bool] = ...) -> None: ...

class MapEntry(_message.Message):
    __slots__ = ("map_key", "value")
    MAP_KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    map_key: bytes
    value: bytes
    def __init__(self, map_key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class MapIterResponse(_message.Message):
    __slots__ = ("entries", "has_more", "next_after")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[MapEntry]
    has_more: bool
    next_after: bytes
    def __init__(self, entries: _Optional[_Iterable[_Union[MapEntry, _Mapping]]] = ..., has_more: _Optional[bool] = ..., next_after: _Optional[bytes] = ...) -> None: ...

class PongResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TimersDueResponse(_message.Message):
    __slots__ = ("timers", "has_more", "up_to", "next_time")
    TIMERS_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    UP_TO_FIELD_NUMBER: _ClassVar[int]
    NEXT_TIME_FIELD_NUMBER: _ClassVar[int]
    timers: _containers.RepeatedCompositeFieldContainer[Timer]
    has_more: bool
    up_to: int
    next_time: int
    def __init__(self, timers: _Optional[_Iterable[_Union[Timer, _Mapping]]] = ..., has_more: _Optional[bool] = ..., up_to: _Optional[int] = ..., next_time: _Optional[int] = ...) -> None: ...

class TimerStatusResponse(_message.Message):
    __slots__ = ("watermark", "next_event_time", "next_processing_time", "now_ms")
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    NEXT_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_PROCESSING_TIME_FIELD_NUMBER: _ClassVar[int]
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    watermark: int
    next_event_time: int
    next_processing_time: int
    now_ms: int
    def __init__(self, watermark: _Optional[int] = ..., next_event_time: _Optional[int] = ..., next_processing_time: _Optional[int] = ..., now_ms: _Optional[int] = ...) -> None: ...
