"""One-shot result slots that a call's waiter and its worker race to settle.

Whoever settles first wins: the worker with the result, the waiter with ``Timeout``, or
shutdown with ``Cancelled``. Later attempts are ignored, so a late result is dropped
cleanly instead of raising.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from .._errors import Cancelled, PluginError
from .inbox import LoopInbox


class Completion:
    """Settled once; the base wakes nobody (subclasses say how the waiter is woken)."""

    __slots__ = ("_claim", "error", "on_abandon", "value")

    def __init__(self) -> None:
        self._claim = threading.Lock()
        self.value: Any = None
        self.error: PluginError | None = None
        self.on_abandon: Callable[[], object] | None = None
        """Stops the work (e.g. cancels its task) when the waiter gives up; set by the worker."""

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

    def give_up(self, error: PluginError) -> bool:
        """Settle with ``error`` for a waiter that stops waiting, and stop the work."""
        if not self.settle(None, error):
            return False
        if self.on_abandon is not None:
            self.on_abandon()
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

    def result(self, timeout: float | None, timed_out: Callable[[], PluginError]) -> Any:
        """The outcome, or the ``timed_out()`` error once ``timeout`` seconds have passed."""
        if not self.wait(timeout) and not self.give_up(timed_out()):
            self.wait(None)  # the work settled it just in time
        return self.outcome()


class LoopCompletion(Completion):
    """Awaited by a task on a (possibly different) event loop, woken through its inbox."""

    __slots__ = ("future", "inbox")

    def __init__(self, inbox: LoopInbox) -> None:
        super().__init__()
        self.inbox = inbox
        self.future: asyncio.Future[None] = inbox.loop.create_future()

    def _wake(self) -> None:
        try:  # noqa: SIM105 (hot path: suppress() costs a context manager per call)
            self.inbox.post(_set_done, self.future)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is waiting any more

    async def wait(self, timeout: float | None) -> bool:
        """Await settlement or ``timeout``; say whether it was settled."""
        if timeout is None:
            await self.future
            return True
        done, _ = await asyncio.wait((self.future,), timeout=timeout)
        return bool(done)

    async def result(self, timeout: float | None, timed_out: Callable[[], PluginError]) -> Any:
        """The outcome; ``timed_out()`` after ``timeout``; the work stops if we are cancelled."""
        try:
            settled = await self.wait(timeout)
        except asyncio.CancelledError:
            self.give_up(Cancelled("call cancelled by the caller"))
            raise
        if not settled and not self.give_up(timed_out()):
            await self.wait(None)
        return self.outcome()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
