"""Inside the worker: serve the host's frames with a leader/follower pool of threads.

One thread at a time (the leader) reads the channel. A control frame (a level change) is
applied before the next frame is read, so it orders exactly like the host sent it. For a
call, the leader hands reading to a waiting follower (starting one if none waits) and runs
the call itself: no thread hop between reading a request and running it. Each thread
returns to waiting when its call ends; a few idle ones are kept, the rest exit.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

from .._errors import ErrorCode, PluginError, describe_exception
from .._levels import LogLevel
from .._logsink import LogSink
from .._transport import Transport
from .protocol import (
    Call,
    Cancel,
    Channel,
    Failure,
    HostMessage,
    ProtocolError,
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
        self._busy = 0
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
            if type(message) is Call and message.cancellable:
                with self._count_lock:
                    self._busy += 1
                slot = _CallSlot(self._channel, message.id)
                self._cancellable.start(message, slot.release, slot.report, self._call_ended)
            elif type(message) is Call:
                with self._count_lock:
                    self._busy += 1
                    lonely = self._waiting == 0
                if lonely:
                    threading.Thread(
                        target=self._follow, name="plugbridge-call", daemon=True
                    ).start()
                call = message
                work = lambda: self._run_call(call)  # noqa: E731
            elif type(message) is Cancel:
                self._cancellable.cancel(message.id)
            elif type(message) is SetLevel:
                self._set_log_level(message.level)
            elif type(message) is Stop:
                timeout = message.timeout
                work = lambda: self._stop(timeout)  # noqa: E731
            else:
                fatal(self._channel, f"unexpected {type(message).__name__} frame from the host")
        finally:
            self._read_lock.release()
        if work is not None:
            work()
        return True

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

    def _run_call(self, call: Call) -> None:
        slot = _CallSlot(self._channel, call.id)
        try:
            payload = self._transport.call_json(
                call.type_tag, call.payload, call.timeout, slot.release
            )
        except PluginError as exc:
            error = exc
            if error.code == ErrorCode.TOO_MANY_REQUESTS:
                send(self._channel, Stats(self._transport.rejected_count))
            slot.report(lambda done: Failure(call.id, int(error.code), error.message, done))
        except BaseException as exc:
            message = describe_exception(exc)
            slot.report(lambda done: Failure(call.id, int(ErrorCode.INTERNAL_ERROR), message, done))
        else:
            slot.report(lambda done: Result(call.id, payload, done))
        finally:
            self._call_ended()

    def _call_ended(self) -> None:
        with self._count_lock:
            self._busy -= 1

    def _stop(self, timeout: float) -> NoReturn:
        deadline = time.monotonic() + timeout
        error: str | None = None
        try:
            self._transport.shutdown(timeout)
        except PluginError as exc:
            error = exc.message
        except BaseException as exc:
            error = describe_exception(exc)
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.002)  # let answers of drained calls reach the host first
        send(self._channel, Stopped(error))
        exit_now(0)


class _CallSlot:
    """Sends a call's answer with ``done`` set if its work has ended, else ``Released`` later."""

    __slots__ = ("_channel", "_id", "_lock", "_released", "_reported")

    def __init__(self, channel: Channel[HostMessage], call_id: int) -> None:
        self._channel = channel
        self._id = call_id
        self._lock = threading.Lock()
        self._released = False
        self._reported = False

    def release(self) -> None:
        with self._lock:
            self._released = True
            if self._reported:
                send(self._channel, Released(self._id))

    def report(self, answer: Callable[[bool], Result | Failure]) -> None:
        """Send ``answer(done)``."""
        with self._lock:
            self._reported = True
            send(self._channel, answer(self._released))


def send(channel: Channel[HostMessage], message: object) -> None:
    """Send to the host; a host that is gone ends this process."""
    try:
        channel.send(message)  # type: ignore[arg-type]
    except OSError:
        exit_now(0)


def fatal(channel: Channel[HostMessage], message: str) -> NoReturn:
    """Tell the host (if it still listens) and stderr why the worker gives up, then exit."""
    from .protocol import Fatal

    with contextlib.suppress(OSError):
        channel.send(Fatal(message))
    with contextlib.suppress(Exception):
        sys.stderr.write(f"plugbridge worker: {message}\n")
    exit_now(EXIT_PROTOCOL_ERROR)


def exit_now(code: int) -> NoReturn:
    """Flush what the plugin printed and leave, abandoning any thread still running."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
