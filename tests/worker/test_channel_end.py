"""isolation="process": how the host learns that its worker has ended, and what it says."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LifecycleState

from ..conftest import wait_until

EXIT_STATUS = re.compile(r"exited with code -?\d+|was killed by signal \w+ \(\d+\)")

ENDINGS = """
    import os, socket, sys, time
    from plugbridge import Plugin, handler

    def channel_fd():
        return int(sys.argv[sys.argv.index("--channel-fd") + 1])

    class Endings(Plugin):
        name = "endings"

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @handler("hang_up")
        def hang_up(self, ctx, req):
            # The host sees the channel end, but the process lives on for a while.
            socket.socket(fileno=os.dup(channel_fd())).shutdown(socket.SHUT_WR)
            time.sleep(req)
            os._exit(3)
"""


@pytest.fixture
def endings(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(ENDINGS, name="endings.py")


def test_a_crash_always_names_the_exit_status(endings: Path) -> None:
    """The report waits (bounded) for the exit status: never a bare "has died"."""
    with plugbridge.load(endings, isolation="process") as plugin:
        errors: list[BaseException] = []

        def hang_up() -> None:
            try:
                plugin.call("hang_up", 0.3)  # less than the session's EXIT_WAIT
            except BaseException as exc:
                errors.append(exc)

        caller = threading.Thread(target=hang_up)
        caller.start()
        assert wait_until(lambda: plugin.state is LifecycleState.FAILED, timeout=10)
        with pytest.raises(plugbridge.PluginCrashed) as info:
            plugin.call("echo", 1)
        assert EXIT_STATUS.search(info.value.message), info.value.message
        assert "exited with code 3" in info.value.message
        caller.join(10)
        assert len(errors) == 1 and isinstance(errors[0], plugbridge.PluginCrashed)
        assert "exited with code 3" in errors[0].message
