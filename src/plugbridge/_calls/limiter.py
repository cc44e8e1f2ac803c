"""The per-handle concurrency limit: refuse at once, never queue.

Slots are the items of a list: taking one is ``list.pop`` and giving it back is
``list.append``, both atomic, so the hot path takes no lock. An empty list means the limit
is reached.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from .._errors import TooManyRequests

_MAX_SLOTS = 1 << 20
"""Limits above this are enforced as unlimited (a million calls at once is no limit)."""


def _no_slot_needed() -> None:
    return None


class ConcurrencyLimiter:
    """Counts calls running on a handle; ``max_ops == 0`` means unlimited."""

    __slots__ = ("_count_lock", "_slots", "max_ops", "rejected", "release", "take")

    def __init__(self, max_ops: int) -> None:
        self.max_ops = max_ops
        self.rejected = 0
        self._count_lock = threading.Lock()
        self.take: Callable[[], object]
        self.release: Callable[[], None]
        if 0 < max_ops <= _MAX_SLOTS:
            self._slots: list[None] = [None] * max_ops
            self.take = self._slots.pop  # IndexError when none is left
            self.release = functools.partial(self._slots.append, None)
        else:
            self._slots = []
            self.take = self.release = _no_slot_needed

    def refuse(self) -> TooManyRequests:
        """Count a refusal and build its error (the caller raises it)."""
        with self._count_lock:
            self.rejected += 1
        return TooManyRequests(
            f"concurrency limit of {self.max_ops} calls reached; request refused"
        )
