"""The host's side of one worker process: handshake, calls in flight, logs, its end.

A session lives as long as one worker process. Frames from the worker are read by one
thread at a time (the one holding the reading turn): answers settle the waiting call (its
slot is released once the worker says the work has ended), log records go to the session's
``InstanceLog``. A sync caller whose call is the only one in flight and that finds the turn
free takes it and reads until its own answer arrives, so the answer needs no hop between
threads; otherwise the session's reader thread reads (for asyncio callers, for several
calls in flight, for records while nobody calls, for the channel's end).
When the channel ends while the host did not ask the worker to stop, the worker has
crashed: the session turns FAILED, says so in an ERROR record, fails every call in flight
with ``PluginCrashed`` naming the exit status, and tells its owner (which may start a fresh
session).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import math
import os
import select
import site
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .._calls.completion import Completion, LoopCompletion, ThreadCompletion
from .._calls.inbox import LoopInboxes
from .._config import PluginConfig
from .._errors import (
    Cancelled,
    ConfigError,
    InitializationFailed,
    InvalidState,
    PluginCrashed,
    PluginError,
    UnknownMessageType,
    call_timed_out,
    error_for_code,
)
from .._levels import LogLevel
from .._lifecycle import LifecycleState
from .._logsink import InstanceLog, LogSink
from .._sources import NativeSource, Source
from .._transport import PluginMetadata, Release
from .output import OutputPump
from .process import WorkerProcess
from .protocol import (
    PROTOCOL_VERSION,
    Call,
    Cancel,
    Channel,
    Failure,
    Fatal,
    Hello,
    Log,
    NativePlugin,
    ProtocolError,
    PythonPlugin,
    Ready,
    Released,
    Result,
    SetLevel,
    Start,
    StartFailed,
    Stats,
    Stop,
    Stopped,
    WorkerMessage,
)

WORKER_STOP_SHARE = 0.8
"""Share of the shutdown timeout the worker gets to stop its instance; the rest is the
host's, to terminate, kill and reap a worker that did not."""
START_MARGIN = 0.05
"""Seconds of a start deadline kept by the host to receive the worker's answer."""
IDLE_GRACE = 0.005
"""Seconds the reader thread leaves the channel to sync callers after one's turn ended
with no call in flight: back-to-back calls read their own answers without waking it.
Records sent while nobody calls may wait this long (twice at most)."""
POLL_RECHECK_MS = 500
"""The reader thread's wait for the channel re-checks that the session is alive this often."""

_ids = itertools.count(1)


@dataclasses.dataclass(slots=True)
class _Pending:
    completion: Completion
    release: Release


