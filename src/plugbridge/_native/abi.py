"""ctypes declarations of the rustbridge C ABI (see include/plugbridge_abi.h)."""

from __future__ import annotations

import ctypes
import dataclasses
from ctypes import c_bool, c_char_p, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass
from typing import Any

from .._errors import InitializationFailed


class FfiBuffer(ctypes.Structure):
    """A response buffer owned by the plugin until ``plugin_free_buffer``."""

    _fields_ = (
        ("data", c_void_p),
        ("len", c_size_t),
        ("capacity", c_size_t),
        ("error_code", c_uint32),
    )


class RbResponse(ctypes.Structure):
    """A binary-transport response owned by the plugin until ``rb_response_free``.

    Natural C alignment (24 bytes on LP64: three ``uint32_t``, 4 bytes of padding, the
    pointer), as rustbridge's ``#[repr(C)]`` struct has it. ``len`` is a ``uint32_t``. On
    error ``data`` holds a NUL-terminated message, and ``len`` counts the NUL.
    """

    _fields_ = (
        ("error_code", c_uint32),
        ("len", c_uint32),
        ("capacity", c_uint32),
        ("data", c_void_p),
    )


LOG_CALLBACK = ctypes.CFUNCTYPE(None, c_uint8, c_char_p, c_void_p, c_size_t)
"""``void (*)(uint8_t level, const char *target, const uint8_t *msg, size_t msg_len)``."""

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "plugin_create": (c_void_p, []),
    "plugin_init": (c_void_p, [c_void_p, c_char_p, c_size_t, LOG_CALLBACK]),
    "plugin_call": (FfiBuffer, [c_void_p, c_char_p, c_char_p, c_size_t]),
    "plugin_free_buffer": (None, [ctypes.POINTER(FfiBuffer)]),
    "plugin_shutdown": (c_bool, [c_void_p]),
    "plugin_set_log_level": (None, [c_void_p, c_uint8]),
    "plugin_get_state": (c_uint8, [c_void_p]),
    "plugin_get_rejected_count": (c_uint64, [c_void_p]),
}

_OPTIONAL: dict[str, tuple[Any, list[Any]]] = {
    "plugin_create_with_config": (c_void_p, [c_char_p, c_size_t]),
    "plugin_call_raw": (RbResponse, [c_void_p, c_uint32, c_char_p, c_size_t]),
    "rb_response_free": (None, [ctypes.POINTER(RbResponse)]),
}
"""The rest of what rustbridge libraries export, used when present: the binary transport
(only as a pair: a response nobody can free is never asked for) and creation from the
config JSON."""

UNKNOWN_HANDLE_STATE = 255


@dataclass(frozen=True, slots=True)
class Abi:
    """The ABI functions of one loaded library (ctypes releases the GIL around each)."""

    create: Any
    init: Any
    call: Any
    free_buffer: Any
    shutdown: Any
    set_log_level: Any
    get_state: Any
    get_rejected_count: Any
    create_with_config: Any = None
    """``plugin_create_with_config``, or None if the library does not export it."""
    call_raw: Any = None
    """``plugin_call_raw``, or None: the library has no binary transport."""
    free_response: Any = None
    """``rb_response_free`` (present exactly when ``call_raw`` is)."""


def bind(library: ctypes.CDLL, label: str) -> Abi:
    """Declare every ABI function of ``library``; ``InitializationFailed`` if one of the
    eight required ones is missing (the optional ones are None when absent)."""
    functions: list[Any] = []
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = _declared(library, name, restype, argtypes)
        if function is None:
            raise InitializationFailed(
                f"{label} is not a rustbridge plugin: it does not export {name}"
            )
        functions.append(function)
    optional = {
        name: _declared(library, name, restype, argtypes)
        for name, (restype, argtypes) in _OPTIONAL.items()
    }
    call_raw, free_response = optional["plugin_call_raw"], optional["rb_response_free"]
    if call_raw is None or free_response is None:
        call_raw = free_response = None
    return dataclasses.replace(
        Abi(*functions),
        create_with_config=optional["plugin_create_with_config"],
        call_raw=call_raw,
        free_response=free_response,
    )


def _declared(library: ctypes.CDLL, name: str, restype: Any, argtypes: list[Any]) -> Any:
    """``library``'s function ``name`` with its C signature declared, or None if absent."""
    try:
        function = getattr(library, name)
    except AttributeError:
        return None
    function.restype = restype
    function.argtypes = argtypes
    return function
