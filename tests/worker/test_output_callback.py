"""isolation="process": a log callback that raises never reaches the caller or the plugin.

Records of a worker are delivered on host threads: the caller's (while it reads its own
answer), the session's reader thread (asyncio callers, records while nobody calls) and the
output pump (stdout/stderr lines). A callback raising ``SystemExit`` or
``KeyboardInterrupt`` on any of them is contained: calls answer as usual, no thread dies,
and later records still arrive.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import plugbridge

from ..conftest import wait_until

NOISY = """
    import logging
    from plugbridge import Plugin, handler

    log = logging.getLogger("noisy")

    class Noisy(Plugin):
        name = "noisy"

        @handler("noise")
        def noise(self, ctx, req):
            log.warning("boom %s 1", req)
            print(f"boom {req} out", flush=True)
            log.warning("boom %s 2", req)
            return req

        @handler("anoise")
        async def anoise(self, ctx, req):
            log.warning("boom %s 1", req)
            print(f"boom {req} out", flush=True)
            log.warning("boom %s 2", req)
            return req
"""


class RaisingCallback:
    """Records every message, then raises ``exc_type`` for each one."""

    def __init__(self, exc_type: type[BaseException]) -> None:
        self.exc_type = exc_type
        self.messages: list[str] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, level: object, target: str, message: str) -> None:
        with self._lock:
            self.messages.append(message)
            self.threads.add(threading.current_thread().name)
        raise self.exc_type("raised by the log callback")

    def got(self, round_: int) -> bool:
        with self._lock:
            wanted = {f"boom {round_} 1", f"boom {round_} out", f"boom {round_} 2"}
            return wanted <= set(self.messages)


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, RuntimeError])
def test_a_raising_log_callback_is_contained_on_every_host_thread(
    write_plugin: Callable[..., Path], exc_type: type[BaseException]
) -> None:
    source = write_plugin(NOISY, name="noisy.py")
    callback = RaisingCallback(exc_type)
    with plugbridge.load(source, isolation="process", log_callback=callback) as plugin:
        assert plugin.call("noise", 1) == 1  # the caller reads its answer and the records
        assert wait_until(lambda: callback.got(1))
        assert asyncio.run(plugin.acall("anoise", 2)) == 2  # the reader thread delivers
        assert wait_until(lambda: callback.got(2))
        assert plugin.call("noise", 3, timeout=10) == 3  # everyone still alive
        assert wait_until(lambda: callback.got(3))
        assert plugin.state is plugbridge.LifecycleState.ACTIVE
    assert any(name.endswith("-output") for name in callback.threads)  # the pump too


SLOW_RECORD = """
    import logging
    from plugbridge import Plugin, handler

    log = logging.getLogger("slowrecord")

    class SlowRecord(Plugin):
        name = "slowrecord"

        @handler("log")
        def log_it(self, ctx, req):
            log.warning(req)
            return req

        def on_stop(self, ctx):
            if ctx.data.get("fail_stop"):
                raise RuntimeError("on_stop failed on purpose")
"""


def load_slow_record(
    write_plugin: Callable[..., Path], callback: Callable[[Any, str, str], None], *, fail_stop: bool
) -> plugbridge.PluginHandle:
    """SLOW_RECORD in a worker, its records to ``callback``, its on_stop failing if told."""
    return plugbridge.load(
        write_plugin(SLOW_RECORD, name="slowrecord.py"),
        isolation="process",
        log_callback=callback,
        config={"data": {"fail_stop": fail_stop}},
    )


@pytest.mark.parametrize("fail_stop", [False, True])
def test_a_busy_log_callback_does_not_decide_whether_shutdown_failed(
    write_plugin: Callable[..., Path], fail_stop: bool
) -> None:
    # The host thread delivering a record is held by the callback while the worker
    # stops, so the worker's Stopped frame waits unread: the worker's exit status still
    # tells a clean stop from a failed one.
    entered, leave = threading.Event(), threading.Event()

    def callback(level: object, target: str, message: str) -> None:
        if message == "hold":
            entered.set()
            leave.wait(30)

    plugin = load_slow_record(write_plugin, callback, fail_stop=fail_stop)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(plugin.call("log", "hold"))
        except plugbridge.PluginError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert entered.wait(10)
        if fail_stop:
            with pytest.raises(plugbridge.ShutdownFailed, match="failed to stop"):
                plugin.shutdown(timeout=1.0)
            assert plugin.state is plugbridge.LifecycleState.FAILED
        else:
            plugin.shutdown(timeout=1.0)
            assert plugin.state is plugbridge.LifecycleState.STOPPED
    finally:
        leave.set()
        caller.join(10)
    # Its answer was still unread when shutdown returned: the call ends as cancelled.
    assert [type(o) for o in outcome] == [plugbridge.Cancelled], outcome


def test_a_failed_stop_says_why_though_the_log_callback_was_slow(
    write_plugin: Callable[..., Path],
) -> None:
    # The host thread delivering a record is in the callback for 0.5 s while the worker
    # fails to stop, writes Stopped (why) and exits: the frame is read once the callback
    # returns, well within the shutdown timeout, and the error names the reason.
    entered = threading.Event()

    def callback(level: object, target: str, message: str) -> None:
        if message == "slow":
            entered.set()
            time.sleep(0.5)

    plugin = load_slow_record(write_plugin, callback, fail_stop=True)
    outcome: list[object] = []
    caller = threading.Thread(target=lambda: outcome.append(plugin.call("log", "slow")))
    caller.start()
    try:
        assert entered.wait(10)
        with pytest.raises(plugbridge.ShutdownFailed, match="on_stop failed on purpose"):
            plugin.shutdown(timeout=5.0)
        assert plugin.state is plugbridge.LifecycleState.FAILED
    finally:
        caller.join(10)
    assert outcome == ["slow"]


def test_a_log_callback_that_shuts_its_plugin_down_after_a_failed_stop_is_not_held(
    write_plugin: Callable[..., Path],
) -> None:
    # The callback runs on the thread that reads the worker's channel: only it could read
    # the worker's Stopped frame, so the stop must not wait for that frame (the shutdown
    # timeout's end) before it reports the failure.
    stopped: list[object] = []

    def callback(level: object, target: str, message: str) -> None:
        if message == "stop now":
            began = time.monotonic()
            try:
                plugin.shutdown(timeout=30.0)
            except plugbridge.ShutdownFailed as exc:
                stopped.append((exc, time.monotonic() - began))

    plugin = load_slow_record(write_plugin, callback, fail_stop=True)
    with pytest.raises(plugbridge.PluginError):
        plugin.call("log", "stop now", timeout=60)
    assert wait_until(lambda: bool(stopped), 60)
    ((error, took),) = stopped
    assert isinstance(error, plugbridge.ShutdownFailed)
    assert took < 20.0, took  # not the 30 s timeout's end
    assert plugin.state is plugbridge.LifecycleState.FAILED
