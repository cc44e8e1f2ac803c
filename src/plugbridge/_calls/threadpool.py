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


class PoolClosed(RuntimeError):
    """``submit`` after ``shutdown``."""


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
        thread: threading.Thread | None = None
        with self._lock:
            if self._closed:
                raise PoolClosed("pool is shut down")
            if self._idle == 0 and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
            else:
                self._idle -= 1
        if thread is not None:
            self._start(thread)
        self._jobs.put(job)

    def _start(self, thread: threading.Thread) -> None:
        """Start a new thread; forget it if it did not start.

        ``Thread.start`` waits on a Condition whose ``__enter__`` is Python code: an
        interrupt landing there can leave the new thread stuck before it runs. Such a
        thread must not count as one of the pool's.
        """
        try:
            thread.start()
        except BaseException as exc:
            with self._lock:
                if not thread.is_alive() and thread in self._threads:
                    self._threads.remove(thread)
            if isinstance(exc.__context__, KeyboardInterrupt):
                # The Condition's bookkeeping failed while a KeyboardInterrupt unwound it:
                # what the caller must see is the interrupt, not a "lock" RuntimeError.
                raise exc.__context__ from None
            raise

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.put(None)  # passed on: one stop ends every thread, counted or not
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
        self._jobs.put(None)  # after every job already queued
        for thread in threads:
            if not thread.is_alive():
                continue  # ended, or never started (an interrupt landed in ``start``)
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

        self._pool.submit(job)  # PoolClosed (a RuntimeError) once shut down, as the base class
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; with ``wait``, wait for the threads (``stop`` bounds that)."""
        self._cancel_queued = self._cancel_queued or cancel_futures
        self._pool.shutdown(None if wait else time.monotonic())

    def stop(self, deadline: float) -> bool:
        """Cancel queued work and stop by ``deadline``; False if a thread was abandoned."""
        self._cancel_queued = True
        return self._pool.shutdown(deadline)
