"""The host's side of one actor: its start, calls in flight, crash and stop.

A session lives as long as one actor. Calls are Ray actor tasks whose answers say whether
the call succeeded (see ``_ray.actor``); Ray's own failures are mapped here: an actor that
died is ``PluginCrashed`` (the session turns FAILED, says so in an ERROR record and tells
its owner, which may start a fresh one), unless the host is stopping it (``Cancelled``).
A sync call waits in ``ray.get`` (no thread of ours); an ``acall`` awaits the answer's
future (no thread per call either). Either way a call's slot is given back when its answer
arrives, which the actor sends only once the plugin's work for it has ended; a caller that
stopped waiting (its timeout) leaves a callback that gives it back then.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from .._errors import (
    ConfigError,
    InitializationFailed,
    InternalError,
    PluginCrashed,
    PluginError,
    call_timed_out,
    cancelled_by_shutdown,
    describe_exception,
    error_for_code,
    not_active,
    raw_call_timed_out,
    seconds,
)
from .._levels import LogLevel
from .._lifecycle import Lifecycle, LifecycleState
from .._logsink import InstanceLog
from .._transport import PluginMetadata, ProcessUsage, Release
from .actor import PluginActor
from .logpump import RecordPump
from .shipping import ShippedCode
from .wire import CallAnswer, CallRequest, pack, unpack_answer

STOP_SHARE = 0.8
"""Share of the time left that the actor gets to stop its instance, at most; the rest
(``ANSWER_RESERVE`` at least) is for its answer to reach the host, and for the host to
collect the last records and answers and kill the actor."""
ANSWER_RESERVE = 0.2
"""Seconds kept, at least (at most half the time left), for the actor's answer to a stop to
travel back: an actor task's round trip is ~1 ms on a quiet machine but much longer when
the cores are busy, and an answer that came after the host stopped waiting lost what the
stop had found (``on_stop`` hung, or raised) behind a generic "did not stop"."""
CONTROL_WAIT = 5.0
"""Seconds a control request (level, statistics) waits for the actor's answer."""
LATE_ASK = 0.5
"""Seconds a start that missed its deadline waits to learn how far it got."""
HOST_DRAIN_SHARE = 0.5
"""Share of the shutdown timeout during which the host, refusing new calls, lets the calls
it already sent end before it asks the actor to stop. Ray does not order an actor's tasks
across caller threads (and a call hops to an actor thread), so a stop sent at once could
overtake a call sent just before it, which the stopping instance would then refuse."""
FAILED_START_STOP = 0.5
"""Seconds a failed start spends collecting the actor's last records before killing it."""

_ids = itertools.count(1)
_actor_class: Any = None
_actor_class_lock = threading.Lock()


def actor_class(ray: Any) -> Any:
    """``PluginActor`` as a Ray actor class (made once per process)."""
    global _actor_class
    with _actor_class_lock:
        if _actor_class is None:
            _actor_class = ray.remote(PluginActor)
        return _actor_class


