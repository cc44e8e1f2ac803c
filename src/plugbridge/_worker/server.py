"""Inside the worker: serve the host's frames with a leader/follower pool of threads.

One thread at a time (the leader) reads the channel. A control frame (a level change) is
applied before the next frame is read, so it orders exactly like the host sent it. For a
call, the leader hands reading to a waiting follower (starting one if none waits) and runs
the call itself: no thread hop between reading a request and running it. Each thread
returns to waiting when its call ends; a few idle ones are kept, the rest exit.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

import msgspec

from .._errors import (
    InternalError,
    PluginError,
    TooManyRequests,
    describe_exception,
    not_active,
    not_carried_as_json,
)
from .._levels import LogLevel
from .._logsink import LogSink
from .._transport import Transport
from .channel import Channel, ProtocolError
from .protocol import (
    EXIT_STOP_FAILED,
    Call,
    Cancel,
    Failure,
    HostMessage,
    RawCall,
    Released,
    Result,
    SetLevel,
    Stats,
    Stop,
    Stopped,
)
from .tasks import CancellableCalls

MAX_IDLE_THREADS = 4
EXIT_PROTOCOL_ERROR = 3
"""Exit status of a worker that received something it could not understand."""


class WorkerServer:
    """Runs calls on the instance and answers the host, until told to stop."""

    def __init__(self, channel: Channel[HostMessage], transport: Transport, sink: LogSink) -> None:
        self._channel = channel
        self._transport = transport
        self._sink = sink
        self._read_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0
        self._running: dict[int, CallSlot] = {}
        """Calls read whose work has not ended yet (under ``_count_lock``)."""
        self._stopping = False
        """``Stop`` has been read: calls read after it are refused, never run."""
        self._cancellable = CancellableCalls(transport)

    def run(self) -> NoReturn:
        """Serve on the calling (main) thread; the process ends inside."""
        while True:
            self._serve_one()

    def _follow(self) -> None:
        while self._serve_one():
            with self._count_lock:
                if self._waiting >= MAX_IDLE_THREADS:
                    return

    def _serve_one(self) -> bool:
        with self._count_lock:
            self._waiting += 1
        self._read_lock.acquire()
        with self._count_lock:
            self._waiting -= 1
        work: Callable[[], None] | None = None
        try:
            message = self._receive()
            if type(message) is Call or type(message) is RawCall:
                work = self._admit(message)
            elif type(message) is Cancel:
                self._cancellable.cancel(message.id)
            elif type(message) is SetLevel:
                self._set_log_level(message.level)
            elif type(message) is Stop:
                self._stopping = True  # before anyone reads the next frame
                timeout = message.timeout
                work = lambda: self._stop(timeout)  # noqa: E731
            else:
                fatal(self._channel, f"unexpected {type(message).__name__} frame from the host")
        finally:
            self._read_lock.release()
        if work is not None:
            work()
        return True

    def _admit(self, message: Call | RawCall) -> Callable[[], None] | None:
        """A call, read (under the read lock). Returns the work to run on this thread, if
        any (a follower then reads); a cancellable call runs on a thread of its own."""
        if self._stopping:
            self._refuse(message)
            return None
        slot = CallSlot(self._channel, message)
        if message.cancellable:
            with self._count_lock:
                self._running[message.id] = slot
            self._cancellable.start(message, slot, functools.partial(self._call_ended, slot))
            return None
        with self._count_lock:
            self._running[message.id] = slot
            lonely = self._waiting == 0
        if lonely:
            threading.Thread(target=self._follow, name="plugbridge-call", daemon=True).start()
        transport, payload, timeout = self._transport, message.payload, message.timeout
        if isinstance(message, Call):
            run = functools.partial(
                transport.call_json, message.type_tag, payload, timeout, slot.release
            )
        else:
            run = functools.partial(
                transport.call_raw, message.message_id, payload, timeout, slot.release
            )
        return functools.partial(self._answer, slot, run)

    def _answer(self, slot: CallSlot, run: Callable[[], bytes]) -> None:
        """Run a call's work on this thread and send its answer."""
        try:
            payload = run()
        except BaseException as exc:
            if isinstance(exc, TooManyRequests):
                send(self._channel, Stats(self._transport.rejected_count))
            slot.fail(exc)
        else:
            slot.succeed(payload)
        finally:
            self._call_ended(slot)

    def _receive(self) -> HostMessage:
        try:
            message = self._channel.receive()
        except ProtocolError as exc:
            fatal(self._channel, f"protocol error: {exc}")
        except OSError:
            exit_now(0)
        if message is None:
            exit_now(0)  # the host closed the channel, or died
        return message

    def _set_log_level(self, value: int) -> None:
        try:
            level = LogLevel(value)
        except ValueError:
            fatal(self._channel, f"protocol error: invalid log level {value}")
        self._sink.level = level
        self._transport.set_log_level(level)

    def _refuse(self, call: Call | RawCall) -> None:
        """A call read after ``Stop``: answered at once, never run (the host may then
        send it to another instance)."""
        slot = CallSlot(self._channel, call)
        slot.release()
        slot.fail(not_active(self._transport.metadata.name, "STOPPING"))

    def _call_ended(self, slot: CallSlot) -> None:
        with self._count_lock:
            self._running.pop(slot.id, None)

    def _stop(self, timeout: float) -> NoReturn:
        deadline = time.monotonic() + timeout
        error: str | None = None
        try:
            self._transport.shutdown(timeout)
        except PluginError as exc:
            error = exc.message
        except BaseException as exc:
            error = describe_exception(exc)
        while self._running and time.monotonic() < deadline:
            time.sleep(0.002)  # let answers of drained calls reach the host first
        with self._count_lock:
            unanswered = [i for i, slot in self._running.items() if not slot.reported]
        send(self._channel, Stopped(error, unanswered))
        exit_now(0 if error is None else EXIT_STOP_FAILED)


