"""Bringing a worker up: spawn the process, then the handshake until its instance is ready.

The host sends ``Start`` at once; the worker greets it (``Hello``, with its protocol
version), builds the instance and answers ``Ready`` (or ``StartFailed``). Log records the
instance emits while it starts are delivered on the way. Anything else, a deadline that
passes, or a worker that dies first is ``InitializationFailed``, and nothing is left
behind: the process is killed and reaped, the pipes and the channel closed.
"""

from __future__ import annotations

import dataclasses
import os
import site
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .._config import PluginConfig
from .._errors import ConfigError, InitializationFailed, error_for_code
from .._levels import LogLevel
from .._logsink import InstanceLog, LogSink
from .._sources import NativeSource, Source, source_trust
from .._transport import PluginMetadata
from .channel import NOT_READY, Channel, ProtocolError
from .output import OutputPump
from .process import WorkerProcess
from .protocol import (
    PROTOCOL_VERSION,
    Fatal,
    Hello,
    Log,
    Named,
    NativePlugin,
    PythonPlugin,
    Ready,
    Start,
    StartFailed,
    WorkerMessage,
)
from .reading import ChannelWatch


@dataclasses.dataclass(slots=True)
class StartedWorker:
    """A worker whose instance is ACTIVE, with everything the session takes over."""

    process: WorkerProcess
    channel: Channel[WorkerMessage]
    log: InstanceLog
    pump: OutputPump
    metadata: PluginMetadata

    def abandon(self) -> None:
        """Kill the worker and release what it holds (a start that cannot complete)."""
        abandon(self.process, self.channel, self.pump, self.log)


def start_worker(
    source: Source,
    config: PluginConfig,
    sink: LogSink,
    deadline: float | None,
    *,
    limit: str = "",
    on_spawn: Callable[[WorkerProcess], object] | None = None,
) -> StartedWorker:
    """Start a worker and its instance; ``InitializationFailed`` (nothing left) if not.

    ``deadline`` (monotonic) is the host's alone: a worker that has not answered ``Ready``
    by then is killed (``limit``: the timeout it stands for, as messages name it).
    ``on_spawn`` is told of the worker as soon as it exists (whoever may have to kill it
    before it is ready); an exception it raises abandons the start.
    """
    start = Start(
        PROTOCOL_VERSION, _wire_source(source), _wire_config(config, sink.level), list(sys.path)
    )
    try:
        msgspec.msgpack.encode(start)
    except Exception as exc:  # a type msgpack cannot carry, a lone surrogate, a huge int
        raise ConfigError(f"config cannot be sent to a worker process: {exc}") from None
    host_end, worker_end = socket.socketpair()
    spawned: list[WorkerProcess] = []  # filled by the spawner: an interrupt cannot lose it
    channel: Channel[WorkerMessage] | None = None
    log: InstanceLog | None = None
    pump: OutputPump | None = None
    try:
        host_end.setblocking(False)  # every wait of the host polls the worker's end too
        channel = Channel(host_end, WorkerMessage)
        channel.close_in_forked_children()  # a forked child of the host must not hold it
        try:
            WorkerProcess.spawn(
                worker_command(worker_end.fileno()), [worker_end.fileno()], _worker_env(), spawned
            )
        except Exception as exc:
            raise InitializationFailed(f"cannot start a worker process: {exc}") from None
        finally:
            worker_end.close()
        process = spawned[0]
        if on_spawn is not None:
            on_spawn(process)
        log = sink.instance_log()
        pump = OutputPump(
            process.stdout_fd, process.stderr_fd, log, f"plugbridge-worker-{process.pid}"
        )
        ready = _handshake(process, channel, log, start, deadline, late=_Late(source, limit))
        sink.name_plugin(ready.name)
        metadata = PluginMetadata(
            ready.name,
            ready.version,
            tuple(ready.type_tags),
            source_trust(source),
            tuple(ready.schemas),
            ready.binary_transport,
        )
        return StartedWorker(process, channel, log, pump, metadata)
    except BaseException:
        worker_end.close()  # idempotent
        if channel is None:
            host_end.close()
        elif spawned:
            abandon(spawned[0], channel, pump, log)
        else:
            channel.close()
        raise


