"""The shutdown of a plugin instance hosted in this process, one shape for every such transport.

    stop accepting → drain (``DRAIN_SHARE`` of the timeout) → cancel what is left → the
    plugin's stop hook (``on_stop``, ``plugin_shutdown``) in the rest → teardown →
    STOPPED, or FAILED and ``ShutdownFailed``

A transport owns one ``LocalShutdown`` and hands it the steps only it knows how to do; the
order, the budget, idempotency, the final state and the error's wording live here, so a
failed stop reads the same whichever transport it happened in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .._errors import ShutdownFailed, seconds
from .._lifecycle import Lifecycle, LifecycleState
from .._transport import DRAIN_SHARE
from .gate import CallGate

CancelLeft = Callable[[], object]
"""Give up on the calls still inside after the drain (their callers get ``Cancelled``)."""
StopHook = Callable[[float, float], Sequence[str]]
"""``stop(deadline, timeout)``: run the plugin's stop hook by ``deadline`` (monotonic);
return what went wrong (``hook_late``, ``hook_failed``), empty if nothing did."""
Teardown = Callable[[float, bool], object]
"""``teardown(deadline, drained)``: release what the instance holds by ``deadline``,
abandoning (never waiting for) what cannot stop; ``drained``: no call was left running."""


class LocalShutdown:
    """Runs an instance's shutdown once; later calls (and calls after a failure) do nothing."""

    __slots__ = ("_begun", "_gate", "_lifecycle")

    def __init__(self, lifecycle: Lifecycle, gate: CallGate) -> None:
        self._lifecycle = lifecycle
        self._gate = gate
        self._begun = False

    @property
    def begun(self) -> bool:
        return self._begun

    def run(
        self,
        timeout: float,
        *,
        what: str,
        cancel_left: CancelLeft,
        stop: StopHook,
        teardown: Teardown,
    ) -> None:
        """Stop the instance within ``timeout`` seconds; ``ShutdownFailed`` naming ``what``
        (``"plugin 'hello'"``) if its stop hook failed. Teardown runs whatever happens."""
        if self._begun or not self._lifecycle.try_move(LifecycleState.STOPPING):
            return  # already stopping, stopped, or failed to stop: idempotent
        self._begun = True
        start = time.monotonic()
        deadline = start + timeout
        self._gate.close()
        drained = self._gate.wait_idle(start + timeout * DRAIN_SHARE)
        problems: Sequence[str] = ("the shutdown was interrupted",)
        try:
            if not drained:
                cancel_left()
            problems = stop(deadline, timeout)
        finally:
            try:
                teardown(deadline, drained)
            finally:
                self._lifecycle.move(LifecycleState.FAILED if problems else LifecycleState.STOPPED)
        if problems:
            raise ShutdownFailed(f"{what}: {'; '.join(problems)}")


def hook_late(hook: str, timeout: float, consequence: str = "") -> str:
    """The problem of a stop hook still running at the deadline, worded once for all."""
    text = f"{hook} did not finish within the shutdown timeout ({seconds(timeout)})"
    return f"{text}; {consequence}" if consequence else text


def hook_failed(hook: str, detail: str) -> str:
    """The problem of a stop hook that raised or reported failure (``detail``: what it did)."""
    return f"{hook} {detail}"
