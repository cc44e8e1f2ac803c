"""A worker's stdout and stderr, turned into log records line by line (INFO / WARN)."""

from __future__ import annotations

import os
import select
import threading
import time

from .._levels import LogLevel
from .._logsink import InstanceLog

MAX_LINE = 64 * 1024
"""A longer run without a newline is delivered in pieces of this size."""
FINISH_GRACE = 0.2
"""Seconds the pump keeps reading, once the worker has ended, while more output is at hand
at once (a helper process the plugin started may still be writing to the same pipes)."""

_STREAMS = (("stdout", LogLevel.INFO), ("stderr", LogLevel.WARN))


class OutputPump:
    """Reads both pipes on one thread; never touches the host's stdout.

    Records carry the target ``"stdout"`` or ``"stderr"``. The pipes' ends do not mark the
    end of the worker: a process the plugin started inherits them and may hold them open
    long after the worker exited. So once the worker has ended (``join``), the pump reads
    what is in the pipes now (everything the worker wrote is, by then) and stops.
    """

    def __init__(self, stdout_fd: int, stderr_fd: int, log: InstanceLog, name: str) -> None:
        self._log = log
        self._fds = (stdout_fd, stderr_fd)
        self._wake_read, self._wake_write = os.pipe()
        self._lock = threading.Lock()
        self._woken = False
        self._ended = False
        """The thread has ended and closed the wake-up pipe."""
        self._thread = threading.Thread(target=self._run, name=f"{name}-output", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """The worker has ended: deliver what it wrote and stop; say whether the pump has
        stopped within ``timeout`` seconds (its pipes may be closed then)."""
        with self._lock:
            if not (self._woken or self._ended):
                self._woken = True
                os.write(self._wake_write, b"\0")
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def _run(self) -> None:
        buffers = {fd: bytearray() for fd in self._fds}
        try:
            self._pump(buffers)
        finally:
            try:
                for fd, (target, level) in zip(self._fds, _STREAMS, strict=True):
                    if buffers[fd]:  # a last line without its newline
                        self._emit(level, target, bytes(buffers[fd]))
            finally:
                with self._lock:
                    self._ended = True
                    os.close(self._wake_read)
                    os.close(self._wake_write)

    def _pump(self, buffers: dict[int, bytearray]) -> None:
        streams = dict(zip(self._fds, _STREAMS, strict=True))
        poller = select.poll()
        for fd in (*self._fds, self._wake_read):
            poller.register(fd, select.POLLIN)
        finish_by: float | None = None
        while streams:
            ready = poller.poll(None if finish_by is None else 0)
            if finish_by is not None and (not ready or time.monotonic() > finish_by):
                return  # all the worker wrote has been read; the rest is not its own
            for fd, _ in ready:
                if fd == self._wake_read:  # join(): the worker has ended
                    poller.unregister(fd)
                    finish_by = time.monotonic() + FINISH_GRACE
                elif not self._read(fd, streams[fd], buffers[fd]):
                    poller.unregister(fd)
                    del streams[fd]

    def _read(self, fd: int, stream: tuple[str, LogLevel], buffer: bytearray) -> bool:
        """Read what one pipe holds and emit its complete lines; False at its end."""
        target, level = stream
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            if buffer:
                self._emit(level, target, bytes(buffer))
                buffer.clear()
            return False
        buffer += chunk
        self._emit_lines(buffer, level, target)
        return True

    def _emit_lines(self, buffer: bytearray, level: LogLevel, target: str) -> None:
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) >= MAX_LINE:
                    self._emit(level, target, bytes(buffer[:MAX_LINE]))
                    del buffer[:MAX_LINE]
                    continue
                return
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            self._emit(level, target, line)

    def _emit(self, level: LogLevel, target: str, line: bytes) -> None:
        self._log.emit(level, target, line.decode("utf-8", "replace").rstrip("\r"))
