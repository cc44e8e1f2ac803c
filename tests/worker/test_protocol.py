"""The worker wire protocol: framing, broken frames in both directions, the handshake."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

import plugbridge
from plugbridge import LifecycleState
from plugbridge._worker.channel import MAX_FRAME, Channel, ProtocolError
from plugbridge._worker.launch import worker_command
from plugbridge._worker.protocol import (
    PROTOCOL_VERSION,
    Call,
    Failure,
    Hello,
    HostMessage,
    Named,
    PythonPlugin,
    Ready,
    Result,
    Start,
    StartFailed,
    Stop,
    Stopped,
    WorkerMessage,
)

from .test_faults import FAULTY


@pytest.fixture
def pair() -> Iterator[tuple[Channel[HostMessage], Channel[WorkerMessage], socket.socket]]:
    """A host channel, a worker channel, and the raw socket behind the worker end."""
    host_end, worker_end = socket.socketpair()
    to_worker: Channel[HostMessage] = Channel(worker_end, HostMessage)
    to_host: Channel[WorkerMessage] = Channel(host_end, WorkerMessage)
    yield to_worker, to_host, worker_end
    to_worker.close()
    to_host.close()


def test_frames_round_trip_small_large_and_batched(pair) -> None:  # type: ignore[no-untyped-def]
    worker, host, _ = pair
    big = os.urandom(300_000)  # larger than the receive buffer (and the socket's)

    def send_all() -> None:
        worker.send(Result(1, b"{}", True))
        worker.send(Result(2, big, False))
        worker.send(Result(3, b"[]", True))

    sender = threading.Thread(target=send_all)
    sender.start()
    assert host.receive() == Result(1, b"{}", True)
    assert host.receive() == Result(2, big, False)
    assert host.receive() == Result(3, b"[]", True)
    sender.join()


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\x00\x00\x03abc", "undecodable frame"),
        (msgspec.msgpack.encode([99, 1]), "undecodable frame"),
        ((MAX_FRAME + 1).to_bytes(4, "big"), "exceeds the limit"),
        (b"\x00\x00\x00\x10only-part", "stream ended inside a frame"),
        (b"\x00\x00", "stream ended inside a frame"),
    ],
)
def test_broken_frames_are_clear_errors(pair, raw: bytes, match: str) -> None:  # type: ignore[no-untyped-def]
    _, host, worker_sock = pair
    if raw[:1] == b"\x93" or raw[:1] == b"\x92":  # a bare msgpack body: give it a header
        raw = len(raw).to_bytes(4, "big") + raw
    worker_sock.sendall(raw)
    worker_sock.shutdown(socket.SHUT_WR)  # a truncated frame then ends the stream
    with pytest.raises(ProtocolError, match=match):
        host.receive()


def test_worker_refuses_another_protocol_version(tmp_path: Path) -> None:
    host_end, worker_end = socket.socketpair()
    worker = subprocess.Popen(
        worker_command(worker_end.fileno()),
        pass_fds=[worker_end.fileno()],
    )
    worker_end.close()
    channel: Channel[WorkerMessage] = Channel(host_end, WorkerMessage)
    try:
        hello = channel.receive()
        assert isinstance(hello, Hello) and hello.protocol == PROTOCOL_VERSION
        source = PythonPlugin(str(tmp_path), "nothing", None)
        channel.send(Start(PROTOCOL_VERSION + 1, source, {}, []))
        answer = channel.receive()
        assert isinstance(answer, StartFailed)
        assert f"protocol {PROTOCOL_VERSION + 1}" in answer.message
        assert worker.wait(10) == 0
    finally:
        worker.kill()
        worker.wait()
        channel.close()


@pytest.fixture
def faulty(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(FAULTY, name="faulty.py")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\x00\x00\x03abc", "undecodable frame"),
        (b"\xff\xff\xff\xff", "exceeds the limit"),
        (msgspec.msgpack.encode(Call(1, "echo", b"1", None, False))[:-2], "undecodable"),
    ],
)
def test_broken_frame_to_the_worker_ends_it_clearly(faulty: Path, raw: bytes, reason: str) -> None:
    if not raw.startswith(b"\x00") and not raw.startswith(b"\xff"):
        raw = len(raw).to_bytes(4, "big") + raw
    with plugbridge.load(faulty, isolation="process") as plugin:
        plugin._transport._current.channel.send_raw(raw)  # type: ignore[attr-defined]
        with pytest.raises(plugbridge.PluginCrashed) as info:
            _call_until_it_fails(plugin)
        assert "exited with code 3" in info.value.message
        assert reason in info.value.message
        assert plugin.state is LifecycleState.FAILED


def _call_until_it_fails(plugin: plugbridge.PluginHandle) -> None:
    for _ in range(1000):  # the next call, or one soon after, finds the worker dead
        plugin.call("echo", 1, timeout=5)


@pytest.mark.parametrize(
    ("request_value", "reason"),
    [
        ({"hex": "00000003616263"}, "undecodable frame"),
        ({"hex": "ffffffff"}, "exceeds the limit"),
        ({"hex": "000000ff0102", "exit": True}, "stream ended inside a frame"),
    ],
)
def test_broken_frame_from_the_worker_is_a_crash_not_a_hang(
    faulty: Path, request_value: dict[str, object], reason: str
) -> None:
    with plugbridge.load(faulty, isolation="process") as plugin:
        with pytest.raises(plugbridge.PluginCrashed) as info:
            plugin.call("write_channel", request_value)
        assert "malformed frame" in info.value.message
        assert reason in info.value.message
        assert plugin.state is LifecycleState.FAILED
        plugin.reload()
        assert plugin.call("echo", 5) == 5


def test_a_call_read_after_stop_is_refused_and_never_run(
    write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    source = write_plugin(
        """
        import time
        from pathlib import Path
        from plugbridge import Plugin, handler

        class Marks(Plugin):
            name = "marks"

            @handler("mark")
            def mark(self, ctx, req):
                Path(req).touch()
                return req

            @handler("hold")
            def hold(self, ctx, req):
                # Runs until the test lets it go (a generous bound, never reached).
                deadline = time.monotonic() + 60
                while not Path(req).exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
                return req
        """,
        name="marks.py",
    )
    host_end, worker_end = socket.socketpair()
    worker = subprocess.Popen(worker_command(worker_end.fileno()), pass_fds=[worker_end.fileno()])
    worker_end.close()
    channel: Channel[WorkerMessage] = Channel(host_end, WorkerMessage)
    first, late, go = tmp_path / "first", tmp_path / "late", tmp_path / "go"
    try:
        assert isinstance(channel.receive(), Hello)
        plugin = PythonPlugin(str(source.parent), source.stem, None)
        channel.send(Start(PROTOCOL_VERSION, plugin, {}, []))
        assert isinstance(channel.receive(), Named)
        assert isinstance(channel.receive(), Ready)
        # The worker may exit once the calls it read before Stop are done: a frame behind
        # Stop is read only while one of them still runs. "hold" does, until this test has
        # seen the refusal. Call 2 is read while the first thread runs "hold", so its reader
        # starts another thread: two then wait to read, one for Stop (it then waits for
        # "hold" to end), the other for the call right behind it.
        channel.send(Call(1, "hold", msgspec.json.encode(str(go)), None, False))
        channel.send(Call(2, "mark", msgspec.json.encode(str(first)), None, False))
        assert channel.receive() == Result(2, msgspec.json.encode(str(first)), True)
        channel.send(Stop(60.0))
        channel.send(Call(3, "mark", msgspec.json.encode(str(late)), None, False))
        refused = channel.receive()
        assert isinstance(refused, Failure), refused
        assert refused.id == 3 and refused.done
        assert refused.code == plugbridge.InvalidState.code
        assert refused.message == "plugin 'marks' is STOPPING; calls need ACTIVE"
        go.touch()
        assert channel.receive() == Result(1, msgspec.json.encode(str(go)), True)
        assert channel.receive() == Stopped(None, [])
        assert worker.wait(10) == 0
        assert first.exists() and not late.exists()  # read after Stop: never run
    finally:
        worker.kill()
        worker.wait()
        channel.close()
