"""PluginHost.close() is bounded even while the watcher is reloading a plugin.

A plugin whose new code's ``on_start`` sleeps far longer than the shutdown budget is being
reloaded by the watcher when the host is closed: close returns within the budget (plus a
moment), reports that plugin as not stopped in time, and the plugin still ends once that
reload gives up. Real files, real inotify events, real threads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from plugbridge import LifecycleState, PluginHost, ShutdownFailed

from ..conftest import wait_until

DEADLINE = 20.0
"""Seconds a positive wait may take (generous: the suite runs under load)."""
SLACK = 2.0
"""What close may take past its budget, under load (the unbounded close took 5 s and more:
the watcher's join, then the whole start timeout of the reload)."""

PLUGIN = """
import asyncio, pathlib
from plugbridge import Plugin, handler

class Slow(Plugin):
    name = "slow"

    async def on_start(self, ctx):
        if {slow}:
            pathlib.Path(ctx.data["marker"]).touch()
            await asyncio.sleep(60)

    @handler("ping")
    def ping(self, ctx, req):
        return "pong"
"""


@pytest.mark.parametrize(
    ("shutdown_timeout", "close_timeout"), [(1.0, None), (30.0, 0.5)], ids=["own", "given"]
)
def test_close_is_bounded_while_a_watched_reload_is_starting(
    tmp_path: Path, shutdown_timeout: float, close_timeout: float | None
) -> None:
    plugin = tmp_path / "slow.py"
    plugin.write_text(PLUGIN.format(slow=False))
    marker = tmp_path / "reloading"
    host = PluginHost(
        defaults={
            "shutdown_timeout": shutdown_timeout,
            "start_timeout": 3.0,
            "data": {"marker": str(marker)},
        }
    )
    try:
        handle = host.add("slow", plugin)
        host.watch(debounce_s=0.05)
        plugin.write_text(PLUGIN.format(slow=True))
        assert wait_until(marker.exists, DEADLINE)  # the watcher's reload is starting
        budget = shutdown_timeout if close_timeout is None else close_timeout
        began = time.monotonic()
        with pytest.raises(ShutdownFailed) as raised:
            host.close() if close_timeout is None else host.close(close_timeout)
        took = time.monotonic() - began
        assert took < budget + SLACK, took
        assert "'slow'" in raised.value.message
        # Nothing left: the reload gives up at its start timeout, then the plugin stops.
        assert wait_until(lambda: handle.state is LifecycleState.STOPPED, DEADLINE)
        assert wait_until(
            lambda: not any(t.name == "plugbridge-watch" for t in threading.enumerate()),
            DEADLINE,
        )
    finally:
        host.close()
