"""PluginHandle: the host's one object for a plugin, whichever transport carries it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ._calls.limiter import ONE_SLOT, ConcurrencyLimiter
from ._config import PluginConfig, checked_seconds
from ._errors import (
    MAX_MESSAGE_ID,
    InitializationFailed,
    InvalidState,
    PluginError,
    SerializationError,
    Timeout,
    no_raw_handler,
    not_active,
)
from ._forking import ForkedTransport, forked, track_handle
from ._levels import LogLevel, parse_level
from ._lifecycle import LifecycleState
from ._logsink import LogListener, LogSink
from ._stats import CallStats, PluginStats
from ._transport import InstanceReplaced, PluginMetadata, Transport, TransportFactory

_clock = time.perf_counter
"""The clock of call durations (``CallStats.timed``)."""


class PluginHandle:
    """A loaded plugin. Stays valid across ``reload()``; closed by ``shutdown()``/``close()``."""

    def __init__(
        self, factory: TransportFactory, config: PluginConfig, sink: LogSink, source: str
    ) -> None:
        self._factory = factory
        self._config = config
        self._sink = sink
        self._source = source
        self._limiter = ConcurrencyLimiter(config.max_concurrent_ops)
        self._stats = CallStats(config.max_concurrent_ops)
        self._finished = self._stats.finished
        self._take_slot = self._limiter.take
        self._new_release = self._limiter.new_release
        if self._stats.counts_slots:  # no limit: the statistics count calls in flight
            self._take_slot, self._new_release = self._stats.take, self._stats.new_release
        self._default_timeout = config.call_timeout
        self._host_log = sink.instance_log()
        self._swap_lock = threading.RLock()
        self._closed = False
        self._retired_rejections = 0
        """Refusals counted inside instances that a reload replaced."""
        self._retired_restarts = 0
        """Worker restarts of instances that a reload replaced."""
        self._forked = False
        """This is a forked child's copy of a handle loaded before the fork (``_forking``)."""
        self._transport: Transport = factory(time.monotonic() + config.start_timeout)
        track_handle(self)

    # -- calls -------------------------------------------------------------------------
    #
    # Admission, the same in the five call forms: a one-shot release is made first (no
    # state yet), the slot is taken inside a ``try`` (refused at once if none is left), and
    # from then on the slot goes back exactly once whatever happens. The transport releases
    # it when the plugin's work ends (late, after a timeout); any exception that is not a
    # ``PluginError`` (a ``KeyboardInterrupt`` landing between two steps, a bug) releases it
    # here — a second release is a no-op, so the two can never add up to two.
    #
    # The forms spell this out instead of sharing a helper on purpose: a Python-level
    # helper is entered through a point where CPython delivers a pending KeyboardInterrupt,
    # *before* the slot is taken, and the caller's safety net would then give back a slot
    # never taken. ``take`` and ``release`` are builtins, so nothing can land inside them.
    # The interrupt storms in tests/calls/ hold them to it.
    #
    # Statistics (``_stats``), also spelled out, in builtins only on the fast path: first
    # ``next(sampler)`` says whether this call is timed (``started`` is then the clock,
    # else None); a call that returns takes one item of ``_finished`` (exact from any
    # number of threads) and, if timed, hands its start to ``CallStats.timed``; a call
    # that fails goes through ``CallStats.failed`` (the rare path); a call refused before
    # it ran (an argument found wrong before admission, an instance not ACTIVE) through
    # ``CallStats.refused`` (an error, not a call); a refusal by the limit is counted by
    # the limiter only. None of it is between taking the slot and handing it to the
    # transport, so admission is unchanged; a call retried after a reload swapped the
    # transport (or replaced the replica it reached) counts once, timed from its first
    # attempt.

    def call(self, type_tag: str, request: Any = None, *, timeout: float | None = None) -> Any:
        """Send ``request`` to the handler of ``type_tag``; return its decoded response."""
        started = _clock() if next(self._stats.sampler) else None
        try:
            timeout = self._default_timeout if timeout is None else self._call_timeout(timeout)
        except PluginError as exc:
            self._stats.refused(exc)
            raise
        while True:
            release = self._new_release(iter(ONE_SLOT))
            try:
                self._take_slot()
            except IndexError:
                raise self._limiter.refuse() from None
            except BaseException:
                release()
                raise
            try:
                transport = self._transport
                response = transport.call(type_tag, request, timeout, release)
            except InvalidState as exc:
                # Retried (with a fresh slot: the refusal gave this one back) if a reload
                # swapped the transport or replaced the replica the call reached;
                # otherwise the instance is not ACTIVE and the call never ran.
                if transport is self._transport and type(exc) is not InstanceReplaced:
                    self._stats.refused(exc)
                    raise
            except PluginError as exc:
                self._stats.failed(exc, started)
                raise
            except BaseException:
                release()
                raise
            else:
                next(self._finished)
                if started is not None:
                    self._stats.timed(started)
                return response

    def call_json(
        self, type_tag: str, request_json: str | bytes, *, timeout: float | None = None
    ) -> str:
        """Raw JSON in, raw JSON out."""
        started = _clock() if next(self._stats.sampler) else None
        try:
            timeout = self._default_timeout if timeout is None else self._call_timeout(timeout)
            payload = _json_bytes(request_json)
        except PluginError as exc:
            self._stats.refused(exc)
            raise
        while True:
            release = self._new_release(iter(ONE_SLOT))
            try:
                self._take_slot()
            except IndexError:
                raise self._limiter.refuse() from None
            except BaseException:
                release()
                raise
            try:
                transport = self._transport
                response = _json_text(transport.call_json(type_tag, payload, timeout, release))
            except InvalidState as exc:
                if transport is self._transport and type(exc) is not InstanceReplaced:
                    self._stats.refused(exc)
                    raise
            except PluginError as exc:
                self._stats.failed(exc, started)
                raise
            except BaseException:
                release()
                raise
            else:
                next(self._finished)
                if started is not None:
                    self._stats.timed(started)
                return response

    async def acall(
        self, type_tag: str, request: Any = None, *, timeout: float | None = None
    ) -> Any:
        """The asyncio form of ``call``; never blocks the caller's event loop."""
        started = _clock() if next(self._stats.sampler) else None
        try:
            timeout = self._default_timeout if timeout is None else self._call_timeout(timeout)
        except PluginError as exc:
            self._stats.refused(exc)
            raise
        while True:
            release = self._new_release(iter(ONE_SLOT))
            try:
                self._take_slot()
            except IndexError:
                raise self._limiter.refuse() from None
            except BaseException:
                release()
                raise
            try:
                transport = self._transport
                response = await transport.acall(type_tag, request, timeout, release)
            except InvalidState as exc:
                if transport is self._transport and type(exc) is not InstanceReplaced:
                    self._stats.refused(exc)
                    raise
            except (PluginError, asyncio.CancelledError) as exc:
                self._stats.failed(exc, started)
                raise  # a cancelled call's work gives its slot back when it really ends
            except BaseException:
                release()
                raise
            else:
                next(self._finished)
                if started is not None:
                    self._stats.timed(started)
                return response

    def call_raw(self, message_id: int, request: Any, *, timeout: float | None = None) -> bytes:
        """The binary transport: ``request`` (a bytes-like object, or a ctypes structure:
        its bytes) to the raw handler of ``message_id`` (a ``uint32``); its response bytes."""
        started = _clock() if next(self._stats.sampler) else None
        try:
            timeout = self._default_timeout if timeout is None else self._call_timeout(timeout)
            if type(message_id) is not int or message_id >> 32:  # not a uint32 (negative too)
                message_id = self._message_id(message_id)
            payload = request if type(request) is bytes else _raw_bytes(request)
        except PluginError as exc:
            self._stats.refused(exc)
            raise
        while True:
            release = self._new_release(iter(ONE_SLOT))
            try:
                self._take_slot()
            except IndexError:
                raise self._limiter.refuse() from None
            except BaseException:
                release()
                raise
            try:
                transport = self._transport
                response = transport.call_raw(message_id, payload, timeout, release)
            except InvalidState as exc:
                if transport is self._transport and type(exc) is not InstanceReplaced:
                    self._stats.refused(exc)
                    raise
            except PluginError as exc:
                self._stats.failed(exc, started)
                raise
            except BaseException:
                release()
                raise
            else:
                next(self._finished)
                if started is not None:
                    self._stats.timed(started)
                return response

    async def acall_raw(
        self, message_id: int, request: Any, *, timeout: float | None = None
    ) -> bytes:
        """The asyncio form of ``call_raw``; never blocks the caller's event loop."""
        started = _clock() if next(self._stats.sampler) else None
        try:
            timeout = self._default_timeout if timeout is None else self._call_timeout(timeout)
            if type(message_id) is not int or message_id >> 32:  # not a uint32 (negative too)
                message_id = self._message_id(message_id)
            payload = request if type(request) is bytes else _raw_bytes(request)
        except PluginError as exc:
            self._stats.refused(exc)
            raise
        while True:
            release = self._new_release(iter(ONE_SLOT))
            try:
                self._take_slot()
            except IndexError:
                raise self._limiter.refuse() from None
            except BaseException:
                release()
                raise
            try:
                transport = self._transport
                response = await transport.acall_raw(message_id, payload, timeout, release)
            except InvalidState as exc:
                if transport is self._transport and type(exc) is not InstanceReplaced:
                    self._stats.refused(exc)
                    raise
            except (PluginError, asyncio.CancelledError) as exc:
                self._stats.failed(exc, started)
                raise  # a cancelled call's work gives its slot back when it really ends
            except BaseException:
                release()
                raise
            else:
                next(self._finished)
                if started is not None:
                    self._stats.timed(started)
                return response

    def _message_id(self, message_id: object) -> int:
        """A ``uint32`` message id as a plain int (an ``IntEnum`` member is welcome);
        ``UnknownMessageType`` otherwise: no raw handler can be named by it."""
        if isinstance(message_id, int) and not isinstance(message_id, bool):
            plain = int(message_id)
            if 0 <= plain <= MAX_MESSAGE_ID:
                return plain
        raise no_raw_handler(self.metadata.name, message_id)

    def _call_timeout(self, timeout: object) -> float:
        """A checked per-call timeout; 0 means the call is already late (see DECISIONS)."""
        checked = checked_seconds("timeout", timeout)
        if checked == 0.0:
            if self.state is not LifecycleState.ACTIVE:
                raise not_active(self.metadata.name, self.state.name)
            raise Timeout("call exceeded its timeout of 0s (a zero timeout never runs a call)")
        return checked

    @property
    def in_flight(self) -> int:
        """Calls holding a concurrency slot right now (counted with the limit off too)."""
        if self._stats.counts_slots:
            return self._stats.in_use
        return self._limiter.in_use

    def stats(self) -> PluginStats:
        """A snapshot of this handle's statistics since it was loaded (see ``PluginStats``)."""
        transport = self._transport
        return self._stats.snapshot(
            rejected=self.rejected_request_count,
            in_flight=self.in_flight,
            restarts=self._retired_restarts + transport.restart_count,
            usage=transport.process_usage(),
        )

    # -- state and settings ------------------------------------------------------------

    @property
    def state(self) -> LifecycleState:
        return self._transport.state

    @property
    def metadata(self) -> PluginMetadata:
        return self._transport.metadata

    @property
    def rejected_request_count(self) -> int:
        return self._limiter.rejected + self._retired_rejections + self._transport.rejected_count

    @property
    def log_level(self) -> LogLevel:
        return self._sink.level

    def set_log_level(self, level: LogLevel | str | int) -> None:
        """Change this handle's level; it applies to the very next record."""
        parsed = parse_level(level)
        self._sink.level = parsed
        self._config.log_level = parsed  # ctx.config and the next reload see it too
        self._transport.set_log_level(parsed)

    @property
    def config(self) -> PluginConfig:
        return self._config

    def add_log_listener(self, listener: LogListener) -> Callable[[], None]:
        """Also hand every record this handle's level lets through to ``listener(level,
        target, message)``, whatever the callback; returns the function that removes it.

        For observers next to the callback (the gateway's log stream): it runs on the
        thread that logged, so it must be quick and thread-safe; what it raises is
        reported once and ignored. It survives reloads (the sink belongs to the handle).
        """
        return self._sink.add_listener(listener)

    # -- reload and shutdown -----------------------------------------------------------

    def reload(self, timeout: float | None = None) -> None:
        """Swap in a fresh instance built from the source as it is on disk now.

        New calls go to the new instance as soon as it is ACTIVE; calls in flight finish on
        the old one, which is then stopped. If the new instance cannot start, the old one
        keeps serving and ``InitializationFailed`` is raised.
        """
        limit = None if timeout is None else checked_seconds("timeout", timeout)
        if self._forked:
            raise forked(self.metadata.name)
        with self._swap_lock:
            if self._closed:
                raise InvalidState("cannot reload a plugin handle that was shut down")
            if limit == 0.0:
                raise InitializationFailed(
                    "reload needs time to start the new instance (timeout=0); nothing changed"
                )
            now = time.monotonic()
            deadline = None if limit is None else now + limit
            start_timeout = self._config.start_timeout
            start_within = start_timeout if limit is None else min(start_timeout, limit)
            # In place (replicas), every step gets its own budget within the whole
            # reload's: see ReplicaTransport.reload_in_place.
            if self._transport.reload_in_place(
                start_within, self._config.shutdown_timeout, deadline
            ):
                self._stats.reloads += 1
                return
            fresh = self._factory(now + start_within)
            fresh.set_log_level(self._sink.level)
            old, self._transport = self._transport, fresh
            self._stats.reloads += 1
            stop_within = self._stop_within(deadline, time.monotonic())
            try:
                old.shutdown(stop_within)
            except PluginError as exc:
                self._host_log.emit(
                    LogLevel.WARN,
                    "plugbridge",
                    f"reload of {self.metadata.name!r} stands, but the previous instance "
                    f"failed to stop: {exc.message}",
                )
            finally:
                self._retired_rejections += old.rejected_count
                self._retired_restarts += old.restart_count

    def _stop_within(self, deadline: float | None, now: float) -> float:
        """Seconds an old instance gets to stop during a reload that must end by
        ``deadline`` (None: its own shutdown timeout)."""
        if deadline is None:
            return self._config.shutdown_timeout
        return max(0.0, min(self._config.shutdown_timeout, deadline - now))

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the plugin within ``timeout`` (default: the config's); idempotent."""
        limit = (
            self._config.shutdown_timeout
            if timeout is None
            else checked_seconds("timeout", timeout)
        )
        with self._swap_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._transport.shutdown(limit)
            finally:
                self._host_log.close()
                self._sink.close()

    def close(self) -> None:
        self.shutdown()

    def _forked_in_child(self) -> None:
        """In a child forked while this handle was alive (``_forking``'s at-fork hook, on
        the only thread the child has): the instance is the parent's, so calls and reload
        fail at once, shutdown releases nothing, and state reads STOPPED.

        Everything a thread of the parent may have held at the fork is made afresh here:
        that thread does not exist in the child, and what it held would stay held forever.
        The swap lock; the log sink's lock (a callback running at the fork holds it, and
        every record the child still hands the sink, or a close of it, would wait for it);
        the limiter, whose slots the parent's calls in flight hold (a child's call must be
        told why it cannot run, not ``TooManyRequests``), and the statistics' locks and
        slot counters, for the same reasons.
        """
        self._forked = True
        self._closed = True  # shutdown: nothing to do (and never the parent's transport)
        self._swap_lock = threading.RLock()
        self._sink.lock = threading.RLock()
        self._sink.listeners_lock = threading.Lock()
        limiter = ConcurrencyLimiter(self._config.max_concurrent_ops)
        limiter.rejected = self._limiter.rejected
        self._limiter, self._take_slot, self._new_release = (
            limiter,
            limiter.take,
            limiter.new_release,
        )
        self._stats.after_fork()
        if self._stats.counts_slots:
            self._take_slot, self._new_release = self._stats.take, self._stats.new_release
        self._transport = ForkedTransport(self._transport.metadata)

    def __enter__(self) -> PluginHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a PluginHandle cannot be pickled (plugin {self.metadata.name!r}): it stands for "
            "an instance running in this process; load the plugin in each process that uses it"
        )

    def __repr__(self) -> str:
        meta = self.metadata
        return (
            f"<PluginHandle {meta.name!r} {meta.version} {self.state.name} from {self._source!r}>"
        )


