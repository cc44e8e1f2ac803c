"""Run a native call that cannot be interrupted, waiting for it only so long.

A C function cannot be stopped from Python. ``run_bounded`` runs it on a fresh daemon
thread and stops waiting at the timeout; the call goes on, and whatever must happen after
it really returns (freeing what it made, unmapping the library) is passed as ``late``.

The caller must be able to tell whether the function can still be running, because what it
may clean up depends on it (unmapping a library a thread is inside would crash). So the
function's own failure comes out as ``CallFailed`` (it is not running), and any other
exception out of the wait (a ``KeyboardInterrupt``) means ``late`` takes care of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_LONGEST_WAIT = threading.TIMEOUT_MAX
"""Lock waits refuse longer timeouts (OverflowError); waiting this long is waiting forever."""


class CallFailed(Exception):
    """The function raised (or its thread could not start): it is not running any more,
    and ``late`` will not run. ``error`` is what it raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


class _Run(Generic[T]):
    __slots__ = ("done", "error", "late", "lock", "result", "waited_out")

    def __init__(self, late: Callable[[T | None], None] | None) -> None:
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
    late: Callable[[T | None], None] | None = None,
) -> tuple[bool, T | None]:
    """``(True, result)`` if ``fn`` returned within ``timeout`` (None: no limit, and no
    thread), else ``(False, None)``, and then ``late(result)`` runs on fn's thread when it
    returns (``late(None)`` if it raised). Any timeout is accepted, ``inf`` included.

    ``fn``'s own exception is raised as ``CallFailed``. Any other exception (an interrupt
    of the wait) propagates, and ``late`` runs all the same: at once if ``fn`` has returned,
    else when it does.
    """
    if timeout is None:
        return _run_here(fn, late)
    run: _Run[T] = _Run(late)
    thread = threading.Thread(target=_body, args=(fn, run), name=name, daemon=True)
    try:
        thread.start()
    except Exception as exc:  # no thread: fn never ran
        raise CallFailed(exc) from None
    interrupted: BaseException | None = None
    try:
        run.done.wait(min(max(0.0, timeout), _LONGEST_WAIT))
    except BaseException as exc:
        interrupted = exc
    with run.lock:
        if not run.done.is_set():
            run.waited_out = True  # from now on _body runs late when fn returns
    if run.waited_out:
        if interrupted is not None:
            raise interrupted
        return False, None
    if interrupted is not None:
        if late is not None:
            late(run.result if run.error is None else None)
        raise interrupted
    if run.error is not None:
        raise CallFailed(run.error)
    return True, run.result


def _run_here(fn: Callable[[], T], late: Callable[[T | None], None] | None) -> tuple[bool, T]:
    try:
        return True, fn()
    except Exception as exc:
        raise CallFailed(exc) from None
    except BaseException:  # interrupted, the result (if any) lost: clean up without it
        if late is not None:
            late(None)
        raise


def _body(fn: Callable[[], T], run: _Run[T]) -> None:
    try:
        run.result = fn()
    except BaseException as exc:
        run.error = exc
    with run.lock:
        run.done.set()
        late = run.late if run.waited_out else None
    if late is not None:
        late(run.result if run.error is None else None)
