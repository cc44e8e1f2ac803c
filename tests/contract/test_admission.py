"""Admission at the handle: durations, the zero timeout, the start deadline, slot accounting."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LifecycleState, PluginConfig

from ..conftest import wait_until

COUNTING = """
    import asyncio
    from plugbridge import Plugin, handler

    class Counting(Plugin):
        name = "counting"
        runs = 0

        @handler("sync")
        def sync(self, ctx, req):
            Counting.runs += 1
            return Counting.runs

        @handler("async")
        async def run_async(self, ctx, req):
            Counting.runs += 1
            return Counting.runs

        @handler("runs")
        def count(self, ctx, req):
            return Counting.runs
"""

BAD_DURATIONS = [math.inf, -math.inf, math.nan, -1, 1e300, True, "1", None]


@pytest.fixture
def counting(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(COUNTING, "counting_plugin.py")


@pytest.mark.parametrize("key", ["shutdown_timeout", "start_timeout", "restart_window"])
@pytest.mark.parametrize("value", BAD_DURATIONS)
def test_durations_in_config_must_be_finite_numbers(key: str, value: object) -> None:
    with pytest.raises(plugbridge.ConfigError, match=key):
        PluginConfig(**{key: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [math.inf, math.nan, -0.5, 1e300])
def test_call_timeout_in_config_must_be_finite(value: float) -> None:
    with pytest.raises(plugbridge.ConfigError, match="call_timeout"):
        PluginConfig(call_timeout=value)


def test_config_data_must_have_a_json_form() -> None:
    for data in ({"x": object()}, {"s": "\ud800"}, {"deep": _nested(100_000)}):
        with pytest.raises(plugbridge.ConfigError, match="data"):
            PluginConfig(data=data)
    assert PluginConfig(data={"nested": [1, 2.5, None, {"ok": True}]}).data["nested"][0] == 1


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def test_infinite_timeouts_are_refused_and_leave_the_handle_intact(
    counting: Path, isolation: str
) -> None:
    plugin = plugbridge.load(counting, isolation=isolation)
    try:
        for bad in (math.inf, math.nan, -1.0, 1e300):
            with pytest.raises(plugbridge.ConfigError, match="timeout"):
                plugin.call("sync", timeout=bad)
            with pytest.raises(plugbridge.ConfigError, match="timeout"):
                plugin.call_json("sync", b"null", timeout=bad)
            with pytest.raises(plugbridge.ConfigError, match="timeout"):
                asyncio.run(plugin.acall("sync", timeout=bad))
            with pytest.raises(plugbridge.ConfigError, match="timeout"):
                plugin.reload(timeout=bad)
            with pytest.raises(plugbridge.ConfigError, match="timeout"):
                plugin.shutdown(timeout=bad)
        assert plugin.state is LifecycleState.ACTIVE
        assert plugin.in_flight == 0
        assert plugin.call("sync") == 1
    finally:
        plugin.shutdown(timeout=5)
    assert plugin.state is LifecycleState.STOPPED


def test_a_zero_timeout_never_runs_the_call(counting: Path, isolation: str) -> None:
    with plugbridge.load(counting, isolation=isolation) as plugin:
        for tag in ("sync", "async"):
            with pytest.raises(plugbridge.Timeout, match="0s"):
                plugin.call(tag, timeout=0)
            with pytest.raises(plugbridge.Timeout):
                plugin.call_json(tag, "null", timeout=0.0)
            with pytest.raises(plugbridge.Timeout):
                asyncio.run(plugin.acall(tag, timeout=0))
        assert plugin.call("runs") == 0
        assert plugin.in_flight == 0
        assert plugin.rejected_request_count == 0
    with pytest.raises(plugbridge.InvalidState):
        plugin.call("sync", timeout=0)


@pytest.mark.parametrize("hook", ["sync", "async"])
def test_a_hung_on_start_is_bounded_by_start_timeout(
    write_plugin: Callable[..., Path], isolation: str, hook: str
) -> None:
    body = "time.sleep(60)" if hook == "sync" else "await asyncio.sleep(60)"
    prefix = "" if hook == "sync" else "async "
    source = write_plugin(
        f"""
        import asyncio, time
        from plugbridge import Plugin, handler

        class Hangs(Plugin):
            name = "hangs"

            {prefix}def on_start(self, ctx):
                {body}

            @handler("x")
            def x(self, ctx, req):
                return 1
        """,
        "hangs_on_start.py",
    )
    started = time.monotonic()
    with pytest.raises(plugbridge.InitializationFailed, match="start"):
        plugbridge.load(
            source, config={"start_timeout": 0.5, "shutdown_timeout": 1}, isolation=isolation
        )
    assert time.monotonic() - started < 20  # bounded (the hook sleeps 60 s); not a benchmark


def test_reload_start_is_bounded_by_the_reload_timeout(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    path = write_plugin(COUNTING, "reloaded_plugin.py")
    with plugbridge.load(path, isolation=isolation) as plugin:
        path.write_text(
            "import time\nfrom plugbridge import Plugin, handler\n\n"
            "class Slow(Plugin):\n    name = 'slow'\n\n"
            "    def on_start(self, ctx):\n        time.sleep(60)\n\n"
            "    @handler('sync')\n    def sync(self, ctx, req):\n        return -1\n"
        )
        started = time.monotonic()
        with pytest.raises(plugbridge.InitializationFailed):
            plugin.reload(timeout=1)
        assert time.monotonic() - started < 20
        assert plugin.call("sync") == 1  # the old instance keeps serving


def test_every_refusal_and_every_failure_gives_its_slot_back(
    counting: Path, isolation: str
) -> None:
    with plugbridge.load(counting, config={"max_concurrent_ops": 2}, isolation=isolation) as p:
        failures = [
            lambda: p.call("nope"),
            lambda: p.call(123),  # type: ignore[arg-type]
            lambda: p.call_json("sync", b"{not json"),
            lambda: p.call_json("sync", 42),  # type: ignore[arg-type]
        ]
        for _ in range(5):
            for fail in failures:
                with pytest.raises(plugbridge.PluginError):
                    fail()
        assert wait_until(lambda: p.in_flight == 0)
        assert p.call("sync") == 1
        assert p.rejected_request_count == 0


def test_reload_with_a_zero_timeout_changes_nothing(counting: Path, isolation: str) -> None:
    with plugbridge.load(counting, isolation=isolation) as plugin:
        assert plugin.call("sync") == 1
        with pytest.raises(plugbridge.InitializationFailed, match="timeout=0"):
            plugin.reload(timeout=0)
        assert plugin.call("sync") == 2  # the same instance (its counter went on)


def test_call_json_with_a_released_view_is_a_serialization_error(
    counting: Path, isolation: str
) -> None:
    with plugbridge.load(counting, isolation=isolation) as plugin:
        view = memoryview(b"null")
        view.release()
        with pytest.raises(plugbridge.SerializationError, match="released"):
            plugin.call_json("sync", view)
        with pytest.raises(plugbridge.SerializationError, match="surrogate"):
            plugin.call_json("sync", '"\ud800"')
        assert plugin.in_flight == 0
        assert plugin.call("sync") == 1


def test_durations_in_messages_read_as_people_write_them() -> None:
    from plugbridge._errors import seconds

    assert [seconds(v) for v in (1.9999838759999875, 0.25, 1e-6, 5, 1234.5)] == [
        "2s", "0.25s", "1e-06s", "5s", "1,234s",
    ]  # fmt: skip