def _json_bytes(request_json: object) -> bytes:
    if isinstance(request_json, str):
        try:
            return request_json.encode()
        except UnicodeEncodeError as exc:
            raise SerializationError(f"request is not valid JSON text: {exc}") from None
    if isinstance(request_json, bytes | bytearray | memoryview):
        try:
            return bytes(request_json)
        except (ValueError, TypeError) as exc:  # a released view, a view bytes() refuses
            raise SerializationError(f"call_json cannot read its request: {exc}") from None
    raise SerializationError(
        f"call_json needs JSON as str or bytes, not {type(request_json).__name__}"
    )


def _raw_bytes(request: object) -> bytes:
    """A ``call_raw`` request's bytes: any object with the buffer protocol (``bytearray``,
    ``memoryview``, ``array``, a ctypes structure or array, ...)."""
    try:
        with memoryview(request) as view:  # type: ignore[arg-type]
            return view.tobytes()
    except (TypeError, ValueError, BufferError) as exc:  # no buffer, a released view
        raise SerializationError(
            "call_raw needs a bytes-like object or a ctypes structure as its request, not "
            f"{type(request).__name__} ({exc})"
        ) from None


def _json_text(response: bytes) -> str:
    try:
        return response.decode()
    except UnicodeDecodeError as exc:
        raise SerializationError(f"response is not valid UTF-8 JSON: {exc}") from None
