"""Log listeners (``PluginHandle.add_log_listener``, the gateway's log stream) obey an
instance's gate as the log callback does: once ``reload()`` or ``shutdown()`` has returned,
no record of the instance it retired reaches a listener, not even one whose telling had
begun (a listener before it was still running)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LogLevel

from ..conftest import wait_until

BACKGROUND_LOGGER = """
    import logging, threading, time
    from pathlib import Path
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)

    class Background(Plugin):
        name = "background"

        @handler("spawn_logger_thread")
        def spawn(self, ctx, stop_file):
            def loop():
                while not Path(stop_file).exists():
                    log.warning("background")
                    time.sleep(0.001)
            threading.Thread(target=loop, daemon=True).start()
"""


class Stall:
    """A first listener that holds up the telling of the first background record until
    released, so the instance retires while that record is between two listeners. Only
    on a thread other than the test's: ``reload()`` may tell records itself (a process
    worker's last ones, read while it stops)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.thread: threading.Thread | None = None
        self._first = threading.Lock()  # taken, never released, by the record held up

    def __call__(self, level: LogLevel, target: str, message: str) -> None:
        here = threading.current_thread()
        if message != "background" or here is threading.main_thread():
            return
        if self._first.acquire(blocking=False):
            self.thread = here
            self.entered.set()
            self.release.wait(30)


class Heard:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, level: LogLevel, target: str, message: str) -> None:
        with self._lock:
            self.messages.append(message)

    def count(self, message: str) -> int:
        with self._lock:
            return self.messages.count(message)


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
@pytest.mark.parametrize("retire", ["reload", "shutdown"])
def test_no_listener_hears_a_retired_instance_after_its_retirement_returned(
    write_plugin: Callable[..., Path], tmp_path: Path, isolation: str, retire: str
) -> None:
    source = write_plugin(BACKGROUND_LOGGER, name="background_mod.py")
    stop_file = tmp_path / "stop"
    plugin = plugbridge.load(
        source,
        isolation=isolation,
        config={"shutdown_timeout": 2},  # a stop waits that long for the held-up reader
        log_callback=lambda *_: None,
    )
    stall, heard = Stall(), Heard()
    plugin.add_log_listener(stall)
    plugin.add_log_listener(heard)
    try:
        plugin.call("spawn_logger_thread", str(stop_file))
        assert stall.entered.wait(30), "the background thread's records never came"
        if retire == "reload":
            plugin.reload()  # the new instance starts no background thread
        else:
            plugin.shutdown()
        told = heard.count("background")  # what was told before the instance retired
        stall.release.set()
        stop_file.touch()  # the old instance's thread stops logging and ends
        assert stall.thread is not None
        stalled = stall.thread
        assert wait_until(lambda: not stalled.is_alive(), timeout=30), (
            f"{stalled.name} still telling records after the {retire}"
        )
        assert heard.count("background") == told  # the record held up never came
    finally:
        stall.release.set()
        stop_file.touch()
        plugin.shutdown()
