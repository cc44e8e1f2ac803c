"""Native plugins: start and stop, reload, leaks, bounded shutdown and crash containment."""

from __future__ import annotations

import gc
import os
import re
import shutil
import textwrap
import threading
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LifecycleState

from ..conftest import LogCapture, wait_until
from .build import (
    build_hello_c,
    build_not_a_plugin,
    private_copies_mapped,
    private_copies_on_disk,
)


@pytest.fixture(scope="session")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_lifecycle"))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_100_reload_cycles_leak_nothing(hello_c: Path, isolation: str) -> None:
    with plugbridge.load(hello_c, isolation=isolation) as warm:
        warm.call("echo", {"message": "warm"}, timeout=5)  # starts the timed-call thread
    gc.collect()
    threads, fds = threading.active_count(), fd_count()
    mapped, on_disk = private_copies_mapped(), private_copies_on_disk()
    capture = LogCapture()
    # 100 cycles in-process, where the copies are mapped into this very process; a worker
    # process per instance makes each cycle ~100x dearer, so fewer there.
    cycles = 100 if isolation == "inprocess" else 20
    for i in range(cycles):
        plugin = plugbridge.load(
            hello_c, config={"log_level": "debug"}, log_callback=capture, isolation=isolation
        )
        plugin.call("echo", {"message": f"cycle {i}"})
        plugin.call("echo", {"message": f"timed {i}"}, timeout=5)
        plugin.reload()  # a second instance per cycle: 200 in all
        assert plugin.call("user.create", {"username": "u", "email": "e"})["user_id"] == (
            "user-00000000"  # a fresh copy of the library: its globals start over
        )
        plugin.shutdown()
    gc.collect()
    assert wait_until(lambda: threading.active_count() <= threads)
    assert fd_count() <= fds
    assert private_copies_mapped() == mapped
    assert private_copies_on_disk() == on_disk
    assert len([m for m in capture.messages() if m.startswith("Handling echo")]) == 2 * cycles


def test_copies_are_private_and_unmapped_at_shutdown(hello_c: Path) -> None:
    before = private_copies_mapped()
    a = plugbridge.load(hello_c)
    b = plugbridge.load(hello_c)
    assert private_copies_mapped() == before + 2
    assert private_copies_on_disk() == []  # unlinked as soon as mapped
    a.shutdown()
    assert private_copies_mapped() == before + 1
    b.shutdown()
    assert private_copies_mapped() == before


@pytest.mark.ray_too
def test_reload_takes_the_library_as_it_is_on_disk_now(
    hello_c: Path, tmp_path: Path, isolation: str
) -> None:
    path = tmp_path / "libswap.so"
    shutil.copyfile(hello_c, path)
    with plugbridge.load(path, isolation=isolation) as plugin:
        with pytest.raises(plugbridge.FfiError):
            plugin.call("test.bare_error")  # a test hook of this build
        build_hello_c(tmp_path, hooks=False).replace(path)
        plugin.reload()
        with pytest.raises(plugbridge.UnknownMessageType):
            plugin.call("test.bare_error", {})
        assert plugin.call("math.add", {"a": 2, "b": 3}) == {"result": 5}


@pytest.mark.ray_too
def test_failed_init_leaves_nothing_behind(hello_c: Path, isolation: str) -> None:
    threads, mapped = threading.active_count(), private_copies_mapped()
    with pytest.raises(plugbridge.InitializationFailed, match="plugin_init"):
        plugbridge.load(hello_c, config={"data": {"fail_init": True}}, isolation=isolation)
    assert wait_until(lambda: threading.active_count() <= threads)
    assert private_copies_mapped() == mapped
    assert private_copies_on_disk() == []


@pytest.mark.ray_too
def test_library_without_the_abi_is_refused(tmp_path: Path, isolation: str) -> None:
    mapped = private_copies_mapped()
    with pytest.raises(plugbridge.InitializationFailed, match="plugin_create"):
        plugbridge.load(build_not_a_plugin(tmp_path), isolation=isolation)
    assert private_copies_mapped() == mapped


def test_missing_library_is_refused(tmp_path: Path, isolation: str) -> None:
    with pytest.raises(plugbridge.InitializationFailed):
        plugbridge.load(tmp_path / "libmissing.so", isolation=isolation)


@pytest.mark.ray_too
def test_hung_plugin_shutdown_is_abandoned_on_time(hello_c: Path, isolation: str) -> None:
    mapped = private_copies_mapped()
    capture = LogCapture()
    config = {"shutdown_timeout": 0.3, "data": {"shutdown_sleep_ms": 1500}}
    plugin = plugbridge.load(hello_c, config=config, log_callback=capture, isolation=isolation)
    with pytest.raises(plugbridge.ShutdownFailed) as failed:
        plugin.shutdown()
    if isolation == "inprocess":
        assert failed.value.message == (
            "plugin 'hello_c': plugin_shutdown did not finish within the shutdown timeout"
            " (0.3s); the library stays mapped until it does"
        )
    seen = len(capture.records)
    assert plugin.state is LifecycleState.FAILED
    if isolation == "inprocess":
        # plugin_shutdown is still running: the copy stays mapped until it returns...
        assert private_copies_mapped() == mapped + 1
        # ...and is unmapped as soon as it does.
        assert wait_until(lambda: private_copies_mapped() == mapped, timeout=10)
    # The late "stopped" record of plugin_shutdown never reached the callback.
    assert len(capture.records) == seen
    assert "HelloPlugin (C) stopped" not in capture.messages()
    plugin.shutdown()  # idempotent, even after a failure


