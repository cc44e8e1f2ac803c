"""What the facade knows of the C ABI itself: rustbridge's public ``FfiBuffer`` structure,
and whether a library image exports the binary transport.

``FfiBuffer`` mirrors plugbridge's own declaration (``_native.abi.FfiBuffer``: the same
layout, checked by the tests) but keeps rustbridge's field types (``data`` is a
``POINTER(c_uint8)``, indexable) and helper methods, for code that builds or reads buffers
itself. The facade's calls never use it: plugbridge's native transport copies and frees
response buffers.

``has_binary_transport`` must be known without calling the plugin and in every isolation
mode (in a worker process the library is not mapped in this one), so it is read from the
library's ELF dynamic symbol table, without loading it.
"""

from __future__ import annotations

import ctypes
import struct
from ctypes import POINTER, c_size_t, c_uint8, c_uint32

BINARY_TRANSPORT = (b"plugin_call_raw", b"rb_response_free")
"""The exports rustbridge's host needs for the binary transport: both, or it has none."""


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


_SHT_DYNSYM = 11
_SHN_UNDEF = 0


def exports_binary_transport(image: bytes) -> bool | None:
    """Whether the ELF shared library ``image`` defines both binary-transport exports;
    None when that cannot be read from it (not ELF: Mach-O, PE; no section headers)."""
    names = _defined_dynamic_symbols(image)
    if names is None:
        return None
    return all(name in names for name in BINARY_TRANSPORT)


def _defined_dynamic_symbols(image: bytes) -> set[bytes] | None:
    """The names of the symbols ``image``'s ``.dynsym`` defines; None if it has none to read."""
    if image[:4] != b"\x7fELF" or len(image) < 64:
        return None
    wide, order = image[4] == 2, "<" if image[5] == 1 else ">"
    try:
        if wide:
            shoff, shentsize, shnum = _unpack(order + "40xQ10xHH", image, 0)
            section, symbol = order + "4xI16xQQI12xQ", order + "I2xH16x"
        else:
            shoff, shentsize, shnum = _unpack(order + "32xI10xHH", image, 0)
            section, symbol = order + "4xI8xIII8xI", order + "I10xH"
        for index in range(shnum):
            fields = _unpack(section, image, shoff + index * shentsize)
            if fields[0] != _SHT_DYNSYM:
                continue
            offset, size, link, entsize = fields[1:]
            strings = _unpack(section, image, shoff + link * shentsize)
            strtab = image[strings[1] : strings[1] + strings[2]]
            names: set[bytes] = set()
            for at in range(offset, offset + size - entsize + 1, max(entsize, 1)):
                name, shndx = _unpack(symbol, image, at)
                if shndx != _SHN_UNDEF:
                    names.add(strtab[name : strtab.index(b"\0", name)])
            return names
    except (struct.error, ValueError):  # truncated or inconsistent: unknown
        return None
    return None


def _unpack(layout: str, image: bytes, offset: int) -> tuple[int, ...]:
    return struct.unpack_from(layout, image, offset)