class WorkerSession:
    """One worker process and the calls it carries. Build it with ``launch``."""

    def __init__(
        self,
        process: WorkerProcess,
        channel: Channel[WorkerMessage],
        log: InstanceLog,
        on_crash: Callable[[WorkerSession], None],
    ) -> None:
        self.process = process
        self.channel = channel
        self.log = log
        self.on_crash = on_crash
        self.metadata = PluginMetadata("", "", ())
        self.rejected = 0
        self.state = LifecycleState.STARTING
        self.crash: PluginCrashed | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._accepting = False
        self._stopping = False
        self._died = False
        self._stopped_error: str | bool | None = False
        """False until ``Stopped`` arrives; then its error (None: a clean stop)."""
        self._stopped = threading.Event()
        self._fatal: str | None = None
        self._pump = OutputPump(
            process.stdout_fd, process.stderr_fd, log, f"plugbridge-worker-{process.pid}"
        )
        self._reader: threading.Thread | None = None
        self._turn = threading.Condition(threading.Lock())
        """Guards the reading turn; the reader thread waits on it while a caller reads."""
        self._reading: threading.Thread | None = None
        """The thread whose turn it is to read the channel, if any."""
        self._quiet = False
        """A caller's turn ended with nothing left to read: the reader thread leaves the
        channel to callers a little longer (see ``IDLE_GRACE``)."""
        self._ended = False
        self._end_problem: str | None = None
        """Why the channel ended (None: it just closed), once ``_ended``."""
        self._readable = select.poll()
        self._readable.register(channel.sock.fileno(), select.POLLIN)
        self._released = False
        self._caller_loops = LoopInboxes()

    # -- start -------------------------------------------------------------------------

    @classmethod
    def launch(
        cls,
        source: Source,
        config: PluginConfig,
        sink: LogSink,
        deadline: float | None,
        on_crash: Callable[[WorkerSession], None],
    ) -> WorkerSession:
        """Start a worker and its instance; ``InitializationFailed`` (nothing left) if not."""
        start = Start(
            PROTOCOL_VERSION,
            _wire_source(source),
            _wire_config(config, sink.level),
            list(sys.path),
            None if deadline is None else max(0.0, deadline - time.monotonic() - START_MARGIN),
        )
        try:
            msgspec.msgpack.encode(start)
        except (TypeError, msgspec.EncodeError) as exc:
            raise ConfigError(f"config cannot be sent to a worker process: {exc}") from None
        host_end, worker_end = socket.socketpair()
        try:
            process = WorkerProcess.spawn(
                worker_command(worker_end.fileno()),
                [worker_end.fileno()],
                _worker_env(),
            )
        except BaseException as exc:
            host_end.close()
            raise InitializationFailed(f"cannot start a worker process: {exc}") from None
        finally:
            worker_end.close()
        channel: Channel[WorkerMessage] = Channel(host_end, WorkerMessage)
        session = cls(process, channel, sink.instance_log(), on_crash)
        try:
            session._handshake(start, sink, deadline)
        except BaseException:
            session._abandon_start()
            raise
        return session

    def _handshake(self, start: Start, sink: LogSink, deadline: float | None) -> None:
        try:
            self.channel.send(start)
            hello = self._receive_until(deadline)
            if not isinstance(hello, Hello):
                raise ProtocolError(f"expected Hello, got {type(hello).__name__}")
            if hello.protocol != PROTOCOL_VERSION:
                raise InitializationFailed(
                    f"worker speaks protocol {hello.protocol}, host speaks {PROTOCOL_VERSION}"
                )
            while True:
                message = self._receive_until(deadline)
                if isinstance(message, Log):
                    self._log_record(message)
                elif isinstance(message, Ready):
                    break
                elif isinstance(message, StartFailed):
                    raise error_for_code(message.code, message.message)
                elif isinstance(message, Fatal):
                    raise InitializationFailed(f"worker failed: {message.message}")
                else:
                    raise ProtocolError(f"unexpected {type(message).__name__} during start")
        except TimeoutError:
            raise InitializationFailed(
                f"worker process {self.process.pid} did not start the plugin in time"
            ) from None
        except ProtocolError as exc:
            raise InitializationFailed(f"worker protocol error during start: {exc}") from None
        except OSError as exc:
            raise InitializationFailed(f"worker channel failed during start: {exc}") from None
        self.channel.sock.settimeout(None)
        self.metadata = PluginMetadata(message.name, message.version, tuple(message.type_tags))
        sink.name_plugin(message.name)
        self._accepting = True
        self.state = LifecycleState.ACTIVE
        self._reader = threading.Thread(
            target=self._read_loop, name=f"plugbridge-worker-{self.process.pid}", daemon=True
        )
        self._reader.start()

    def _receive_until(self, deadline: float | None) -> WorkerMessage:
        if deadline is not None:
            self.channel.sock.settimeout(max(0.001, deadline - time.monotonic()))
        message = self.channel.receive()
        if message is None:
            code = self.process.wait(2.0)
            if code is None:
                self.process.kill()
            raise InitializationFailed(
                f"worker process {self.process.pid} {self.process.describe()} during start"
            )
        return message

    def _abandon_start(self) -> None:
        self.state = LifecycleState.FAILED
        self.process.kill()
        self._finish(time.monotonic() + 1.0)

    # -- calls -------------------------------------------------------------------------

    def submit(
        self,
        type_tag: str,
        payload: bytes,
        timeout: float | None,
        release: Release,
        completion: Completion,
        *,
        cancellable: bool = False,
    ) -> int:
        """Send a call and return its id; raise (with ``release`` called) if refused."""
        if type(type_tag) is not str:
            release()
            raise UnknownMessageType(f"type_tag must be a str, not {type(type_tag).__name__}")
        with self._lock:
            accepting = self._accepting
            if accepting:
                call_id = next(_ids)
                self._pending[call_id] = _Pending(completion, release)
        if not accepting:
            release()
            raise self._refusal()
        # A worker that is gone cannot take it; the reader then fails it with the others.
        with contextlib.suppress(OSError):
            self.channel.send(Call(call_id, type_tag, payload, timeout, cancellable))
        return call_id

    def _refusal(self) -> PluginError:
        if self.crash is not None:
            return PluginCrashed(self.crash.message)
        if self._died:
            return PluginCrashed(
                f"plugin {self.metadata.name!r}: worker process {self.process.pid} has died"
            )
        return InvalidState(
            f"plugin {self.metadata.name!r} is {self.state.name}; calls need ACTIVE"
        )

    def call(self, type_tag: str, payload: bytes, timeout: float | None, release: Release) -> Any:
        me = threading.current_thread()
        if self._reading is me:
            # A log callback on the thread that reads: nobody else would read the answer.
            release()
            raise InvalidState(
                f"plugin {self.metadata.name!r} runs in a worker process: its log callback"
                " cannot call it synchronously (use another thread, or acall)"
            )
        completion = ThreadCompletion()
        self.submit(type_tag, payload, timeout, release, completion)
        deadline = None if timeout is None else time.monotonic() + timeout
        remaining = timeout
        if self._take_turn(me):
            try:
                self._read_frames(completion, deadline)
            finally:
                self._end_turn()
            if deadline is not None:
                remaining = max(0.0, deadline - time.monotonic())
        return completion.result(remaining, lambda: call_timed_out(type_tag, timeout))

    async def acall(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> Any:
        completion = LoopCompletion(self._caller_loops.get(asyncio.get_running_loop()))
        call_id = self.submit(type_tag, payload, timeout, release, completion, cancellable=True)
        completion.on_abandon = lambda: self._send_quietly(Cancel(call_id))
        self._wake_reader()  # only the reader thread reads for asyncio callers
        return await completion.result(timeout, lambda: call_timed_out(type_tag, timeout))

    def _send_quietly(self, message: Any) -> None:
        with contextlib.suppress(OSError):  # a worker that is gone is handled by the reader
            self.channel.send(message)

    def set_log_level(self, level: LogLevel) -> None:
        if self._accepting:
            with contextlib.suppress(OSError):
                self.channel.send(SetLevel(int(level)))

    # -- reading -----------------------------------------------------------------------

    def _take_turn(self, me: threading.Thread) -> bool:
        """Make it ``me``'s turn to read, if its call is the only one in flight, nobody
        reads and the channel has not ended. With several in flight the reader thread reads
        for all (a reading caller would race it for every frame)."""
        with self._turn:
            if self._reading is not None or self._ended or len(self._pending) > 1:
                return False
            self._reading = me
        return True

    def _end_turn(self) -> None:
        """End a caller's turn; the reader thread takes over at once if there is work."""
        with self._turn:
            self._reading = None
            if self._pending or self.channel.has_frame():
                self._quiet = False
                self._turn.notify()
            else:
                self._quiet = True

    def _wake_reader(self) -> None:
        """The reader thread must read now (not after ``IDLE_GRACE``)."""
        with self._turn:
            self._quiet = False
            self._turn.notify()

    def _read_frames(self, completion: ThreadCompletion | None, deadline: float | None) -> None:
        """In our turn: read and dispatch frames until ``completion`` is settled, or until
        ``deadline``, or the channel's end; without a completion (the reader thread), while
        frames are at hand. Frames already buffered are always dispatched before returning,
        so that the next reader only has to wait for the socket."""
        channel, readable = self.channel, self._readable
        try:
            while True:
                if not channel.has_frame():
                    if completion is None:
                        if not readable.poll(0):
                            return
                    elif completion.settled:
                        return
                    elif deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0 or not readable.poll(math.ceil(left * 1000)):
                            return
                message = channel.receive()
                if message is None:
                    self._channel_ended(None)
                    return
                self._dispatch(message)
        except ProtocolError as exc:
            self._channel_ended(f"sent a malformed frame ({exc}) and was killed")
        except OSError as exc:
            self._channel_ended(f"broke its channel ({exc})")

    def _channel_ended(self, problem: str | None) -> None:
        with self._turn:
            if not self._ended:  # the first reader to see the end says why
                self._ended = True
                self._end_problem = problem
            self._turn.notify()

    def _read_loop(self) -> None:
        """The reader thread: read while no caller does; handle the channel's end."""
        problem = self._read_idle()
        with self._lock:
            if self._stopping:
                self._stopped.set()
                return
            self._accepting = False  # from here on, stop() only releases what is left
            self._died = True
            self.state = LifecycleState.FAILED
        self._crashed(problem)

    def _read_idle(self) -> str | None:
        """Read whenever no caller does, until the channel ends; say why it ended."""
        sock_fd = self.channel.sock.fileno()
        ready = select.poll()
        ready.register(sock_fd, select.POLLIN)
        me = threading.current_thread()
        while True:
            with self._turn:
                while not (self._ended or self._released):
                    if self._reading is None and not self._quiet:
                        break
                    if self._reading is None:
                        self._quiet = False  # one more grace period, unless a call comes
                    self._turn.wait(IDLE_GRACE)
                else:
                    return self._end_problem
                if self.channel.has_frame():
                    self._reading = me  # left over by a caller's last read
            if self._reading is not me and ready.poll(POLL_RECHECK_MS):
                with self._turn:
                    if self._reading is None and not self._ended:
                        self._reading = me
            if self._reading is me:
                try:
                    self._read_frames(None, None)
                finally:
                    with self._turn:
                        self._reading = None

    def _dispatch(self, message: WorkerMessage) -> None:
        kind = type(message)
        if kind is Result or kind is Failure:
            self._answer(message)  # type: ignore[arg-type]
        elif kind is Released:
            self._finish_call(message.id)  # type: ignore[union-attr]
        elif kind is Log:
            self._log_record(message)  # type: ignore[arg-type]
        elif kind is Stats:
            self.rejected = message.rejected  # type: ignore[union-attr]
        elif kind is Stopped:
            self._stopped_error = message.error  # type: ignore[union-attr]
            self._stopped.set()
        elif kind is Fatal:
            self._fatal = message.message  # type: ignore[union-attr]
        else:
            raise ProtocolError(f"unexpected {kind.__name__} frame from a running worker")

    def _answer(self, message: Result | Failure) -> None:
        with self._lock:
            if message.done:
                entry = self._pending.pop(message.id, None)
            else:
                entry = self._pending.get(message.id)
        if entry is None:
            return  # already failed (the worker crashed meanwhile) or swept
        if type(message) is Result:
            entry.completion.settle(message.payload, None)
        else:
            assert isinstance(message, Failure)
            entry.completion.settle(None, error_for_code(message.code, message.message))
        if message.done:
            entry.release()

    def _finish_call(self, call_id: int) -> None:
        with self._lock:
            entry = self._pending.pop(call_id, None)
        if entry is not None:
            entry.release()

    def _log_record(self, message: Log) -> None:
        try:
            level = LogLevel(message.level)
        except ValueError:
            raise ProtocolError(f"log record with invalid level {message.level}") from None
        self.log.emit(level, message.target, message.message)

    # -- crash -------------------------------------------------------------------------

    def _crashed(self, problem: str | None) -> None:
        """On the reader thread: the worker ended without being asked to."""
        process = self.process
        if process.wait(0.0 if problem else 1.0) is None:
            process.kill()  # alive but unusable: it closed or garbled its channel
        what = f"{problem}; it {process.describe()}" if problem else process.describe()
        if self._fatal:
            what += f" ({self._fatal})"
        message = f"plugin {self.metadata.name!r}: worker process {process.pid} {what}"
        with self._lock:
            self.crash = PluginCrashed(message)
            pending, self._pending = self._pending, {}
        self._pump.join(1.0)  # its last words (a faulthandler traceback) come first
        self.log.emit(LogLevel.ERROR, "plugbridge", message)
        for entry in pending.values():
            entry.completion.settle(None, PluginCrashed(message))
            entry.release()
        self._finish(time.monotonic() + 1.0)
        self.on_crash(self)

    # -- stop --------------------------------------------------------------------------

    def stop(self, timeout: float) -> str | None:
        """Stop the worker within ``timeout`` seconds; return why it failed, or None."""
        start = time.monotonic()
        deadline = start + timeout
        with self._lock:
            running = self._accepting or self.state is LifecycleState.ACTIVE
            if running:
                self._stopping = True
                self._accepting = False
                self.state = LifecycleState.STOPPING
        if not running:  # crashed: just make sure everything is released
            if self._reader is not None:
                self._reader.join(max(0.0, deadline - time.monotonic()))
            self._finish(deadline)
            return None
        with contextlib.suppress(OSError):
            self.channel.send(Stop(timeout * WORKER_STOP_SHARE))
        self._wake_reader()
        host_share = start + timeout * (1 + WORKER_STOP_SHARE) / 2
        self._stopped.wait(max(0.0, host_share - time.monotonic()))
        code = self.process.end(host_share)
        problem = self._stop_problem(code, timeout)
        self._finish(deadline)
        self.state = LifecycleState.FAILED if problem else LifecycleState.STOPPED
        return problem

    def _stop_problem(self, code: int | None, timeout: float) -> str | None:
        error = self._stopped_error
        if error is False:
            return (
                f"worker process {self.process.pid} did not stop within the shutdown timeout "
                f"({timeout}s) and was ended: it {self.process.describe()}"
            )
        if isinstance(error, str):
            return error
        if code not in (0, None):
            return f"worker process {self.process.pid} {self.process.describe()} while stopping"
        return None

    def _finish(self, deadline: float) -> None:
        """Release everything (idempotent): the process, threads, pipes, socket, log gate."""
        with self._lock:
            if self._released:
                return
            self._released = True
            self._accepting = False
            pending, self._pending = self._pending, {}
        if self.process.returncode is None and self.process.wait(0.0) is None:
            self.process.kill()
        self._wake_reader()
        self.channel.close()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(max(0.05, deadline - time.monotonic()))
        if self._pump.join(max(0.05, deadline - time.monotonic())):
            self.process.close_pipes()
        cancelled = "call cancelled: the plugin is shutting down"
        for entry in pending.values():
            entry.completion.settle(None, Cancelled(cancelled))
            entry.release()
        self.log.close()


def _wire_source(source: Source) -> PythonPlugin | NativePlugin:
    if isinstance(source, NativeSource):
        return NativePlugin(str(source.path))
    return PythonPlugin(str(source.search_dir), source.module, source.class_name)


def _wire_config(config: PluginConfig, level: LogLevel) -> dict[str, Any]:
    wire = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    wire["log_level"] = int(level)
    return wire


def worker_command(channel_fd: int) -> list[str]:
    """The command line of a worker speaking on ``channel_fd`` for this host process."""
    return [
        sys.executable,
        "-m",
        "plugbridge._worker",
        "--channel-fd",
        str(channel_fd),
        "--host-pid",
        str(os.getpid()),
    ]


def _worker_env() -> dict[str, str]:
    """The host's environment, with plugbridge importable even if it is not installed."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent.parent)
    if package_parent not in {*site.getsitepackages(), site.getusersitepackages()}:
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = package_parent + (os.pathsep + existing if existing else "")
    return env
