"""``WorkerTransport``: a plugin instance in a worker process, behind the usual Transport.

Requests cross as JSON: the host encodes a ``call`` request exactly as the in-process
runtime would see it, the worker runs ``call_json`` on its own in-process (or native)
transport, and errors come back as their code and message, raised here as the same
``PluginError`` classes. Binary-transport calls cross as their bytes (``RawCall``), and
their answers as the response bytes, in the same ``Result``/``Failure`` frames. A crash
fails the session (``PluginCrashed``); with ``restart_on_crash`` a fresh session replaces
it, within ``RestartPolicy`` limits.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .._config import PluginConfig
from .._errors import (
    InitializationFailed,
    PluginCrashed,
    PluginError,
    SerializationError,
    ShutdownFailed,
    no_handler,
    not_active,
    not_carried_as_json,
    start_limit,
)
from .._json import decode_json, encode_unchecked
from .._levels import LogLevel
from .._lifecycle import LifecycleState
from .._logsink import LogSink
from .._sources import Source
from .._transport import PluginMetadata, ProcessUsage, Release, Transport
from .process import WorkerProcess
from .restart import RestartPolicy
from .session import WorkerSession


class WorkerTransport(Transport):
    """One plugin instance hosted by a worker process (and its restarts, if enabled)."""

    def __init__(self, source: Source, config: PluginConfig, sink: LogSink) -> None:
        self._source = source
        self._config = config
        self._sink = sink
        self._log = sink.instance_log()
        self._policy = RestartPolicy(
            config.max_restarts, config.restart_window, config.restart_backoff
        )
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._restarter: threading.Thread | None = None
        self._launching: WorkerProcess | None = None
        """The worker of a start in progress, once it exists (``shutdown`` kills it)."""
        self._rejected_before = 0
        self._restarts = 0
        """Crashed workers replaced by a fresh one (``_restart``)."""
        self._session: WorkerSession | None = None
        self.metadata = PluginMetadata("", "", ())

    @classmethod
    def start(
        cls, source: Source, config: PluginConfig, sink: LogSink, deadline: float | None
    ) -> WorkerTransport:
        """Start a worker with a fresh instance; ``InitializationFailed`` if it cannot."""
        transport = cls(source, config, sink)
        try:
            transport._session = transport._launch(deadline)
            transport._launching = None
        except BaseException:
            transport._log.close()
            raise
        return transport

    def _launch(self, deadline: float | None) -> WorkerSession:
        limit = start_limit(deadline, time.monotonic(), self._config.start_timeout)
        try:
            session = WorkerSession.launch(
                self._source,
                self._config,
                self._sink,
                deadline,
                self._on_crash,
                limit=limit,
                on_spawn=self._spawned,
            )
        except BaseException:
            self._launching = None
            raise
        self.metadata = session.metadata
        return session

    def _spawned(self, process: WorkerProcess) -> None:
        """A start has its worker: ``shutdown`` kills it if it comes before the start is
        done (its ``_launch`` caller says when, resetting ``_launching``)."""
        with self._lock:
            if self._closing.is_set():
                raise InitializationFailed("the plugin is shutting down")
            self._launching = process

    @property
    def _current(self) -> WorkerSession:
        session = self._session
        assert session is not None
        return session

    # -- Transport ---------------------------------------------------------------------

    @property
    def state(self) -> LifecycleState:
        return self._current.state

    @property
    def rejected_count(self) -> int:
        return self._rejected_before + self._current.rejected

    @property
    def restart_count(self) -> int:
        return self._restarts

    def process_usage(self) -> ProcessUsage:
        """The current worker's pid, RSS and CPU time (psutil, imported on first use); all
        None once it has ended. Read between two looks at its exit status: a worker is
        reaped only by ``WorkerProcess``, so its pid, still unreaped after the read, was
        still its own during it (never a later process given the same pid)."""
        process = self._current.process
        gone = ProcessUsage(None, None, None)
        if process.poll() is not None:
            return gone
        import psutil

        try:
            worker = psutil.Process(process.pid)
            with worker.oneshot():
                rss = worker.memory_info().rss
                cpu = worker.cpu_times()
        except psutil.Error:
            return gone
        if process.poll() is not None:
            return gone
        return ProcessUsage(process.pid, rss, cpu.user + cpu.system)

    def call(self, type_tag: str, request: Any, timeout: float | None, release: Release) -> Any:
        session = self._current
        try:
            if type(type_tag) is not str or not type_tag.isascii():
                type_tag = self._wire_tag(type_tag)
            payload = encode_unchecked(request)
        except Exception as exc:
            release()
            raise self._refusal(session, type_tag, exc) from None
        except BaseException:
            release()
            raise
        return _decode(type_tag, session.call(type_tag, payload, timeout, release))

    def call_json(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        session = self._current
        try:
            if type(type_tag) is not str or not type_tag.isascii():
                type_tag = self._wire_tag(type_tag)
        except Exception as exc:
            release()
            raise self._refusal(session, type_tag, exc) from None
        except BaseException:
            release()
            raise
        result: bytes = session.call(type_tag, payload, timeout, release)
        return result

    async def acall(
        self, type_tag: str, request: Any, timeout: float | None, release: Release
    ) -> Any:
        session = self._current
        try:
            if type(type_tag) is not str or not type_tag.isascii():
                type_tag = self._wire_tag(type_tag)
            payload = encode_unchecked(request)
        except Exception as exc:
            release()
            raise self._refusal(session, type_tag, exc) from None
        except BaseException:
            release()
            raise
        return _decode(type_tag, await session.acall(type_tag, payload, timeout, release))

    def call_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        result: bytes = self._current.call(message_id, payload, timeout, release)
        return result

    async def acall_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        result: bytes = await self._current.acall(message_id, payload, timeout, release)
        return result

    def _wire_tag(self, type_tag: object) -> str:
        """A type tag that is not plain ASCII ``str``, as it crosses the channel (a plain
        ``str``); ``UnknownMessageType`` if it cannot cross: no handler can have it."""
        if not isinstance(type_tag, str):
            raise no_handler(self.metadata.name, type_tag)
        try:
            type_tag.encode()
        except UnicodeEncodeError:  # a lone surrogate: not text any plugin can declare
            raise no_handler(self.metadata.name, type_tag) from None
        return str.__str__(type_tag)

    def _refusal(self, session: WorkerSession, type_tag: object, exc: Exception) -> Exception:
        """Why a call is refused before it is sent: the instance not serving comes first
        (as the in-process transport checks it first), then the tag, then the request."""
        state = session.state
        if state is not LifecycleState.ACTIVE:
            if session.crash is not None:
                return PluginCrashed(session.crash.message)
            return not_active(self.metadata.name, state.name)
        if isinstance(exc, PluginError):
            return exc
        return not_carried_as_json(f"request for {type_tag!r}", exc)

    def set_log_level(self, level: LogLevel) -> None:
        self._current.set_log_level(level)

    def shutdown(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            restarter, launching = self._restarter, self._launching
        try:
            if launching is not None:  # a restart still starting: its worker never serves
                launching.kill()
            if restarter is not None:
                restarter.join(max(0.0, deadline - time.monotonic()))
            problem = self._current.stop(max(0.0, deadline - time.monotonic()))
        except BaseException:  # interrupted (Ctrl-C): shutdown is one-shot, so end it all now
            self._current.abandon()
            raise
        finally:
            self._log.close()
        if problem:
            raise ShutdownFailed(f"plugin {self.metadata.name!r}: {problem}")

    # -- restarts ----------------------------------------------------------------------

    def _on_crash(self, session: WorkerSession) -> None:
        """On the dead session's reader thread: maybe schedule a fresh worker."""
        if not self._config.restart_on_crash or self._closing.is_set():
            return
        name = self.metadata.name
        delay = self._policy.next_delay(time.monotonic())
        if delay is None:
            self._log.emit(
                LogLevel.ERROR,
                "plugbridge",
                f"plugin {name!r}: not restarting its worker: {self._policy.max_restarts} "
                f"restart(s) within {self._policy.window}s already",
            )
            return
        self._log.emit(
            LogLevel.WARN,
            "plugbridge",
            f"plugin {name!r}: restarting its worker in {delay:.2f}s (restart "
            f"{self._policy.used} of {self._policy.max_restarts} within {self._policy.window}s)",
        )
        thread = threading.Thread(
            target=self._restart, args=(session, delay), name="plugbridge-restart", daemon=True
        )
        with self._lock:
            if self._closing.is_set():
                return
            self._restarter = thread
            thread.start()

    def _restart(self, dead: WorkerSession, delay: float) -> None:
        if self._closing.wait(delay):
            return
        try:
            fresh = self._launch(time.monotonic() + self._config.start_timeout)
        except PluginError as exc:
            if self._closing.is_set():
                return  # shutdown ended the start
            self._log.emit(
                LogLevel.ERROR,
                "plugbridge",
                f"plugin {self.metadata.name!r}: restarting its worker failed: {exc.message}",
            )
            self._on_crash(dead)
            return
        fresh.set_log_level(self._sink.level)
        with self._lock:
            self._launching = None
            if not self._closing.is_set():
                self._rejected_before += dead.rejected
                self._session = fresh
                self._restarts += 1
                return
        fresh.stop(self._config.shutdown_timeout)  # shutdown began (and killed it) meanwhile


def _decode(type_tag: str, data: bytes) -> Any:
    """The response as JSON builtins; ``SerializationError`` if it is not valid JSON."""
    try:
        return decode_json(data)
    except SerializationError:
        raise
    except Exception as exc:  # invalid UTF-8 in a string, nesting too deep
        raise not_carried_as_json(f"response of {type_tag!r}", exc) from None
