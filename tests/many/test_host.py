"""PluginHost: concurrent start, required and optional failures, plugins by name, close."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import plugbridge
from plugbridge import (
    ConfigError,
    InitializationFailed,
    InvalidState,
    LifecycleState,
    LogLevel,
    PluginHost,
    ShutdownFailed,
)

from ..conftest import LogCapture, wait_until
from .conftest import echo_plugin

MEET = """
import asyncio, pathlib, time
from plugbridge import Plugin, handler

class Meet(Plugin):
    name = "meet"

    async def on_start(self, ctx):
        # Starts only if the other plugin is starting at the same time.
        pathlib.Path(ctx.data["mine"]).touch()
        end = time.monotonic() + 30
        while not pathlib.Path(ctx.data["other"]).exists():
            if time.monotonic() > end:
                raise RuntimeError("the other plugin never started")
            await asyncio.sleep(0.01)

    @handler("ping")
    def ping(self, ctx, req):
        return "pong"
"""

TRACED = """
import os, pathlib
from plugbridge import Plugin, handler

class Traced(Plugin):
    name = "traced"

    async def on_start(self, ctx):
        pathlib.Path(ctx.data["pid_file"]).write_text(str(os.getpid()))

    async def on_stop(self, ctx):
        pathlib.Path(ctx.data["stop_file"]).touch()

    @handler("ping")
    def ping(self, ctx, req):
        return "pong"
"""

FAILING_START = """
from plugbridge import Plugin

class Boom(Plugin):
    name = "boom"

    async def on_start(self, ctx):
        raise RuntimeError("boom in on_start")
"""

HANGING_STOP = """
import asyncio
from plugbridge import Plugin, handler

class Hang(Plugin):
    name = "hang"

    async def on_stop(self, ctx):
        await asyncio.sleep(60)
