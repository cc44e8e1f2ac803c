"""``SessionTransport``: what the transports that host an instance elsewhere share.

A worker process (``WorkerTransport``) and a Ray actor (``RayTransport``) both hold the
instance in a *session*: one process or actor that carries the calls, fails as a whole
(``PluginCrashed``) and is replaced by a fresh one under ``restart_on_crash``. This base
holds the part that does not depend on where the session runs, so that both read the same:

- the five call forms (``call``, ``call_json``, ``acall``, ``call_raw``, ``acall_raw``):
  a request is encoded here exactly as the in-process runtime would see it, a tag that is
  not plain ASCII ``str`` is made one (or refused as no handler's), and a refusal before
  sending says why in the in-process order (not serving, then the tag, then the request).
  They are the subclasses' own methods (inherited, no extra frame), and each returns the
  call's slot exactly once: a refusal releases it in ``except BaseException`` before the
  session is asked, which releases it from then on;
- the restart policy (``_on_crash`` schedules, ``_restart`` launches and swaps sessions);
- the one-shot ``shutdown`` (an interrupted one abandons the session at once).

A subclass says how a session is launched (``_launch``) and what it calls it in messages
(``_what``); the small hooks below let it add what only its kind of session needs.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from .._config import PluginConfig
from .._errors import (
    PluginCrashed,
    PluginError,
    SerializationError,
    ShutdownFailed,
    no_handler,
    not_active,
    not_carried_as_json,
)
from .._json import decode_json, encode_unchecked
from .._levels import LogLevel
from .._lifecycle import LifecycleState
from .._logsink import LogSink
from .._sources import Source
from .._transport import PluginMetadata, Release, Transport
from .._worker.restart import RestartPolicy


class CallSession(Protocol):
    """One process or actor running one instance, as the transport uses it."""

    rejected: int
    crash: PluginCrashed | None

    @property
    def state(self) -> LifecycleState: ...

    def call(
        self, key: str | int, payload: bytes, timeout: float | None, release: Release, /
    ) -> Any: ...

    async def acall(
        self, key: str | int, payload: bytes, timeout: float | None, release: Release, /
    ) -> Any: ...

    def set_log_level(self, level: LogLevel, /) -> None: ...

    def stop(self, timeout: float, /) -> str | None: ...

    def abandon(self) -> None: ...


S = TypeVar("S", bound=CallSession)


class SessionTransport(Transport, Generic[S]):
    """One plugin instance hosted by a session (and its restarts, if enabled)."""

    _what: ClassVar[str]
    """What a session is called in the restart messages ("worker", "Ray actor")."""

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
        self._rejected_before = 0
        """Calls refused by sessions that have been replaced."""
        self._restarts = 0
        """Crashed sessions replaced by a fresh one (``_restart``)."""
        self._session: S | None = None
        self.metadata = PluginMetadata("", "", ())

    def _begin(self, deadline: float | None) -> None:
        """The first session (``start``); the instance log closed if there is none."""
        try:
            self._session = self._launch(deadline)
            with self._lock:
                self._launched()
        except BaseException:
            self._log.close()
            raise

    # -- what a subclass provides ------------------------------------------------------

    @abstractmethod
    def _launch(self, deadline: float | None) -> S:
        """A fresh session serving the instance (its crashes reported to ``_on_crash``),
        ``metadata`` set from it; ``InitializationFailed`` (nothing left) if not."""

    def _launched(self) -> None:
        """Under the lock, once a start or a restart has its session."""

    def _start_in_progress(self) -> Callable[[], object] | None:
        """Under the lock, as shutdown begins: what ends a start still in progress (run
        outside the lock), if anything can."""
        return None

    def _prepare(self, fresh: S) -> None:
        """A restarted session, before it takes over."""

    def _retire(self, session: S) -> None:
        """A session no longer used (replaced, or stopped): close what it alone holds."""

    def _stop_failure(self, problem: str) -> str:
        """``ShutdownFailed``'s message for why the session did not stop cleanly."""
        return f"plugin {self.metadata.name!r}: {problem}"

    @property
    def _current(self) -> S:
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
        """A type tag that is not plain ASCII ``str``, as it crosses to the session (a plain
        ``str``); ``UnknownMessageType`` if it cannot cross: no handler can have it."""
        if not isinstance(type_tag, str):
            raise no_handler(self.metadata.name, type_tag)
        try:
            type_tag.encode()
        except UnicodeEncodeError:  # a lone surrogate: not text any plugin can declare
            raise no_handler(self.metadata.name, type_tag) from None
        return str.__str__(type_tag)

    def _refusal(self, session: S, type_tag: object, exc: Exception) -> Exception:
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
            restarter, end_start = self._restarter, self._start_in_progress()
        try:
            if end_start is not None:  # a restart still starting: its session never serves
                end_start()
            if restarter is not None:
                restarter.join(max(0.0, deadline - time.monotonic()))
            problem = self._current.stop(max(0.0, deadline - time.monotonic()))
        except BaseException:  # interrupted (Ctrl-C): shutdown is one-shot, so end it all now
            self._current.abandon()
            raise
        finally:
            self._retire(self._current)
            self._log.close()
        if problem:
            raise ShutdownFailed(self._stop_failure(problem))

    # -- restarts ----------------------------------------------------------------------

    def _on_crash(self, session: S) -> None:
        """On the thread that found the session dead: maybe schedule a fresh one."""
        if not self._config.restart_on_crash or self._closing.is_set():
            return
        name, what = self.metadata.name, self._what
        delay = self._policy.next_delay(time.monotonic())
        if delay is None:
            self._log.emit(
                LogLevel.ERROR,
                "plugbridge",
                f"plugin {name!r}: not restarting its {what}: {self._policy.max_restarts} "
                f"restart(s) within {self._policy.window}s already",
            )
            return
        self._log.emit(
            LogLevel.WARN,
            "plugbridge",
            f"plugin {name!r}: restarting its {what} in {delay:.2f}s (restart "
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

    def _restart(self, dead: S, delay: float) -> None:
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
                f"plugin {self.metadata.name!r}: restarting its {self._what} failed: {exc.message}",
            )
            self._on_crash(dead)
            return
        self._prepare(fresh)
        with self._lock:
            self._launched()
            if not self._closing.is_set():
                self._rejected_before += dead.rejected
                self._retire(dead)
                self._session = fresh
                self._restarts += 1
                return
        fresh.stop(self._config.shutdown_timeout)  # shutdown began (and ended its start) meanwhile
        self._retire(fresh)


def _decode(type_tag: str, data: bytes) -> Any:
    """The response as JSON builtins; ``SerializationError`` if it is not valid JSON."""
    try:
        return decode_json(data)
    except SerializationError:
        raise
    except Exception as exc:  # invalid UTF-8 in a string, nesting too deep
        raise not_carried_as_json(f"response of {type_tag!r}", exc) from None
