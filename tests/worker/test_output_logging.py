"""isolation="process": a record reaches the callback once, whichever way it left the plugin.

A library's record logged inside a handler is attributed to the instance; Python's last
resort handler must not also print it to the worker's stderr (which the host turns into
records too). Records nobody claims (a thread the plugin started) arrive once, as records
of their logger; what the plugin really writes to stderr still arrives as ``stderr`` lines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LogLevel

from ..conftest import LogCapture, wait_until

LOGGING = """
    import logging, sys, threading
    from plugbridge import Plugin, handler

    lib = logging.getLogger("thirdparty.lib")

    class Logging(Plugin):
        name = "logging"

        @handler("warn")
        def warn(self, ctx, req):
            lib.warning("careful: %s", req)
            return 1

        @handler("awarn")
        async def awarn(self, ctx, req):
            lib.warning("careful: %s", req)
            return 1

        @handler("thread_warn")
        def thread_warn(self, ctx, req):
            thread = threading.Thread(target=lib.warning, args=("careful: %s", req))
            thread.start()
            thread.join()
            return 1

        @handler("marker")
        def marker(self, ctx, req):
            print(req, file=sys.stderr, flush=True)
            return 1
"""


@pytest.fixture
def source(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(LOGGING, name="logging_plugin.py")


def settle_stderr(plugin: plugbridge.PluginHandle, capture: LogCapture) -> None:
    """Wait until everything the worker wrote to stderr so far has been delivered: a marker
    line written after it on the same stream arrives last."""
    plugin.call("marker", "--marker--")
    assert wait_until(lambda: "--marker--" in capture.messages())


@pytest.mark.parametrize("tag", ["warn", "awarn", "thread_warn"])
@pytest.mark.parametrize("timeout", [None, 5.0])
def test_a_library_warning_in_a_handler_arrives_once(
    source: Path, capture: LogCapture, tag: str, timeout: float | None
) -> None:
    with plugbridge.load(source, isolation="process", log_callback=capture) as plugin:
        assert plugin.call(tag, "x", timeout=timeout) == 1
        settle_stderr(plugin, capture)
        records = [r for r in capture.records if "careful" in r[2]]
        assert records == [(LogLevel.WARN, "thirdparty.lib", "careful: x")]


def test_stderr_lines_of_the_plugin_are_still_records(source: Path, capture: LogCapture) -> None:
    with plugbridge.load(source, isolation="process", log_callback=capture) as plugin:
        settle_stderr(plugin, capture)
        assert (LogLevel.WARN, "stderr", "--marker--") in capture.records
