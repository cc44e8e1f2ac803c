"""Who may run code of a native library, and when it may be unmapped.

Every entry into the library (a call, a state query, a level change) passes through the
gate. Once it is closed, nothing new gets in; ``when_idle`` runs an action (unmapping the
library) once the last thread inside has come out, on whichever thread that is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CallGate:
    """Counts threads inside a library; admits new ones only while open."""

    __slots__ = ("_idle_action", "_inside", "_lock", "_open")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._open = False
        self._idle_action: Callable[[], None] | None = None

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        """Admit nobody from now on; those inside stay until they leave."""
        with self._lock:
            self._open = False

    def enter(self) -> bool:
        """Come in if open; say whether admitted (then ``leave`` exactly once)."""
        with self._lock:
            if not self._open:
                return False
            self._inside += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._inside -= 1
            action = self._idle_action if self._inside == 0 else None
            if action is not None:
                self._idle_action = None
        if action is not None:
            action()

    @property
    def inside(self) -> int:
        return self._inside

    def wait_idle(self, deadline: float) -> bool:
        """Wait until nobody is inside or ``deadline`` (monotonic) passes."""
        pause = 0.0005
        while self._inside:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.01)
        return True

    def when_idle(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the gate is closed and empty: now, or as the last one leaves."""
        with self._lock:
            self._open = False
            if self._inside:
                self._idle_action = action
                return
        action()
