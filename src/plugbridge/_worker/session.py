"""The host's side of one running worker process: calls in flight, records, its end.

A session lives as long as one worker process (``launch`` starts it, see ``launch.py``).
Calls in flight are kept by id; frames from the worker are read by whoever holds the
reading turn (``reading.py``) and dispatched here: answers settle the waiting call (its slot
is released once the worker says the work has ended), log records go to the session's
``InstanceLog``. When the channel ends while the host did not ask the worker to stop, the
worker has crashed: the session turns FAILED, says so in an ERROR record, fails every call
in flight with ``PluginCrashed`` naming the exit status, and tells its owner (which may
start a fresh session).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from .._calls.completion import Completion, LoopCompletion, ThreadCompletion
from .._calls.inbox import LoopInboxes
from .._config import PluginConfig
from .._errors import (
    InternalError,
    InvalidState,
    PluginCrashed,
    PluginError,
    SerializationError,
    call_timed_out,
    cancelled_by_shutdown,
    describe_exception,
    error_for_code,
    no_handler,
    not_active,
    raw_call_timed_out,
    seconds,
)
from .._levels import LogLevel
from .._lifecycle import Lifecycle, LifecycleState
from .._logsink import LogSink
from .._sources import Source
from .._transport import Release
from .channel import MAX_FRAME_ENV, FrameTooLarge, ProtocolError, SendTimeout
from .launch import StartedWorker, log_record, start_worker
from .process import WorkerProcess
from .protocol import (
    EXIT_STOP_FAILED,
    Call,
    Cancel,
    Failure,
    Fatal,
    Log,
    RawCall,
    Released,
    Result,
    SetLevel,
    Stats,
    Stop,
    Stopped,
    WorkerMessage,
)
from .reading import ReadingTurn

HOST_END_SHARE = 0.1
"""Share of the shutdown timeout kept at its end for the host to terminate, kill and reap a
worker that did not end by itself."""
ANSWER_SHARE = 0.1
ANSWER_RESERVE = 0.3
"""Before that, the share (``ANSWER_RESERVE`` seconds at least, at most 40 % of the timeout)
kept for a worker whose ``on_stop`` overran its own budget to say so and exit: it must take
the GIL back from a plugin thread that may be spinning, write ``Stopped`` and end, which
takes ~20-40 ms on a quiet machine but several times that when the cores are busy. A worker
that has not ended by then is ended, and what its stop found (``on_stop`` hung, or raised)
is lost behind a generic "did not stop"."""

SENT_RECHECK = 0.005
"""Seconds between two looks at whether the calls accepted before a stop were all sent."""

STOPPED_GRACE = 0.1
"""Seconds the reader gets to read ``Stopped`` once the worker has ended cleanly (it wrote
the frame before): a reader held longer by a slow log callback is not waited for (the exit
status says the stop was clean). After a failed stop (``EXIT_STOP_FAILED``) the frame says
why, and the reader gets until the shutdown deadline."""

EXIT_WAIT = 1.0
"""Seconds a worker whose channel ended gets to exit before it is killed: the crash report
names its exit status, so it is built only once that status is known."""

CONTROL_WAIT = 0.05
"""Seconds a control frame (``Cancel``, ``SetLevel``) waits for a busy channel before a
background thread takes it over: the sender (maybe an event loop) is never held longer."""
LOOP_SEND_WAIT = 0.005
"""Seconds an ``acall`` waits for a busy channel before a background thread sends its call:
the caller's event loop is never held longer."""

_ids = itertools.count(1)


@dataclasses.dataclass(slots=True)
class _Pending:
    completion: Completion
    release: Release