def test_call_still_running_at_shutdown_is_cancelled(hello_c: Path, isolation: str) -> None:
    capture = LogCapture()
    config = {"log_level": "debug", "shutdown_timeout": 0.2}
    plugin = plugbridge.load(hello_c, config=config, log_callback=capture, isolation=isolation)
    mapped = private_copies_mapped()
    outcome: list[BaseException] = []

    def slow_call() -> None:
        try:
            plugin.call("test.sleep", {"duration_ms": 1200})
        except plugbridge.PluginError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    assert wait_until(lambda: "Sleeping for 1200 ms" in capture.messages())
    plugin.shutdown()
    assert plugin.state is LifecycleState.STOPPED
    caller.join()
    assert len(outcome) == 1 and isinstance(outcome[0], plugbridge.Cancelled)
    # The copy could only be unmapped once the C call had come back out of it.
    assert wait_until(lambda: private_copies_mapped() == mapped - (isolation == "inprocess"))


def test_native_segfault_is_contained_in_process_mode(hello_c: Path) -> None:
    pytest.importorskip("plugbridge._worker.host", reason="the worker transport is not built yet")
    with plugbridge.load(hello_c, isolation="process") as plugin:
        assert plugin.call("echo", {"message": "before"})["length"] == 6
        with pytest.raises(plugbridge.PluginCrashed):
            plugin.call("test.crash", {})
    assert threading.main_thread().is_alive()  # the host survived the segfault


@pytest.mark.ray_too
def test_old_instance_is_silent_after_a_reload_even_if_its_shutdown_hangs(
    hello_c: Path, isolation: str
) -> None:
    capture = LogCapture()
    config = {"shutdown_timeout": 0.2, "data": {"shutdown_sleep_ms": 600}}
    plugin = plugbridge.load(hello_c, config=config, log_callback=capture, isolation=isolation)
    mapped = private_copies_mapped()
    plugin.reload()  # the old instance's plugin_shutdown outlives its shutdown timeout
    assert any("failed to stop" in m for m in capture.messages())
    assert plugin.call("math.add", {"a": 1, "b": 1}) == {"result": 2}
    if isolation == "inprocess":
        # Once the old plugin_shutdown returns (logging "stopped"), its copy is unmapped.
        assert wait_until(lambda: private_copies_mapped() == mapped, timeout=10)
    # The handle's callback is still open, but the old instance's gate is not.
    assert "HelloPlugin (C) stopped" not in capture.messages()
    with pytest.raises(plugbridge.ShutdownFailed):
        plugin.shutdown()


HANGS_IN_ON_STOP = """
    import os, time
    from plugbridge import Plugin

    class Hangs(Plugin):
        name = "x"

        def on_stop(self, ctx):
            while not os.path.exists({release!r}):  # hangs until the test lets it go
                time.sleep(0.01)
"""

LATE_STOP = re.compile(
    r"plugin '(?P<name>[^']+)': (?P<hook>\w+) did not finish within the shutdown timeout"
    r" \((?P<timeout>[0-9.]+s)\)(?P<rest>.*)"
)


def test_a_hung_stop_hook_reads_the_same_in_process_and_native(
    hello_c: Path, tmp_path: Path
) -> None:
    """One failure, one wording: a Python on_stop and a C plugin_shutdown that hang."""
    source, release = tmp_path / "hangs_in_on_stop.py", tmp_path / "release"
    source.write_text(textwrap.dedent(HANGS_IN_ON_STOP.format(release=str(release))))
    python = plugbridge.load(source, config={"shutdown_timeout": 0.3})
    native = plugbridge.load(
        hello_c, config={"shutdown_timeout": 0.3, "data": {"shutdown_sleep_ms": 1500}}
    )
    try:
        with pytest.raises(plugbridge.ShutdownFailed) as python_failed:
            python.shutdown()
        with pytest.raises(plugbridge.ShutdownFailed) as native_failed:
            native.shutdown()
    finally:
        release.touch()
    python_late = LATE_STOP.fullmatch(python_failed.value.message)
    native_late = LATE_STOP.fullmatch(native_failed.value.message)
    assert python_late, python_failed.value.message
    assert native_late, native_failed.value.message
    assert (python_late["name"], python_late["hook"]) == ("x", "on_stop")
    assert (native_late["name"], native_late["hook"]) == ("hello_c", "plugin_shutdown")
    assert python_late["timeout"] == native_late["timeout"] == "0.3s"
    # The same text but for the name, the hook and what its being late leaves behind.
    assert python_late["rest"] == ""
    assert native_late["rest"] == "; the library stays mapped until it does"
