"""Inside the actor: the records waiting to cross to the host, and the output that becomes
records.

Records are appended from any thread (the plugin's, the output pump's) and taken in batches
by the host's log poll (``RecordBuffer.take``), a long poll that returns as soon as there is
something: one ordered stream per actor, as a worker's channel is. ``count`` numbers every
record appended, so an answer can say how many records its call had produced by then and
the host can deliver those first (see ``_ray.logpump``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import threading

from .._levels import LogLevel
from .._logsink import InstanceLog, LogSink

WireRecord = tuple[int, str, str]
"""(level, target, message) as it crosses to the host."""

RAY_MARKERS = (":actor_name:", ":task_name:", ":job_id:")
"""Lines Ray itself writes to a worker's stdout/stderr (for its log prefixes): not the
plugin's output, never records."""


class RecordBuffer:
    """Records not yet taken by the host, in order, and a long poll over them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[WireRecord] = []
        self.count = 0
        """Records appended since the actor started."""
        self.ended = False
        """No more records will come (the instance stopped and its output was read)."""
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def append(self, level: LogLevel, target: str, message: str) -> None:
        with self._lock:
            self._records.append((int(level), target, message))
            self.count += 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _wake(waiter)

    def end(self) -> None:
        with self._lock:
            self.ended = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _wake(waiter)

    async def take(self, wait: float) -> tuple[list[WireRecord], bool]:
        """The records appended so far (waiting up to ``wait`` seconds for one), and whether
        the stream has ended. One poller at a time (the host's log pump)."""
        event = asyncio.Event()
        with self._lock:
            idle = not self._records and not self.ended
            if idle:
                self._waiter = (asyncio.get_running_loop(), event)
        if idle:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), wait)
        with self._lock:
            self._waiter = None
            records, self._records = self._records, []
            return records, self.ended and not records


def _wake(waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
    loop, event = waiter
    with contextlib.suppress(RuntimeError):  # the loop is closing: nobody waits any more
        loop.call_soon_threadsafe(event.set)


class BufferSink(LogSink):
    """The actor's sink: records that pass the instance's level go to the buffer."""

    def __init__(self, buffer: RecordBuffer, level: LogLevel) -> None:
        super().__init__(buffer.append, level)
        self.plugin_name: str | None = None

    def name_plugin(self, name: str) -> None:
        super().name_plugin(name)
        self.plugin_name = name


class OutputLog(InstanceLog):
    """The gate the actor's output pump writes through: Ray's own marker lines dropped."""

    __slots__ = ()

    def emit(self, level: LogLevel, target: str, message: str) -> None:
        if not message.startswith(RAY_MARKERS):
            super().emit(level, target, message)


def capture_output() -> tuple[int, int]:
    """Point this process's fds 1 and 2 at fresh pipes; return their reading ends.

    Everything the actor's process writes (``print``, C ``printf``, a crash's traceback)
    then becomes records of its instance, and none of it reaches the files Ray forwards to
    a driver's terminal. An actor owns its worker process, so this is the instance's alone.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    ends: list[int] = []
    for fd in (1, 2):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        ends.append(read_end)
    if isinstance(sys.stdout, io.TextIOWrapper):
        with contextlib.suppress(Exception):
            sys.stdout.reconfigure(line_buffering=True)
    return ends[0], ends[1]