class WorkerSession:
    """One worker process and the calls it carries. Build it with ``launch``."""

    def __init__(self, started: StartedWorker, on_crash: Callable[[WorkerSession], None]) -> None:
        self.process = started.process
        self.channel = started.channel
        self.log = started.log
        self.metadata = started.metadata
        self.on_crash = on_crash
        self.rejected = 0
        self._lifecycle = Lifecycle()
        self._lifecycle.move(LifecycleState.STARTING)
        self.crash: PluginCrashed | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._accepting = True
        self._unsent: set[int] = set()
        """Calls accepted whose frame is not written yet: ``Stop`` waits for them (with
        ``_lock``), so a call accepted before the stop began is never refused by the worker
        as read after ``Stop``. A set, not a count: an interrupted call may report twice."""
        self._all_sent = threading.Condition(self._lock)
        self._stopping = False
        self._stopped_error: str | bool | None = False
        """False until ``Stopped`` arrives; then its error (None: a clean stop)."""
        self._unanswered: frozenset[int] | None = None
        """Once ``Stopped`` arrives: the calls the worker read but did not answer."""
        self._stopped = threading.Event()
        self._stop_end_problem: str | None = None
        """Why the channel ended while stopping, if it was broken."""
        self._fatal: str | None = None
        self._pump = started.pump
        self._turn = ReadingTurn(self.channel, self.process, self._dispatch, self._pending)
        self._released = False
        self._caller_loops = LoopInboxes()
        self._lifecycle.move(LifecycleState.ACTIVE)
        self._reader = threading.Thread(
            target=self._read_loop, name=f"plugbridge-worker-{self.process.pid}", daemon=True
        )
        self._reader.start()

    @classmethod
    def launch(
        cls,
        source: Source,
        config: PluginConfig,
        sink: LogSink,
        deadline: float | None,
        on_crash: Callable[[WorkerSession], None],
        *,
        limit: str = "",
        on_spawn: Callable[[WorkerProcess], object] | None = None,
    ) -> WorkerSession:
        """Start a worker and its instance; ``InitializationFailed`` (nothing left) if not.
        ``limit`` and ``on_spawn``: see ``start_worker``."""
        started = start_worker(source, config, sink, deadline, limit=limit, on_spawn=on_spawn)
        try:
            return cls(started, on_crash)
        except BaseException:
            started.abandon()
            raise

    @property
    def state(self) -> LifecycleState:
        return self._lifecycle.state

    # -- calls -------------------------------------------------------------------------

    def submit(  # noqa: PLR0915 (one frame: hot path, and each handler covers the next step)
        self,
        type_tag: str | int,
        payload: bytes,
        timeout: float | None,
        release: Release,
        completion: Completion,
        *,
        deadline: float | None,
        cancellable: bool = False,
        patience: float | None = None,
    ) -> int:
        """Send a call and return its id; raise a ``PluginError`` (with ``release`` called
        and nothing left in flight) if it is refused or cannot be sent.

        The frame is built before the call is registered: whatever it fails on, nothing is
        in flight yet. Sending waits for the channel until ``deadline`` (the call's own):
        a call none of which was written by then (or late before it could be sent) is a
        ``Timeout`` and never runs; one written in part stays in flight (the rest follows
        in the background) and times out like any call. With ``patience`` (seconds) the
        caller waits no longer than that: a background thread sends the call then.

        ``type_tag`` is a ``str`` for a JSON call, an ``int`` (a checked ``uint32`` message
        id) for a call of the binary transport (``RawCall``); both are answered alike.
        """
        call_id = next(_ids)
        try:
            if type(type_tag) is str:
                message: Call | RawCall = Call(call_id, type_tag, payload, timeout, cancellable)
            elif type(type_tag) is int:
                message = RawCall(call_id, type_tag, payload, timeout, cancellable)
            else:
                raise no_handler(self.metadata.name, type_tag)
            frame = self.channel.frame(message)
        except BaseException as exc:
            release()
            raise self._unsendable(exc, type_tag) from None
        entry = _Pending(completion, release)
        send_by = _send_by(deadline, patience)
        sent_later = False
        try:
            with self._lock:
                accepted = self._accepting
                if accepted:
                    self._pending[call_id] = entry
                    self._unsent.add(call_id)
            if not accepted:
                raise self._refusal()
            self.channel.send_frame(frame, send_by)
        except SendTimeout as exc:
            if exc.started:
                return call_id  # the worker will receive it: it times out like any call
            handed: threading.Lock | None = None
            try:
                if send_by is not deadline and (deadline is None or time.monotonic() < deadline):
                    handed = threading.Lock()  # taken by the sender thread, or by an interrupt
                    self._send_later(
                        call_id,
                        frame,
                        entry,
                        handed,
                        deadline=deadline,
                        type_tag=type_tag,
                        timeout=timeout,
                    )
                    sent_later = True  # that thread counts it sent
                    return call_id
                raise _timed_out(type_tag, timeout) from None
            except BaseException:  # late, or interrupted: does a sender thread have the call?
                if handed is not None and not handed.acquire(blocking=False):
                    sent_later = True  # yes: it sends the call, which then runs
                    raise
                self._pending.pop(call_id, None)  # no, and now none ever will
                release()  # idempotent: harmless if a sweep released it already
                raise
        except OSError:
            pass  # a worker that is gone: the reader fails it with the others
        except BaseException:  # refused, or interrupted: it was not sent
            self._pending.pop(call_id, None)
            release()
            raise
        finally:
            if not sent_later:
                self._sent(call_id)
        return call_id

    def _wait_sent(self, until: float) -> None:
        """Wait (until ``until`` at most) for the frames of the calls accepted before the
        stop began, so that ``Stop`` follows them; not once the worker has ended. A call no
        longer pending (interrupted, or answered: its frame did go out) is not waited for,
        even if it could not say it was sent; so the wait is re-checked every few
        milliseconds, not only when told. The stop waits half its worker's time at most:
        a call stuck sending never takes all of ``on_stop``'s budget."""
        with self._lock:
            while not self._stopped.is_set() and not self._pending.keys().isdisjoint(self._unsent):
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._all_sent.wait(min(SENT_RECHECK, left))

    def _sent(self, call_id: int) -> None:
        """Call ``call_id``'s frame is written (or never will be): ``Stop`` may follow it."""
        self._unsent.discard(call_id)  # first, and one builtin: an interrupt cannot split it
        if self._stopping:  # a stop may be waiting for it
            with self._lock:
                self._all_sent.notify_all()

    def _send_later(
        self,
        call_id: int,
        frame: bytes,
        entry: _Pending,
        handed: threading.Lock,
        *,
        deadline: float | None,
        type_tag: str | int,
        timeout: float | None,
    ) -> None:
        """Send a call frame from a thread of its own (its caller may not wait). The thread
        owns the call only if it takes ``handed`` first: ``submit``, interrupted while
        starting it, takes that lock to keep the call from ever being sent."""

        def send_or_drop() -> None:
            late: PluginError | None = None
            try:
                if not entry.completion.settled:  # else its caller gave up: it never runs
                    self.channel.send_frame(frame, deadline)
                    return
            except SendTimeout as exc:
                if exc.started:
                    return
                late = _timed_out(type_tag, timeout)
            except OSError:
                return  # a worker that is gone: the reader fails it with the others
            self._pending.pop(call_id, None)
            entry.release()
            if late is not None:
                entry.completion.settle(None, late)

        def send() -> None:
            if not handed.acquire(blocking=False):
                return  # its caller was interrupted first: the call was dropped there
            try:
                send_or_drop()
            finally:
                self._sent(call_id)

        threading.Thread(target=send, name="plugbridge-send", daemon=True).start()

    def _unsendable(self, exc: BaseException, type_tag: object) -> BaseException:
        """What a caller sees when its call frame cannot be built."""
        if isinstance(exc, PluginError) or not isinstance(exc, Exception):
            return exc  # ours already, or KeyboardInterrupt and the like: as it is
        if isinstance(exc, FrameTooLarge):
            return SerializationError(
                f"call {_named(type_tag)}: its request ({exc.size} bytes) is larger than the "
                f"worker channel's frame limit ({exc.limit} bytes, see {MAX_FRAME_ENV})"
            )
        if isinstance(exc, UnicodeEncodeError):  # a lone surrogate: no handler has it
            return no_handler(self.metadata.name, type_tag)
        return InternalError(
            f"call {_named(type_tag)} cannot be sent to the worker: {describe_exception(exc)}"
        )

    def _refusal(self) -> PluginError:
        if self.crash is not None:
            return PluginCrashed(self.crash.message)
        return not_active(self.metadata.name, self.state.name)

    def call(
        self, type_tag: str | int, payload: bytes, timeout: float | None, release: Release
    ) -> Any:
        """A call from a thread: JSON (``type_tag`` a ``str``) or raw (an ``int`` message
        id); the answer's payload bytes."""
        me = threading.current_thread()
        turn = self._turn
        if turn.reading is me:
            # A log callback on the thread that reads: nobody else would read the answer.
            release()
            raise InvalidState(
                f"plugin {self.metadata.name!r} runs in a worker process: its log callback"
                " cannot call it synchronously (use another thread, or acall)"
            )
        completion = ThreadCompletion()
        deadline = None if timeout is None else time.monotonic() + timeout
        self.submit(type_tag, payload, timeout, release, completion, deadline=deadline)
        remaining = timeout
        try:
            if turn.take(me):
                turn.read(completion, deadline)
        finally:
            if turn.reading is me:
                setattr(turn, "reading", None)  # noqa: B010 (one builtin: see handed_back)
                turn.handed_back()
        if deadline is not None:
            remaining = max(0.0, deadline - time.monotonic())
        return completion.result(remaining, lambda: _timed_out(type_tag, timeout))

    async def acall(
        self, type_tag: str | int, payload: bytes, timeout: float | None, release: Release
    ) -> Any:
        completion = LoopCompletion(self._caller_loops.get(asyncio.get_running_loop()))
        deadline = None if timeout is None else time.monotonic() + timeout
        call_id = self.submit(
            type_tag,
            payload,
            timeout,
            release,
            completion,
            deadline=deadline,
            cancellable=True,
            patience=LOOP_SEND_WAIT,
        )
        completion.on_abandon = lambda: self._send_control(Cancel(call_id))
        self._turn.wake()  # only the reader thread reads for asyncio callers
        remaining = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # late already (sending took it all): no race with the answer
                completion.give_up(_timed_out(type_tag, timeout))
                return completion.outcome()
        return await completion.result(remaining, lambda: _timed_out(type_tag, timeout))

    def _send_control(self, message: Cancel | SetLevel) -> None:
        """Send a small control frame, waiting at most ``CONTROL_WAIT`` for the channel;
        if it is busy that long, a background thread sends it (until the channel ends)."""
        frame = self.channel.frame(message)
        try:
            self.channel.send_frame(frame, time.monotonic() + CONTROL_WAIT)
        except SendTimeout as exc:
            if not exc.started:
                threading.Thread(
                    target=self._send_control_later,
                    args=(frame,),
                    name="plugbridge-send",
                    daemon=True,
                ).start()
        except OSError:
            pass  # a worker that is gone is handled by the reader

    def _send_control_later(self, frame: bytes) -> None:
        with contextlib.suppress(OSError):
            self.channel.send_frame(frame)

    def set_log_level(self, level: LogLevel) -> None:
        if self._accepting:
            self._send_control(SetLevel(int(level)))

    # -- frames from the worker --------------------------------------------------------

    def _dispatch(self, message: WorkerMessage) -> None:
        kind = type(message)
        if kind is Result or kind is Failure:
            self._answer(message)  # type: ignore[arg-type]
        elif kind is Released:
            self._finish_call(message.id)  # type: ignore[union-attr]
        elif kind is Log:
            log_record(self.log, message)  # type: ignore[arg-type]
        elif kind is Stats:
            self.rejected = message.rejected  # type: ignore[union-attr]
        elif kind is Stopped:
            self._unanswered = frozenset(message.unanswered)  # type: ignore[union-attr]
            self._stopped_error = message.error  # type: ignore[union-attr]
            self._stopped.set()
        elif kind is Fatal:
            self._fatal = message.message  # type: ignore[union-attr]
        else:
            raise ProtocolError(f"unexpected {kind.__name__} frame from a running worker")

    # Frames may be handled twice (see ``Channel.peek_ready``): each step below does
    # nothing the second time, and a call leaves the table only after its release.
    # A call whose work has ended gives its slot back *before* its caller is answered
    # (everywhere below): a caller that has its answer finds ``in_flight`` without it.

    def _answer(self, message: Result | Failure) -> None:
        entry = self._pending.get(message.id)
        if entry is None:
            return  # already failed (the worker crashed meanwhile) or swept
        done = message.done
        if done:
            entry.release()
        if type(message) is Result:
            entry.completion.settle(message.payload, None)
        else:
            assert isinstance(message, Failure)
            entry.completion.settle(None, error_for_code(message.code, message.message))
        if done:
            self._pending.pop(message.id, None)

    def _finish_call(self, call_id: int) -> None:
        entry = self._pending.get(call_id)
        if entry is not None:
            entry.release()
            self._pending.pop(call_id, None)

    def _take_all_pending(self) -> list[tuple[int, _Pending]]:
        """Empty the table of calls in flight (under ``_lock``); the caller settles them."""
        pending = list(self._pending.items())
        self._pending.clear()
        return pending

    # -- crash -------------------------------------------------------------------------

    def _read_loop(self) -> None:
        """The reader thread: read while no caller does; handle the channel's end."""
        problem = self._turn.run()
        if not self._stopping:
            message = self._crash_message(problem)
        with self._lock:
            if self._stopping:
                self._stop_end_problem = problem
                self._stopped.set()
                return
            # Calls sent meanwhile were taken (and fail below); from here on they are
            # refused with the same message, and stop() only releases what is left.
            self._accepting = False
            self.crash = PluginCrashed(message)
            pending = self._take_all_pending()
            self._lifecycle.try_move(LifecycleState.FAILED)
        self._pump.join(1.0)  # its last words (a faulthandler traceback) come first
        self.log.emit(LogLevel.ERROR, "plugbridge", message)
        for _, entry in pending:
            entry.release()
            entry.completion.settle(None, PluginCrashed(message))
        self._finish(time.monotonic() + 1.0)
        self.on_crash(self)

    def _crash_message(self, problem: str | None) -> str:
        """Why the worker ended, naming its exit code or signal: wait for it (bounded),
        killing a worker that is alive but unusable (it closed or garbled its channel)."""
        process = self.process
        if process.wait(0.0 if problem else EXIT_WAIT) is None:
            process.kill()
        what = f"{problem}; it {process.describe()}" if problem else process.describe()
        if self._fatal:
            what += f" ({self._fatal})"
        return f"plugin {self.metadata.name!r}: worker process {process.pid} {what}"

    # -- stop --------------------------------------------------------------------------

    def stop(self, timeout: float) -> str | None:
        """Stop the worker within ``timeout`` seconds; return why it failed, or None."""
        start = time.monotonic()
        deadline = start + timeout
        with self._lock:
            running = (
                self._accepting
                and not self._turn.ended  # else the reader is reporting a crash
                and self._lifecycle.try_move(LifecycleState.STOPPING)
            )
            if running:
                self._stopping = True
                self._accepting = False
        if not running:  # crashed: just make sure everything is released
            if self._reader is not threading.current_thread():
                self._reader.join(max(0.0, deadline - time.monotonic()))
            self._finish(deadline)
            return None
        host_share = start + timeout * (1 - HOST_END_SHARE)
        answer = min(max(timeout * ANSWER_SHARE, ANSWER_RESERVE), timeout * 0.4)
        self._wait_sent(start + (host_share - answer - start) / 2)  # half the worker's time
        worker_budget = max(0.0, host_share - answer - time.monotonic())
        with contextlib.suppress(OSError):  # SendTimeout too: a frozen worker is ended below
            self.channel.send(Stop(worker_budget), host_share)
        self._turn.wake()
        ended = self.process.wait(host_share - time.monotonic())
        if ended is not None:  # it wrote Stopped before it ended: give the reader time
            # A failed stop's frame says why: wait for it until the deadline, not just
            # the grace (a reader woken late on busy cores would lose the reason).
            me = threading.current_thread()
            reads = me is self._reader or self._turn.reading is me  # only we could read it
            failed = ended == EXIT_STOP_FAILED and not reads
            grace = deadline - time.monotonic() if failed else STOPPED_GRACE
            self._stopped.wait(max(0.0, min(grace, deadline - time.monotonic())))
        broken = self._stop_end_problem  # before we end it (ending it breaks the channel)
        code = self.process.end(host_share)
        problem = self._stop_problem(code, timeout, broken)
        self._finish(deadline)
        self._lifecycle.move(LifecycleState.FAILED if problem else LifecycleState.STOPPED)
        return problem

    def abandon(self) -> None:
        """Kill the worker and release everything now (a stop that was interrupted)."""
        self.process.kill()
        self._finish(time.monotonic())
        self._lifecycle.try_move(LifecycleState.FAILED)

    def _stop_problem(self, code: int | None, timeout: float, broken: str | None) -> str | None:
        error, pid, ended = self._stopped_error, self.process.pid, self.process.describe()
        if error is False and broken is not None:
            return f"worker process {pid} {broken} while stopping; it {ended}"
        if error is False and code == 0:  # a clean stop whose Stopped frame was not read
            return None  # in time: a slow log callback held the reader
        if error is False and code == EXIT_STOP_FAILED:
            return (
                f"plugin {self.metadata.name!r} failed to stop in worker process {pid} "
                "(why was not read in time: the log callback was busy)"
            )
        if error is False:
            return (
                f"worker process {pid} did not stop within the shutdown timeout "
                f"({seconds(timeout)}) and was ended: it {ended}"
            )
        if isinstance(error, str):
            return error
        if code not in (0, None):
            return f"worker process {pid} {ended} while stopping"
        return None

    def _finish(self, deadline: float) -> None:
        """Release everything (idempotent): the process, threads, pipes, socket, log gate."""
        with self._lock:
            if self._released:
                return
            self._released = True
            self._accepting = False
            pending = self._take_all_pending()
        if self.process.poll() is None:
            self.process.kill()
        self._turn.close()
        self.channel.shutdown()  # wakes whoever waits to read or to send
        reader = self._reader
        if reader is not threading.current_thread():
            reader.join(max(0.05, deadline - time.monotonic()))
        self.channel.close()
        if not reader.is_alive() or reader is threading.current_thread():
            self.process.close_pidfd()  # nobody waits on it any more
        if self._pump.join(max(0.05, deadline - time.monotonic())):
            self.process.close_pipes()
        unanswered = self._unanswered
        for call_id, entry in pending:
            entry.release()
            if unanswered is None or call_id in unanswered:  # it may have run
                entry.completion.settle(None, cancelled_by_shutdown())
            else:  # never run: not ACTIVE, so a reload sends it to the new instance
                entry.completion.settle(None, not_active(self.metadata.name, "STOPPING"))
        self.log.close()


def _timed_out(type_tag: str | int, timeout: float | None) -> PluginError:
    """The ``Timeout`` of a JSON call (``type_tag`` a ``str``) or a raw one (an ``int``)."""
    if isinstance(type_tag, int):
        return raw_call_timed_out(type_tag, timeout)
    return call_timed_out(type_tag, timeout)


def _named(type_tag: object) -> str:
    """A call as messages name it: its type tag (quoted), or ``raw message N``."""
    return f"raw message {type_tag}" if type(type_tag) is int else repr(type_tag)


def _send_by(deadline: float | None, patience: float | None) -> float | None:
    """When a caller stops waiting to send its call: its ``deadline`` itself (the same
    object) unless ``patience`` seconds from now come sooner."""
    if patience is None:
        return deadline
    soon = time.monotonic() + patience
    return soon if deadline is None or soon < deadline else deadline
