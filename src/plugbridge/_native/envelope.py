"""Response buffers: copy out and free exactly once, then decode the envelope.

Binary-transport responses (``RbResponse``) are copied and freed the same way; they carry
no envelope: the bytes are the answer, or, with a non-zero code, a NUL-terminated message.

``plugin_call`` answers ``{"status":"success","payload":<json>}`` with error code 0, or a
non-zero error code with ``{"status":"error","error_code":N,"error_message":"..."}`` or a
bare message. Anything else breaks the ABI and is an ``FfiError`` — except a success whose
payload JSON cannot carry (invalid UTF-8 in a string, nesting deeper than the decoder
goes): that is the ``SerializationError`` every transport gives for such a value. Error
messages are read whatever their bytes (invalid UTF-8 is replaced): the error is what
matters, and it must not turn into another one.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from .._errors import FfiError, PluginError, error_for_code, not_carried_as_json
from .abi import FfiBuffer, RbResponse


class _Envelope(msgspec.Struct):
    status: str
    payload: Any = None
    error_code: int = 0
    error_message: str = ""


class _RawEnvelope(msgspec.Struct):
    status: str
    payload: msgspec.Raw = msgspec.Raw(b"null")
    error_code: int = 0
    error_message: str = ""


_Parsed = TypeVar("_Parsed", _Envelope, _RawEnvelope)

_decode_value = msgspec.json.Decoder(_Envelope).decode
_decode_raw = msgspec.json.Decoder(_RawEnvelope).decode
_string_at = ctypes.string_at


def take(buffer: FfiBuffer, free: Any) -> tuple[int, bytes]:
    """Copy the buffer's bytes and hand it back to the plugin; ``(error_code, data)``.

    ``free`` is ``plugin_free_buffer``, declared with a pointer argument: ctypes passes the
    buffer by reference itself, so freeing is one builtin call.
    """
    try:
        data = _string_at(buffer.data, buffer.len) if buffer.data else b""
        return buffer.error_code, data
    finally:
        free(buffer)


def take_raw(response: RbResponse, free: Any) -> tuple[int, bytes]:
    """``take`` for a binary-transport response (``free`` is ``rb_response_free``)."""
    try:
        data = _string_at(response.data, response.len) if response.data else b""
        return response.error_code, data
    finally:
        free(response)


def raw_error(code: int, data: bytes) -> PluginError:
    """The exception for a binary-transport response with a non-zero error code. Its data
    is a NUL-terminated message: the text ends at the first NUL (which ``len`` counts)."""
    text = data.partition(b"\0")[0].decode("utf-8", "replace").strip()
    return error_for_code(code, text or f"native raw call failed (code {code})")


def decode_value(code: int, data: bytes) -> Any:
    """The payload as JSON builtins, or raise the error the response carries."""
    return _success(code, data, _decode_value).payload


def decode_json(code: int, data: bytes) -> bytes:
    """The payload as raw JSON bytes, or raise the error the response carries."""
    return bytes(_success(code, data, _decode_raw).payload)


def _success(code: int, data: bytes, decode: Callable[[bytes], _Parsed]) -> _Parsed:
    """The envelope of a successful response; raise the error any other response carries."""
    if code != 0:
        raise error_from_response(code, data)
    try:
        envelope = decode(data)
    except msgspec.DecodeError as exc:
        raise _broken(data, exc) from None
    except (UnicodeDecodeError, RecursionError) as exc:  # a payload JSON cannot carry
        raise not_carried_as_json("the native plugin's response", exc) from None
    if envelope.status != "success":
        raise _error_from(envelope.status, envelope.error_code, envelope.error_message, data)
    return envelope


def error_from_response(code: int, data: bytes) -> PluginError:
    """The exception for a response with a non-zero error code (envelope or bare message)."""
    text = data.decode("utf-8", "replace")  # a broken message must not become another error
    message = ""
    if text.startswith("{"):
        try:
            message = _decode_value(text).error_message
        except (msgspec.DecodeError, RecursionError):
            message = ""
    if not message:
        message = text.strip() or f"native call failed (code {code})"
    return error_for_code(code, message)


def _error_from(status: str, code: int, message: str, data: bytes) -> PluginError:
    if status == "error" and code:
        return error_for_code(code, message or f"native call failed (code {code})")
    return FfiError(
        f"native plugin answered error code 0 with a non-success envelope: {data[:200]!r}"
    )


def _broken(data: bytes, exc: Exception) -> FfiError:
    return FfiError(f"native plugin returned an invalid response envelope ({exc}): {data[:200]!r}")
