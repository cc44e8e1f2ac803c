"""A private copy of a shared library for one plugin instance.

The dynamic loader hands out one mapping per file: ``dlopen`` of a path that is already
loaded returns the same copy, globals included. A rustbridge library keeps its log
callback, level and state in globals, so two instances sharing a mapping would share
those too. Each instance therefore loads its own copy of the file (``RTLD_LOCAL``, so
their symbols never bind to each other), and ``dlclose``s it when the instance is done.

The copy is unlinked as soon as it is mapped: the mapping keeps the file's data alive,
and nothing is left in the temp directory even if the process dies. The mapping shows in
``/proc/self/maps`` under ``MAPPED_PREFIX`` until ``close``.

A bundle's library is never extracted: its verified bytes (``NativeSource.bundle``) are
written straight into the private copy, in a directory only this user can enter, and the
copy is unlinked once mapped, exactly like a copied file. The bytes loaded are the bytes
that were checked: nothing is read back from the bundle after its checks.
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import os
import shutil
import tempfile
import threading
from pathlib import Path

from .._errors import InitializationFailed
from .._sources import NativeSource
from .abi import Abi, bind

MAPPED_PREFIX = "plugbridge-native-"
"""Start of the temp directory name of every private copy (visible in /proc/self/maps)."""

_mapped: set[PrivateLibrary] = set()
"""Every library still mapped, with what C may call into, so none of it is freed early."""
_mapped_lock = threading.Lock()
_unmapped = threading.Condition(_mapped_lock)
"""Notified each time a library has been unmapped (for ``wait_all_unmapped``)."""


def _fresh_lock_in_child() -> None:
    """In a forked child: a thread of the parent may have held the lock at the fork (it
    would stay held forever). The copies in ``_mapped`` are the parent's instances': the
    child never unmaps them (their handles are forked, see ``_forking``)."""
    global _mapped_lock, _unmapped
    _mapped_lock = threading.Lock()
    _unmapped = threading.Condition(_mapped_lock)


os.register_at_fork(after_in_child=_fresh_lock_in_child)


class PrivateLibrary:
    """One instance's own mapping of a native plugin library."""

    def __init__(self, source: NativeSource) -> None:
        self.source = source.path
        bundle = source.bundle
        if bundle is None:
            self._cdll = _load_private_copy(source.path)
            label = source.path.name
        else:
            label = bundle.file_name
            self._cdll = _load_private_image(
                bundle.data, label, f"{bundle.library} of bundle {source.path}"
            )
        self._keep: list[object] = []
        self.closed = False
        try:
            self.abi: Abi = bind(self._cdll, label)
        except BaseException:
            _ctypes.dlclose(self._cdll._handle)
            raise
        with _mapped_lock:
            _mapped.add(self)

    def keep_alive(self, obj: object) -> None:
        """Keep ``obj`` (a C-callable trampoline) alive for as long as the library is mapped."""
        self._keep.append(obj)

    def close(self) -> None:
        """Unmap the library. Only when no thread runs its code and none will again."""
        with _mapped_lock:
            if self.closed:
                return
            self.closed = True
        try:
            _ctypes.dlclose(self._cdll._handle)
        finally:
            self._keep.clear()
            with _mapped_lock:
                _mapped.discard(self)  # only now: it is really gone from the address space
                _unmapped.notify_all()


def _load_private_copy(source: Path) -> ctypes.CDLL:
    directory = tempfile.mkdtemp(prefix=MAPPED_PREFIX)
    copy = os.path.join(directory, source.name)
    try:
        shutil.copyfile(source, copy)
        return ctypes.CDLL(copy, mode=os.RTLD_LOCAL | os.RTLD_NOW)
    except OSError as exc:
        raise InitializationFailed(f"cannot load native plugin {source}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(copy)
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def _load_private_image(data: bytes, file_name: str, what: str) -> ctypes.CDLL:
    """Map ``data`` (a library's bytes) as a private copy named ``file_name``."""
    directory = tempfile.mkdtemp(prefix=MAPPED_PREFIX)  # mode 0700: no one else swaps it
    copy = os.path.join(directory, file_name)
    try:
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o700)
        try:
            view, written = memoryview(data), 0
            while written < len(view):
                written += os.write(fd, view[written:])
        finally:
            os.close(fd)
        return ctypes.CDLL(copy, mode=os.RTLD_LOCAL | os.RTLD_NOW)
    except OSError as exc:
        raise InitializationFailed(f"cannot load native library {what}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(copy)
        with contextlib.suppress(OSError):
            os.rmdir(directory)


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def mapped_count() -> int:
    """Private copies still mapped in this process (for diagnostics and tests)."""
    with _mapped_lock:
        return len(_mapped)


def wait_for_unmapping(at_most: int, timeout: float) -> bool:
    """Wait until at most ``at_most`` private copies are mapped; False after ``timeout``.

    A copy outlives its instance's ``shutdown`` while a thread is still inside it (a call
    that timed out, a ``plugin_shutdown`` that was abandoned): this waits for those.
    """
    with _unmapped:
        return _unmapped.wait_for(lambda: len(_mapped) <= at_most, timeout)