"""


def test_plugins_start_concurrently(tmp_path: Path, host_file: Callable[..., Path]) -> None:
    (tmp_path / "meet.py").write_text(MEET)
    a, b = tmp_path / "a.started", tmp_path / "b.started"
    path = host_file(
        f"""
        [plugins.a]
        source = "meet.py"
        data = {{ mine = "{a}", other = "{b}" }}

        [plugins.b]
        source = "meet.py"
        isolation = "process"
        data = {{ mine = "{b}", other = "{a}" }}
        """
    )
    with PluginHost.from_file(path) as host:
        assert host["a"].call("ping") == "pong"
        assert host["b"].call("ping") == "pong"


def _warm_up(tmp_path: Path) -> None:
    """Start and stop one plugin of each isolation, so process-wide helpers created on
    first use (the worker spawner) exist before a thread count is taken."""
    warm = tmp_path / "warm.py"
    warm.write_text(echo_plugin("warm"))
    for isolation in ("inprocess", "process"):
        with plugbridge.load(warm, isolation=isolation) as plugin:  # type: ignore[arg-type]
            plugin.call("echo", 1)


def test_a_required_failure_makes_start_raise_and_leaves_nothing_running(
    tmp_path: Path, host_file: Callable[..., Path]
) -> None:
    _warm_up(tmp_path)
    threads = threading.active_count()
    (tmp_path / "traced.py").write_text(TRACED)
    (tmp_path / "boom.py").write_text(FAILING_START)
    worker, local = tmp_path / "worker", tmp_path / "local"
    path = host_file(
        f"""
        [plugins.worker]
        source = "traced.py"
        isolation = "process"
        data = {{ pid_file = "{worker}.pid", stop_file = "{worker}.stopped" }}

        [plugins.local]
        source = "traced.py"
        data = {{ pid_file = "{local}.pid", stop_file = "{local}.stopped" }}

        [plugins.bad]
        source = "boom.py"
        """
    )
    with pytest.raises(InitializationFailed, match=r"required plugin 'bad'.*boom in on_start"):
        PluginHost.from_file(path)
    pid = int(Path(f"{worker}.pid").read_text())
    assert pid != 0
    assert Path(f"{worker}.stopped").exists()  # stopped, not killed
    assert Path(f"{local}.stopped").exists()
    assert wait_until(lambda: not psutil.pid_exists(pid), timeout=10)
    assert wait_until(lambda: threading.active_count() <= threads, timeout=10), [
        t.name for t in threading.enumerate()
    ]


@pytest.mark.ray_too
def test_an_optional_failure_is_listed_and_served_by_the_same_handle_once_fixed(
    tmp_path: Path, host_file: Callable[..., Path], isolation: str
) -> None:
    broken = tmp_path / "flaky.py"
    broken.write_text("raise RuntimeError('broken at import')\n")
    (tmp_path / "good.py").write_text(echo_plugin("good"))
    path = host_file(
        f"""
        [defaults]
        isolation = "{isolation}"

        [plugins.good]
        source = "good.py"

        [plugins.flaky]
        source = "flaky.py"
        required = false
        """
    )
    capture = LogCapture()
    with PluginHost.from_file(path, log_callback=capture) as host:
        assert host["good"].call("echo", 1) == 1
        assert host.names() == ["good", "flaky"]
        status = {s.name: s for s in host.status()}["flaky"]
        assert status.state is LifecycleState.FAILED
        assert status.error is not None
        assert "broken at import" in status.error
        assert status.metadata.name == "flaky"
        assert any(
            level is LogLevel.ERROR and "broken at import" in message
            for level, _, message in capture.records
        )
        handle = host["flaky"]
        with pytest.raises(InvalidState, match="broken at import"):
            handle.call("echo", 1)
        assert host.status()[1].stats.errors == {"INVALID_STATE": 1}

        with pytest.raises(InitializationFailed, match="broken at import"):
            host.reload("flaky")  # still broken: still FAILED, error kept
        assert handle.state is LifecycleState.FAILED

        broken.write_text(echo_plugin("flaky"))
        host.reload("flaky")
        assert host["flaky"] is handle
        assert handle.call("echo", 2) == 2
        status = {s.name: s for s in host.status()}["flaky"]
        assert status.state is LifecycleState.ACTIVE
        assert status.error is None
        assert status.metadata.name == "flaky"


def test_plugins_by_name(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(echo_plugin("a"))
    b.write_text(echo_plugin("b"))
    with PluginHost() as host:
        assert len(host) == 0
        first = host.add("a", a)
        host.add("b", b, isolation="process")
        assert host.names() == ["a", "b"]
        assert list(host) == ["a", "b"]
        assert len(host) == 2
        assert "a" in host
        assert "zz" not in host
        assert host["a"] is first
        with pytest.raises(KeyError):
            host["zz"]
        with pytest.raises(ConfigError, match="already has a plugin named 'a'"):
            host.add("a", b)

        a.write_text(echo_plugin("a", version="2.0.0"))
        host.reload("a")
        assert host["a"].call("whoami") == {"name": "a", "version": "2.0.0"}
        assert host["a"] is first
        with pytest.raises(KeyError):
            host.reload("zz")

        host.remove("a")
        assert first.state is LifecycleState.STOPPED
        assert host.names() == ["b"]
        with pytest.raises(KeyError):
            host.remove("a")
        assert host.add("a", a).call("echo", 3) == 3  # the name is free again
        assert [s.name for s in host.status()] == ["b", "a"]
        assert {s.name: s.isolation for s in host.status()} == {"b": "process", "a": "inprocess"}
        worker = {s.name: s.stats.pid for s in host.status()}["b"]
        assert worker is not None
        assert psutil.pid_exists(worker)


def test_add_a_required_plugin_that_fails_raises_and_adds_nothing(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text(FAILING_START)
    with PluginHost() as host:
        with pytest.raises(InitializationFailed, match="boom in on_start"):
            host.add("bad", tmp_path / "boom.py")
        assert "bad" not in host
        handle = host.add("optional", tmp_path / "boom.py", required=False)
        assert handle.state is LifecycleState.FAILED
        assert host.names() == ["optional"]


def test_close_stops_every_plugin_at_once_each_within_its_timeout_and_is_idempotent(
    tmp_path: Path,
) -> None:
    (tmp_path / "hang.py").write_text(HANGING_STOP)
    timeout = 1.5
    names = ["h1", "h2", "h3", "h4"]
    host = PluginHost(defaults={"shutdown_timeout": timeout})
    handles = [host.add(name, tmp_path / "hang.py") for name in names]
    began = time.monotonic()
    with pytest.raises(ShutdownFailed) as raised:
        host.close()
    took = time.monotonic() - began
    assert took < timeout * 3, took  # one after the other would take 4 x 1.5 s
    for name in names:
        assert f"plugin {name!r}" in raised.value.message
    assert all(handle.state is not LifecycleState.ACTIVE for handle in handles)
    began = time.monotonic()
    host.close()  # again: nothing to do, nothing raised
    assert time.monotonic() - began < timeout
    with pytest.raises(InvalidState):
        host.add("late", tmp_path / "hang.py")
    with pytest.raises(InvalidState):
        host.start()


def test_the_host_callback_gets_every_plugins_records_and_a_plugin_may_have_its_own(
    tmp_path: Path,
) -> None:
    for name in ("alpha_plugin", "beta_plugin", "gamma_plugin"):
        (tmp_path / f"{name}.py").write_text(echo_plugin(name))
    shared, own_beta, own_gamma = LogCapture(), LogCapture(), LogCapture()
    host = PluginHost(
        log_callback=shared,
        log_callback_for=lambda name: own_beta if name == "beta" else None,
    )
    with host:
        host.add("alpha", tmp_path / "alpha_plugin.py")
        host.add("beta", tmp_path / "beta_plugin.py")
        host.add("gamma", tmp_path / "gamma_plugin.py", log_callback=own_gamma)
        for name in ("alpha", "beta", "gamma"):
            host[name].call("echo", name)
    # target: the plugin's logger name, as with load(); the host never rewrites it
    assert shared.records == [(LogLevel.INFO, "alpha_plugin", "echo 'alpha'")]
    assert own_beta.records == [(LogLevel.INFO, "beta_plugin", "echo 'beta'")]
    assert own_gamma.records == [(LogLevel.INFO, "gamma_plugin", "echo 'gamma'")]


def test_status_reports_each_plugin(tmp_path: Path, host_file: Callable[..., Path]) -> None:
    (tmp_path / "s.py").write_text(echo_plugin("stat", version="3.1.0"))
    path = host_file('[plugins.s]\nsource = "s.py"\nlog_level = "warn"\n')
    with PluginHost.from_file(path) as host:
        host["s"].call("echo", 1)
        (status,) = host.status()
        assert status.name == "s"
        assert status.source == str(tmp_path / "s.py")
        assert status.isolation == "inprocess"
        assert status.state is LifecycleState.ACTIVE
        assert status.log_level is LogLevel.WARN
        assert (status.metadata.name, status.metadata.version) == ("stat", "3.1.0")
        assert status.error is None
        assert status.required is True
        assert status.stats.calls == 1
        assert status.stats.pid is None
        host["s"].reload()
        host["s"].call("echo", 2)
        (status,) = host.status()
        assert (status.stats.calls, status.stats.reloads) == (2, 1)


def test_the_host_is_safe_from_many_threads(tmp_path: Path) -> None:
    source = tmp_path / "t.py"
    source.write_text(echo_plugin("t"))
    errors: list[BaseException] = []
    with PluginHost() as host:

        def churn(worker: int) -> None:
            try:
                for round_ in range(5):
                    name = f"p{worker}-{round_}"
                    assert host.add(name, source).call("echo", name) == name
                    assert name in host
                    host.status()
                    if round_ % 2:
                        host.remove(name)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(host.names()) == sorted(f"p{w}-{r}" for w in range(4) for r in (0, 2, 4))


def test_one_name_added_from_many_threads_at_once_is_added_once(tmp_path: Path) -> None:
    source = tmp_path / "same.py"
    source.write_text(echo_plugin("same"))
    barrier = threading.Barrier(4)
    added: list[plugbridge.PluginHandle] = []
    refused: list[ConfigError] = []
    with PluginHost() as host:

        def add() -> None:
            barrier.wait()
            try:
                added.append(host.add("same", source))
            except ConfigError as exc:
                refused.append(exc)

        threads = [threading.Thread(target=add) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(added) == 1
        assert len(refused) == 3
        assert host["same"] is added[0]
        assert len(host) == 1


def test_a_plugin_with_replicas_is_one_name(tmp_path: Path, host_file: Callable[..., Path]) -> None:
    (tmp_path / "r.py").write_text(echo_plugin("r"))
    path = host_file('[plugins.r]\nsource = "r.py"\nisolation = "process"\nreplicas = 2\n')
    with PluginHost.from_file(path) as host:
        assert host.names() == ["r"]
        assert host["r"].call("echo", 1) == 1
        (tmp_path / "r.py").write_text(echo_plugin("r", version="2.0.0"))
        host.reload("r")
        assert host["r"].call("whoami")["version"] == "2.0.0"
        (status,) = host.status()
        assert status.state is LifecycleState.ACTIVE
        assert status.stats.reloads == 1


def test_a_name_the_host_file_plans_cannot_be_added_before_start(
    tmp_path: Path, host_file: Callable[..., Path]
) -> None:
    (tmp_path / "planned.py").write_text(echo_plugin("planned"))
    (tmp_path / "other.py").write_text(echo_plugin("other"))
    path = host_file('[plugins.hello]\nsource = "planned.py"\n')
    host = PluginHost._planned_from_file(path)
    try:
        with pytest.raises(ConfigError) as raised:
            host.add("hello", tmp_path / "other.py")
        assert "'hello'" in raised.value.message and "host file" in raised.value.message
        assert "hello" not in host
        extra = host.add("extra", tmp_path / "other.py")
        host.start()
        assert host.names() == ["extra", "hello"]
        assert host["hello"].call("whoami")["name"] == "planned"
        assert host["extra"] is extra
    finally:
        host.close()