class ActorSession:
    """One actor running one plugin instance. Build it with ``launch``."""

    def __init__(self, ray: Any, actor: Any, log: InstanceLog) -> None:
        self._ray = ray
        self.actor = actor
        self.log = log
        self.metadata = PluginMetadata("", "", ())
        self.on_crash: Callable[[ActorSession], None] = lambda session: None
        self.rejected = 0
        self.crash: PluginCrashed | None = None
        self._lifecycle = Lifecycle()
        self._lifecycle.move(LifecycleState.STARTING)
        self._lock = threading.Lock()
        self._in_flight: dict[int, list[Any]] = {}
        """Calls sent and not yet ended: their ``[release, ObjectRef or None]``. A stop
        waits for those refs (their answers), not for the table to empty: an entry a
        Ctrl-C stranded there is released when the actor ends."""
        self._accepting = False
        self._stopping = False
        self._killed = False
        self._pump = RecordPump(ray, actor, log, "plugbridge-ray", self._gone)

    @classmethod
    def launch(  # noqa: PLR0917 (one start's parts, each named at the one call site)
        cls,
        ray: Any,
        options: dict[str, Any],
        shipped: ShippedCode,
        config: dict[str, Any],
        log: InstanceLog,
        deadline: float | None,
        limit: str,
    ) -> ActorSession:
        """Create the actor and start the instance in it by ``deadline``;
        ``InitializationFailed`` (actor killed, records delivered) if it cannot."""
        try:
            configured = actor_class(ray).options(**options)
        except (TypeError, ValueError) as exc:  # Ray checks the options here
            raise ConfigError(f"ray_options: {exc}") from None
        try:
            actor = configured.remote(options["max_concurrency"])
        except Exception as exc:
            raise InitializationFailed(
                f"cannot create a Ray actor (ray_options {options!r}): {describe_exception(exc)}"
            ) from None
        session = cls(ray, actor, log)
        try:
            session._start(shipped, config, deadline, limit)
        except BaseException:
            session._kill()
            session._pump.join(time.monotonic() + FAILED_START_STOP)
            raise
        return session

    def _start(
        self, shipped: ShippedCode, config: dict[str, Any], deadline: float | None, limit: str
    ) -> None:
        ray = self._ray
        ref = self.actor.start.remote(shipped, config)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            metadata, code, message = ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise self._late(shipped, limit) from None
        except ray.exceptions.RayError as exc:
            raise InitializationFailed(f"Ray actor failed during start: {_why(exc)}") from None
        if metadata is None:
            with contextlib.suppress(Exception):  # its last records (a traceback) first
                ray.get(self.actor.stop.remote(0.0), timeout=FAILED_START_STOP)
                self._pump.join(time.monotonic() + FAILED_START_STOP)
            raise error_for_code(code, message)
        self.metadata = metadata
        with self._lock:
            self._accepting = True
            self._lifecycle.move(LifecycleState.ACTIVE)

    def _late(self, shipped: ShippedCode, limit: str) -> InitializationFailed:
        """A start that missed its deadline, named by how far it got (asked briefly)."""
        within = f"within the start timeout ({limit})"
        try:
            name = self._ray.get(self.actor.named.remote(), timeout=LATE_ASK)
        except Exception:  # not running yet: never placed, or still starting its process
            return InitializationFailed(
                f"the plugin's Ray actor was not running {within} (is there room in the "
                "cluster for its ray_options?); it was killed"
            )
        if name is not None:
            what = "plugin_init" if shipped.kind == "native" else "on_start"
            return InitializationFailed(
                f"{name}.{what} did not finish {within}; its Ray actor was killed"
            )
        loading = shipped.module or shipped.library or shipped.bundle_path
        return InitializationFailed(
            f"the Ray actor did not load plugin {loading!r} {within} and was killed"
        )

    @property
    def state(self) -> LifecycleState:
        return self._lifecycle.state

    # -- calls -------------------------------------------------------------------------

    def _submit(
        self, method: Any, key: str | int, payload: bytes, timeout: float | None, release: Release
    ) -> tuple[int, Any]:
        call_id = next(_ids)
        with self._lock:
            if not self._accepting:
                release()
                raise self._refusal()
            self._in_flight[call_id] = entry = [release, None]
        try:
            ref = method.remote(pack(CallRequest(call_id, key, payload, timeout)))
            entry[1] = ref
        except BaseException as exc:
            self._ended(call_id)
            if isinstance(exc, Exception):
                raise InternalError(
                    f"cannot send the call to Ray: {describe_exception(exc)}"
                ) from None
            raise
        return call_id, ref

    def call(
        self, key: str | int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        """A call from a thread (``key``: a type tag, or a raw message id); the response."""
        call_id, ref = self._submit(self.actor.call, key, payload, timeout, release)
        ray = self._ray
        try:
            answer = ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            self._end_later(call_id, ref)
            raise _timed_out(key, timeout) from None
        except ray.exceptions.RayError as exc:
            self._ended(call_id)
            raise self._failure(exc) from None
        except BaseException:  # interrupted: the answer will still give the slot back
            self._end_later(call_id, ref)
            raise
        self._ended(call_id)
        return self._answered(unpack_answer(answer))

    async def acall(
        self, key: str | int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        call_id, ref = self._submit(self.actor.acall, key, payload, timeout, release)
        future = ref.future()
        future.add_done_callback(lambda _: self._ended(call_id))  # before the caller wakes
        ray = self._ray
        answered = asyncio.wrap_future(future)
        answered.add_done_callback(_retrieved)
        try:
            packed = await asyncio.wait_for(asyncio.shield(answered), timeout)
        except TimeoutError:
            raise _timed_out(key, timeout) from None
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self.actor.cancel.remote(call_id)
            raise
        except ray.exceptions.RayError as exc:
            raise self._failure(exc) from None
        answer = unpack_answer(packed)
        if answer.produced > self._pump.delivered:
            await asyncio.to_thread(self._pump.catch_up, answer.produced)
        return self._answered(answer, caught_up=True)

    def _answered(self, answer: CallAnswer, *, caught_up: bool = False) -> bytes:
        if answer.rejected:
            self.rejected = answer.rejected
        if not caught_up and answer.produced > self._pump.delivered:
            self._pump.catch_up(answer.produced)
        if answer.ok:
            return answer.data
        raise error_for_code(answer.code, answer.message)

    def _ended(self, call_id: int) -> None:
        """A call's work has ended (its answer arrived, or the actor is gone)."""
        with self._lock:
            entry = self._in_flight.pop(call_id, None)
        if entry is not None:
            entry[0]()

    def _end_later(self, call_id: int, ref: Any) -> None:
        ref.future().add_done_callback(lambda _: self._ended(call_id))

    def _failure(self, exc: BaseException) -> PluginError:
        ray = self._ray
        if isinstance(exc, ray.exceptions.RayActorError):
            if self._stopping:
                return cancelled_by_shutdown()
            return self._crashed(exc)
        if isinstance(exc, ray.exceptions.TaskCancelledError):
            return cancelled_by_shutdown()
        return InternalError(f"Ray failed the call: {_why(exc)}")

    def _refusal(self) -> PluginError:
        if self.crash is not None:
            return PluginCrashed(self.crash.message)
        return not_active(self.metadata.name, self.state.name)

    # -- control -----------------------------------------------------------------------

    def set_log_level(self, level: LogLevel) -> None:
        """Applied in the actor before this returns (the very next record is filtered by
        it); bounded, and a no-op on an actor that is gone."""
        if self._accepting:
            with contextlib.suppress(Exception):
                self._ray.get(self.actor.set_log_level.remote(int(level)), timeout=CONTROL_WAIT)

    def process_usage(self) -> ProcessUsage:
        gone = ProcessUsage(None, None, None)
        if not self._accepting:
            return gone
        try:
            pid, rss, cpu = self._ray.get(self.actor.usage.remote(), timeout=CONTROL_WAIT)
        except Exception:
            return gone
        return ProcessUsage(pid, rss, cpu)

    # -- crash -------------------------------------------------------------------------

    def _gone(self, exc: BaseException) -> None:
        """The record pump found the actor gone (on its thread)."""
        if not self._stopping and not self._killed:
            self._crashed(exc)

    def _crashed(self, exc: BaseException) -> PluginCrashed:
        """The actor died while nobody asked it to stop: FAILED, reported once."""
        with self._lock:
            if self.crash is not None:
                return PluginCrashed(self.crash.message)
            self.crash = PluginCrashed(
                f"plugin {self.metadata.name!r}: its Ray actor died: {_why(exc)}"
            )
            self._accepting = False
            self._lifecycle.try_move(LifecycleState.FAILED)
            crash = self.crash
        self._kill()
        self.log.emit(LogLevel.ERROR, "plugbridge", crash.message)
        self.on_crash(self)
        return PluginCrashed(crash.message)

    # -- stop --------------------------------------------------------------------------

    def stop(self, timeout: float) -> str | None:
        """Stop the instance and the actor within ``timeout``; why it failed, or None."""
        start = time.monotonic()
        deadline = start + timeout
        with self._lock:
            running = self._accepting and self._lifecycle.try_move(LifecycleState.STOPPING)
            self._stopping = True
            self._accepting = False
        if not running:  # crashed (or never started): make sure the actor is gone
            self._kill()
            return None
        ray = self._ray
        problem: str | None = None
        drain_by = start + timeout * HOST_DRAIN_SHARE
        while self._in_flight and time.monotonic() < drain_by:
            time.sleep(0.002)
        left = max(0.0, deadline - time.monotonic())
        reserve = min(max(left * (1 - STOP_SHARE), ANSWER_RESERVE), left / 2)
        try:
            error = ray.get(
                self.actor.stop.remote(left - reserve),
                timeout=max(0.0, deadline - time.monotonic()),
            )
        except ray.exceptions.GetTimeoutError:
            problem = (
                f"plugin {self.metadata.name!r} did not stop within the shutdown timeout "
                f"({seconds(timeout)}); its Ray actor was killed"
            )
        except ray.exceptions.RayError as exc:
            problem = (
                f"plugin {self.metadata.name!r}: its Ray actor died while stopping: {_why(exc)}"
            )
        else:
            if error is not None:
                problem = str(error)
            self._pump.join(deadline)  # the last records, before shutdown returns
            self._await_answers(deadline)
        self._kill()
        self._lifecycle.move(LifecycleState.FAILED if problem else LifecycleState.STOPPED)
        return problem

    def abandon(self) -> None:
        """End the actor now (a stop that was interrupted): FAILED, everything released."""
        self._stopping = True
        self._kill()
        self._lifecycle.try_move(LifecycleState.FAILED)

    def _await_answers(self, deadline: float) -> None:
        """Wait (until ``deadline``) for the answers of the calls the stop drained."""
        with self._lock:
            refs = [entry[1] for entry in self._in_flight.values() if entry[1] is not None]
        if refs:
            with contextlib.suppress(Exception):
                self._ray.wait(
                    refs,
                    num_returns=len(refs),
                    timeout=max(0.0, deadline - time.monotonic()),
                    fetch_local=False,
                )

    def _kill(self) -> None:
        """End the actor (idempotent); calls still in flight give their slots back."""
        with self._lock:
            self._accepting = False
            self._killed = True
            left = list(self._in_flight)
        with contextlib.suppress(Exception):
            self._ray.kill(self.actor, no_restart=True)
        for call_id in left:
            self._ended(call_id)


def _retrieved(answered: asyncio.Future[Any]) -> None:
    """Mark a late answer's failure as seen (its caller left: a timeout, a cancel), so
    asyncio does not report it as never retrieved."""
    if not answered.cancelled():
        answered.exception()


def _timed_out(key: str | int, timeout: float | None) -> PluginError:
    if type(key) is int:
        return raw_call_timed_out(key, timeout)
    return call_timed_out(str(key), timeout)


def _why(exc: BaseException) -> str:
    """Ray's explanation, in one line (its messages span many)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if "because" in line or "died" in line:
            return line
    return lines[0] if lines else type(exc).__name__
