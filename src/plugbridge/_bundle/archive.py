"""Reading a bundle's zip archive without trusting it.

A bundle comes from someone else, so its zip is judged before any entry is read: every
entry name must be a plain relative path (no ``..``, no absolute or drive path, no
backslash or control character, no duplicate, no symbolic link), and every entry's
declared size must be within ``MAX_ENTRY_BYTES`` and within ``MAX_EXPANSION`` times its
compressed size (a zip bomb declares a huge size for a few bytes). Reading an entry then
counts the bytes it really yields and stops at its declared size or the caller's limit,
whichever is smaller: a lying header can neither make us read more nor go unnoticed (a
short or corrupt entry fails its CRC). Nothing is ever written to disk here.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from types import TracebackType

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


def unsafe_entry_name(name: str) -> str | None:
    """Why ``name`` is not a safe relative path inside a bundle, or None if it is."""
    if not name:
        return "it is empty"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
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
            self._zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise BundleError(f"bundle not found: {self.path}") from None
        except IsADirectoryError:
            raise BundleError(f"bundle {self.path} is a directory, not a zip archive") from None
        except zipfile.BadZipFile as exc:
            raise BundleError(f"bundle {self.path} is not a zip archive ({exc})") from None
        except OSError as exc:
            raise BundleError(f"cannot read bundle {self.path}: {exc.strerror or exc}") from None
        except Exception as exc:  # a directory zipfile cannot parse: struct, value, overflow
            raise BundleError(f"bundle {self.path} is not a readable zip archive ({exc})") from None
        try:
            self._entries = self._checked_entries()
        except BaseException:
            self._zip.close()
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
        chunks: list[bytes] = []
        total = 0
        try:
            with self._zip.open(info) as stream:
                while chunk := stream.read(min(_CHUNK, declared - total + 1)):
                    total += len(chunk)
                    if total > declared:  # zipfile stops at the header's size; never trust it
                        raise BundleError(
                            f"entry {name!r} of bundle {self.path} holds more than the "
                            f"{declared} bytes it declares"
                        )
                    chunks.append(chunk)
        except BundleError:
            raise
        except Exception as exc:  # bad CRC, truncated or corrupt data, encrypted, unsupported
            raise BundleError(
                f"entry {name!r} of bundle {self.path} cannot be read: {exc}"
            ) from None
        if total != declared:
            raise BundleError(
                f"entry {name!r} of bundle {self.path} holds {total} bytes, not the "
                f"{declared} it declares"
            )
        return b"".join(chunks)

    def read_text(self, name: str, limit: int) -> str:
        data = self.read(name, limit)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"entry {name!r} of bundle {self.path} is not UTF-8 text") from None

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> BundleArchive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
