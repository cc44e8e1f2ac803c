"""One-shot result slots that a call's waiter and its worker race to settle.

Whoever settles first wins: the worker with the result, the waiter with ``Timeout``, or
shutdown with ``Cancelled``. Later attempts are ignored, so a late result is dropped
cleanly instead of raising.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ._errors import PluginError


class Completion:
    """Settled once; the base wakes nobody (subclasses say how the waiter is woken)."""

    __slots__ = ("_claim", "error", "task", "value")

    def __init__(self) -> None:
        self._claim = threading.Lock()
        self.value: Any = None
        self.error: PluginError | None = None
        self.task: Any = None
        """Where the work runs, for cancelling it when the waiter gives up (transport's)."""

    @property
    def settled(self) -> bool:
        return self._claim.locked()

    def settle(self, value: Any, error: PluginError | None) -> bool:
        """Record the outcome if nobody has; say whether this call did."""
        if not self._claim.acquire(blocking=False):
            return False
        self.value = value
        self.error = error
        self._wake()
        return True

    def _wake(self) -> None:
        raise NotImplementedError

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class ThreadCompletion(Completion):
    """Waited for by a blocked thread."""

    __slots__ = ("_ready",)

    def __init__(self) -> None:
        super().__init__()
        self._ready = threading.Lock()
        self._ready.acquire()

    def _wake(self) -> None:
        self._ready.release()

    def wait(self, timeout: float | None) -> bool:
        """Block until settled or ``timeout`` passes; say whether it was settled."""
        return self._ready.acquire(timeout=-1 if timeout is None else timeout)


class LoopCompletion(Completion):
    """Awaited by a task on a (possibly different) event loop."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def _wake(self) -> None:
        try:  # noqa: SIM105 (hot path: suppress() costs a context manager per call)
            self.loop.call_soon_threadsafe(_set_done, self.future)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is waiting any more

    async def wait(self, timeout: float | None) -> bool:
        """Await settlement or ``timeout``; say whether it was settled."""
        if timeout is None:
            await self.future
            return True
        done, _ = await asyncio.wait((self.future,), timeout=timeout)
        return bool(done)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
