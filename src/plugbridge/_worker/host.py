"""``WorkerTransport``: a plugin instance in a worker process, behind the usual Transport.

Requests cross as JSON: the host encodes a ``call`` request exactly as the in-process
runtime would see it, the worker runs ``call_json`` on its own in-process (or native)
transport, and errors come back as their code and message, raised here as the same
``PluginError`` classes. Binary-transport calls cross as their bytes (``RawCall``), and
their answers as the response bytes, in the same ``Result``/``Failure`` frames. A crash
fails the session (``PluginCrashed``); with ``restart_on_crash`` a fresh session replaces
it, within ``RestartPolicy`` limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from .._calls.sessioned import SessionTransport
from .._config import PluginConfig
from .._errors import InitializationFailed, start_limit
from .._logsink import LogSink
from .._sources import Source
from .._transport import ProcessUsage
from .process import WorkerProcess
from .session import WorkerSession


class WorkerTransport(SessionTransport[WorkerSession]):
    """One plugin instance hosted by a worker process (and its restarts, if enabled)."""

    _what: ClassVar[str] = "worker"

    def __init__(self, source: Source, config: PluginConfig, sink: LogSink) -> None:
        super().__init__(source, config, sink)
        self._launching: WorkerProcess | None = None
        """The worker of a start in progress, once it exists (``shutdown`` kills it)."""

    @classmethod
    def start(
        cls, source: Source, config: PluginConfig, sink: LogSink, deadline: float | None
    ) -> WorkerTransport:
        """Start a worker with a fresh instance; ``InitializationFailed`` if it cannot."""
        transport = cls(source, config, sink)
        transport._begin(deadline)
        return transport

    def _launch(self, deadline: float | None) -> WorkerSession:
        limit = start_limit(deadline, time.monotonic(), self._config.start_timeout)
        try:
            session = WorkerSession.launch(
                self._source,
                self._config,
                self._sink,
                deadline,
                self._on_crash,
                limit=limit,
                on_spawn=self._spawned,
            )
        except BaseException:
            self._launching = None
            raise
        self.metadata = session.metadata
        return session

    def _spawned(self, process: WorkerProcess) -> None:
        """A start has its worker: ``shutdown`` kills it if it comes before the start is
        done (``_launched`` says when, resetting ``_launching``)."""
        with self._lock:
            if self._closing.is_set():
                raise InitializationFailed("the plugin is shutting down")
            self._launching = process

    def _launched(self) -> None:
        self._launching = None

    def _start_in_progress(self) -> Callable[[], object] | None:
        launching = self._launching
        return None if launching is None else launching.kill

    def _prepare(self, fresh: WorkerSession) -> None:
        fresh.set_log_level(self._sink.level)

    def process_usage(self) -> ProcessUsage:
        """The current worker's pid, RSS and CPU time (psutil, imported on first use); all
        None once it has ended. Read between two looks at its exit status: a worker is
        reaped only by ``WorkerProcess``, so its pid, still unreaped after the read, was
        still its own during it (never a later process given the same pid)."""
        process = self._current.process
        gone = ProcessUsage(None, None, None)
        if process.poll() is not None:
            return gone
        import psutil

        try:
            worker = psutil.Process(process.pid)
            with worker.oneshot():
                rss = worker.memory_info().rss
                cpu = worker.cpu_times()
        except psutil.Error:
            return gone
        if process.poll() is not None:
            return gone
        return ProcessUsage(process.pid, rss, cpu.user + cpu.system)