class CallSlot:
    """One call's answer: sent with ``done`` set if its work has ended, else ``Released``
    follows when it does. Whatever the failure, it reaches the host as a ``PluginError``.
    Only the first answer and the first release count."""

    __slots__ = ("_channel", "_lock", "_released", "_reported", "_type_tag", "id")

    def __init__(self, channel: Channel[HostMessage], call: Call | RawCall) -> None:
        self._channel = channel
        self.id = call.id
        self._type_tag = call.type_tag
        self._lock = threading.Lock()
        self._released = False
        self._reported = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
            if self._reported:
                send(self._channel, Released(self.id))

    @property
    def reported(self) -> bool:
        """Whether the call's answer has been sent. Set only once the frame is out, so a
        call ``Stopped`` lists as unanswered may have been answered just before it, never
        the other way round (the host would otherwise retry a call that ran)."""
        return self._reported

    def succeed(self, payload: bytes) -> None:
        with self._lock:
            send(self._channel, Result(self.id, payload, self._released))
            self._reported = True

    def fail(self, exc: BaseException) -> None:
        error = call_error(self._type_tag, exc)
        with self._lock:
            if self._reported:
                return
            send(self._channel, Failure(self.id, int(error.code), error.message, self._released))
            self._reported = True


def call_error(type_tag: str, exc: BaseException) -> PluginError:
    """A call's failure as the host will see it.

    The instance raises ``PluginError``s for what it knows (its handlers' exceptions become
    ``HandlerError``); what else escapes comes from turning values into JSON and back, and
    msgspec says so with ``ValueError`` (a lone surrogate, invalid UTF-8, an integer too
    long) or ``RecursionError`` (nesting too deep): a ``SerializationError``, as everywhere.
    """
    if isinstance(exc, PluginError):
        return exc
    if isinstance(exc, ValueError | RecursionError):
        return not_carried_as_json(f"request or response of {type_tag!r}", exc)
    return InternalError(describe_exception(exc))


def send(channel: Channel[HostMessage], message: object) -> None:
    """Send to the host; a host that is gone ends this process."""
    try:
        try:
            channel.send(message)  # type: ignore[arg-type]
        except UnicodeEncodeError:  # a lone surrogate in some text (an exception's message)
            channel.send(escaped(message))
    except OSError:
        exit_now(0)


def escaped(message: Any) -> Any:
    """``message`` with lone surrogates in its text written as ``\\udXXX`` escapes."""
    fields = {name: _escaped_text(getattr(message, name)) for name in message.__struct_fields__}
    return msgspec.structs.replace(message, **fields)


def _escaped_text(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_escaped_text(item) for item in value]
    return value


def fatal(channel: Channel[HostMessage], message: str) -> NoReturn:
    """Tell the host (if it still listens) and stderr why the worker gives up, then exit."""
    from .protocol import Fatal

    with contextlib.suppress(OSError):
        channel.send(escaped(Fatal(message)))
    with contextlib.suppress(Exception):
        sys.stderr.write(f"plugbridge worker: {message}\n")
    exit_now(EXIT_PROTOCOL_ERROR)


def exit_now(code: int) -> NoReturn:
    """Flush what the plugin printed and leave, abandoning any thread still running."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
