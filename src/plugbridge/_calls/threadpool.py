"""A small pool of daemon threads for sync plugin code that must not block its caller.

Why not ``concurrent.futures.ThreadPoolExecutor``: its workers are joined at interpreter
exit, so one hung plugin handler would keep the host from exiting. A hung thread here is
abandoned at shutdown instead, as the contract asks. ``DaemonExecutor`` puts the same pool
behind an event loop's default executor, for ``asyncio.to_thread``.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

Job = Callable[[], None]
T = TypeVar("T")


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

    def shutdown(self, deadline: float | None) -> bool:
        """Stop the threads; wait until ``deadline`` (monotonic; None: for as long as they
        run). True if all ended; threads still running are abandoned (daemon)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            if thread.ident is None:
                continue  # never started (an interrupt landed in ``start``)
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """An event loop's default executor (``asyncio.to_thread``) on a ``DaemonThreadPool``.

    A ``ThreadPoolExecutor`` in type only, because ``loop.set_default_executor`` insists on
    one: the base class never starts a thread here. Jobs run on daemon threads that nothing
    joins at interpreter exit, so hung ``to_thread`` work is abandoned like a hung handler.
    """

    def __init__(self, max_threads: int, name: str) -> None:
        super().__init__(max_threads, thread_name_prefix=name)
        self._pool = DaemonThreadPool(max_threads, name)
        self._cancel_queued = False

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            if self._cancel_queued:
                future.cancel()
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        self._pool.submit(job)  # RuntimeError once shut down, as the base class
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; with ``wait``, wait for the threads (``stop`` bounds that)."""
        self._cancel_queued = self._cancel_queued or cancel_futures
        self._pool.shutdown(None if wait else time.monotonic())

    def stop(self, deadline: float) -> bool:
        """Cancel queued work and stop by ``deadline``; False if a thread was abandoned."""
        self._cancel_queued = True
        return self._pool.shutdown(deadline)
