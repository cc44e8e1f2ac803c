"""The per-handle concurrency limit: refuse at once, never queue."""

from __future__ import annotations

import threading

from ._errors import TooManyRequests


class ConcurrencyLimiter:
    """Counts calls running on a handle; ``max_ops == 0`` means unlimited."""

    __slots__ = ("_lock", "active", "max_ops", "rejected")

    def __init__(self, max_ops: int) -> None:
        self.max_ops = max_ops
        self.active = 0
        self.rejected = 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take a slot or raise ``TooManyRequests`` (and count the refusal)."""
        with self._lock:
            if self.max_ops and self.active >= self.max_ops:
                self.rejected += 1
                raise TooManyRequests(
                    f"concurrency limit of {self.max_ops} calls reached; request refused"
                )
            self.active += 1

    def release(self) -> None:
        with self._lock:
            self.active -= 1
