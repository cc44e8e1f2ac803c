"""The ``bench.small`` binary layouts of rustbridge's hello plugin (implemented by the C hello
plugin, examples/hello-c): one declaration for the tests and the benchmarks."""

from __future__ import annotations

import ctypes


class SmallRequestRaw(ctypes.Structure):
    """rustbridge's hello-plugin request (``#[repr(C)]``, natural alignment: 76 bytes)."""

    _fields_ = (
        ("version", ctypes.c_uint8),
        ("_reserved", ctypes.c_uint8 * 3),
        ("key", ctypes.c_uint8 * 64),
        ("key_len", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    )

    @classmethod
    def create(cls, key: bytes, flags: int, version: int = 1) -> SmallRequestRaw:
        request = cls(version=version, key_len=len(key), flags=flags)
        ctypes.memmove(request.key, key, len(key))
        return request


class SmallResponseRaw(ctypes.Structure):
    """rustbridge's hello-plugin response (80 bytes)."""

    _fields_ = (
        ("version", ctypes.c_uint8),
        ("_reserved", ctypes.c_uint8 * 3),
        ("value", ctypes.c_uint8 * 64),
        ("value_len", ctypes.c_uint32),
        ("ttl_seconds", ctypes.c_uint32),
        ("cache_hit", ctypes.c_uint8),
        ("_padding", ctypes.c_uint8 * 3),
    )

    def text(self) -> bytes:
        return bytes(self.value[: self.value_len])
