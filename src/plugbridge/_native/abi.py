"""ctypes declarations of the rustbridge C ABI (see include/plugbridge_abi.h)."""

from __future__ import annotations

import ctypes
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


def bind(library: ctypes.CDLL, label: str) -> Abi:
    """Declare every ABI function of ``library``; ``InitializationFailed`` if one is missing."""
    functions: list[Any] = []
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            function = getattr(library, name)
        except AttributeError:
            raise InitializationFailed(
                f"{label} is not a rustbridge plugin: it does not export {name}"
            ) from None
        function.restype = restype
        function.argtypes = argtypes
        functions.append(function)
    return Abi(*functions)
