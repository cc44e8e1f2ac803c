"""When the whole test process stood still, as a thread of its own could tell.

asyncio's debug mode reports a step of a task as slow by wall-clock time. A step also takes
long when nothing in it waited at all: another thread held the GIL through one long C call
(a full garbage collection started by a library's own thread), or the machine did not run
the process. ``StallWatch`` wakes every millisecond; when it wakes late, every Python thread
of the process was held up for that long, the event loop's with it. Time in such a stall is
not time the loop's step spent blocked by what it called.

What it cannot tell apart:
- a step that itself holds the GIL in one long C call (a huge payload encoded on the loop, a
  native call waiting without releasing the GIL) stalls the watch too, and is excused;
- a step blocked on a lock, a socket or a sleep while an unrelated stall happens is excused
  for the overlap (the stall did not add to the wait): a step blocked for real is blocked
  in every run, so later runs report it.
A step running Python code is not excused: the interpreter hands the GIL to the watch
within its 5 ms switch interval (a few of those when other threads are busy too), far
below ``NOTICED``; neither is one waiting on a lock, a socket or a sleep (those release
the GIL).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

TICK = 0.001
"""Seconds the watch sleeps between two looks at the clock."""

NOTICED = 0.05
"""Seconds late a wake-up must be to count as a stall: waiting for the GIL behind other busy
threads (5 ms each) and for a core takes less."""


class StallWatch:
    """A thread recording the wall-clock intervals (``time.time``, as ``LogRecord.created``)
    during which it could not run; use it as a context manager."""

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(5)
        assert not self._thread.is_alive(), "the stall watch did not stop"

    def _watch(self) -> None:
        while not self._done.is_set():
            before = time.time()
            time.sleep(TICK)
            after = time.time()
            if after - before - TICK > NOTICED:
                with self._lock:
                    self.stalls.append((before + TICK, after))

    def stalled(self, start: float, end: float) -> float:
        """Seconds between ``start`` and ``end`` (``time.time``) the process stood still."""
        with self._lock:
            stalls = list(self.stalls)
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in stalls)
