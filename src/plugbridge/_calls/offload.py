"""Calls that run off their caller's thread, and the completions their callers wait for.

One ``Offload`` per plugin instance: sync work with a timeout (or called through ``acall``)
runs on its daemon pool; every completion a caller waits on is tracked here, so shutdown
can cancel what is still running after the drain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._errors import InvalidState, PluginError, PluginRuntimeError, cancelled_by_shutdown
from .completion import Completion
from .threadpool import DaemonThreadPool, PoolClosed


class Offload:
    """The instance's daemon pool and its callers' pending completions."""

    def __init__(self, threads: int, name: str) -> None:
        self.pool = DaemonThreadPool(threads, name)
        self.pending: set[Completion] = set()

    def run(
        self,
        completion: Completion,
        work: Callable[[], Any],
        done: Callable[[], None],
        unexpected: Callable[[BaseException], PluginError],
        begin: Callable[[], bool] | None = None,
    ) -> None:
        """Run ``work`` on the pool; call ``done()``; then settle ``completion`` with its result.

        ``unexpected`` turns an exception that is not a ``PluginError`` into one. With
        ``begin``, the job first asks it whether to run at all (the caller may have taken
        the call back, see ``CallGate.claim``): if not, it does nothing, ``done`` included;
        and if the pool is already shut down, ``done`` is left to the caller too.
        """
        self.pending.add(completion)

        def job() -> None:
            if begin is not None and not begin():
                self.pending.discard(completion)
                return
            value: Any = None
            error: PluginError | None = None
            try:
                if not completion.settled:  # the caller may have given up already
                    value = work()
            except PluginError as exc:
                error = exc
            except BaseException as exc:
                error = unexpected(exc)
            finally:
                self.pending.discard(completion)
                done()
            # Settled after ``done()``: a caller that has its answer finds its slot free.
            completion.settle(value, error)

        try:
            self.pool.submit(job)
        except RuntimeError as exc:  # PoolClosed, or no thread could be started
            self.pending.discard(completion)
            if begin is None:
                done()
            if isinstance(exc, PoolClosed):
                completion.settle(None, InvalidState("plugin is shutting down"))
            else:
                completion.settle(None, PluginRuntimeError(f"cannot run the call: {exc}"))

    def cancel_all(self) -> None:
        """Give up on every pending call: its caller gets ``Cancelled`` now."""
        for completion in list(self.pending):
            completion.give_up(cancelled_by_shutdown())

    def shutdown(self, deadline: float) -> bool:
        """Stop the pool by ``deadline``; False if a thread had to be abandoned."""
        return self.pool.shutdown(deadline)
