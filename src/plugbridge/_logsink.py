"""Where a handle's log records end: its callback, or the host's stdlib logging.

``LogSink`` belongs to a handle and survives reloads; each plugin instance writes through
its own ``InstanceLog`` gate, which closes when that instance stops. Both closings wait for
a callback that is running, so once ``shutdown()`` returns the callback is never entered
again. Listeners obey the same gates: they run outside the lock, so each thread telling
them says which gate's record it carries (``_telling``) and a closing waits for those of
its gate (see ``LogSink.await_listeners``).

A ``KeyboardInterrupt`` (Ctrl-C) may land on a delivering thread between any two steps, and
a lock it left held would make every other thread's record wait the busy wait, then sit in
the backlog, for good. So the lock is taken inside a ``try`` by one builtin call that also
records whether it was taken, and the ``finally`` releases exactly that (see ``_take``). A
record filtered out by level never gets that far.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dis
import functools
import logging
import signal
import threading
import time
import types
from collections.abc import Callable

from ._levels import LogLevel, to_stdlib
from ._steadylog import steady_logger

LogCallback = Callable[[LogLevel, str, str], None]
"""``callback(level, target, message)``: target is the logger name the plugin author used."""

LogListener = Callable[[LogLevel, str, str], None]
"""``listener(level, target, message)``: sees every record the handle's level lets through,
on the thread that logged it, before the callback does (see ``LogSink.add_listener``)."""

attributed_instance: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "plugbridge_attributed_instance", default=None
)
"""The instance whose code is running in this context (set by the in-process runtime)."""

_internal_log = logging.getLogger("plugbridge")
_CLOSE_WAIT = 1.0
_BUSY_WAIT = 0.05
"""Seconds a record waits for a busy callback before it is left for the busy thread."""
_BACKLOG_LIMIT = 100_000
_LISTENER_POLL = 0.001
"""Seconds between looks while a closing waits for a listener (rare: one was running)."""
_BLOCKING = (True,)
_BUSY = (_BUSY_WAIT,)
"""Arguments of the sink lock's ``acquire`` as ``_take`` passes them: wait, up to a timeout."""

