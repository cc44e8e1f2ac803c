"""An asyncio event loop running on a thread of its own, one per plugin instance."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._calls.inbox import LoopInbox
from .._calls.threadpool import DaemonExecutor

T = TypeVar("T")


class LoopThread:
    """Owns a loop, the thread running it and the loop's default executor (``to_thread``).

    Every thread here is a daemon that nothing joins at exit: hung plugin code (a hook, a
    task, ``to_thread`` work) is abandoned at shutdown and never keeps the host alive.
    """

    def __init__(self, name: str, context: contextvars.Context, executor_threads: int) -> None:
        self.context = context
        self.loop = asyncio.new_event_loop()
        self._executor = DaemonExecutor(executor_threads, f"{name}-to_thread")
        self.loop.set_default_executor(self._executor)
        self.inbox = LoopInbox(self.loop, context)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            # Closed here, by its own thread: a thread that ``stop`` had to abandon (a hook
            # that blocked past the deadline) still closes its loop once it gets here.
            self.loop.close()

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Schedule ``callback`` on the loop, inside the instance's context (batched)."""
        self.inbox.post(callback, *args)

    def run(self, coro: Coroutine[Any, Any, T], deadline: float | None) -> T:
        """Run ``coro`` on the loop in the instance's context; TimeoutError past ``deadline``."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def start() -> None:
            task = self.loop.create_task(coro)
            future.task = task  # type: ignore[attr-defined]
            task.add_done_callback(lambda t: _copy_outcome(t, future))

        self.call_soon(start)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            task = getattr(future, "task", None)
            if task is not None:
                self.loop.call_soon_threadsafe(task.cancel)
            raise TimeoutError from None

    def stop(self, deadline: float) -> bool:
        """Cancel every task, stop the loop and join its threads by ``deadline``.

        Returns False when something could not be stopped in time; its thread is then
        abandoned (daemon), never waited for.
        """
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self.call_soon(lambda: self.loop.create_task(self._cancel_all_and_stop(deadline)))
            self._thread.join(max(0.0, deadline - time.monotonic()))
        executor_stopped = self._executor.stop(deadline)  # hung ``to_thread`` work: abandoned
        return executor_stopped and not self._thread.is_alive()

    async def _cancel_all_and_stop(self, deadline: float) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not me]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        self.loop.stop()


def _copy_outcome(task: asyncio.Task[T], future: concurrent.futures.Future[T]) -> None:
    if task.cancelled():
        future.cancel()
    elif (exc := task.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_result(task.result())
