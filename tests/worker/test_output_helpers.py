"""isolation="process": helper processes a plugin starts, holding the worker's stdout/stderr.

A helper inherits the worker's output pipes, so their ends no longer mark the worker's end:
the host must not wait for them. Once the worker has ended, what it wrote is delivered, the
output thread and the pipes are released at once, and the helper, a member of the worker's
process group, ends with it — however the worker ends: stopped, crashed, or killed because
its start failed; a helper that left the group on purpose is left alone.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LogLevel

from ..conftest import LogCapture, wait_until
from .test_faults import alive

HELPERS = """
    import os, subprocess, sys
    from plugbridge import Plugin, handler

    class Helpers(Plugin):
        name = "helpers"

        def on_stop(self, ctx):
            print("last words", flush=True)

        @handler("spawn")
        def spawn(self, ctx, req):
            return subprocess.Popen(["sleep", "30"], start_new_session=bool(req)).pid

        @handler("exit")
        def exit(self, ctx, req):
            print("dying", flush=True)
            os._exit(req)
"""

SHUTDOWN_TIMEOUT = 20.0


@pytest.fixture
def helpers(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(HELPERS, name="helpers_plugin.py")


def baseline(source: Path) -> tuple[int, int]:
    """Threads and descriptors of this process with every lazy pool already started."""
    with plugbridge.load(source, isolation="process") as warm:
        warm.call("spawn", False)
    return threading.active_count(), len(os.listdir("/proc/self/fd"))


def released(threads: int, fds: int) -> bool:
    return threading.active_count() == threads and len(os.listdir("/proc/self/fd")) == fds


def test_shutdown_does_not_wait_for_a_helper_holding_the_output(
    helpers: Path, capture: LogCapture
) -> None:
    threads, fds = baseline(helpers)
    config = {"shutdown_timeout": SHUTDOWN_TIMEOUT}
    plugin = plugbridge.load(helpers, config=config, isolation="process", log_callback=capture)
    helper = plugin.call("spawn", False)
    begin = time.monotonic()
    plugin.shutdown()
    assert time.monotonic() - begin < SHUTDOWN_TIMEOUT / 2
    assert (LogLevel.INFO, "stdout", "last words") in capture.records  # nothing lost
    assert released(threads, fds)
    assert wait_until(lambda: not alive(helper))


def test_a_crash_releases_the_output_at_once_and_ends_the_helper(
    helpers: Path, capture: LogCapture
) -> None:
    threads, fds = baseline(helpers)
    plugin = plugbridge.load(helpers, isolation="process", log_callback=capture)
    helper = plugin.call("spawn", False)
    with pytest.raises(plugbridge.PluginCrashed):
        plugin.call("exit", 3)
    assert wait_until(lambda: released(threads, fds))  # before shutdown, not 30 s later
    assert (LogLevel.INFO, "stdout", "dying") in capture.records
    assert wait_until(lambda: not alive(helper))
    plugin.shutdown()
    assert released(threads, fds)


def test_a_helper_that_left_the_group_is_not_killed(helpers: Path) -> None:
    threads, fds = baseline(helpers)
    plugin = plugbridge.load(
        helpers, config={"shutdown_timeout": SHUTDOWN_TIMEOUT}, isolation="process"
    )
    helper = plugin.call("spawn", True)  # start_new_session: its own group
    try:
        begin = time.monotonic()
        plugin.shutdown()
        assert time.monotonic() - begin < SHUTDOWN_TIMEOUT / 2
        assert released(threads, fds)
        assert alive(helper)
    finally:
        os.kill(helper, signal.SIGKILL)


STARTS_A_HELPER = """
    import asyncio, os, subprocess, time
    from pathlib import Path
    from plugbridge import Plugin

    class StartsAHelper(Plugin):
        name = "starts_a_helper"

        def on_start(self, ctx):
            helper = subprocess.Popen(["sleep", "30"])
            Path(ctx.data["helper"]).write_text(str(helper.pid))
            if ctx.data["then"] == "raise":
                raise RuntimeError("on_start failed after starting a helper")
            time.sleep(60)  # past the start deadline
"""


@pytest.mark.parametrize("then", ["raise", "hang"])
def test_a_failed_start_ends_the_helper_its_on_start_started(
    write_plugin: Callable[..., Path], tmp_path: Path, then: str
) -> None:
    source = write_plugin(STARTS_A_HELPER, name="starts_a_helper.py")
    pidfile = tmp_path / "helper.pid"
    config = {"start_timeout": 2, "data": {"helper": str(pidfile), "then": then}}
    with pytest.raises(plugbridge.InitializationFailed):
        plugbridge.load(source, config=config, isolation="process")
    helper = int(pidfile.read_text())
    assert wait_until(lambda: not alive(helper)), "the helper outlived the failed start"