Record = tuple["InstanceLog", LogLevel, str, str]


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
        self._backlog: collections.deque[Record] = collections.deque()
        self._dropped = 0
        self._fallback = steady_logger("plugbridge.plugin")
        self._callback_failed = False
        self.listeners: tuple[tuple[object, LogListener], ...] = ()
        """Taps on the records (``add_listener``), each with the token its removal looks
        for (the same function added twice is two listeners). Replaced whole, so
        ``deliver`` reads a consistent tuple without a lock."""
        self.listeners_lock = threading.Lock()
        """Orders ``add_listener`` and its removals (never held while a record is delivered)."""
        self._listener_failed = False
        self._telling: dict[int, InstanceLog] = {}
        """Thread id -> the gate whose record that thread is telling the listeners now.
        Written before the thread reads its gate, read by a closing after it shut the
        gate: one of the two sees the other (one interpreter lock orders them)."""
        self._listeners_close_by: float | None = None
        """As ``_close_by``, for closes waiting for listeners."""
        self._close_by: float | None = None
        """While closes wait for a busy callback: the moment they stop waiting. Shared by
        every gate of the sink, so a shutdown closing three gates waits ``_CLOSE_WAIT`` in
        all, not three times; cleared once a close gets the lock."""

    def name_plugin(self, name: str) -> None:
        """Records without a callback go to ``plugbridge.plugin.<name>``: a steady logger
        (see ``_steadylog``), which no reconfiguration of the host's logging disables;
        its level, handlers and propagation are the host's to set."""
        self._fallback = steady_logger(f"plugbridge.plugin.{name}" if name else "plugbridge.plugin")

    def instance_log(self) -> InstanceLog:
        return InstanceLog(self)

    def deliver(self, gate: InstanceLog, level: LogLevel, target: str, message: str) -> None:
        """Hand one record to the callback, one record at a time.

        If the callback is busy for long (say it is waiting for a call whose handler logs on
        another thread), the record is left in a backlog that the busy thread delivers when
        its callback returns: a plugin thread never waits on the host's callback for long,
        and a callback that calls its plugin cannot deadlock.
        """
        if self.listeners and not self.closed:
            self._tell_listeners(gate, level, target, message)
        held: list[bool] = []
        try:
            held.extend(filter(None, map(self.lock.acquire, _BLOCKING, _BUSY)))  # ``_take``
            if held:
                self._deliver_one(gate, level, target, message)
                if self._backlog or self._dropped:
                    self._deliver_backlog()
        finally:
            if held:
                self.lock.release()
        if not held:
            if len(self._backlog) < _BACKLOG_LIMIT:
                self._backlog.append((gate, level, target, message))
            else:
                self._dropped += 1
        while self._backlog and self._deliver_backlog_if_free():
            pass  # the busy thread left meanwhile, or a record slipped in as this one left

    def add_listener(self, listener: LogListener) -> Callable[[], None]:
        """Tap the records: ``listener`` sees each record this sink delivers (the handle's
        level lets it through), across reloads, until the returned function is called.

        It runs on the logging thread, outside the sink's lock (a busy callback never
        holds it up), so it must be quick and thread-safe. What it raises is reported once
        and otherwise ignored. Without listeners a record pays one attribute test.
        """
        if not callable(listener):
            from ._errors import ConfigError

            raise ConfigError(f"a log listener must be callable, not {type(listener).__name__}")
        token = object()
        with self.listeners_lock:
            self.listeners = (*self.listeners, (token, listener))

        def remove() -> None:
            with self.listeners_lock:
                self.listeners = tuple(tap for tap in self.listeners if tap[0] is not token)

        return remove

    def _tell_listeners(
        self, gate: InstanceLog, level: LogLevel, target: str, message: str
    ) -> None:
        """Each listener in turn while the gate is open: a closing either sees this thread
        in ``_telling`` and waits for it, or has shut the gate before it is read here."""
        telling, ident = self._telling, threading.get_ident()
        outer = telling.get(ident)  # a listener that logs: its record is told nested
        previous = attributed_instance.get()
        try:
            telling[ident] = gate
            attributed_instance.set(None)  # the host's code runs from here on
            for _, listener in self.listeners:
                if self.closed or not gate.open:
                    break  # closed meanwhile (a closing gave up waiting for a listener)
                try:
                    listener(level, target, message)
                except BaseException as exc:  # contained, as a callback's failure is
                    if is_ctrl_c(exc):
                        raise
                    self._report_listener_failure(exc)
        finally:
            if outer is None:
                telling.pop(ident, None)
            else:
                telling[ident] = outer
            attributed_instance.set(previous)

    def await_listeners(self, gate: InstanceLog | None) -> None:
        """Once ``gate`` (None: every gate) is shut, wait until no other thread is telling
        the listeners one of its records: no listener hears it after the closing returns.
        Bounded as waiting for a callback is (``_CLOSE_WAIT``, shared by the sink's
        closings); a listener of this thread's own (a closing it started) is not waited for.
        """
        if not self._telling:
            return  # the usual case: nothing to read, no clock
        ident = threading.get_ident()
        while any(
            other != ident and (gate is None or told is gate)
            for other, told in self._telling.copy().items()  # one builtin call: a snapshot
        ):
            close_by = self._listeners_close_by
            if close_by is None:
                close_by = self._listeners_close_by = time.monotonic() + _CLOSE_WAIT
            if time.monotonic() >= close_by:
                return  # the listener goes on; the next record it would tell is cut off
            time.sleep(_LISTENER_POLL)
        self._listeners_close_by = None

    def _report_listener_failure(self, exc: BaseException) -> None:
        if self._listener_failed:
            return
        self._listener_failed = True  # once per handle: a broken listener must not flood
        with contextlib.suppress(Exception):
            _internal_log.error("plugbridge log listener raised (reported once): %r", exc)

    def _deliver_backlog_if_free(self) -> bool:
        held: list[bool] = []
        try:
            self._take(held, 0.0)
            if held:
                self._deliver_backlog()
        finally:
            if held:
                self.lock.release()
        return bool(held)

    def _take(self, held: list[bool], wait: float) -> None:
        """Take the lock within ``wait`` seconds (0: only if free); ``held`` says whether.

        Taking and saying so are one builtin call (``held.extend`` driving ``acquire``), made
        inside the caller's ``try``: a ``KeyboardInterrupt`` lands before it or after it,
        never between, so the caller's ``finally`` (``if held: release``, whose first call
        is the release) releases exactly what was taken.
        """
        held.extend(filter(None, map(self.lock.acquire, _BLOCKING, (wait,))))

    def _deliver_backlog(self) -> None:
        backlog = self._backlog
        while backlog:
            self._deliver_one(*backlog.popleft())
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self._report_dropped(dropped)

    def _deliver_one(self, gate: InstanceLog, level: LogLevel, target: str, message: str) -> None:
        if self.closed or not gate.open:
            return
        previous = attributed_instance.get()
        try:
            attributed_instance.set(None)  # the host's code runs from here on
            if self.callback is None:
                self._fallback.log(to_stdlib(level), "%s", message, extra={"plugin_target": target})
            else:
                self.callback(level, target, message)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the host's, not ours
            if is_ctrl_c(exc):
                raise
            self._report_callback_failure(exc)
        finally:
            attributed_instance.set(previous)

    def _report_dropped(self, dropped: int) -> None:
        with contextlib.suppress(Exception):
            _internal_log.warning(
                "plugbridge dropped %d plugin log records while the log callback was busy", dropped
            )

    def _report_callback_failure(self, exc: BaseException) -> None:
        if self._callback_failed:
            return
        self._callback_failed = True  # once per handle: a broken callback must not flood
        with contextlib.suppress(Exception):
            _internal_log.error("plugbridge log callback raised (reported once): %r", exc)

    def close(self) -> None:
        """No record reaches the callback or a listener after this returns (waits ~1 s
        for a running one)."""
        held: list[bool] = []
        try:
            self.acquire_for_close(held)
            self.closed = True
            if held:
                self._backlog.clear()
        finally:
            if held:
                self.lock.release()
        self.await_listeners(None)

    def acquire_for_close(self, held: list[bool]) -> None:
        """Take the lock to close a gate (``held`` says whether: see ``_take``), waiting for
        a running callback at most until ``_CLOSE_WAIT`` after the first close that had to
        wait (see ``_close_by``). Called inside a ``try`` whose ``finally`` releases."""
        self._take(held, 0.0)
        if not held:
            close_by = self._close_by
            if close_by is None:
                close_by = self._close_by = time.monotonic() + _CLOSE_WAIT
            self._take(held, max(0.0, close_by - time.monotonic()))
        if held:
            self._close_by = None


