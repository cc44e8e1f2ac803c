"""Reading a bundle's zip archive without trusting it.

A bundle comes from someone else, so its zip is judged before any entry is read: every
entry name must be a plain relative path (no ``..``, no absolute or drive path, no
backslash or control character, no duplicate, no symbolic link), and every entry's
declared size must be within ``MAX_ENTRY_BYTES`` and within ``MAX_EXPANSION`` times its
compressed size (a zip bomb declares a huge size for a few bytes). Reading an entry then
counts the bytes it really yields and stops at its declared size or the caller's limit,
whichever is smaller: a lying header can neither make us read more nor go unnoticed (a
short or corrupt entry fails its CRC). Nothing is ever written to disk here.

Stored and deflated entries (all rustbridge writes) are read straight from the file and
inflated with ``zlib`` in one bounded call: the local header is checked against the
directory as ``zipfile`` checks it, and the CRC-32 after. This is about twice as fast as
``zipfile``'s stream for the small entries a load reads (manifest, signatures); any other
method goes through ``zipfile``.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import zipfile
import zlib
from types import TracebackType
from typing import BinaryIO

from .._errors import BundleError

MAX_ENTRIES = 10_000
"""Entries one bundle may hold (a central directory of millions is an attack, not a plugin)."""
MAX_ENTRY_BYTES = 512 * 1024 * 1024
"""Largest uncompressed entry (a library of every platform, debug builds included, fits)."""
MAX_EXPANSION = 200
"""Largest uncompressed/compressed ratio of an entry over ``EXPANSION_FLOOR`` bytes: real
libraries compress 2-10 fold, a zip bomb hundreds or thousands of times."""
EXPANSION_FLOOR = 1024 * 1024
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version … sizes), name and extra lengths
_LOCAL_MAGIC = b"PK\x03\x04"
_UTF8_NAME = 0x800
_ENCRYPTED = 0x1
_DIRECT = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def unsafe_entry_name(name: str) -> str | None:
    """Why ``name`` is not a safe relative path inside a bundle, or None if it is."""
    if not name:
        return "it is empty"
    if _CONTROL.search(name):
        return "it holds a control character"
    if "\\" in name:
        return "it holds a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    if _DRIVE.match(name) or ":" in name:
        return "it holds a ':' (a drive or stream name)"
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if ".." in parts:
        return "it climbs out of the bundle with '..'"
    if "." in parts:
        return "it has a '.' component"
    if "" in parts:
        return "it has an empty path component"
    return None


class BundleArchive:
    """An open bundle zip whose directory has passed the checks above. Use as a context
    manager; every failure is a ``BundleError`` naming the bundle and the problem."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise BundleError(f"bundle not found: {self.path}") from None
        except IsADirectoryError:
            raise BundleError(f"bundle {self.path} is a directory, not a zip archive") from None
        except OSError as exc:
            raise BundleError(f"cannot read bundle {self.path}: {exc.strerror or exc}") from None
        try:
            self._zip = zipfile.ZipFile(self._file)
        except BaseException as exc:
            self._file.close()
            if isinstance(exc, zipfile.BadZipFile):
                raise BundleError(f"bundle {self.path} is not a zip archive ({exc})") from None
            if isinstance(exc, OSError):
                raise BundleError(
                    f"cannot read bundle {self.path}: {exc.strerror or exc}"
                ) from None
            if isinstance(exc, Exception):  # a directory zipfile cannot parse
                raise BundleError(
                    f"bundle {self.path} is not a readable zip archive ({exc})"
                ) from None
            raise
        try:
            self._entries = self._checked_entries()
        except BaseException:
            self.close()
            raise

    def _checked_entries(self) -> dict[str, zipfile.ZipInfo]:
        infos = self._zip.infolist()
        if len(infos) > MAX_ENTRIES:
            raise BundleError(
                f"bundle {self.path} holds {len(infos)} entries, more than {MAX_ENTRIES}"
            )
        entries: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.orig_filename
            unsafe = unsafe_entry_name(name)
            if unsafe is not None:
                raise BundleError(f"unsafe entry path {name!r} in bundle {self.path}: {unsafe}")
            if name in entries:
                raise BundleError(f"bundle {self.path} holds entry {name!r} twice")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise BundleError(f"entry {name!r} of bundle {self.path} is a symbolic link")
            self._check_size(info)
            entries[name] = info
        return entries

    def _check_size(self, info: zipfile.ZipInfo) -> None:
        name, size, packed = info.orig_filename, info.file_size, info.compress_size
        if size > MAX_ENTRY_BYTES:
            raise BundleError(
                f"entry {name!r} of bundle {self.path} is oversized: {size} bytes declared, "
                f"the limit is {MAX_ENTRY_BYTES}"
            )
        if size > EXPANSION_FLOOR and size > packed * MAX_EXPANSION:
            raise BundleError(
                f"entry {name!r} of bundle {self.path} would expand from {packed} to {size} "
                f"bytes, more than {MAX_EXPANSION}-fold (a zip bomb)"
            )

    # -- reading -----------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every entry's name, in archive order."""
        return list(self._entries)

    def has(self, name: str) -> bool:
        return name in self._entries

    def size(self, name: str) -> int:
        """``name``'s declared uncompressed size (``KeyError`` if it is not there)."""
        return self._entries[name].file_size

    def read(self, name: str, limit: int = MAX_ENTRY_BYTES) -> bytes:
        """The bytes of entry ``name``, at most ``limit`` of them; ``BundleError`` if it is
        missing, larger than ``limit``, or its data do not match its header."""
        info = self._entries.get(name)
        if info is None:
            raise BundleError(f"bundle {self.path} has no entry {name!r}")
        if info.is_dir():
            raise BundleError(f"entry {name!r} of bundle {self.path} is a directory")
        declared = info.file_size
        if declared > limit:
            raise BundleError(
                f"entry {name!r} of bundle {self.path} is oversized: {declared} bytes "
                f"declared, the limit for it is {limit}"
            )
        try:
            if info.compress_type in _DIRECT and not info.flag_bits & _ENCRYPTED:
                data = self._read_direct(info)
            else:
                data = self._read_through_zipfile(info)
        except BundleError:
            raise
        except Exception as exc:  # bad CRC, truncated or corrupt data, encrypted, unsupported
            raise self._unreadable(info, str(exc)) from None
        if len(data) != declared:
            raise BundleError(
                f"entry {name!r} of bundle {self.path} holds {len(data)} bytes, not the "
                f"{declared} it declares"
            )
        return data

    def _read_direct(self, info: zipfile.ZipInfo) -> bytes:
        """A stored or deflated entry, straight from the file; at most one byte more than
        its declared size is ever inflated."""
        declared, packed = info.file_size, info.compress_size
        if info.compress_type == zipfile.ZIP_STORED and packed != declared:
            raise self._unreadable(info, f"stored as {packed} bytes, but it declares {declared}")
        if packed > declared + declared // 100 + 1024:  # deflate never grows data this much
            raise self._unreadable(info, f"{packed} compressed bytes for {declared} of data")
        self._file.seek(info.header_offset)
        header = self._file.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
            raise self._unreadable(info, "no local file header where the directory says")
        _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        local_name = self._file.read(name_length)
        encoding = "utf-8" if info.flag_bits & _UTF8_NAME else "cp437"
        if local_name.decode(encoding, "replace") != info.orig_filename:
            raise self._unreadable(info, "its local header names another file")
        self._file.seek(extra_length, os.SEEK_CUR)
        raw = self._file.read(packed)
        if len(raw) != packed:
            raise self._unreadable(info, "the bundle ends inside it")
        if info.compress_type == zipfile.ZIP_STORED:
            data = raw
        else:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(raw, declared + 1)
            if len(data) > declared:
                raise BundleError(
                    f"entry {info.orig_filename!r} of bundle {self.path} holds more than the "
                    f"{declared} bytes it declares"
                )
            if not inflater.eof:
                raise self._unreadable(info, "its compressed data end early")
        if len(data) == declared and zlib.crc32(data) != info.CRC:
            raise self._unreadable(info, "its data fail their CRC-32 check")
        return data

    def _read_through_zipfile(self, info: zipfile.ZipInfo) -> bytes:
        """Any other entry, through ``zipfile``'s stream, counting what it yields."""
        declared = info.file_size
        chunks: list[bytes] = []
        total = 0
        with self._zip.open(info) as stream:
            while chunk := stream.read(min(_CHUNK, declared - total + 1)):
                total += len(chunk)
                if total > declared:  # zipfile stops at the header's size; never trust it
                    raise BundleError(
                        f"entry {info.orig_filename!r} of bundle {self.path} holds more than "
                        f"the {declared} bytes it declares"
                    )
                chunks.append(chunk)
        return b"".join(chunks)

    def _unreadable(self, info: zipfile.ZipInfo, why: str) -> BundleError:
        return BundleError(
            f"entry {info.orig_filename!r} of bundle {self.path} cannot be read: {why}"
        )

    def read_text(self, name: str, limit: int) -> str:
        data = self.read(name, limit)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"entry {name!r} of bundle {self.path} is not UTF-8 text") from None

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        try:
            self._zip.close()
        finally:
            self._file.close()

    def __enter__(self) -> BundleArchive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
