"""An actor that dies, the restart policy, and a shutdown that must not wait for on_stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

import plugbridge
from plugbridge import LifecycleState

from ..conftest import LogCapture, wait_until
from .conftest import actor_of

FAULTY = """
    import os, threading, time
    from plugbridge import Plugin, handler

    class Faulty(Plugin):
        name = "faulty"

        def on_start(self, ctx):
            self.release = threading.Event()

        @handler("pid")
        def pid(self, ctx, _):
            return os.getpid()

        @handler("block")
        def block(self, ctx, _):
            self.release.wait(30)
            return "unblocked"

        @handler("exit")
        def exit(self, ctx, code):
            os._exit(code)
"""


def _pid_or_none(plugin: plugbridge.PluginHandle) -> int | None:
    try:
        return int(plugin.call("pid"))
    except plugbridge.PluginCrashed:
        return None


def test_ray_kill_fails_calls_in_flight_then_the_actor_restarts(
    write_plugin: Callable[..., Path], capture: LogCapture, ray_cluster: Any
) -> None:
    source = write_plugin(FAULTY)
    config = {"restart_on_crash": True, "restart_backoff": 0.2}
    with plugbridge.load(source, isolation="ray", config=config, log_callback=capture) as plugin:
        first = plugin.call("pid")
        outcome: list[BaseException | str] = []

        def blocked() -> None:
            try:
                outcome.append(plugin.call("block"))
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=blocked)
        caller.start()
        assert wait_until(lambda: plugin.in_flight == 1)
        ray_cluster.kill(actor_of(plugin))
        caller.join(10)
        assert len(outcome) == 1
        assert isinstance(outcome[0], plugbridge.PluginCrashed), outcome
        assert "Ray actor died" in outcome[0].message
        assert plugin.in_flight == 0  # its slot came back
        assert wait_until(lambda: _pid_or_none(plugin) not in (None, first), timeout=30)
        assert plugin.state is LifecycleState.ACTIVE
        assert plugin.stats().restarts == 1
    messages = capture.messages()
    assert any("its Ray actor died" in m for m in messages), messages
    assert any("restarting its Ray actor" in m for m in messages), messages


def test_an_exiting_actor_is_a_crash_for_this_and_later_calls(
    write_plugin: Callable[..., Path],
) -> None:
    with plugbridge.load(write_plugin(FAULTY), isolation="ray") as plugin:
        with pytest.raises(plugbridge.PluginCrashed):
            plugin.call("exit", 3)
        with pytest.raises(plugbridge.PluginCrashed):  # no restart policy: stays down
            plugin.call("pid")
        assert plugin.state is LifecycleState.FAILED
        assert plugin.stats().pid is None


HUNG_STOP = """
    import os, time
    from plugbridge import Plugin, handler

    class HungStop(Plugin):
        name = "hung-stop"

        @handler("pid")
        def pid(self, ctx, _):
            return os.getpid()

        def on_stop(self, ctx):
            time.sleep(600)
"""


def test_a_hung_on_stop_is_ended_on_time_and_its_actor_killed(
    write_plugin: Callable[..., Path],
) -> None:
    plugin = plugbridge.load(write_plugin(HUNG_STOP), isolation="ray")
    pid = plugin.call("pid")
    started = time.monotonic()
    with pytest.raises(plugbridge.ShutdownFailed):
        plugin.shutdown(timeout=1.0)
    assert time.monotonic() - started < 5  # on time, not the 600 s of on_stop
    assert wait_until(lambda: not psutil.pid_exists(pid), timeout=30)  # the actor is gone


def test_an_idle_actor_killed_is_noticed_without_a_call(
    write_plugin: Callable[..., Path], capture: LogCapture, ray_cluster: Any
) -> None:
    config = {"restart_on_crash": True, "restart_backoff": 0.0}
    with plugbridge.load(
        write_plugin(FAULTY), isolation="ray", config=config, log_callback=capture
    ) as plugin:
        ray_cluster.kill(actor_of(plugin))
        assert wait_until(lambda: plugin.stats().restarts == 1, timeout=30)  # no call made
        assert any("its Ray actor died" in m for m in capture.messages())
        assert plugin.state is LifecycleState.ACTIVE
