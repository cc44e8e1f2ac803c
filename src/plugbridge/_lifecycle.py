"""Lifecycle states and the transitions between them."""

from __future__ import annotations

import threading
from enum import IntEnum

from ._errors import InvalidState


class LifecycleState(IntEnum):
    INSTALLED = 0
    STARTING = 1
    ACTIVE = 2
    STOPPING = 3
    STOPPED = 4
    FAILED = 5


_ALLOWED: dict[LifecycleState, frozenset[LifecycleState]] = {
    LifecycleState.INSTALLED: frozenset({LifecycleState.STARTING, LifecycleState.FAILED}),
    LifecycleState.STARTING: frozenset({LifecycleState.ACTIVE, LifecycleState.FAILED}),
    LifecycleState.ACTIVE: frozenset({LifecycleState.STOPPING, LifecycleState.FAILED}),
    LifecycleState.STOPPING: frozenset({LifecycleState.STOPPED, LifecycleState.FAILED}),
    LifecycleState.STOPPED: frozenset(),
    LifecycleState.FAILED: frozenset({LifecycleState.STOPPING}),
}


class Lifecycle:
    """A state that only moves along the allowed transitions (thread-safe)."""

    __slots__ = ("_lock", "state")

    def __init__(self) -> None:
        self.state = LifecycleState.INSTALLED
        self._lock = threading.Lock()

    def move(self, target: LifecycleState) -> None:
        with self._lock:
            if target not in _ALLOWED[self.state]:
                raise InvalidState(f"cannot go from {self.state.name} to {target.name}")
            self.state = target

    def try_move(self, target: LifecycleState) -> bool:
        """Move if allowed; say whether it moved."""
        with self._lock:
            if target not in _ALLOWED[self.state]:
                return False
            self.state = target
            return True
