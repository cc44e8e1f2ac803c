"""When to start a fresh worker after a crash: a limit per time window, with backoff."""

from __future__ import annotations

from collections import deque


class RestartPolicy:
    """At most ``max_restarts`` restarts within any ``window`` seconds.

    The n-th restart inside the window waits ``backoff * 2**(n-1)`` seconds first.
    """

    def __init__(self, max_restarts: int, window: float, backoff: float) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.backoff = backoff
        self._recent: deque[float] = deque()

    def next_delay(self, now: float) -> float | None:
        """Record a restart at ``now`` and return its delay, or None if the limit is reached."""
        while self._recent and now - self._recent[0] >= self.window:
            self._recent.popleft()
        if len(self._recent) >= self.max_restarts:
            return None
        delay = self.backoff * 2.0 ** len(self._recent)
        self._recent.append(now)
        return delay

    @property
    def used(self) -> int:
        """Restarts counted in the current window (as of the last ``next_delay``)."""
        return len(self._recent)
