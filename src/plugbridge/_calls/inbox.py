"""Callbacks handed to an event loop from other threads, delivered in batches.

``loop.call_soon_threadsafe`` writes to the loop's self-pipe on every call. Under a burst
(a thousand ``acall``s at once) every write wakes the loop's thread, and the threads then
fight over the GIL for each callback. An inbox writes once per batch: the first post wakes
the loop, later posts join the batch until the loop has drained it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import weakref
from collections.abc import Callable
from typing import Any


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
            except BaseException:  # a closed loop, or an interrupt between two steps
                self._scheduled = False
                raise

    def _drain(self) -> None:
        self._scheduled = False
        items = self._items
        while items:
            callback, args = items.popleft()
            try:
                callback(*args)
            except Exception as exc:
                self.loop.call_exception_handler(
                    {"message": "plugbridge: callback posted to the loop raised", "exception": exc}
                )


class LoopInboxes:
    """One inbox per caller's event loop, forgotten when the loop is (neither holds the
    other strongly)."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInbox] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, loop: asyncio.AbstractEventLoop) -> LoopInbox:
        inbox = self._by_loop.get(loop)
        if inbox is None:
            inbox = LoopInbox(loop)
            with contextlib.suppress(TypeError):  # a loop that cannot be weakly referenced
                self._by_loop[loop] = inbox
        return inbox


def _same(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    return loop
