"""Who may run code of a native library, and when it may be unmapped.

Every entry into the library (a call, a state query, a level change) passes through the
gate. Once it is closed, nothing new gets in; ``when_idle`` runs an action (unmapping the
library) once the last thread inside has come out, on whichever thread that is.

The hot path takes no lock: being inside is an item of a list (``append``/``pop`` are
atomic), and ``enter`` appends *before* it looks at ``is_open``. So once ``close`` has set
``is_open`` to False, a thread either saw it and turned back, or is already counted by
the time anyone looks at the list.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CallGate:
    """Counts threads inside a library; admits new ones only while open."""

    __slots__ = ("_idle_action", "_idle_lock", "_inside", "is_open")

    def __init__(self) -> None:
        self._inside: list[None] = []
        self.is_open = False
        self._idle_action: Callable[[], None] | None = None
        self._idle_lock = threading.Lock()

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        """Admit nobody from now on; those inside stay until they leave."""
        self.is_open = False

    def enter(self) -> bool:
        """Come in if open; say whether admitted (then ``leave`` exactly once)."""
        inside = self._inside
        inside.append(None)
        if self.is_open:
            return True
        inside.pop()
        if not inside and self._idle_action is not None:
            self._run_idle_action()
        return False

    def leave(self) -> None:
        inside = self._inside
        inside.pop()
        if not inside and self._idle_action is not None:
            self._run_idle_action()

    @property
    def inside(self) -> int:
        return len(self._inside)

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
        """Close, and run ``action`` once nobody is inside: now, or as the last one leaves."""
        self.is_open = False
        self._idle_action = action
        if not self._inside:
            self._run_idle_action()

    def _run_idle_action(self) -> None:
        with self._idle_lock:  # exactly once, whoever gets here first
            action, self._idle_action = self._idle_action, None
            if action is None or self._inside:
                self._idle_action = action  # someone came in meanwhile; they will run it
                return
        action()
