"""``RayTransport``: a plugin instance in a Ray actor, behind the usual Transport.

The same shape as ``WorkerTransport``: requests cross as JSON (a ``call`` request is
encoded here exactly as the in-process runtime would see it), binary-transport calls as
their bytes, errors as their code and message, raised here as the same ``PluginError``
classes. The code is read from disk and shipped at every start (``_ray.shipping``), so the
actor may run on any node. A crash fails the session (``PluginCrashed``); with
``restart_on_crash`` a fresh actor replaces it, within ``RestartPolicy`` limits.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from typing import Any

from .._config import PluginConfig
from .._errors import (
    ConfigError,
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
from .._worker.restart import RestartPolicy
from .cluster import connected_ray
from .session import ActorSession
from .shipping import pack

DEFAULT_MAX_CONCURRENCY = 1000
"""Ray's own default for async actors: coroutines, not threads, so it costs nothing idle."""
CONTROL_CALLS = 8
"""Room above the handle's limit for the actor's control requests (record poll, stop...)."""


def actor_options(ray_options: Mapping[str, Any] | None, config: PluginConfig) -> dict[str, Any]:
    """The options the actor is created with: the user's ``ray_options``, never restarted
    by Ray (the restart policy is plugbridge's), and room for every call the handle lets in."""
    options = dict(ray_options or {})
    for key in ("max_restarts", "max_task_retries"):
        if key in options:
            raise ConfigError(
                f"ray_options[{key!r}] is plugbridge's to set: use restart_on_crash/max_restarts"
                " in the plugin's config instead"
            )
    limit = config.max_concurrent_ops
    options.setdefault(
        "max_concurrency", max(DEFAULT_MAX_CONCURRENCY, limit + CONTROL_CALLS if limit else 0)
    )
    options["max_restarts"] = 0
    return options


class RayTransport(Transport):
    """One plugin instance hosted by a Ray actor (and its restarts, if enabled)."""

    def __init__(
        self, source: Source, config: PluginConfig, sink: LogSink, options: dict[str, Any]
    ) -> None:
        self._source = source
        self._config = config
        self._sink = sink
        self._options = options
        self._log = sink.instance_log()
        self._policy = RestartPolicy(
            config.max_restarts, config.restart_window, config.restart_backoff
        )
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._restarter: threading.Thread | None = None
        self._rejected_before = 0
        self._restarts = 0
        self._session: ActorSession | None = None
        self.metadata = PluginMetadata("", "", ())

    @classmethod
    def start(
        cls,
        source: Source,
        config: PluginConfig,
        sink: LogSink,
        deadline: float | None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> RayTransport:
        """Start an actor with a fresh instance; ``InitializationFailed`` if it cannot."""
        transport = cls(source, config, sink, actor_options(ray_options, config))
        try:
            transport._session = transport._launch(deadline)
        except BaseException:
            transport._log.close()
            raise
        return transport

    def _launch(self, deadline: float | None) -> ActorSession:
        limit = start_limit(deadline, time.monotonic(), self._config.start_timeout)
        shipped = pack(self._source)  # the code as it is on disk now
        ray = connected_ray()
        wire = {f.name: getattr(self._config, f.name) for f in dataclasses.fields(self._config)}
        wire["log_level"] = int(self._sink.level)
        log = self._sink.instance_log()
        try:
            session = ActorSession.launch(ray, self._options, shipped, wire, log, deadline, limit)
        except BaseException:
            log.close()
            raise
        session.on_crash = self._on_crash
        self.metadata = session.metadata
        self._sink.name_plugin(session.metadata.name)
        return session

    @property
    def _current(self) -> ActorSession:
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
        """The actor's pid, RSS and CPU seconds as seen on its node (all None once gone)."""
        return self._current.process_usage()

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
        """A type tag that is not plain ASCII ``str``, as Ray carries it (a plain ``str``);
        ``UnknownMessageType`` if no handler can have it."""
        if not isinstance(type_tag, str):
            raise no_handler(self.metadata.name, type_tag)
        try:
            type_tag.encode()
        except UnicodeEncodeError:  # a lone surrogate: not text any plugin can declare
            raise no_handler(self.metadata.name, type_tag) from None
        return str.__str__(type_tag)

    def _refusal(self, session: ActorSession, type_tag: object, exc: Exception) -> Exception:
        """Why a call is refused before it is sent: not serving first, then the tag, then
        the request (the order the in-process transport checks them in)."""
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
            restarter = self._restarter
        try:
            if restarter is not None:
                restarter.join(max(0.0, deadline - time.monotonic()))
            problem = self._current.stop(max(0.0, deadline - time.monotonic()))
        except BaseException:  # interrupted (Ctrl-C): shutdown is one-shot, so end it all now
            self._current.abandon()
            raise
        finally:
            self._current.log.close()
            self._log.close()
        if problem:
            raise ShutdownFailed(problem)

    # -- restarts ----------------------------------------------------------------------

    def _on_crash(self, session: ActorSession) -> None:
        """On the thread that found the actor dead: maybe schedule a fresh actor."""
        if not self._config.restart_on_crash or self._closing.is_set():
            return
        name = self.metadata.name
        delay = self._policy.next_delay(time.monotonic())
        if delay is None:
            self._log.emit(
                LogLevel.ERROR,
                "plugbridge",
                f"plugin {name!r}: not restarting its Ray actor: {self._policy.max_restarts} "
                f"restart(s) within {self._policy.window}s already",
            )
            return
        self._log.emit(
            LogLevel.WARN,
            "plugbridge",
            f"plugin {name!r}: restarting its Ray actor in {delay:.2f}s (restart "
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

    def _restart(self, dead: ActorSession, delay: float) -> None:
        if self._closing.wait(delay):
            return
        try:
            fresh = self._launch(time.monotonic() + self._config.start_timeout)
        except PluginError as exc:
            if self._closing.is_set():
                return
            self._log.emit(
                LogLevel.ERROR,
                "plugbridge",
                f"plugin {self.metadata.name!r}: restarting its Ray actor failed: {exc.message}",
            )
            self._on_crash(dead)
            return
        with self._lock:
            if not self._closing.is_set():
                self._rejected_before += dead.rejected
                dead.log.close()
                self._session = fresh
                self._restarts += 1
                return
        fresh.stop(self._config.shutdown_timeout)  # shutdown began meanwhile
        fresh.log.close()


def _decode(type_tag: str, data: bytes) -> Any:
    """The response as JSON builtins; ``SerializationError`` if it is not valid JSON."""
    try:
        return decode_json(data)
    except SerializationError:
        raise
    except Exception as exc:
        raise not_carried_as_json(f"response of {type_tag!r}", exc) from None
