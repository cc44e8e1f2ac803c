"""isolation="process": how the host learns that its worker has ended, and what it says."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LifecycleState

from ..conftest import wait_until
from .test_channel_frames import Outcome
from .test_faults import alive

EXIT_STATUS = re.compile(r"exited with code -?\d+|was killed by signal \w+ \(\d+\)")

ENDINGS = """
    import json, os, socket, stat, sys, time
    from plugbridge import Plugin, handler

    def channel_fd():
        return int(sys.argv[sys.argv.index("--channel-fd") + 1])

    class Endings(Plugin):
        name = "endings"

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @handler("pid")
        def pid(self, ctx, req):
            return os.getpid()

        @handler("fork_then_exit")
        def fork_then_exit(self, ctx, req):
            ready_r, ready_w = os.pipe()
            if os.fork() == 0:  # the child outlives the worker, holding what it inherited
                try:
                    holds = stat.S_ISSOCK(os.fstat(channel_fd()).st_mode)
                except OSError:
                    holds = False
                with open(req, "w") as report:
                    json.dump({"pid": os.getpid(), "holds_channel": holds}, report)
                os.write(ready_w, b"!")
                time.sleep(120)
                os._exit(0)
            os.read(ready_r, 1)
            os._exit(5)

        @handler("spawn_sleeper")
        def spawn_sleeper(self, ctx, req):
            import multiprocessing
            sleeper = multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,))
            sleeper.start()
            return sleeper.pid

        @handler("exec_child")
        def exec_child(self, ctx, req):
            import subprocess
            child = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(120)"], close_fds=False
            )
            channel = f"socket:[{os.fstat(channel_fd()).st_ino}]"
            held = []
            for fd in os.listdir(f"/proc/{child.pid}/fd"):
                try:
                    held.append(os.readlink(f"/proc/{child.pid}/fd/{fd}"))
                except OSError:
                    pass
            child.kill()
            child.wait()
            return channel in held

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
                plugin.call("hang_up", 0.2)  # less than the session's EXIT_WAIT
            except BaseException as exc:
                errors.append(exc)

        caller = threading.Thread(target=hang_up)
        caller.start()
        assert wait_until(lambda: plugin.state is LifecycleState.FAILED, timeout=10)
        with pytest.raises(plugbridge.PluginCrashed) as info:
            plugin.call("echo", 1)
        assert EXIT_STATUS.search(info.value.message), info.value.message
        caller.join(10)
        assert len(errors) == 1 and isinstance(errors[0], plugbridge.PluginCrashed)
        assert errors[0].message == info.value.message  # one report, for every call


@pytest.fixture(params=["pidfd", "exit-status polling"])
def death_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the host watches its workers: a pidfd, or (where there is none) their status."""
    if request.param != "pidfd":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open here")
    return str(request.param)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_worker_that_forked_and_died_is_noticed(
    endings: Path, tmp_path: Path, death_watch: str
) -> None:
    """The forked child must not hold the channel, and the host watches the worker's pid."""
    report = tmp_path / "child.json"
    with plugbridge.load(endings, isolation="process") as plugin:
        assert (plugin._transport._current.process.pidfd is None) is (death_watch != "pidfd")  # type: ignore[attr-defined]
        worker = plugin.call("pid")
        outcome = Outcome(lambda: plugin.call("fork_then_exit", str(report)))
        try:
            assert outcome.finished_within(15), "the worker's death went unnoticed"
            assert isinstance(outcome.error, plugbridge.PluginCrashed)
            assert "exited with code 5" in outcome.error.message
            assert plugin.state is LifecycleState.FAILED
            assert not alive(worker)
            assert json.loads(report.read_text())["holds_channel"] is False
        finally:
            if report.exists():
                _kill(json.loads(report.read_text())["pid"])


def test_a_killed_worker_whose_multiprocessing_child_lives_on_is_noticed(
    endings: Path, death_watch: str
) -> None:
    with plugbridge.load(endings, isolation="process") as plugin:
        sleeper = plugin.call("spawn_sleeper")
        try:
            _kill(plugin.call("pid"))
            assert wait_until(lambda: plugin.state is LifecycleState.FAILED, timeout=15)
            with pytest.raises(plugbridge.PluginCrashed, match="SIGKILL"):
                plugin.call("echo", 1)
        finally:
            _kill(sleeper)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_plugin_subprocess_does_not_inherit_the_channel(endings: Path) -> None:
    """The channel is close-on-exec: even ``close_fds=False`` does not pass it on."""
    with plugbridge.load(endings, isolation="process") as plugin:
        assert plugin.call("exec_child") is False
