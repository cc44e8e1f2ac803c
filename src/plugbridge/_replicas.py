"""Replicas: several instances of one plugin behind one handle, calls to the least busy.

A worker process runs its plugin on one interpreter, so a busy plugin uses more than one
core only as several processes. ``ReplicaTransport`` is one ``Transport`` made of N others
(worker transports today; it knows only the ``Transport`` interface, so Ray actors can
stand behind it too): the handle keeps its one limiter, log sink and statistics, and never
knows there are several.

The call path takes no lock. Each replica counts the calls it carries in a list
(``append``/``pop`` are atomic builtins; ``len`` reads the count), and a call goes to the
least busy ACTIVE replica, ties to the lowest index: a lone sequential caller keeps one
worker warm (rotating ties woke cold workers, ~20 µs a call, and gained nothing under
load), while calls spread as soon as one is busy. A replica that is down (crashed,
restarting under its own restart policy) is skipped while another is ACTIVE.

A reload replaces the replicas one at a time, in place: start a fresh instance, put it in
the slot (new calls go to it at once), wait for the calls the old one carries to end, stop
it. A caller that picked the old replica just before the swap has already counted itself
on it (it counts, then checks the slot still holds it), so the wait covers it: the old
instance is stopped with nothing in flight and no call fails because of the reload. A call
that still reaches an old instance after it stopped (it was counted too late for the wait,
or the wait ran out) is refused there and never ran; the refusal gave its concurrency slot
back, so it goes back to the handle (``InstanceReplaced``), which retries it with a fresh
slot: the limit holds across a rolling reload too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ._errors import (
    InitializationFailed,
    InvalidState,
    PluginError,
    ShutdownFailed,
    describe_exception,
    seconds,
)
from ._levels import LogLevel
from ._lifecycle import LifecycleState
from ._logsink import LogSink
from ._transport import (
    DRAIN_SHARE,
    InstanceReplaced,
    ProcessUsage,
    Release,
    Transport,
    TransportFactory,
)

_ACTIVE = LifecycleState.ACTIVE

ABANDON_STOP_S = 5.0
"""Seconds each replica that did start gets to stop when another one failed to: it has
never served a call, so this is only its ``on_stop``."""

STOP_GRACE_S = 0.25
"""Seconds past its timeout a replica's shutdown is waited for before it is reported as
not stopping (a worker's shutdown may overrun its timeout by a few reaping steps)."""

DRAIN_POLL_S = (0.0005, 0.01)
"""First and longest pause between two looks at an old replica's calls in flight during a
reload (the pause doubles): most calls end within a millisecond, a few take long."""

_T = TypeVar("_T")


class _Replica:
    """One slot's instance and the calls it carries (one list item each)."""

    __slots__ = ("busy", "index", "transport")

    def __init__(self, index: int, transport: Transport) -> None:
        self.index = index
        self.transport = transport
        self.busy: list[None] = []


class ReplicaTransport(Transport):
    """N instances of one plugin; see the module docstring."""

    def __init__(self, factory: TransportFactory, sink: LogSink, started: list[Transport]) -> None:
        self._factory = factory
        self._sink = sink
        self._log = sink.instance_log()
        self._count = len(started)
        self._slots = [_Replica(index, transport) for index, transport in enumerate(started)]
        """Mutated in place (one slot at a time, by a reload); never rebound."""
        self._lock = threading.Lock()
        """Guards closing against a reload putting a fresh replica in a slot."""
        self._closing = False
        self._final: LifecycleState | None = None
        self._retired_rejected = 0
        self._retired_restarts = 0
        """Counts of replicas a reload replaced (they belong to the handle's history)."""
        self.metadata = started[0].metadata

    @classmethod
    def start(
        cls, factory: TransportFactory, count: int, sink: LogSink, deadline: float | None
    ) -> ReplicaTransport:
        """Start ``count`` instances at once, each ACTIVE by ``deadline``: all of them, or
        ``InitializationFailed`` with every one that did start stopped again."""
        starts = [_Start(factory, deadline) for _ in range(count)]
        try:
            for start in starts:
                start.thread.start()
            for start in starts:
                start.thread.join()
        except BaseException:  # interrupted: each start still running stops its own
            _stop_all([t for t in (s.abandon() for s in starts) if t], ABANDON_STOP_S)
            raise
        started = [s.transport for s in starts if s.transport is not None]
        failed = [(n, s.error) for n, s in enumerate(starts, 1) if s.error is not None]
        if failed:
            _stop_all(started, ABANDON_STOP_S)
            number, error = failed[0]
            more = f" ({len(failed) - 1} more failed too)" if len(failed) > 1 else ""
            kind = type(error) if isinstance(error, InitializationFailed) else InitializationFailed
            raise kind(  # a BundleError stays one
                f"replica {number} of {count} failed to start{more}, so none was kept: "
                f"{_reason(error)}"
            ) from None
        return cls(factory, sink, started)

    # -- choosing a replica ------------------------------------------------------------

    def _pick(self) -> _Replica:
        """The least busy ACTIVE replica, ties to the lowest index; the first replica if
        none is ACTIVE (it then raises what its instance raises: ``PluginCrashed`` while
        it restarts, ``InvalidState`` if stopped). An idle first replica ends the search."""
        slots = self._slots
        first = slots[0]
        if not first.busy and first.transport.state is _ACTIVE:
            return first
        best: _Replica | None = None
        least = 0
        for replica in slots:
            load = len(replica.busy)
            if (best is None or load < least) and replica.transport.state is _ACTIVE:
                best, least = replica, load
                if not load:
                    break  # none can be less busy
        return first if best is None else best

    # -- calls -------------------------------------------------------------------------
    #
    # The same steps in all five forms: pick a replica, count the call on it (first thing
    # in the ``try``, a builtin: an interrupt lands before it, outside the ``try``, or
    # after it, inside, never between), check the slot still holds it (else a reload
    # replaced it meanwhile: pick again, the slot still held), call it. ``InvalidState``
    # from a replica a reload replaced means the call never ran there, but its release
    # is spent: ``InstanceReplaced`` sends it back to the handle, to be retried with a
    # fresh slot. The replica's own transport keeps the ``release`` contract; the call is
    # passed straight through.

    def call(self, type_tag: str, request: Any, timeout: float | None, release: Release) -> Any:
        return self._on_a_replica(lambda t: t.call(type_tag, request, timeout, release))

    def call_json(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        return self._on_a_replica(lambda t: t.call_json(type_tag, payload, timeout, release))

    async def acall(
        self, type_tag: str, request: Any, timeout: float | None, release: Release
    ) -> Any:
        return await self._on_a_replica_async(
            lambda t: t.acall(type_tag, request, timeout, release)
        )

    def call_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        return self._on_a_replica(lambda t: t.call_raw(message_id, payload, timeout, release))

    async def acall_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        return await self._on_a_replica_async(
            lambda t: t.acall_raw(message_id, payload, timeout, release)
        )

    def _on_a_replica(self, work: Callable[[Transport], _T]) -> _T:
        """Run ``work`` on the replica ``_pick`` chooses, counted as busy there;
        ``InstanceReplaced`` if that one refuses because a reload has just replaced it."""
        slots = self._slots
        while True:
            replica = self._pick()
            busy = replica.busy
            try:
                busy.append(None)
                if slots[replica.index] is replica:
                    return work(replica.transport)
            except InvalidState as exc:
                if slots[replica.index] is replica:
                    raise
                raise InstanceReplaced(exc.message) from None
            finally:
                busy.pop()

    async def _on_a_replica_async(self, work: Callable[[Transport], Awaitable[_T]]) -> _T:
        """``_on_a_replica`` for the asyncio forms."""
        slots = self._slots
        while True:
            replica = self._pick()
            busy = replica.busy
            try:
                busy.append(None)
                if slots[replica.index] is replica:
                    return await work(replica.transport)
            except InvalidState as exc:
                if slots[replica.index] is replica:
                    raise
                raise InstanceReplaced(exc.message) from None
            finally:
                busy.pop()

    # -- state and settings ------------------------------------------------------------

    @property
    def state(self) -> LifecycleState:
        """ACTIVE while any replica serves (the handle serves: calls avoid the others);
        FAILED when none does (all crashed, or restarting); STOPPING, then STOPPED (or
        FAILED if a replica failed to stop) once shut down."""
        if self._final is not None:
            return self._final
        if self._closing:
            return LifecycleState.STOPPING
        states = [replica.transport.state for replica in self._slots]
        if _ACTIVE in states:
            return _ACTIVE
        return LifecycleState.FAILED if LifecycleState.FAILED in states else states[0]

    @property
    def rejected_count(self) -> int:
        return self._retired_rejected + sum(r.transport.rejected_count for r in self._slots)

    @property
    def restart_count(self) -> int:
        return self._retired_restarts + sum(r.transport.restart_count for r in self._slots)

    def process_usage(self) -> ProcessUsage:
        """The processes running now, summed (pid None: there are several); a figure
        that some replica cannot tell is None."""
        usages = [r.transport.process_usage() for r in self._slots]
        rss = [u.rss_bytes if u else None for u in usages]
        cpu = [u.cpu_seconds if u else None for u in usages]
        return ProcessUsage(
            None,
            None if None in rss else sum(r for r in rss if r is not None),
            None if None in cpu else sum(c for c in cpu if c is not None),
        )

    def set_log_level(self, level: LogLevel) -> None:
        for replica in list(self._slots):
            replica.transport.set_log_level(level)

    # -- reload ------------------------------------------------------------------------

    def reload_in_place(
        self, start_within: float, stop_within: float, deadline: float | None
    ) -> bool:
        """Replace the replicas one at a time (see the module docstring).

        The budget, step by step: each fresh instance must be ACTIVE within
        ``start_within`` of its own start and by ``deadline``; each old one gets
        ``stop_within`` to stop, or the time left until ``deadline`` if that is less. So a
        reload with a timeout ends about when the timeout says however long the old
        replicas take to stop (a fresh start left no time fails like a start that ran out
        of it), and one without a timeout gives every start its whole start timeout.

        A fresh instance that fails to start raises ``InitializationFailed``; the replicas
        not replaced yet keep serving their code. Those already replaced keep serving the
        new code (the old code is gone from disk, so they cannot go back): the message says
        which, and the next successful reload replaces them all again.
        """
        for index in range(self._count):
            now = time.monotonic()
            start_by = now + start_within
            if deadline is not None and deadline < start_by:
                start_by = deadline
                if index and start_by <= now:
                    raise InitializationFailed(
                        self._stopped_at(
                            index, "the reload's timeout ran out before it could start"
                        )
                    )
            try:
                fresh = self._factory(start_by)
            except PluginError as exc:
                if index == 0:
                    raise  # nothing changed: the error as a single instance reports it
                raise InitializationFailed(self._stopped_at(index, exc.message)) from None
            fresh.set_log_level(self._sink.level)
            with self._lock:
                if self._closing:
                    closing = True
                else:
                    closing = False
                    old = self._slots[index]
                    self._slots[index] = _Replica(index, fresh)
            if closing:
                _stop_all([fresh], ABANDON_STOP_S)
                raise InvalidState("cannot reload a plugin that is shutting down")
            fresh.set_log_level(self._sink.level)  # a change made meanwhile went to the old
            self.metadata = fresh.metadata
            left = stop_within if deadline is None else deadline - time.monotonic()
            self._retire(old, max(0.0, min(stop_within, left)))
        return True

    def _stopped_at(self, index: int, why: str) -> str:
        """What a reload that stopped before replacing replica ``index + 1`` says."""
        return (
            f"reload of {self.metadata.name!r} stopped at replica {index + 1} of "
            f"{self._count}: {why}; {_numbered(1, index)} {'runs' if index == 1 else 'run'} "
            f"the new code, {_numbered(index + 1, self._count)} the previous one"
        )

    def _retire(self, old: _Replica, stop_within: float) -> None:
        """Let the calls ``old`` carries end (``DRAIN_SHARE`` of ``stop_within`` at most),
        then stop it with what is left; a failure to stop is a WARN record."""
        began = time.monotonic()
        drain_by = began + stop_within * DRAIN_SHARE
        pause, longest = DRAIN_POLL_S
        while old.busy and time.monotonic() < drain_by:
            time.sleep(min(pause, max(0.0, drain_by - time.monotonic())))
            pause = min(pause * 2, longest)
        transport = old.transport
        try:
            transport.shutdown(max(0.0, began + stop_within - time.monotonic()))
        except PluginError as exc:
            self._log.emit(
                LogLevel.WARN,
                "plugbridge",
                f"reload of {self.metadata.name!r} stands, but the previous instance of "
                f"replica {old.index + 1} of {self._count} failed to stop: {exc.message}",
            )
        finally:
            self._retired_rejected += transport.rejected_count
            self._retired_restarts += transport.restart_count

    # -- shutdown ----------------------------------------------------------------------

    def shutdown(self, timeout: float) -> None:
        """Stop every replica at once, each within ``timeout``; ``ShutdownFailed`` naming
        each that failed (after all were tried). Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        try:
            problems = _stop_all([r.transport for r in self._slots], timeout)
            self._final = LifecycleState.FAILED if problems else LifecycleState.STOPPED
        finally:
            self._log.close()
        if problems:
            failed = "; ".join(f"replica {n} of {self._count}: {p}" for n, p in problems)
            raise ShutdownFailed(f"plugin {self.metadata.name!r}: {failed}")


class _Start:
    """One replica starting on a thread of its own. If the start is abandoned meanwhile
    (the caller was interrupted), the thread stops what it started: nothing is left."""

    def __init__(self, factory: TransportFactory, deadline: float | None) -> None:
        self.transport: Transport | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        self.thread = threading.Thread(
            target=self._run, args=(factory, deadline), name="plugbridge-replica", daemon=True
        )

    def _run(self, factory: TransportFactory, deadline: float | None) -> None:
        try:
            transport = factory(deadline)
        except BaseException as exc:  # reported by the starting thread
            self.error = exc
            return
        with self._lock:
            if not self._abandoned:
                self.transport = transport
                return
        _stop_all([transport], ABANDON_STOP_S)

    def abandon(self) -> Transport | None:
        """Give up on this start; return its transport if it is already running."""
        with self._lock:
            self._abandoned = True
            transport, self.transport = self.transport, None
        return transport


def _stop_all(transports: Sequence[Transport], timeout: float) -> list[tuple[int, str]]:
    """Shut ``transports`` down at once, each within ``timeout``; return (1-based number,
    why) for each that failed or did not return in time."""
    problems: list[str | None] = [None] * len(transports)

    def stop(number: int, transport: Transport) -> None:
        try:
            transport.shutdown(timeout)
        except BaseException as exc:  # any failure is this replica's problem to report
            problems[number] = _reason(exc)

    threads = [
        threading.Thread(target=stop, args=(n, t), name="plugbridge-replica-stop", daemon=True)
        for n, t in enumerate(transports)
    ]
    _start_and_join(threads, time.monotonic() + timeout + STOP_GRACE_S)
    for number, thread in enumerate(threads):
        if thread.is_alive() and problems[number] is None:
            problems[number] = f"did not stop within {seconds(timeout)}"
    return [(n, p) for n, p in enumerate(problems, 1) if p is not None]


def _start_and_join(threads: list[threading.Thread], deadline: float) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _numbered(first: int, last: int) -> str:
    """Replicas ``first`` to ``last`` as a message names them: "replica 2", "replicas 2
    and 3", "replicas 2-5"."""
    if first == last:
        return f"replica {first}"
    if last == first + 1:
        return f"replicas {first} and {last}"
    return f"replicas {first}-{last}"


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, PluginError) else describe_exception(exc)
