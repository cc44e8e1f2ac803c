"""Admission at the handle: durations, the zero timeout, the start deadline, slot accounting."""

from __future__ import annotations

import asyncio
import math
import textwrap
import threading
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


HANGS_UNTIL_RELEASED = """
    import asyncio, os, time
    from plugbridge import Plugin, handler

    RELEASE = {release!r}

    class Hangs(Plugin):
        name = "hangs"

        {prefix}def on_start(self, ctx):
            while not os.path.exists(RELEASE):  # hangs until the test lets it go
                {pause}

        @handler("sync")
        def sync(self, ctx, req):
            return -1
"""


def _hanging_source(path: Path, release: Path, hook: str) -> None:
    pause = "time.sleep(0.01)" if hook == "sync" else "await asyncio.sleep(0.01)"
    prefix = "" if hook == "sync" else "async "
    text = HANGS_UNTIL_RELEASED.format(release=str(release), prefix=prefix, pause=pause)
    path.write_text(textwrap.dedent(text))


@pytest.mark.parametrize("hook", ["sync", "async"])
def test_a_hung_on_start_is_bounded_by_start_timeout(
    tmp_path: Path, isolation: str, hook: str
) -> None:
    source, release = tmp_path / "hangs_on_start.py", tmp_path / "release"
    _hanging_source(source, release, hook)
    threads = threading.active_count()
    started = time.monotonic()
    try:
        with pytest.raises(plugbridge.InitializationFailed, match="start"):
            plugbridge.load(
                source, config={"start_timeout": 0.5, "shutdown_timeout": 1}, isolation=isolation
            )
        assert time.monotonic() - started < 20  # bounded, while the hook still hangs
    finally:
        release.touch()  # the abandoned hook ends, and its thread with it
    assert wait_until(lambda: threading.active_count() <= threads, timeout=10)


def test_reload_start_is_bounded_by_the_reload_timeout(
    write_plugin: Callable[..., Path], tmp_path: Path, isolation: str
) -> None:
    path = write_plugin(COUNTING, "reloaded_plugin.py")
    release = tmp_path / "release"
    threads = threading.active_count()
    plugin = plugbridge.load(path, isolation=isolation)
    try:
        _hanging_source(path, release, "sync")
        started = time.monotonic()
        with pytest.raises(plugbridge.InitializationFailed):
            plugin.reload(timeout=1)
        assert time.monotonic() - started < 20
        assert plugin.call("sync") == 1  # the old instance keeps serving
    finally:
        release.touch()
        plugin.shutdown()
    assert wait_until(lambda: threading.active_count() <= threads, timeout=10)


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


def test_a_tag_with_no_utf8_form_reaches_no_raw_handler(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    source = write_plugin(
        """
        from plugbridge import Plugin

        class Raw(Plugin):
            name = "raw"

            def handle_request(self, ctx, type_tag, payload):
                return b'"' + type_tag.encode("utf-8", "backslashreplace") + b'"'
        """,
        "raw_tags.py",
    )
    with plugbridge.load(source, isolation=isolation) as plugin:
        with pytest.raises(plugbridge.UnknownMessageType):
            plugin.call("ec\ud800ho")
        assert plugin.call("écho") == "écho"
        assert plugin.in_flight == 0
