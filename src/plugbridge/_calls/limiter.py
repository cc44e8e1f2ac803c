"""The per-handle concurrency limit: refuse at once, never queue.

Slots are the items of a list: taking one is ``list.pop`` (``IndexError`` when none is
left) and giving it back appends to it, both atomic, so the hot path takes no lock.

Each admitted call gets its own *release*: ``pool.extend`` bound to a one-shot iterator
over a single slot. Calling it the first time puts the slot back; any later call finds the
iterator exhausted and does nothing. So a release is idempotent and thread-safe, and the
whole of it is one builtin call: an asynchronous exception (``KeyboardInterrupt`` from
SIGINT) can land before it or after it, never half-way. That is what lets the handle add
a safety net ("release on any unexpected exception") without ever releasing twice.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from .._errors import TooManyRequests
from .._transport import Release

_MAX_SLOTS = 1 << 20
"""Limits above this are enforced as unlimited (a million calls at once is no limit)."""

ONE_SLOT = (None,)
"""What a release iterates over: one slot, handed back at most once."""


def _nothing_to_release() -> None:
    return None


def _no_slot_needed() -> None:
    return None


def _unlimited_release(_slot: object) -> Release:
    return _nothing_to_release


class ConcurrencyLimiter:
    """Counts calls running on a handle; ``max_ops == 0`` means unlimited.

    ``take()`` takes a slot (``IndexError``: none left); ``new_release(iter(ONE_SLOT))``
    builds the one-shot release for it. Both are builtins, so the caller can do them inside
    one ``try`` with no window in between.
    """

    __slots__ = ("_count_lock", "_slots", "max_ops", "new_release", "rejected", "take")

    def __init__(self, max_ops: int) -> None:
        self.max_ops = max_ops
        self.rejected = 0
        self._count_lock = threading.Lock()
        self.take: Callable[[], object]
        self.new_release: Callable[[object], Release]
        if 0 < max_ops <= _MAX_SLOTS:
            self._slots: list[None] = [None] * max_ops
            self.take = self._slots.pop
            self.new_release = functools.partial(functools.partial, self._slots.extend)
        else:
            self._slots = []
            self.take = _no_slot_needed
            self.new_release = _unlimited_release

    @property
    def in_use(self) -> int:
        """Slots taken right now (0 when unlimited: nothing is counted then)."""
        if 0 < self.max_ops <= _MAX_SLOTS:
            return self.max_ops - len(self._slots)
        return 0

    def refuse(self) -> TooManyRequests:
        """Count a refusal and build its error (the caller raises it)."""
        with self._count_lock:
            self.rejected += 1
        return TooManyRequests(
            f"concurrency limit of {self.max_ops} calls reached; request refused"
        )
