"""isolation="process": frame sizes, receive memory, and timeouts in the middle of a frame."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plugbridge
from plugbridge import LifecycleState
from plugbridge._worker.channel import MAX_FRAME_ENV, NOT_READY, RETAINED_BUFFER, Channel
from plugbridge._worker.protocol import Result, WorkerMessage

from .test_faults import alive

FRAMES = """
    import gc, os, signal, sys
    from plugbridge import Plugin, handler

    def channel_fd():
        return int(sys.argv[sys.argv.index("--channel-fd") + 1])

    class Frames(Plugin):
        name = "frames"

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @handler("blob")
        def blob(self, ctx, req):
            return "x" * req

        @handler("pid")
        def pid(self, ctx, req):
            return os.getpid()

        @handler("write_channel")
        def write_channel(self, ctx, req):
            os.write(channel_fd(), bytes.fromhex(req["hex"]))
            if req.get("freeze"):
                os.kill(os.getpid(), signal.SIGSTOP)
            return "written"

        @handler("mark")
        def mark(self, ctx, req):
            open(req, "a").close()  # the test sees that it ran
            return req

        @handler("buffers")
        def buffers(self, ctx, req):
            from plugbridge._worker.channel import Channel
            return [len(o._buffer) for o in gc.get_objects() if isinstance(o, Channel)]
"""


@pytest.fixture
def frames(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(FRAMES, name="frames.py")


class Outcome:
    """A call made on its own thread, so that a hang fails the test instead of blocking it."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.value = call()
        except BaseException as exc:
            self.error = exc

    def finished_within(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return not self._thread.is_alive()


def _host_buffer(plugin: plugbridge.PluginHandle) -> int:
    return len(plugin._transport._current.channel._buffer)  # type: ignore[attr-defined]


def test_a_bogus_frame_length_costs_no_memory_and_calls_keep_their_timeout(frames: Path) -> None:
    plugin = plugbridge.load(frames, isolation="process")
    # A header announcing a body of almost 1 GiB (under the limit), then nothing more.
    outcome = Outcome(lambda: plugin.call("write_channel", {"hex": "3ffffff0"}, timeout=1))
    assert outcome.finished_within(10), "the call ignored its timeout"
    assert isinstance(outcome.error, plugbridge.Timeout)
    assert _host_buffer(plugin) <= RETAINED_BUFFER  # nothing allocated for the claim
    # Its answer and the rest went into that "frame": the worker stops, the frame is cut.
    with pytest.raises(plugbridge.ShutdownFailed, match="stream ended inside a frame"):
        plugin.shutdown(timeout=5)
    assert plugin.in_flight == 0


def test_a_caller_reading_half_a_frame_from_a_frozen_worker_keeps_its_timeout(
    frames: Path,
) -> None:
    plugin = plugbridge.load(frames, isolation="process")
    pid = plugin.call("pid")
    try:
        half = "00000064" + "00" * 10  # 10 of the 100 bytes announced, then SIGSTOP
        outcome = Outcome(
            lambda: plugin.call("write_channel", {"hex": half, "freeze": True}, timeout=1)
        )
        assert outcome.finished_within(10), "the call ignored its timeout"
        assert isinstance(outcome.error, plugbridge.Timeout)
        assert plugin.state is LifecycleState.ACTIVE
        with pytest.raises(plugbridge.ShutdownFailed, match="did not stop"):
            plugin.shutdown(timeout=2)
        assert plugin.in_flight == 0
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_frame_over_the_limit_is_a_crash(frames: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_FRAME_ENV, str(1 << 20))
    with plugbridge.load(frames, isolation="process") as plugin:
        pid = plugin.call("pid")
        assert len(plugin.call("blob", 1000)) == 1000
        with pytest.raises(plugbridge.PluginCrashed) as info:
            plugin.call("blob", 2 << 20, timeout=10)
        assert "exceeds the limit of 1048576" in info.value.message
        assert "was killed by signal SIGKILL" in info.value.message
        assert plugin.state is LifecycleState.FAILED
        assert plugin.in_flight == 0
        assert not alive(pid)


def test_a_request_over_the_limit_is_refused_and_the_worker_serves_on(
    frames: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_FRAME_ENV, str(1 << 20))
    with plugbridge.load(frames, isolation="process") as plugin:
        with pytest.raises(plugbridge.SerializationError, match="frame limit"):
            plugin.call("echo", "x" * (2 << 20))
        with pytest.raises(plugbridge.SerializationError, match="frame limit"):
            plugin.call_json("echo", b'"' + b"x" * (2 << 20) + b'"')
        assert plugin.in_flight == 0
        assert plugin.call("echo", "still here") == "still here"
        assert plugin.state is LifecycleState.ACTIVE


def test_a_big_frame_leaves_no_big_buffer_behind(frames: Path) -> None:
    with plugbridge.load(frames, isolation="process") as plugin:
        big = "x" * (30 << 20)
        assert plugin.call("echo", big) == big
        assert _host_buffer(plugin) <= RETAINED_BUFFER
        assert all(size <= RETAINED_BUFFER for size in plugin.call("buffers"))


# -- the channel itself ----------------------------------------------------------------


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking socket for the host's channel, and the raw worker end."""
    host_end, worker_end = socket.socketpair()
    host_end.setblocking(False)
    yield host_end, worker_end
    host_end.close()
    worker_end.close()


def _frame(message: Result) -> bytes:
    import msgspec

    body = msgspec.msgpack.encode(message)
    return len(body).to_bytes(4, "big") + body


def test_memory_grows_with_the_bytes_that_arrive(sockets) -> None:  # type: ignore[no-untyped-def]
    host_end, worker_end = sockets
    channel: Channel[WorkerMessage] = Channel(host_end, WorkerMessage)
    worker_end.sendall((100 << 20).to_bytes(4, "big") + b"\x00" * 100_000)
    assert channel.peek_ready() is NOT_READY
    assert channel.capacity < 1 << 20  # not the 100 MiB announced


def test_big_and_small_frames_in_one_stream(sockets) -> None:  # type: ignore[no-untyped-def]
    host_end, worker_end = sockets
    channel: Channel[WorkerMessage] = Channel(host_end, WorkerMessage)
    big = Result(1, os.urandom(3 << 20), True)
    stream = _frame(big) + _frame(Result(2, b"[]", True)) + _frame(Result(3, b"{}", True))
    sender = threading.Thread(target=worker_end.sendall, args=(stream,))
    sender.start()
    received = []
    while len(received) < 3:
        message = channel.peek_ready()
        if message is NOT_READY:
            select.select([host_end], [], [], 5)
        else:
            assert channel.peek_ready() is message  # kept until consumed
            channel.consume()
            received.append(message)
    sender.join()
    assert received == [big, Result(2, b"[]", True), Result(3, b"{}", True)]
    assert channel.capacity <= RETAINED_BUFFER
