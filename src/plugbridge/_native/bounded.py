"""Run a native call that cannot be interrupted, waiting for it only so long.

A C function cannot be stopped from Python. ``run_bounded`` runs it on a fresh daemon
thread and stops waiting at the timeout; the call goes on, and whatever must happen after
it really returns (freeing what it made, unmapping the library) is passed as ``late``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class _Run(Generic[T]):
    __slots__ = ("done", "error", "late", "lock", "result", "waited_out")

    def __init__(self, late: Callable[[T], None] | None) -> None:
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.late = late
        self.result: T | None = None
        self.error: BaseException | None = None
        self.waited_out = False


def run_bounded(
    fn: Callable[[], T],
    timeout: float | None,
    name: str,
    late: Callable[[T], None] | None = None,
) -> tuple[bool, T | None]:
    """``(True, result)`` if ``fn`` returned within ``timeout`` (None: no limit), else
    ``(False, None)``, and then ``late(result)`` runs on fn's thread when it returns."""
    if timeout is None:
        return True, fn()
    run: _Run[T] = _Run(late)
    thread = threading.Thread(target=_body, args=(fn, run), name=name, daemon=True)
    thread.start()
    finished = run.done.wait(max(0.0, timeout))
    with run.lock:
        if not finished and not run.done.is_set():
            run.waited_out = True
            return False, None
    thread.join()  # it has finished its work; this only reaps the thread
    if run.error is not None:
        raise run.error
    return True, run.result


def _body(fn: Callable[[], T], run: _Run[T]) -> None:
    try:
        run.result = fn()
    except BaseException as exc:
        run.error = exc
    with run.lock:
        run.done.set()
        late = run.late if run.waited_out else None
    if late is not None and run.error is None:
        late(cast(T, run.result))
