"""A small pool of daemon threads for sync plugin code that must not block its caller.

Why not ``concurrent.futures.ThreadPoolExecutor``: its workers are joined at interpreter
exit, so one hung plugin handler would keep the host from exiting. A hung thread here is
abandoned at shutdown instead, as the contract asks.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

Job = Callable[[], None]


class DaemonThreadPool:
    """Runs jobs (which handle their own exceptions) on up to ``max_threads`` threads."""

    def __init__(self, max_threads: int, name: str) -> None:
        self._max = max_threads
        self._name = name
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("pool is shut down")
            if self._idle == 0 and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()
            del job  # an idle thread must not keep its last job's objects alive
            with self._lock:
                self._idle += 1

    def shutdown(self, deadline: float) -> bool:
        """Stop the threads; wait until ``deadline`` (monotonic). True if all ended."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)
