"""Concurrency limit, timeouts, and calls from many threads and tasks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import plugbridge

from ..conftest import HELLO, wait_until

GATED = """
    import asyncio, os, threading, time
    from plugbridge import Plugin, handler

    class Gated(Plugin):
        name = "gated"

        def __init__(self):
            self.finished = 0

        @handler("hold")
        def hold(self, ctx, req):
            time.sleep(req)
            self.finished += 1
            return "done"

        @handler("sleep")
        async def sleep(self, ctx, req):
            await asyncio.sleep(req)
            return req

        @handler("spin")
        def spin(self, ctx, req):
            end = time.monotonic() + req
            while time.monotonic() < end:
                pass
            return "spun"

        @handler("cancellable")
        async def cancellable(self, ctx, req):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                self.cancelled = True
                raise

        @handler("was_cancelled")
        def was_cancelled(self, ctx, req):
            return getattr(self, "cancelled", False)

        @handler("finished")
        def fin(self, ctx, req):
            return self.finished

        @handler("park")
        async def park(self, ctx, req):
            while not os.path.exists(req):  # until the test lets it go
                await asyncio.sleep(0.01)
            return "released"
"""


@pytest.fixture
def gated_source(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(GATED, name="gated.py")


def test_limit_refuses_at_once_and_counts(gated_source: Path, isolation: str) -> None:
    with (
        plugbridge.load(
            gated_source, config={"max_concurrent_ops": 2}, isolation=isolation
        ) as plugin,
        ThreadPoolExecutor(2) as pool,
    ):
        flag = gated_source.parent / "let_go"
        running = [pool.submit(plugin.call, "park", str(flag)) for _ in range(2)]
        assert wait_until(lambda: plugin.in_flight == 2, timeout=30)
        with pytest.raises(plugbridge.TooManyRequests) as info:
            plugin.call("sleep", 0)  # refused while both park: not queued behind them
        assert info.value.code == 13
        assert plugin.rejected_request_count == 1

        async def try_async() -> None:
            with pytest.raises(plugbridge.TooManyRequests):
                await plugin.acall("sleep", 0)

        asyncio.run(try_async())
        assert plugin.rejected_request_count == 2
        flag.touch()
        assert [f.result(timeout=30) for f in running] == ["released", "released"]
        assert plugin.call("sleep", 0) == 0  # slots are free again


def test_limit_and_count_belong_to_the_handle_across_reload(
    gated_source: Path, isolation: str
) -> None:
    with (
        plugbridge.load(
            gated_source, config={"max_concurrent_ops": 1}, isolation=isolation
        ) as plugin,
        ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(plugin.call, "sleep", 0.6)
        time.sleep(0.1)
        plugin_reload = threading.Thread(target=plugin.reload)
        plugin_reload.start()
        time.sleep(0.1)
        with pytest.raises(plugbridge.TooManyRequests):
            plugin.call("sleep", 0)  # the old instance's call still holds the only slot
        plugin_reload.join()
        assert running.result() == 0.6
        assert plugin.rejected_request_count == 1


def test_timeout_keeps_the_slot_until_the_handler_returns(
    gated_source: Path, isolation: str
) -> None:
    with plugbridge.load(
        gated_source, config={"max_concurrent_ops": 1}, isolation=isolation
    ) as plugin:
        with pytest.raises(plugbridge.Timeout) as info:
            plugin.call("hold", 0.6, timeout=0.1)
        assert info.value.code == 10
        with pytest.raises(plugbridge.TooManyRequests):
            plugin.call("finished")  # the timed-out handler still runs and holds the slot
        assert wait_until(lambda: _call_ok(plugin, "finished"))
        assert plugin.call("finished") == 1


def _call_ok(plugin: plugbridge.PluginHandle, tag: str) -> bool:
    try:
        plugin.call(tag)
    except plugbridge.TooManyRequests:
        return False
    return True


def test_async_timeout_cancels_the_handler(gated_source: Path, isolation: str) -> None:
    with plugbridge.load(gated_source, isolation=isolation) as plugin:
        start = time.monotonic()
        with pytest.raises(plugbridge.Timeout):
            plugin.call("cancellable", timeout=0.1)
        assert time.monotonic() - start < 2
        assert wait_until(lambda: plugin.call("was_cancelled") is True)


def test_spinning_sync_handler_times_out(gated_source: Path, isolation: str) -> None:
    with plugbridge.load(gated_source, config={"call_timeout": 0.1}, isolation=isolation) as p:
        with pytest.raises(plugbridge.Timeout):
            p.call("spin", 1.0)
        assert p.call("spin", 0.0, timeout=5) == "spun"


def test_acall_timeout_and_caller_cancellation(gated_source: Path, isolation: str) -> None:
    async def main(plugin: plugbridge.PluginHandle) -> None:
        with pytest.raises(plugbridge.Timeout):
            await plugin.acall("sleep", 5, timeout=0.05)
        task = asyncio.ensure_future(plugin.acall("cancellable"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with plugbridge.load(gated_source, isolation=isolation) as plugin:
        asyncio.run(main(plugin))
        assert wait_until(lambda: plugin.call("was_cancelled") is True)


def test_many_threads_call_at_once(isolation: str) -> None:
    with plugbridge.load(HELLO, isolation=isolation) as plugin, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: plugin.call("math.add", {"a": i, "b": i}), range(2000)))
    assert results == [{"result": 2 * i} for i in range(2000)]


def test_many_tasks_acall_at_once(isolation: str) -> None:
    async def main(plugin: plugbridge.PluginHandle) -> tuple[list[object], float]:
        start = time.monotonic()
        results = await asyncio.gather(
            *(plugin.acall("test.sleep", {"duration_ms": 50}) for _ in range(500))
        )
        return list(results), time.monotonic() - start

    with plugbridge.load(HELLO, isolation=isolation) as plugin:
        results, _ = asyncio.run(main(plugin))
    assert results == [{"slept_ms": 50}] * 500


def test_acall_does_not_block_the_callers_loop(gated_source: Path, isolation: str) -> None:
    async def main(plugin: plugbridge.PluginHandle) -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.ensure_future(ticker())
        await plugin.acall("spin", 0.3)  # a sync handler busy for 0.3 s
        ticking.cancel()
        return ticks

    with plugbridge.load(gated_source, isolation=isolation) as plugin:
        assert asyncio.run(main(plugin)) >= 5


def test_bad_timeouts_are_config_errors(isolation: str) -> None:
    with plugbridge.load(HELLO, isolation=isolation) as plugin:
        for bad in (-1, "soon", float("nan")):
            with pytest.raises(plugbridge.ConfigError):
                plugin.call("echo", {"message": "x"}, timeout=bad)  # type: ignore[arg-type]
