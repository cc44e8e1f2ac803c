"""Where a handle's log records end: its callback, or the host's stdlib logging.

``LogSink`` belongs to a handle and survives reloads; each plugin instance writes through
its own ``InstanceLog`` gate, which closes when that instance stops. Both closings wait for
a callback that is running, so once ``shutdown()`` returns the callback is never entered
again.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable

from ._levels import LogLevel, to_stdlib

LogCallback = Callable[[LogLevel, str, str], None]
"""``callback(level, target, message)``: target is the logger name the plugin author used."""

attributed_instance: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "plugbridge_attributed_instance", default=None
)
"""The instance whose code is running in this context (set by the in-process runtime)."""

_internal_log = logging.getLogger("plugbridge")
_CLOSE_WAIT = 1.0


class LogSink:
    """One handle's destination for log records, with the handle's level."""

    def __init__(self, callback: LogCallback | None, level: LogLevel) -> None:
        if callback is not None and not callable(callback):
            from ._errors import ConfigError

            raise ConfigError(f"log_callback must be callable, not {type(callback).__name__}")
        self.level = level
        self.callback = callback
        self.closed = False
        self.lock = threading.RLock()
        self._fallback = logging.getLogger("plugbridge.plugin")
        self._callback_failed = False

    def name_plugin(self, name: str) -> None:
        """Records without a callback go to ``plugbridge.plugin.<name>``."""
        self._fallback = logging.getLogger(
            f"plugbridge.plugin.{name}" if name else "plugbridge.plugin"
        )

    def instance_log(self) -> InstanceLog:
        return InstanceLog(self)

    def deliver(self, gate: InstanceLog, level: LogLevel, target: str, message: str) -> None:
        with self.lock:
            if self.closed or not gate.open:
                return
            token = attributed_instance.set(None)  # the host's code runs from here on
            try:
                if self.callback is None:
                    self._fallback.log(
                        to_stdlib(level), "%s", message, extra={"plugin_target": target}
                    )
                else:
                    self.callback(level, target, message)
            except Exception as exc:
                self._report_callback_failure(exc)
            finally:
                attributed_instance.reset(token)

    def _report_callback_failure(self, exc: Exception) -> None:
        if self._callback_failed:
            return
        self._callback_failed = True  # once per handle: a broken callback must not flood
        with contextlib.suppress(Exception):
            _internal_log.error("plugbridge log callback raised (reported once): %r", exc)

    def close(self) -> None:
        """No record reaches the callback after this returns (waits ~1 s for a running one)."""
        if self.lock.acquire(timeout=_CLOSE_WAIT):
            try:
                self.closed = True
            finally:
                self.lock.release()
        else:
            self.closed = True


class InstanceLog:
    """One plugin instance's gate into its handle's sink."""

    __slots__ = ("open", "sink")

    def __init__(self, sink: LogSink) -> None:
        self.sink = sink
        self.open = True

    def emit(self, level: LogLevel, target: str, message: str) -> None:
        if level >= self.sink.level and self.open:
            self.sink.deliver(self, level, target, message)

    def enabled(self, level: LogLevel) -> bool:
        return level >= self.sink.level

    def close(self) -> None:
        lock = self.sink.lock
        if lock.acquire(timeout=_CLOSE_WAIT):
            try:
                self.open = False
            finally:
                lock.release()
        else:
            self.open = False
