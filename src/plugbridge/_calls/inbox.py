"""Callbacks handed to an event loop from other threads, delivered in batches.

``loop.call_soon_threadsafe`` writes to the loop's self-pipe on every call. Under a burst
(a thousand ``acall``s at once) every write wakes the loop's thread, and the threads then
fight over the GIL for each callback. An inbox writes once per batch: the first post wakes
the loop, later posts join the batch until the loop has drained it.

A drain runs at most ``DRAIN_BATCH`` callbacks, then lets the loop do its other work before
the next batch: a burst of answers is many short callbacks, never one long one (the loop's
I/O would wait for all of it, and asyncio's debug mode reports any callback over 0.1 s).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

DRAIN_BATCH = 256
"""Callbacks one drain runs before it hands the loop back (and schedules the rest)."""

_BATCH = range(DRAIN_BATCH)


class LoopInbox:
    """Posts callbacks to one loop from any thread; the loop runs them in order.

    It holds its loop weakly: an inbox kept in a transport's ``LoopInboxes`` must not keep a
    caller's loop (and everything reachable from it) alive once its ``asyncio.run`` is over.
    """

    __slots__ = ("__weakref__", "_context", "_items", "_loop", "_scheduled")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, context: contextvars.Context | None = None
    ) -> None:
        self._loop: Callable[[], asyncio.AbstractEventLoop | None]
        try:
            self._loop = weakref.ref(loop)
        except TypeError:  # a loop that cannot be weakly referenced is held strongly
            self._loop = functools.partial(_same, loop)
        self._context = context
        self._items: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._scheduled = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (RuntimeError if it is gone: nobody can be waiting on it then)."""
        loop = self._loop()
        if loop is None:
            raise RuntimeError("the event loop is gone")
        return loop

    def post(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop soon. RuntimeError if the loop is closed."""
        self._items.append((callback, args))
        if not self._scheduled:
            # Whoever sees False schedules a drain; a drain resets the flag *before* it
            # empties the deque, so no posted item is ever left without a drain coming.
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain, context=self._context)
            except RuntimeError:  # the loop is closed or gone
                self.discard()
                raise
            except BaseException:  # an interrupt between two steps
                self._scheduled = False
                raise

    def discard(self) -> None:
        """Drop what waits for a loop that is closed: nobody can be woken on it any more,
        and the callbacks' arguments (futures of that loop) would keep it alive."""
        self._items.clear()
        self._scheduled = False

    @property
    def closed(self) -> bool:
        """Whether the loop is closed or gone."""
        loop = self._loop()
        return loop is None or loop.is_closed()

    def _drain(self) -> None:
        self._scheduled = False
        items = self._items
        for _ in _BATCH:
            if not items:
                return
            callback, args = items.popleft()
            try:
                callback(*args)
            except Exception as exc:
                self.loop.call_exception_handler(
                    {"message": "plugbridge: callback posted to the loop raised", "exception": exc}
                )
        if items and not self._scheduled:
            # The rest after the loop's other work: queued from its own thread, no wake-up
            # needed. A poster that saw False meanwhile scheduled a drain too: harmless.
            self._scheduled = True
            self.loop.call_soon(self._drain, context=self._context)


class LoopInboxes:
    """One inbox per caller's event loop, forgotten when the loop is (neither holds the
    other strongly)."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInbox] = (
            weakref.WeakKeyDictionary()
        )
        self._adding = threading.Lock()

    def get(self, loop: asyncio.AbstractEventLoop) -> LoopInbox:
        inbox = self._by_loop.get(loop)
        if inbox is None:
            with self._adding:
                inbox = self._add(loop)
        return inbox

    def _add(self, loop: asyncio.AbstractEventLoop) -> LoopInbox:
        """A loop's first call. Loops closed since the last one get their queues dropped:
        ``close`` discards a drain it had not run, and what that drain would have woken
        (futures of the closed loop) would keep the loop alive for as long as this
        transport lives. Done here, off the call path: a new loop is rare."""
        for inbox in list(self._by_loop.values()):
            if inbox.closed:
                inbox.discard()
        known = self._by_loop.get(loop)  # another thread may have added it meanwhile
        if known is not None:
            return known
        inbox = LoopInbox(loop)
        with contextlib.suppress(TypeError):  # a loop that cannot be weakly referenced
            self._by_loop[loop] = inbox
        return inbox


def _same(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    return loop