@dataclasses.dataclass(slots=True)
class _Late:
    """What a start that misses its deadline says."""

    source: Source
    limit: str
    name: str | None = None
    """The instance's name, once the worker has sent it (``Named``)."""

    def failure(self, pid: int) -> InitializationFailed:
        within = f"within the start timeout ({self.limit})"
        if self.name is not None and isinstance(self.source, NativeSource):
            what = f"native plugin {self.name!r} did not finish plugin_init {within}"
        elif self.name is not None:
            what = f"{self.name}.on_start did not finish {within}"
        else:  # still importing (or the interpreter still starting)
            loading = (
                f"native library {self.source.path.name!r}"
                if isinstance(self.source, NativeSource)
                else f"plugin module {self.source.module!r}"
            )
            return InitializationFailed(
                f"worker process {pid} did not load {loading} {within} and was killed"
            )
        return InitializationFailed(f"{what}; its worker process {pid} was killed")


def _handshake(
    process: WorkerProcess,
    channel: Channel[WorkerMessage],
    log: InstanceLog,
    start: Start,
    deadline: float | None,
    *,
    late: _Late,
) -> Ready:
    watch = ChannelWatch(channel, process)
    try:
        channel.send(start, deadline)
        hello = _receive_until(watch, deadline)
        if not isinstance(hello, Hello):
            raise ProtocolError(f"expected Hello, got {type(hello).__name__}")
        if hello.protocol != PROTOCOL_VERSION:
            raise InitializationFailed(
                f"worker speaks protocol {hello.protocol}, host speaks {PROTOCOL_VERSION}"
            )
        while True:
            message = _receive_until(watch, deadline)
            if isinstance(message, Log):
                log_record(log, message)
            elif isinstance(message, Named):
                late.name = message.name
            elif isinstance(message, Ready):
                return message
            elif isinstance(message, StartFailed):
                raise error_for_code(message.code, message.message)
            elif isinstance(message, Fatal):
                raise InitializationFailed(f"worker failed: {message.message}")
            else:
                raise ProtocolError(f"unexpected {type(message).__name__} during start")
    except TimeoutError:
        raise late.failure(process.pid) from None
    except ProtocolError as exc:
        raise InitializationFailed(f"worker protocol error during start: {exc}") from None
    except OSError as exc:
        raise InitializationFailed(f"worker channel failed during start: {exc}") from None


def _receive_until(watch: ChannelWatch, deadline: float | None) -> WorkerMessage:
    """The next message; ``TimeoutError`` at ``deadline``, ``InitializationFailed`` if the
    worker ends first."""
    while True:
        message = watch.receive()
        if message is None:
            process = watch.process
            if process.wait(2.0) is None:
                process.kill()
            raise InitializationFailed(
                f"worker process {process.pid} {process.describe()} during start"
            )
        if message is not NOT_READY:
            return message  # type: ignore[return-value]
        if not watch.wait(deadline):
            raise TimeoutError


def log_record(log: InstanceLog, message: Log) -> None:
    """Emit a record the worker sent; ``ProtocolError`` if its level is not one of ours."""
    try:
        level = LogLevel(message.level)
    except ValueError:
        raise ProtocolError(f"log record with invalid level {message.level}") from None
    log.emit(level, message.target, message.message)


def abandon(
    process: WorkerProcess,
    channel: Channel[WorkerMessage],
    pump: OutputPump | None,
    log: InstanceLog | None,
) -> None:
    """Kill a worker that will not serve, and release its pipes, channel and log gate."""
    process.kill()
    channel.close()
    process.close_pidfd()
    if pump is None or pump.join(1.0):
        process.close_pipes()
    if log is not None:
        log.close()


def _wire_source(source: Source) -> PythonPlugin | NativePlugin:
    if isinstance(source, NativeSource):
        return NativePlugin(str(source.path), source.bundle)
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
