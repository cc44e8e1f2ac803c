"""Lifecycle: load, failed starts that leave nothing behind, bounded and idempotent shutdown."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LifecycleState

from ..conftest import HELLO, LogCapture, wait_until


def plugbridge_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("plugbridge-")]


def test_load_use_shutdown_reload(isolation: str) -> None:
    plugin = plugbridge.load(HELLO, isolation=isolation)
    assert plugin.state is LifecycleState.ACTIVE
    assert plugin.call("echo", {"message": "a"})["length"] == 1
    plugin.shutdown()
    assert plugin.state is LifecycleState.STOPPED
    with pytest.raises(plugbridge.InvalidState) as info:
        plugin.call("echo", {"message": "a"})
    assert info.value.code == 1
    plugin.shutdown()  # idempotent
    plugin.close()
    again = plugbridge.load(HELLO, isolation=isolation)
    try:
        assert again.call("math.add", {"a": 1, "b": 1}) == {"result": 2}
    finally:
        again.close()


def test_reload_after_shutdown_is_invalid(isolation: str) -> None:
    plugin = plugbridge.load(HELLO, isolation=isolation)
    plugin.shutdown()
    with pytest.raises(plugbridge.InvalidState):
        plugin.reload()


def test_on_start_failure_leaves_nothing(write_plugin: Callable[..., Path], isolation: str) -> None:
    source = write_plugin(
        """
        import threading
        from plugbridge import Plugin

        class Broken(Plugin):
            name = "broken"
            async def on_start(self, ctx):
                raise RuntimeError("cannot start")
        """,
        name="broken_plugin.py",
    )
    modules_before = set(sys.modules)
    with pytest.raises(plugbridge.InitializationFailed) as info:
        plugbridge.load(source, isolation=isolation)
    assert info.value.code == 2
    assert "RuntimeError: cannot start" in info.value.message
    assert wait_until(lambda: plugbridge_threads() == [])
    assert {m for m in sys.modules if m.startswith("_plugbridge_")} == set()
    assert set(sys.modules) - modules_before <= {m for m in sys.modules if "msgspec" in m}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "import not_a_real_module_xyz\nfrom plugbridge import Plugin\nclass P(Plugin): pass",
            "not_a_real_module_xyz",
        ),
        ("x = 1", "no plugbridge.Plugin subclass"),
        (
            "from plugbridge import Plugin\nclass A(Plugin): pass\nclass B(Plugin): pass",
            "several Plugin subclasses",
        ),
        ("plugin = 42", "must be a plugbridge.Plugin subclass"),
        ("def broken(:\n    pass", "SyntaxError"),
        (
            "from plugbridge import Plugin\nclass P(Plugin):\n"
            "    def __init__(self):\n        raise OSError('no disk')",
            "OSError: no disk",
        ),
    ],
)
def test_bad_plugin_modules(
    write_plugin: Callable[..., Path], isolation: str, body: str, expected: str
) -> None:
    with pytest.raises(plugbridge.InitializationFailed, match=expected):
        plugbridge.load(write_plugin(body), isolation=isolation)
    assert {m for m in sys.modules if m.startswith("_plugbridge_")} == set()


def test_missing_sources(tmp_path: Path, isolation: str) -> None:
    for source in (tmp_path / "nope.py", tmp_path / "nodir", "no_such_pkg_xyz.mod", "%%%"):
        with pytest.raises(plugbridge.InitializationFailed):
            plugbridge.load(source, isolation=isolation)
    (tmp_path / "notpkg").mkdir()
    with pytest.raises(plugbridge.InitializationFailed, match="__init__"):
        plugbridge.load(tmp_path / "notpkg", isolation=isolation)


def test_module_attribute_plugin_selects_the_class(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    source = write_plugin(
        """
        from plugbridge import Plugin, handler
        class A(Plugin):
            name = "a"
        class B(Plugin):
            name = "b"
        plugin = B
        """
    )
    with plugbridge.load(source, isolation=isolation) as handle:
        assert handle.metadata.name == "b"


def test_hung_on_stop_is_bounded(write_plugin: Callable[..., Path], isolation: str) -> None:
    source = write_plugin(
        """
        import asyncio, time
        from plugbridge import Plugin, handler

        class Hang(Plugin):
            name = "hang"
            def on_stop(self, ctx):
                time.sleep(30)          # a sync hang: cannot be cancelled in-process

            @handler("ping")
            def ping(self, ctx, req):
                return "pong"
        """
    )
    plugin = plugbridge.load(source, config={"shutdown_timeout": 0.5}, isolation=isolation)
    assert plugin.call("ping") == "pong"
    start = time.monotonic()
    with pytest.raises(plugbridge.ShutdownFailed) as info:
        plugin.shutdown()
    elapsed = time.monotonic() - start
    assert info.value.code == 3
    assert "on_stop" in info.value.message
    assert elapsed < 3.0, f"shutdown took {elapsed:.2f}s with a 0.5s timeout"
    assert plugin.state is LifecycleState.FAILED
    plugin.shutdown()  # idempotent even after a failure
    with pytest.raises(plugbridge.InvalidState):
        plugin.call("ping")


def test_async_hung_on_stop_and_raising_on_stop(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    hang = write_plugin(
        """
        import asyncio
        from plugbridge import Plugin
        class AHang(Plugin):
            async def on_stop(self, ctx):
                await asyncio.sleep(30)
        """,
        name="ahang.py",
    )
    raising = write_plugin(
        """
        from plugbridge import Plugin
        class Raise(Plugin):
            async def on_stop(self, ctx):
                raise ValueError("stop failed")
        """,
        name="raising.py",
    )
    plugin = plugbridge.load(hang, isolation=isolation)
    with pytest.raises(plugbridge.ShutdownFailed, match="did not finish"):
        plugin.shutdown(timeout=0.3)
    assert plugin.state is LifecycleState.FAILED
    plugin = plugbridge.load(raising, isolation=isolation)
    with pytest.raises(plugbridge.ShutdownFailed, match="ValueError: stop failed"):
        plugin.shutdown()
    assert plugin.state is LifecycleState.FAILED


SLOW = """
    import asyncio, logging, time, threading
    from plugbridge import Plugin, handler

    log = logging.getLogger("slow")

    class Slow(Plugin):
        name = "slow"

        async def on_start(self, ctx):
            self.stopped = False
            self.background = asyncio.get_running_loop().create_task(self.forever())

        async def forever(self):
            await asyncio.sleep(3600)

        @handler("sleep")
        async def sleep(self, ctx, req):
            log.warning("running sleep")
            await asyncio.sleep(req)
            return req

        @handler("block")
        def block(self, ctx, req):
            log.warning("running block")
            time.sleep(req)
            return req
