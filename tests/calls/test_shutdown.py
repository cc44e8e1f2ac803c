"""LocalShutdown: one order, one budget, one wording for every local transport's shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from plugbridge import LifecycleState, ShutdownFailed
from plugbridge._calls.gate import CallGate
from plugbridge._calls.shutdown import LocalShutdown, hook_failed, hook_late
from plugbridge._lifecycle import Lifecycle


class Steps:
    """Records the order in which the skeleton calls a transport's steps."""

    def __init__(self, problems: Sequence[str] = ()) -> None:
        self.calls: list[tuple[str, object]] = []
        self.problems = list(problems)

    def cancel_left(self) -> None:
        self.calls.append(("cancel", None))

    def stop(self, deadline: float, timeout: float) -> Sequence[str]:
        self.calls.append(("stop", timeout))
        return self.problems

    def teardown(self, deadline: float, drained: bool) -> None:
        self.calls.append(("teardown", drained))


def active() -> tuple[Lifecycle, CallGate]:
    lifecycle, gate = Lifecycle(), CallGate()
    lifecycle.move(LifecycleState.STARTING)
    lifecycle.move(LifecycleState.ACTIVE)
    gate.open()
    return lifecycle, gate


def run(shutdown: LocalShutdown, steps: Steps, timeout: float = 1.0) -> None:
    shutdown.run(
        timeout,
        what="plugin 'p'",
        cancel_left=steps.cancel_left,
        stop=steps.stop,
        teardown=steps.teardown,
    )


def test_a_drained_instance_stops_without_cancelling() -> None:
    lifecycle, gate = active()
    steps = Steps()
    run(LocalShutdown(lifecycle, gate), steps)
    assert steps.calls == [("stop", 1.0), ("teardown", True)]
    assert lifecycle.state is LifecycleState.STOPPED
    assert not gate.is_open


def test_calls_left_after_the_drain_share_are_cancelled() -> None:
    lifecycle, gate = active()
    assert gate.enter()  # a call that never ends
    steps = Steps()
    started = time.monotonic()
    run(LocalShutdown(lifecycle, gate), steps, timeout=0.2)
    assert time.monotonic() - started < 5  # the drain gave up at its share; no wait beyond
    assert steps.calls == [("cancel", None), ("stop", 0.2), ("teardown", False)]
    assert lifecycle.state is LifecycleState.STOPPED


def test_the_drain_waits_for_calls_that_end() -> None:
    lifecycle, gate = active()
    assert gate.enter()
    threading.Timer(0.05, gate.leave).start()
    steps = Steps()
    run(LocalShutdown(lifecycle, gate), steps, timeout=30)
    assert steps.calls == [("stop", 30), ("teardown", True)]


def test_stop_problems_fail_it_with_one_wording() -> None:
    lifecycle, gate = active()
    problem = hook_late("on_stop", 0.1 + 0.2)
    assert problem == "on_stop did not finish within the shutdown timeout (0.3s)"
    steps = Steps([problem, hook_failed("on_stop", "raised ValueError: no")])
    shutdown = LocalShutdown(lifecycle, gate)
    with pytest.raises(ShutdownFailed) as info:
        run(shutdown, steps)
    assert info.value.message == (
        "plugin 'p': on_stop did not finish within the shutdown timeout (0.3s);"
        " on_stop raised ValueError: no"
    )
    assert steps.calls[-1] == ("teardown", True)  # torn down all the same
    assert lifecycle.state is LifecycleState.FAILED
    run(shutdown, Steps())  # idempotent after a failure too: nothing runs again
    assert lifecycle.state is LifecycleState.FAILED


def test_it_runs_once() -> None:
    lifecycle, gate = active()
    shutdown = LocalShutdown(lifecycle, gate)
    first, second = Steps(), Steps()
    run(shutdown, first)
    run(shutdown, second)
    assert second.calls == []
    assert shutdown.begun


def test_teardown_runs_even_when_the_stop_step_is_interrupted() -> None:
    lifecycle, gate = active()
    calls: list[str] = []

    def stop(deadline: float, timeout: float) -> Sequence[str]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LocalShutdown(lifecycle, gate).run(
            1.0,
            what="plugin 'p'",
            cancel_left=lambda: None,
            stop=stop,
            teardown=lambda deadline, drained: calls.append("teardown"),
        )
    assert calls == ["teardown"]
    assert lifecycle.state is LifecycleState.FAILED