def is_ctrl_c(exc: BaseException) -> bool:
    """A Ctrl-C that landed on the main thread while it ran a callback or listener.

    Python raises Ctrl-C in the main thread wherever it is; one that lands while a callback
    runs there interrupts what the main thread was doing (a call, a shutdown), so it goes on
    up. A callback that raises ``KeyboardInterrupt`` itself (a ``raise`` statement, on any
    thread) has failed like any other, and is contained. The two differ in where the
    exception began: a ``raise`` statement is its innermost frame's current instruction,
    while Python's own handler raises a signal's ``KeyboardInterrupt`` between instructions
    or inside a call that was waiting, never at a ``raise``; and a SIGINT handler written in
    Python (``asyncio.run``'s second Ctrl-C, say) raises it in its own frame.
    """
    if not isinstance(exc, KeyboardInterrupt):
        return False
    if threading.current_thread() is not threading.main_thread():  # not cached: fork moves it
        return False
    innermost = exc.__traceback__
    if innermost is None:
        return True
    while innermost.tb_next is not None:
        innermost = innermost.tb_next
    code = innermost.tb_frame.f_code
    if code is _sigint_handler_code():
        return True
    raw = code.co_code
    return not (0 <= innermost.tb_lasti < len(raw) and raw[innermost.tb_lasti] == _RAISE)


def _sigint_handler_code() -> types.CodeType | None:
    """The code of the SIGINT handler if it is a Python function (or a bound method or a
    ``functools.partial`` of one)."""
    handler: object = signal.getsignal(signal.SIGINT)
    while isinstance(handler, functools.partial):
        handler = handler.func
    handler = getattr(handler, "__func__", handler)
    code = getattr(handler, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


_RAISE = dis.opmap["RAISE_VARARGS"]


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
        """No record of this instance reaches the callback or a listener after this
        returns (see ``LogSink.acquire_for_close`` for how long it waits for a running
        callback, ``LogSink.await_listeners`` for a running listener)."""
        held: list[bool] = []
        try:
            self.sink.acquire_for_close(held)
            self.open = False
        finally:
            if held:
                self.sink.lock.release()
        self.sink.await_listeners(self)
