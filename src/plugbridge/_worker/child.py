"""The worker process: greet the host, build the plugin instance, then serve it.

Run as ``python -m plugbridge._worker --channel-fd N --host-pid P``. The channel is a
socket inherited as fd N, never fd 1: whatever the plugin prints goes to stdout and stderr,
which the host reads as log records. The worker dies with its host: by ``PR_SET_PDEATHSIG``
on Linux, and by the end of the channel everywhere. The host starts it in a session (and
process group) of its own (``WorkerProcess``): signals from the host's terminal (Ctrl-C,
Ctrl-Z) reach neither it nor the processes its plugin starts, and those end with it.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import io
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .._config import PluginConfig
from .._errors import ErrorCode, PluginError, describe_exception
from .._inprocess.namespace import NAMESPACE_PREFIX
from .._levels import LogLevel, from_stdlib
from .._logsink import InstanceLog, LogSink, attributed_instance
from .._sources import NativeSource, PythonSource, Source
from .._transport import Transport
from .channel import Channel, ProtocolError
from .protocol import (
    PROTOCOL_VERSION,
    HostMessage,
    Log,
    Named,
    NativePlugin,
    Ready,
    Start,
    StartFailed,
)
from .protocol import Hello as HelloMessage
from .server import WorkerServer, exit_now, fatal, send

_PR_SET_PDEATHSIG = 1


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m plugbridge._worker")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--host-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_host(args.host_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host decides when its workers stop
    os.set_inheritable(args.channel_fd, False)  # plugin subprocesses must not hold it open
    faulthandler.enable()  # a segfault's traceback reaches the host as WARN records
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    channel: Channel[HostMessage] = Channel(socket.socket(fileno=args.channel_fd), HostMessage)
    channel.close_in_forked_children()  # a plugin's forked child must not hold it open
    send(channel, HelloMessage(PROTOCOL_VERSION, os.getpid()))
    try:
        first = channel.receive()
    except ProtocolError as exc:
        fatal(channel, f"protocol error: {exc}")
    except OSError:
        exit_now(0)
    if first is None:
        exit_now(0)
    if not isinstance(first, Start):
        fatal(channel, f"expected a Start frame, got {type(first).__name__}")
    if first.protocol != PROTOCOL_VERSION:
        send(
            channel,
            StartFailed(
                int(ErrorCode.INITIALIZATION_FAILED),
                f"host speaks worker protocol {first.protocol}, this worker {PROTOCOL_VERSION}",
            ),
        )
        exit_now(0)
    transport, sink = _start(channel, first)
    WorkerServer(channel, transport, sink).run()


def _die_with_host(host_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the end of the channel still ends the worker
    if os.getppid() != host_pid:
        os._exit(0)  # the host died before the kernel was told to watch it


def _start(channel: Channel[HostMessage], start: Start) -> tuple[Transport, LogSink]:
    from .._load import start_local

    for entry in start.sys_path:
        if entry not in sys.path:
            sys.path.append(entry)
    try:
        config = PluginConfig.coerce(start.config)
        sink = WorkerSink(channel, config.log_level)
        logging.lastResort = UnclaimedRecords(sink.instance_log())
        transport = start_local(_source(start), config, sink, None)  # the host's deadline
    except PluginError as exc:
        send(channel, StartFailed(int(exc.code), exc.message))
        exit_now(0)
    except BaseException as exc:
        send(channel, StartFailed(int(ErrorCode.INITIALIZATION_FAILED), describe_exception(exc)))
        exit_now(0)
    meta = transport.metadata
    send(
        channel,
        Ready(
            meta.name,
            meta.version,
            list(meta.type_tags),
            list(meta.schemas),
            meta.binary_transport,
        ),
    )
    return transport, sink


class WorkerSink(LogSink):
    """The worker's sink: records go to the host as ``Log`` frames, and the instance's name
    as a ``Named`` frame as soon as it has one (before its start hook runs), so that the
    host can name a start that misses its deadline."""

    def __init__(self, channel: Channel[HostMessage], level: LogLevel) -> None:
        def forward(level: LogLevel, target: str, message: str) -> None:
            send(channel, Log(int(level), target, message))

        super().__init__(forward, level)
        self._channel = channel

    def name_plugin(self, name: str) -> None:
        super().name_plugin(name)
        send(self._channel, Named(name))


class UnclaimedRecords(logging.Handler):
    """The worker's ``logging.lastResort``: records no handler took, as the plugin's records.

    Python prints such records (WARNING and up) to stderr, which the host reads as records
    too: a library's warning logged in a handler, already attributed to the instance, would
    arrive twice. Here a record created while the instance's code runs has been attributed
    (see ``_inprocess.logrouting``) and is dropped; any other one (a thread the plugin
    started, say) is sent with its logger name as target. Handlers a plugin installs itself
    (``basicConfig``) still get their records: this one only stands in for the last resort.
    """

    def __init__(self, log: InstanceLog) -> None:
        super().__init__(logging.NOTSET)
        self._log = log

    def handle(self, record: logging.LogRecord) -> bool:
        if attributed_instance.get() is None or record.name.startswith(_NOT_ATTRIBUTED):
            self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = _FORMAT.format(record)
        except Exception as exc:
            message = f"{record.msg!r} (formatting failed: {exc!r})"
        self._log.emit(from_stdlib(record.levelno), record.name, message)


_FORMAT = logging.Formatter("%(message)s")
_NOT_ATTRIBUTED = (NAMESPACE_PREFIX, "plugbridge")
"""Loggers the record factory does not attribute (the instance's own, plugbridge's)."""


def _source(start: Start) -> Source:
    source = start.source
    if isinstance(source, NativePlugin):
        return NativeSource(Path(source.path), source.bundle)
    return PythonSource(Path(source.search_dir), source.module, source.class_name)
