"""isolation="process": Ctrl-C (SIGINT) landing anywhere in a call on the main thread.

The main thread may hold the reading turn, so a ``KeyboardInterrupt`` can strike between
any two steps of reading and dispatching frames, or of sending one. Whatever it
interrupts, no frame may be lost, no lock or turn left taken, no slot kept.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import plugbridge

from ..conftest import wait_until
from .test_channel_frames import FRAMES

STORM_SECONDS = 2.0


def test_a_sigint_storm_on_the_calling_main_thread_loses_nothing(
    write_plugin: Callable[..., Path],
) -> None:
    assert threading.current_thread() is threading.main_thread()
    plugin = plugbridge.load(write_plugin(FRAMES, name="frames.py"), isolation="process")
    session = plugin._transport._current  # type: ignore[attr-defined]
    armed = threading.Event()  # interrupts only while a call runs, never the test itself

    def on_sigint(signum: int, frame: object) -> None:
        if armed.is_set():
            raise KeyboardInterrupt

    stop = threading.Event()

    def storm() -> None:
        while not stop.wait(0.0002):
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, on_sigint)
    stormer = threading.Thread(target=storm)
    interrupted = completed = 0
    try:
        stormer.start()
        end = time.monotonic() + STORM_SECONDS
        while time.monotonic() < end:
            try:
                armed.set()
                plugin.call("echo", "x" * 100, timeout=5)
                completed += 1
            except KeyboardInterrupt:
                interrupted += 1
            finally:
                armed.clear()
    finally:
        stop.set()
        stormer.join()
        signal.signal(signal.SIGINT, previous)
    try:
        assert interrupted > 10 and completed > 10
        # Every call that reached the worker is answered and leaves the table.
        assert wait_until(lambda: plugin.in_flight == 0 and not session._pending)
        assert session._turn.reading is None
        assert not session.channel.sending
        assert plugin.call("echo", "after the storm", timeout=5) == "after the storm"
    finally:
        plugin.shutdown(timeout=5)
