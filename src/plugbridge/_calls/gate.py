"""Who is inside one plugin instance, so that shutdown can drain it (and a native library be
unmapped only once nobody runs its code).

Every entry into the instance (a call, a state query, a level change) passes through the
gate. Once it is closed, nothing new gets in; ``wait_idle`` waits for those inside, and
``when_idle`` runs an action (unmapping a library) once the last one has come out, on
whichever thread that is.

The hot path takes no lock, and each step that changes the count is one builtin call, so an
asynchronous exception (``KeyboardInterrupt`` from SIGINT, raised by CPython only between
calls) lands either before it or after it, never half-way:

- A caller's own thread counts itself in with ``arrive(None)`` (``list.append``) *inside* a
  ``try``, then checks ``is_open``, and counts itself out with ``depart()`` (``list.pop``) as
  the first thing of the ``finally``. Appending *before* looking at ``is_open`` means that
  once ``close`` has set it to False, a thread either saw it and turned back, or is already
  counted by the time anyone looks. ``after_depart()`` then runs a pending idle action.
  ``enter``/``leave`` do the same in one method call each, for callers that hold no state
  an interrupt could strand (its own threads).
- A call handed to another thread is *reserved* by its caller (``reserve(token)``, a
  ``set.add``) and *claimed* by the thread that runs it (``claim(token)``), which moves it
  inside. A caller that gives up before the work began takes its reservation back with
  ``unreserve(token)`` (``set.remove``): that one builtin either succeeds (the work will
  never run; the caller releases) or raises ``KeyError`` (the work has claimed it and ends
  the call itself). Exactly one side ends each call, whatever lands in between.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CallGate:
    """Counts calls inside an instance (and reserved for it); admits new ones while open."""

    __slots__ = (
        "_idle_action",
        "_idle_lock",
        "_inside",
        "_reserved",
        "arrive",
        "depart",
        "is_open",
        "reserve",
        "unreserve",
    )

    def __init__(self) -> None:
        self._inside: list[None] = []
        self._reserved: set[object] = set()
        self.is_open = False
        self._idle_action: Callable[[], None] | None = None
        self._idle_lock = threading.Lock()
        self.arrive: Callable[[None], None] = self._inside.append
        """Count the calling thread in (then check ``is_open``); one builtin call."""
        self.depart: Callable[[], object] = self._inside.pop
        """Count one thread out (then ``after_depart``); one builtin call."""
        self.reserve: Callable[[object], None] = self._reserved.add
        """Count a call handed to another thread, by a token of its own (then ``is_open``)."""
        self.unreserve: Callable[[object], None] = self._reserved.remove
        """Take a reservation back; ``KeyError`` if the work has claimed it meanwhile."""

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        """Admit nobody from now on; those inside stay until they leave."""
        self.is_open = False

    def enter(self) -> bool:
        """Come in if open; say whether admitted (then ``leave`` exactly once)."""
        self.arrive(None)
        if self.is_open:
            return True
        self.leave()
        return False

    def leave(self) -> None:
        self.depart()
        self.after_depart()

    def after_depart(self) -> None:
        """Run the idle action if the last one has just left (see ``when_idle``)."""
        if self._idle_action is not None and not self._inside and not self._reserved:
            self._run_idle_action()

    def claim(self, token: object) -> bool:
        """On the thread that runs a reserved call: move it inside, unless its caller has
        taken the reservation back (False: do not run it; nothing to leave)."""
        self.arrive(None)
        try:
            self.unreserve(token)
        except KeyError:
            self.leave()
            return False
        return True

    @property
    def inside(self) -> int:
        """Calls inside or reserved right now."""
        return len(self._inside) + len(self._reserved)

    def wait_idle(self, deadline: float) -> bool:
        """Wait until nobody is inside (or reserved) or ``deadline`` (monotonic) passes."""
        pause = 0.0005
        while self._inside or self._reserved:
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
        if not self._inside and not self._reserved:
            self._run_idle_action()

    def _run_idle_action(self) -> None:
        with self._idle_lock:  # exactly once, whoever gets here first
            action, self._idle_action = self._idle_action, None
            if action is None or self._inside or self._reserved:
                self._idle_action = action  # someone came in meanwhile; they will run it
                return
        action()