"""


def test_shutdown_lets_calls_in_flight_finish(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    capture = LogCapture()
    plugin = plugbridge.load(write_plugin(SLOW), isolation=isolation, log_callback=capture)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(plugin.call, "sleep", 0.5), pool.submit(plugin.call, "block", 0.5)]
        # in_flight counts a call once the handle has taken it, a moment before the
        # instance has it (a stop beginning in that moment refuses it): wait for both
        # handlers to run.
        assert wait_until(lambda: {"running sleep", "running block"} <= set(capture.messages()))
        assert plugin.in_flight == 2
        plugin.shutdown(timeout=5)
        assert [f.result() for f in futures] == [0.5, 0.5]
    assert plugin.state is LifecycleState.STOPPED


def test_shutdown_cancels_calls_past_the_timeout(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    plugin = plugbridge.load(write_plugin(SLOW), isolation=isolation)
    with ThreadPoolExecutor(4) as pool:
        async_call = pool.submit(plugin.call, "sleep", 60)
        sync_call = pool.submit(plugin.call, "block", 2, timeout=30)
        assert wait_until(lambda: plugin.in_flight == 2)
        start = time.monotonic()
        plugin.shutdown(timeout=1.0)  # both calls outlast it; room for a loaded machine
        assert time.monotonic() - start < 4.0
        with pytest.raises(plugbridge.Cancelled) as info:
            async_call.result(timeout=5)
        assert info.value.code == 9
        with pytest.raises(plugbridge.Cancelled):
            sync_call.result(timeout=5)


def test_calls_refused_while_stopping(write_plugin: Callable[..., Path], isolation: str) -> None:
    plugin = plugbridge.load(write_plugin(SLOW), isolation=isolation)
    with ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(plugin.call, "sleep", 0.5)
        time.sleep(0.1)
        stopper = pool.submit(plugin.shutdown)
        assert wait_until(lambda: plugin.state is LifecycleState.STOPPING)
        with pytest.raises(plugbridge.InvalidState):
            plugin.call("sleep", 0)
        stopper.result()
        assert in_flight.result() == 0.5


def test_no_threads_left_after_shutdown(write_plugin: Callable[..., Path]) -> None:
    baseline = threading.active_count()
    plugin = plugbridge.load(write_plugin(SLOW))
    plugin.call("block", 0, timeout=5)  # starts a pool thread
    plugin.call("sleep", 0)
    assert threading.active_count() > baseline
    plugin.shutdown()
    assert wait_until(lambda: threading.active_count() == baseline)


def test_tasks_the_plugin_spawns_are_cancelled_at_shutdown(
    write_plugin: Callable[..., Path], isolation: str, tmp_path: Path
) -> None:
    marker = tmp_path / "cancelled.txt"
    source = write_plugin(
        f"""
        import asyncio
        from pathlib import Path
        from plugbridge import Plugin, handler

        class Spawner(Plugin):
            async def on_start(self, ctx):
                self.task = asyncio.get_running_loop().create_task(self.background())

            async def background(self):
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    Path({str(marker)!r}).write_text("cancelled")
                    raise

            @handler("running")
            def running(self, ctx, req):
                return not self.task.done()
        """
    )
    plugin = plugbridge.load(source, isolation=isolation)
    assert plugin.call("running") is True
    assert not marker.exists()
    plugin.shutdown()
    assert marker.read_text() == "cancelled"


def test_a_handle_refuses_pickling_with_a_clear_error(isolation: str) -> None:
    import pickle

    with plugbridge.load(HELLO, isolation=isolation) as plugin:
        with pytest.raises(TypeError, match="load the plugin in each process that uses it"):
            pickle.dumps(plugin)
        assert plugin.call("echo", {"message": "a"})["length"] == 1
