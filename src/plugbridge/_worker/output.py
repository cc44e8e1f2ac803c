"""A worker's stdout and stderr, turned into log records line by line (INFO / WARN)."""

from __future__ import annotations

import os
import selectors
import threading

from .._levels import LogLevel
from .._logsink import InstanceLog

MAX_LINE = 64 * 1024
"""A longer run without a newline is delivered in pieces of this size."""

_STREAMS = (("stdout", LogLevel.INFO), ("stderr", LogLevel.WARN))


class OutputPump:
    """Reads both pipes on one thread until both end; never touches the host's stdout.

    Records carry the target ``"stdout"`` or ``"stderr"``.
    """

    def __init__(self, stdout_fd: int, stderr_fd: int, log: InstanceLog, name: str) -> None:
        self._log = log
        self._fds = (stdout_fd, stderr_fd)
        self._thread = threading.Thread(target=self._run, name=f"{name}-output", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait until everything written has been delivered; say whether it was."""
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def _run(self) -> None:
        pending: dict[int, bytearray] = {}
        with selectors.DefaultSelector() as selector:
            for fd, stream in zip(self._fds, _STREAMS, strict=True):
                selector.register(fd, selectors.EVENT_READ, stream)
                pending[fd] = bytearray()
            while selector.get_map():
                for key, _ in selector.select():
                    target, level = key.data
                    buffer = pending[key.fd]
                    try:
                        chunk = os.read(key.fd, 65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        selector.unregister(key.fd)
                        if buffer:
                            self._emit(level, target, bytes(buffer))
                        continue
                    buffer += chunk
                    self._emit_lines(buffer, level, target)

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
