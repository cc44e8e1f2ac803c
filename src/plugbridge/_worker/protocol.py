"""The host-worker wire protocol: length-prefixed msgpack frames over a stream socket.

Each frame is a 4-byte big-endian body length followed by one msgpack-encoded message, a
tagged msgspec ``Struct`` encoded as an array (its first element is the tag). The worker
speaks first (``Hello``), the host sends ``Start``; both carry ``PROTOCOL_VERSION`` and
each side refuses a peer that speaks another one. Anything that does not decode as a
message of the expected direction is a ``ProtocolError``; so is a frame cut off by the end
of the stream, or one larger than ``MAX_FRAME``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, Generic, TypeVar

import msgspec

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 30
"""Largest body accepted (1 GiB): a larger length prefix is garbage, not a frame."""
HEADER_SIZE = 4
_RECV_SIZE = 64 * 1024
"""Receive buffer size; a larger frame gets a buffer of its own size while it is read."""


class ProtocolError(Exception):
    """The channel carried something that is not a valid frame of this protocol."""


class _Message(msgspec.Struct, array_like=True):
    pass


# -- host -> worker --------------------------------------------------------------------


class PythonPlugin(_Message, tag="py"):
    search_dir: str
    module: str
    class_name: str | None


class NativePlugin(_Message, tag="native"):
    path: str


class Start(_Message, tag=1):
    """Build the plugin instance; answered by ``Ready`` or ``StartFailed``."""

    protocol: int
    source: PythonPlugin | NativePlugin
    config: dict[str, Any]
    sys_path: list[str]
    start_timeout: float | None


class Call(_Message, tag=2):
    """Run ``type_tag`` with a JSON ``payload``; answered by ``Result`` or ``Failure``.

    ``cancellable``: the caller may send ``Cancel`` (an asyncio caller); the worker then
    runs it as a task on its own loop so that it can be cancelled.
    """

    id: int
    type_tag: str
    payload: bytes
    timeout: float | None
    cancellable: bool


class Cancel(_Message, tag=5):
    """The caller of call ``id`` gave up: cancel its work (its answer is still sent)."""

    id: int


class SetLevel(_Message, tag=3):
    """Applies before the worker reads the next frame."""

    level: int


class Stop(_Message, tag=4):
    """Shut the instance down within ``timeout``; answered by ``Stopped``, then exit."""

    timeout: float


HostMessage = Start | Call | SetLevel | Stop | Cancel


# -- worker -> host --------------------------------------------------------------------


class Hello(_Message, tag=10):
    protocol: int
    pid: int


class Ready(_Message, tag=11):
    name: str
    version: str
    type_tags: list[str]


class StartFailed(_Message, tag=12):
    code: int
    message: str


class Result(_Message, tag=13):
    """``done``: the call's work has ended (else a ``Released`` follows)."""

    id: int
    payload: bytes
    done: bool


class Failure(_Message, tag=14):
    id: int
    code: int
    message: str
    done: bool


class Released(_Message, tag=15):
    """The work of call ``id``, reported earlier, has now really ended."""

    id: int


class Log(_Message, tag=16):
    level: int
    target: str
    message: str


class Stats(_Message, tag=17):
    rejected: int


class Stopped(_Message, tag=18):
    """``error``: why shutdown failed, or None."""

    error: str | None


class Fatal(_Message, tag=19):
    """The worker is about to exit because of ``message`` (e.g. a protocol error)."""

    message: str


WorkerMessage = (
    Hello | Ready | StartFailed | Result | Failure | Released | Log | Stats | Stopped | Fatal
)

M = TypeVar("M")


class Channel(Generic[M]):
    """One end of the socket: sends any message, receives messages of type ``M``.

    ``send`` is safe from many threads; ``receive`` must have one reader at a time.
    """

    def __init__(self, sock: socket.socket, incoming: Any) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(incoming)
        self._buffer = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0

    def send(self, message: _Message) -> None:
        body = self._encoder.encode(message)
        frame = len(body).to_bytes(HEADER_SIZE, "big") + body
        with self._send_lock:
            self.sock.sendall(frame)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use it to inject broken frames)."""
        with self._send_lock:
            self.sock.sendall(data)

    def receive(self) -> M | None:
        """The next message; None at a clean end of stream. ``ProtocolError`` if broken."""
        while True:
            held = self._end - self._start
            if held >= HEADER_SIZE:
                start = self._start
                size = int.from_bytes(self._buffer[start : start + HEADER_SIZE], "big")
                if size > MAX_FRAME:
                    raise ProtocolError(f"frame length {size} exceeds the limit of {MAX_FRAME}")
                end = start + HEADER_SIZE + size
                if end <= self._end:
                    if end == self._end:
                        self._start = self._end = 0  # all consumed: refill from the front
                    else:
                        self._start = end
                    return self._decode(self._view[start + HEADER_SIZE : end])
                if end > len(self._buffer):
                    self._make_room(HEADER_SIZE + size)
            elif self._start + HEADER_SIZE > len(self._buffer):
                self._make_room(HEADER_SIZE)
            count = self.sock.recv_into(self._view[self._end :])
            if not count:
                if self._end > self._start:
                    raise ProtocolError(
                        f"stream ended inside a frame ({self._end - self._start} byte(s) of it)"
                    )
                return None
            self._end += count

    def has_frame(self) -> bool:
        """Whether ``receive`` can answer without reading the socket (or raise at once)."""
        held = self._end - self._start
        if held < HEADER_SIZE:
            return False
        size = int.from_bytes(self._buffer[self._start : self._start + HEADER_SIZE], "big")
        return size > MAX_FRAME or held >= HEADER_SIZE + size

    def _make_room(self, frame_size: int) -> None:
        """Move the partial frame to the front, growing the buffer if it cannot hold it."""
        held = bytes(self._view[self._start : self._end])
        if frame_size > len(self._buffer) or (frame_size <= _RECV_SIZE < len(self._buffer)):
            self._view.release()
            self._buffer = bytearray(max(frame_size, _RECV_SIZE))
            self._view = memoryview(self._buffer)
        self._view[: len(held)] = held
        self._start, self._end = 0, len(held)

    def _decode(self, body: memoryview) -> M:
        try:
            return self._decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"undecodable frame of {len(body)} byte(s): {exc}") from None

    def close(self) -> None:
        """Wake a blocked reader (it sees the end of stream) and release the socket."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
