"""Errors: one class per protocol error code, all under ``StatorError``.

Catch a subclass (``WrongKeyGroupError``) or ``StatorError`` and test ``.code``. ``transient``
says whether the same request may succeed later without any change on the caller's side.
"""

from __future__ import annotations

import enum

__all__ = [
    "ErrorCode",
    "StatorError",
    "MalformedError",
    "TooLargeError",
    "WrongKeyGroupError",
    "UnknownStateError",
    "WrongKindError",
    "StateConflictError",
    "SuspendedError",
    "InvalidArgumentError",
    "InternalError",
    "UnavailableError",
    "ConnectionFailed",
    "ProtocolError",
]


class ErrorCode(enum.IntEnum):
    """The protocol's error codes (``stator.v1.ErrorCode``)."""

    ERROR_CODE_UNSPECIFIED = 0
    MALFORMED = 1
    TOO_LARGE = 2
    WRONG_KEY_GROUP = 3
    UNKNOWN_STATE = 4
    WRONG_KIND = 5
    STATE_CONFLICT = 6
    SUSPENDED = 7
    INVALID_ARGUMENT = 8
    INTERNAL = 9
    UNAVAILABLE = 10


class StatorError(Exception):
    """An error from the sidecar, or from talking to it.

    ``op_index`` is set for errors caused by one op of a write batch.
    """

    code: ErrorCode = ErrorCode.ERROR_CODE_UNSPECIFIED
    transient: bool = False

    def __init__(self, message: str, *, op_index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.op_index = op_index

    def __str__(self) -> str:
        where = f" (batch op {self.op_index})" if self.op_index is not None else ""
        return f"{self.code.name}: {self.message}{where}"


class MalformedError(StatorError):
    """A frame or message could not be decoded; the connection is closed."""

    code = ErrorCode.MALFORMED


class TooLargeError(StatorError):
    """A key, value, frame or batch exceeds the sidecar's limits (see ``Client.info.limits``)."""

    code = ErrorCode.TOO_LARGE


class WrongKeyGroupError(StatorError):
    """The key belongs to another replica: send it to replica ``owner``."""

    code = ErrorCode.WRONG_KEY_GROUP

    def __init__(
        self, message: str, *, owner: int, key_group: int, op_index: int | None = None
    ) -> None:
        super().__init__(message, op_index=op_index)
        self.owner = owner
        self.key_group = key_group


class UnknownStateError(StatorError):
    """No state of that name is declared."""

    code = ErrorCode.UNKNOWN_STATE


class WrongKindError(StatorError):
    """The state exists with another kind than the operation needs."""

    code = ErrorCode.WRONG_KIND


class StateConflictError(StatorError):
    """A declaration conflicts with an existing one (for example another kind)."""

    code = ErrorCode.STATE_CONFLICT


class SuspendedError(StatorError):
    """Writes are fenced for a stop-with-savepoint; the replica is about to shut down."""

    code = ErrorCode.SUSPENDED
    transient = True


class InvalidArgumentError(StatorError):
    """A required field is missing or has an invalid value."""

    code = ErrorCode.INVALID_ARGUMENT


class InternalError(StatorError):
    """The sidecar's store failed; the request had no effect."""

    code = ErrorCode.INTERNAL
    transient = True


class UnavailableError(StatorError):
    """The sidecar is shutting down, or cannot be reached."""

    code = ErrorCode.UNAVAILABLE
    transient = True


class ConnectionFailed(UnavailableError):
    """The client could not connect, or the connection broke. Make a new ``Client``."""


class ProtocolError(MalformedError):
    """The sidecar sent something this client cannot use; the connection is closed."""


_BY_CODE: dict[int, type[StatorError]] = {
    cls.code: cls
    for cls in (
        MalformedError,
        TooLargeError,
        WrongKeyGroupError,
        UnknownStateError,
        WrongKindError,
        StateConflictError,
        SuspendedError,
        InvalidArgumentError,
        InternalError,
        UnavailableError,
    )
}


def from_wire(
    code: int, message: str, *, owner: int, key_group: int, op_index: int | None
) -> StatorError:
    """The exception for an ``Error`` the sidecar sent."""
    cls = _BY_CODE.get(code)
    if cls is WrongKeyGroupError:
        return WrongKeyGroupError(message, owner=owner, key_group=key_group, op_index=op_index)
    if cls is None:
        # A code newer than this client: still an error, with the number kept in the message.
        return StatorError(f"{message} (unknown error code {code})", op_index=op_index)
    return cls(message, op_index=op_index)
