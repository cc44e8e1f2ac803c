"""The C-callable log callback of one native instance.

The library may call it from any thread, at any time until its mapping is gone, so the
ctypes function object is kept alive with the library (``PrivateLibrary.keep_alive``).
Once ``close`` returns it does nothing, and nothing it does can raise back into C: a Ctrl-C
that lands while it delivers a record on the main thread is handed to ``on_ctrl_c`` (the
transport raises it as soon as the library's call returns).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from .._levels import LogLevel
from .._logsink import InstanceLog, is_ctrl_c
from .abi import LOG_CALLBACK

_LEVELS = tuple(LogLevel)


class LogTrampoline:
    """Turns ``(level, target, msg, msg_len)`` from C into a record for one instance."""

    __slots__ = ("__weakref__", "_gate", "_on_ctrl_c", "_open", "pointer")

    def __init__(
        self, gate: InstanceLog, on_ctrl_c: Callable[[], Callable[[], None] | None]
    ) -> None:
        """``on_ctrl_c``: a weak reference to what to tell of a Ctrl-C (the library, which
        keeps this object alive, must not keep its transport alive too)."""
        self._gate = gate
        self._on_ctrl_c = on_ctrl_c
        self._open = True
        self.pointer: Any = LOG_CALLBACK(self._receive)

    def _receive(self, level: int, target: bytes | None, msg: int | None, msg_len: int) -> None:
        if not self._open or level >= LogLevel.OFF:
            return
        try:
            gate = self._gate
            if not gate.enabled(_LEVELS[level]):
                return
            message = ctypes.string_at(msg, msg_len) if msg and msg_len else b""
            name = target.decode("utf-8", "replace") if target else ""
            gate.emit(_LEVELS[level], name, message.decode("utf-8", "replace"))
        except BaseException as exc:  # an exception must never unwind into C
            if is_ctrl_c(exc) and (tell := self._on_ctrl_c()) is not None:
                tell()  # the user's: the call raises it once C returns

    def close(self) -> None:
        """From now on records are dropped (waits for one being delivered)."""
        self._open = False
        self._gate.close()
