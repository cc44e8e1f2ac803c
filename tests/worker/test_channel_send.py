"""isolation="process": sending to a worker that does not read (SIGSTOP) is bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LifecycleState, LogLevel

from ..conftest import wait_until
from .test_channel_frames import FRAMES, Outcome
from .test_faults import alive

BIG = "x" * (20 << 20)  # far more than a socket buffer holds


@pytest.fixture
def frozen(write_plugin: Callable[..., Path]) -> Iterator[plugbridge.PluginHandle]:
    """A handle whose worker is stopped (SIGSTOP): it reads nothing from its channel."""
    plugin = plugbridge.load(write_plugin(FRAMES, name="frames.py"), isolation="process")
    pid = plugin.call("pid")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield plugin
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(plugbridge.PluginError):
            plugin.shutdown(timeout=2)


def _sending(plugin: plugbridge.PluginHandle) -> bool:
    """Some thread is in the middle of writing a frame."""
    return bool(plugin._transport._current.channel.sending)  # type: ignore[attr-defined]


def test_shutdown_returns_while_a_send_to_a_stopped_worker_is_blocked(
    frozen: plugbridge.PluginHandle,
) -> None:
    blocked = Outcome(lambda: frozen.call("echo", BIG))
    assert wait_until(lambda: _sending(frozen))
    stopping = Outcome(lambda: frozen.shutdown(timeout=2))
    assert stopping.finished_within(10), "shutdown stayed blocked behind the send"
    assert isinstance(stopping.error, plugbridge.ShutdownFailed)
    assert "did not stop within the shutdown timeout (2s)" in stopping.error.message
    assert blocked.finished_within(10), "the blocked send was not interrupted"
    assert isinstance(blocked.error, plugbridge.PluginError)
    assert frozen.in_flight == 0
    assert frozen.state is LifecycleState.FAILED


def test_a_call_that_cannot_start_sending_in_time_is_a_timeout_and_frees_its_slot(
    frozen: plugbridge.PluginHandle,
) -> None:
    Outcome(lambda: frozen.call("echo", BIG))  # holds the channel until shutdown
    assert wait_until(lambda: _sending(frozen))
    small = Outcome(lambda: frozen.call("echo", 1, timeout=1))
    assert small.finished_within(10), "the call ignored its timeout"
    assert isinstance(small.error, plugbridge.Timeout)
    assert frozen.in_flight == 1  # the big one only
    assert len(frozen._transport._current._pending) == 1  # type: ignore[attr-defined]


def test_a_call_cut_off_by_its_timeout_still_reaches_the_worker_whole(
    frozen: plugbridge.PluginHandle,
) -> None:
    big = Outcome(lambda: frozen.call("echo", BIG, timeout=1))
    assert big.finished_within(10), "the call ignored its timeout"
    assert isinstance(big.error, plugbridge.Timeout)
    # Part of its frame was written: the rest follows, so the worker will run it, and the
    # slot stays taken until it has (a timed-out call keeps its slot until its work ends).
    assert frozen.in_flight == 1
    os.kill(frozen._transport._current.process.pid, signal.SIGCONT)  # type: ignore[attr-defined]
    assert wait_until(lambda: frozen.in_flight == 0, timeout=20)
    assert frozen.call("echo", "intact") == "intact"  # the channel is in step


def test_control_frames_do_not_wait_for_a_blocked_channel(
    frozen: plugbridge.PluginHandle,
) -> None:
    Outcome(lambda: frozen.call("echo", BIG))
    assert wait_until(lambda: _sending(frozen))
    changing = Outcome(lambda: frozen.set_log_level(LogLevel.DEBUG))
    assert changing.finished_within(5), "set_log_level waited for the blocked channel"
    assert changing.error is None


def test_an_async_call_to_a_stopped_worker_keeps_its_timeout(
    frozen: plugbridge.PluginHandle,
) -> None:
    import asyncio

    Outcome(lambda: frozen.call("echo", BIG))
    assert wait_until(lambda: _sending(frozen))
    late = Outcome(lambda: asyncio.run(frozen.acall("echo", 1, timeout=1)))
    assert late.finished_within(10), "the call ignored its timeout"
    assert isinstance(late.error, plugbridge.Timeout)


def test_a_call_frame_that_cannot_be_built_leaves_nothing_in_flight(
    write_plugin: Callable[..., Path],
) -> None:
    with plugbridge.load(write_plugin(FRAMES, name="frames.py"), isolation="process") as plugin:
        session = plugin._transport._current  # type: ignore[attr-defined]
        releases: list[None] = []
        lock = threading.Lock()

        def release() -> None:
            with lock:
                releases.append(None)

        # Straight to the session, whatever the layers above check first.
        with pytest.raises(plugbridge.UnknownMessageType):
            session.call("ec\ud800ho", b"1", None, release)
        with pytest.raises(plugbridge.UnknownMessageType):
            session.call(5, b"1", None, release)
        assert len(releases) == 2
        assert session._pending == {}
        with pytest.raises(plugbridge.UnknownMessageType):
            plugin.call("ec\ud800ho", 1)
        assert plugin.in_flight == 0
        assert plugin.call("echo", "fine") == "fine"


def test_a_call_late_before_it_is_sent_never_runs(
    write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    import asyncio

    with plugbridge.load(write_plugin(FRAMES, name="frames.py"), isolation="process") as plugin:
        for n in range(20):
            with pytest.raises(plugbridge.Timeout):
                plugin.call("mark", str(tmp_path / f"sync-{n}"), timeout=1e-9)
            with pytest.raises(plugbridge.Timeout):
                asyncio.run(plugin.acall("mark", str(tmp_path / f"async-{n}"), timeout=1e-9))
        assert plugin.in_flight == 0
        assert plugin.call("mark", str(tmp_path / "last")) == str(tmp_path / "last")
        assert (tmp_path / "last").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(("sync-", "async-"))]


def test_an_async_call_does_not_hold_its_event_loop_while_the_channel_is_busy(
    frozen: plugbridge.PluginHandle,
) -> None:
    import asyncio

    Outcome(lambda: frozen.call("echo", BIG))  # holds the channel until shutdown
    assert wait_until(lambda: _sending(frozen))
    loop_free = threading.Event()

    async def caller() -> None:
        task = asyncio.create_task(frozen.acall("echo", 1))
        await asyncio.sleep(0)  # the task runs up to its first wait
        loop_free.set()  # reached only if that was not a blocked send
        with contextlib.suppress(plugbridge.PluginError):
            await task

    running = Outcome(lambda: asyncio.run(caller()))
    assert loop_free.wait(10), "acall held its event loop while waiting for the channel"
    assert frozen.in_flight == 2
    with contextlib.suppress(plugbridge.ShutdownFailed):
        frozen.shutdown(timeout=2)
    assert running.finished_within(10)
    assert frozen.in_flight == 0
