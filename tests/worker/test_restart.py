"""The opt-in restart policy of isolation="process": restarts, backoff, and its limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LifecycleState, LogLevel
from plugbridge._worker.restart import RestartPolicy

from ..conftest import LogCapture, wait_until
from .test_faults import FAULTY


def test_policy_limits_restarts_per_window_with_doubling_backoff() -> None:
    policy = RestartPolicy(max_restarts=3, window=10.0, backoff=0.5)
    assert policy.next_delay(0.0) == 0.5
    assert policy.next_delay(1.0) == 1.0
    assert policy.next_delay(2.0) == 2.0
    assert policy.next_delay(3.0) is None  # a fourth within 10 s: refused
    assert policy.next_delay(10.5) == 2.0  # the first one left the window
    assert policy.next_delay(30.0) == 0.5  # all left it: back to the first delay


def test_zero_restarts_means_never() -> None:
    assert RestartPolicy(max_restarts=0, window=60.0, backoff=0.1).next_delay(0.0) is None


def _pid_or_none(plugin: plugbridge.PluginHandle) -> int | None:
    try:
        return int(plugin.call("pid"))
    except plugbridge.PluginCrashed:
        return None


def test_crashed_worker_restarts_until_the_limit(
    write_plugin: Callable[..., Path], capture: LogCapture
) -> None:
    source = write_plugin(FAULTY, name="faulty.py")
    config = {"restart_on_crash": True, "max_restarts": 2, "restart_backoff": 0.05}
    with plugbridge.load(
        source, config=config, isolation="process", log_callback=capture
    ) as plugin:
        pids = [plugin.call("pid")]
        for _ in range(2):
            with pytest.raises(plugbridge.PluginCrashed):
                plugin.call("exit", 1)
            assert wait_until(lambda: _pid_or_none(plugin) not in (None, *pids), timeout=10)
            pids.append(plugin.call("pid"))
            assert plugin.state is LifecycleState.ACTIVE
        with pytest.raises(plugbridge.PluginCrashed):
            plugin.call("exit", 1)
        assert wait_until(lambda: any("not restarting" in m for m in capture.messages()))
        assert plugin.state is LifecycleState.FAILED
        with pytest.raises(plugbridge.PluginCrashed):
            plugin.call("echo", 1)
        warns = [m for lvl, _, m in capture.records if lvl == LogLevel.WARN and "restarting" in m]
        assert len(warns) == 2
        assert "0.05s" in warns[0] and "0.10s" in warns[1]  # backoff doubles
    assert len(set(pids)) == 3


def test_without_restart_on_crash_the_worker_stays_dead(
    write_plugin: Callable[..., Path],
) -> None:
    source = write_plugin(FAULTY, name="faulty.py")
    with plugbridge.load(source, isolation="process") as plugin:
        with pytest.raises(plugbridge.PluginCrashed):
            plugin.call("exit", 1)
        assert not wait_until(lambda: plugin.state is LifecycleState.ACTIVE, timeout=0.5)


def test_shutdown_during_backoff_stops_the_restart(write_plugin: Callable[..., Path]) -> None:
    import threading

    source = write_plugin(FAULTY, name="faulty.py")
    before = threading.active_count()
    config = {"restart_on_crash": True, "restart_backoff": 30.0}
    plugin = plugbridge.load(source, config=config, isolation="process")
    with pytest.raises(plugbridge.PluginCrashed):
        plugin.call("exit", 1)
    plugin.shutdown(timeout=2.0)
    assert threading.active_count() == before
    assert plugin.state is LifecycleState.FAILED


SLOW_TO_RESTART = """
    import os, time
    from pathlib import Path
    from plugbridge import Plugin, handler

    class SlowToRestart(Plugin):
        name = "slow_to_restart"

        def on_start(self, ctx):
            Path(ctx.data["pidfile"]).write_text(str(os.getpid()))
            if Path(ctx.data["marker"]).exists():  # a restart: slow to start
                time.sleep(60)

        @handler("crash")
        def crash(self, ctx, req):
            os._exit(1)
"""


def _pid_in(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text())
    except ValueError:  # being written
        return None


def test_shutdown_ends_a_restart_still_starting(
    write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    import time

    from .test_faults import alive

    source = write_plugin(SLOW_TO_RESTART, name="slow_to_restart.py")
    pidfile, marker = tmp_path / "pid", tmp_path / "marker"
    config = {
        "restart_on_crash": True,
        "restart_backoff": 0.01,
        "data": {"pidfile": str(pidfile), "marker": str(marker)},
    }
    plugin = plugbridge.load(source, config=config, isolation="process")
    first = _pid_in(pidfile)
    marker.touch()
    with pytest.raises(plugbridge.PluginCrashed):
        plugin.call("crash")
    # The restarted worker is in its on_start (for a minute) when shutdown begins.
    assert wait_until(lambda: _pid_in(pidfile) not in (None, first), timeout=10)
    restarted = _pid_in(pidfile)
    assert restarted is not None
    began = time.monotonic()
    plugin.shutdown(timeout=2)
    elapsed = time.monotonic() - began
    assert not alive(restarted), "a worker of the handle outlived its shutdown"
    assert elapsed < 2.5, elapsed  # its timeout (plus a moment), not the start's minute
    assert plugin.state is LifecycleState.FAILED  # the crashed worker's, as without restarts
