"""The error model: one stable code per failure, one exception class per code."""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ErrorCode(IntEnum):
    """Stable numeric codes shared by every transport (and the native C ABI)."""

    INVALID_STATE = 1
    INITIALIZATION_FAILED = 2
    SHUTDOWN_FAILED = 3
    CONFIG_ERROR = 4
    SERIALIZATION_ERROR = 5
    UNKNOWN_MESSAGE_TYPE = 6
    HANDLER_ERROR = 7
    PLUGIN_RUNTIME_ERROR = 8
    CANCELLED = 9
    TIMEOUT = 10
    INTERNAL_ERROR = 11
    FFI_ERROR = 12
    TOO_MANY_REQUESTS = 13
    PLUGIN_CRASHED = 14


class PluginError(Exception):
    """Base of every failure plugbridge reports; ``code`` says which kind it is."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"[{int(self.code)} {self.code.name}] {self.message}"

    def __reduce__(self) -> tuple[type[PluginError], tuple[str]]:
        return (type(self), (self.message,))


class InvalidState(PluginError):
    code = ErrorCode.INVALID_STATE


class InitializationFailed(PluginError):
    code = ErrorCode.INITIALIZATION_FAILED


class BundleError(InitializationFailed):
    """Anything wrong with a rustbridge ``.rbp`` bundle (its message names the problem)."""


class ShutdownFailed(PluginError):
    code = ErrorCode.SHUTDOWN_FAILED


class ConfigError(PluginError):
    code = ErrorCode.CONFIG_ERROR


class SerializationError(PluginError):
    code = ErrorCode.SERIALIZATION_ERROR


class UnknownMessageType(PluginError):
    code = ErrorCode.UNKNOWN_MESSAGE_TYPE


class HandlerError(PluginError):
    code = ErrorCode.HANDLER_ERROR


class PluginRuntimeError(PluginError):
    code = ErrorCode.PLUGIN_RUNTIME_ERROR


class Cancelled(PluginError):
    code = ErrorCode.CANCELLED


class Timeout(PluginError):
    code = ErrorCode.TIMEOUT


class InternalError(PluginError):
    code = ErrorCode.INTERNAL_ERROR


class FfiError(PluginError):
    code = ErrorCode.FFI_ERROR


class TooManyRequests(PluginError):
    code = ErrorCode.TOO_MANY_REQUESTS


class PluginCrashed(PluginError):
    code = ErrorCode.PLUGIN_CRASHED


_BY_CODE: dict[int, type[PluginError]] = {
    cls.code: cls
    for cls in (
        InvalidState,
        InitializationFailed,
        ShutdownFailed,
        ConfigError,
        SerializationError,
        UnknownMessageType,
        HandlerError,
        PluginRuntimeError,
        Cancelled,
        Timeout,
        InternalError,
        FfiError,
        TooManyRequests,
        PluginCrashed,
    )
}


def error_for_code(code: int, message: str) -> PluginError:
    """Build the exception for a wire/ABI error code; unknown codes become InternalError."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return InternalError(f"unknown error code {code}: {message}")
    return cls(message)


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: bad thing"`` — the form HandlerError messages use."""
    text = str(exc)
    name = type(exc).__qualname__
    return f"{name}: {text}" if text else name


def seconds(value: float | None) -> str:
    """A duration as people write it: ``2s``, ``0.25s`` (never ``1.9999838759999875s``)."""
    if value is None:
        return "no limit"
    return f"{value:.4g}s" if value < 1000 else f"{value:,.0f}s"


def call_timed_out(type_tag: str, timeout: float | None) -> Timeout:
    """The one ``Timeout`` every transport raises for a call that ran out of time."""
    return Timeout(f"call {type_tag!r} exceeded its timeout of {seconds(timeout)}")


def not_carried_as_json(what: str, exc: BaseException) -> SerializationError:
    """The one ``SerializationError`` for a value JSON cannot carry, whatever the path: text
    with a lone surrogate or invalid UTF-8, an integer too long to write, nesting deeper than
    the recursion limit (``what``: ``"request for 'echo'"``, ``"response of 'echo'"``)."""
    if isinstance(exc, RecursionError):
        return SerializationError(f"{what} is nested too deeply to be carried as JSON")
    return SerializationError(f"{what} cannot be carried as JSON: {describe_exception(exc)}")


def not_active(plugin: str, state: str) -> InvalidState:
    """The one ``InvalidState`` for a call reaching an instance that is not ACTIVE
    (``plugin``: its name; ``state``: the name of the state it is in)."""
    return InvalidState(f"plugin {plugin!r} is {state}; calls need ACTIVE")


SHOWN_TAG_LENGTH = 100
"""Characters of a type tag an error message shows (the rest is elided, as C plugins do)."""


def no_handler(plugin: str, type_tag: object) -> UnknownMessageType:
    """The one ``UnknownMessageType`` for a type tag no handler of ``plugin`` answers to: a
    str no handler is named by (lone surrogates and NULs included), or no str at all."""
    if not isinstance(type_tag, str):
        return UnknownMessageType(f"type_tag must be a str, not {type(type_tag).__name__}")
    shown = repr(str.__getitem__(type_tag, slice(SHOWN_TAG_LENGTH)))  # str's own, whatever
    if str.__len__(type_tag) > SHOWN_TAG_LENGTH:
        shown += "..."
    return UnknownMessageType(f"plugin {plugin!r} has no handler for {shown}")


def cancelled_by_shutdown() -> Cancelled:
    """The one ``Cancelled`` for a call its instance's shutdown gave up on (while it ran,
    or before its answer could be used)."""
    return Cancelled("call cancelled: the plugin is shutting down")


def start_limit(deadline: float | None, began: float, start_timeout: float) -> str:
    """The limit a start deadline stood for, as messages name it: ``start_timeout``, or a
    reload's shorter timeout when that was the binding one (``deadline`` is the handle's:
    ``now + min(start_timeout, timeout)``, taken a moment before ``began``)."""
    if deadline is None:
        return seconds(None)
    budget = deadline - began
    return seconds(start_timeout if budget >= start_timeout - 0.05 else round(budget, 3))


MAX_MESSAGE_ID = 0xFFFF_FFFF
"""Binary-transport message ids are ``uint32_t`` in the C ABI."""


def raw_call_timed_out(message_id: int, timeout: float | None) -> Timeout:
    """The one ``Timeout`` every transport raises for a ``call_raw`` that ran out of time."""
    return Timeout(f"raw call {message_id} exceeded its timeout of {seconds(timeout)}")


def no_raw_handler(plugin: str, message_id: object) -> UnknownMessageType:
    """The one ``UnknownMessageType`` for a binary-transport message id no raw handler of
    ``plugin`` answers to (or that is no ``uint32`` at all)."""
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        return UnknownMessageType(f"message_id must be an int, not {type(message_id).__name__}")
    if not 0 <= message_id <= MAX_MESSAGE_ID:
        return UnknownMessageType(
            f"message_id must be from 0 to {MAX_MESSAGE_ID} (uint32), not {message_id}"
        )
    return UnknownMessageType(f"plugin {plugin!r} has no raw handler for message {message_id}")


def no_binary_transport(plugin: str) -> UnknownMessageType:
    """The ``UnknownMessageType`` of ``call_raw`` on a native library that does not export
    the binary transport (``plugin_call_raw`` and ``rb_response_free``)."""
    return UnknownMessageType(
        f"plugin {plugin!r} has no binary transport (its library does not export "
        "plugin_call_raw and rb_response_free)"
    )
