"""Calls through an actor: timeouts keep their slot, asyncio cancellation reaches the
handler, ray_options reach the actor, statistics describe the actor's process."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge._errors import call_timed_out

from ..conftest import LogCapture, wait_until

SLOW = """
    import asyncio, logging, os, threading, time
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)

    class Slow(Plugin):
        name = "slow"

        def on_start(self, ctx):
            self.release = threading.Event()

        @handler("block")
        def block(self, ctx, _):
            self.release.wait(30)
            return "done"

        @handler("unblock")
        def unblock(self, ctx, _):
            self.release.set()

        @handler("nap")
        async def nap(self, ctx, seconds):
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                log.info("nap cancelled")
                raise
            return "rested"

        @handler("env")
        def env(self, ctx, name):
            return os.environ.get(name)

        @handler("pid")
        def pid(self, ctx, _):
            return os.getpid()
"""


def test_a_timed_out_call_raises_timeout_on_time_and_keeps_its_slot(
    write_plugin: Callable[..., Path],
) -> None:
    with plugbridge.load(write_plugin(SLOW), isolation="ray") as plugin:
        started = time.monotonic()
        with pytest.raises(plugbridge.Timeout) as info:
            plugin.call("block", timeout=0.5)
        assert time.monotonic() - started < 5
        assert info.value.message == call_timed_out("block", 0.5).message
        assert plugin.in_flight == 1  # the handler still runs: its slot is still taken
        assert plugin.call("nap", 1.0) == "rested"  # past the actor's own timeout, too
        assert plugin.in_flight == 1  # ... and still taken
        plugin.call("unblock")
        assert wait_until(lambda: plugin.in_flight == 0)


def test_an_acall_that_times_out_is_cancelled_in_the_actor(
    write_plugin: Callable[..., Path], capture: LogCapture
) -> None:
    with plugbridge.load(write_plugin(SLOW), isolation="ray", log_callback=capture) as plugin:

        async def main() -> None:
            with pytest.raises(plugbridge.Timeout):
                await plugin.acall("nap", 30, timeout=0.3)
            task = asyncio.create_task(plugin.acall("nap", 30))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert wait_until(lambda: capture.messages().count("nap cancelled") == 2)
        assert wait_until(lambda: plugin.in_flight == 0)
        assert asyncio.run(plugin.acall("nap", 0)) == "rested"


def test_ray_options_reach_the_actor_and_stats_describe_its_process(
    write_plugin: Callable[..., Path],
) -> None:
    options = {"num_cpus": 0, "runtime_env": {"env_vars": {"PLUGBRIDGE_RAY_TEST": "yes"}}}
    with plugbridge.load(write_plugin(SLOW), isolation="ray", ray_options=options) as plugin:
        assert plugin.call("env", "PLUGBRIDGE_RAY_TEST") == "yes"
        stats = plugin.stats()
        assert stats.pid == plugin.call("pid") != os.getpid()
        assert stats.rss_bytes is not None and stats.rss_bytes > 0
        assert stats.cpu_seconds is not None and stats.cpu_seconds > 0


def test_an_actor_that_cannot_be_placed_fails_the_load_at_the_start_deadline(
    write_plugin: Callable[..., Path],
) -> None:
    started = time.monotonic()
    with pytest.raises(plugbridge.InitializationFailed, match="was not running within"):
        plugbridge.load(
            write_plugin(SLOW),
            isolation="ray",
            config={"start_timeout": 1.0},
            ray_options={"resources": {"no_such_resource": 1}},
        )
    assert time.monotonic() - started < 10


def test_ray_options_are_checked(write_plugin: Callable[..., Path]) -> None:
    source = write_plugin(SLOW)
    with pytest.raises(plugbridge.ConfigError, match="isolation='ray'"):
        plugbridge.load(source, ray_options={"num_cpus": 1})
    with pytest.raises(plugbridge.ConfigError, match="mapping"):
        plugbridge.load(source, isolation="ray", ray_options=["num_cpus"])  # type: ignore[arg-type]
    with pytest.raises(plugbridge.ConfigError, match="restart_on_crash"):
        plugbridge.load(source, isolation="ray", ray_options={"max_restarts": 2})
    with pytest.raises(plugbridge.ConfigError, match="ray_options: Invalid option keyword bogus"):
        plugbridge.load(source, isolation="ray", ray_options={"bogus": 1})
    with pytest.raises(plugbridge.ConfigError, match="num_cpus"):
        plugbridge.load(source, isolation="ray", ray_options={"num_cpus": "two"})
