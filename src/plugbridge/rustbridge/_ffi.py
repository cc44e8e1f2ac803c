"""rustbridge's public ``FfiBuffer`` structure.

``FfiBuffer`` mirrors plugbridge's own declaration (``_native.abi.FfiBuffer``: the same
layout, checked by the tests) but keeps rustbridge's field types (``data`` is a
``POINTER(c_uint8)``, indexable) and helper methods, for code that builds or reads buffers
itself. The facade's calls never use it: plugbridge's native transport copies and frees
response buffers.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_size_t, c_uint8, c_uint32


class FfiBuffer(ctypes.Structure):
    """A ``plugin_call`` response: the plugin allocates it, the host copies the bytes out and
    hands it back with ``plugin_free_buffer``. ``error_code`` 0 is success."""

    _fields_ = (
        ("data", POINTER(c_uint8)),
        ("len", c_size_t),
        ("capacity", c_size_t),
        ("error_code", c_uint32),
    )

    def is_error(self) -> bool:
        return bool(self.error_code != 0)

    def is_empty(self) -> bool:
        """No data: a NULL pointer or a zero length."""
        return not self.data or self.len == 0

    def get_bytes(self) -> bytes:
        """A copy of the ``len`` bytes at ``data`` (``b""`` when empty)."""
        if self.is_empty():
            return b""
        return ctypes.string_at(self.data, self.len)

    def get_string(self, encoding: str = "utf-8") -> str:
        return self.get_bytes().decode(encoding)
