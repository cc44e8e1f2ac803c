"""The host-worker channel: length-prefixed msgpack frames over a stream socket.

Each frame is a 4-byte big-endian body length followed by one msgpack-encoded message
(``protocol.py``). Anything that does not decode as a message of the expected direction is
a ``ProtocolError``; so is a frame cut off by the end of the stream, or one larger than the
frame limit (``MAX_FRAME``, or the ``PLUGBRIDGE_MAX_FRAME`` environment variable, which the
worker inherits).

A frame's memory grows with the bytes that arrive, never with the length it declares, and
a receive buffer grown for a big frame is given back once that frame is consumed.
The worker's end is a blocking socket read by one thread at a time. The host's end is
non-blocking: it waits with ``poll`` (for the worker's end too, see ``reading.py``), and
its sends are bounded by a deadline and interrupted by ``shutdown``.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import threading
import time
from typing import Any, Final, Generic, TypeVar

import msgspec

from .._forking import lose_in_forked_children

MAX_FRAME = 1 << 30
"""Default limit on a frame's body (1 GiB): a larger length prefix is garbage, not a frame."""
MAX_FRAME_ENV = "PLUGBRIDGE_MAX_FRAME"
"""Environment variable overriding ``MAX_FRAME`` (bytes), read when a channel is made."""
HEADER_SIZE = 4
LONGEST_POLL_MS = 3_600_000
"""The longest single ``poll()`` wait (an hour): a longer deadline waits in several, since
``poll`` refuses milliseconds beyond a C int (a call timeout of a day would overflow)."""
_RECV_SIZE = 64 * 1024
"""Receive buffer size; a larger frame grows it while it is read."""
RETAINED_BUFFER = 1 << 20
"""A receive buffer grown beyond this is shrunk back once its frame has been consumed."""
CLOSE_WAIT = 1.0
"""Seconds ``close`` waits for a send that is ending to let go of the socket."""
_NO_SIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


class ProtocolError(Exception):
    """The channel carried something that is not a valid frame of this protocol."""


def poll_ms(seconds: float) -> int:
    """A wait of ``seconds`` as ``poll()`` milliseconds: rounded up, at most an hour."""
    return min(math.ceil(seconds * 1000), LONGEST_POLL_MS)


M = TypeVar("M")


class _NotReady:
    """The type of ``NOT_READY``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_READY"


NOT_READY: Final = _NotReady()
"""``Channel.peek_ready`` found no complete frame (yet)."""


class FrameTooLarge(Exception):
    """A message to send is larger than the frame limit: it is not sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, larger than the frame limit of {limit} bytes")
        self.size = size
        self.limit = limit


class SendTimeout(TimeoutError):
    """A send's deadline passed. ``started``: part of the frame was written; the channel
    writes the rest in the background (the peer will receive the whole frame)."""

    def __init__(self, started: bool) -> None:
        super().__init__("the peer did not read the channel in time")
        self.started = started


def frame_limit() -> int:
    """The largest frame body accepted: ``PLUGBRIDGE_MAX_FRAME`` if it is set to a whole
    number of bytes (at most what the 4-byte header can say), else ``MAX_FRAME``."""
    try:
        limit = int(os.environ.get(MAX_FRAME_ENV, MAX_FRAME))
    except ValueError:
        return MAX_FRAME
    return limit if 0 < limit < 1 << 32 else MAX_FRAME


class Channel(Generic[M]):
    """One end of the socket: sends any message, receives messages of type ``M``.

    ``send`` is safe from many threads; receiving must have one reader at a time. On a
    blocking socket (the worker's) ``receive`` blocks; on a non-blocking one (the host's)
    the reader waits for ``sock`` to be readable and calls ``peek_ready``, and sends
    wait with ``poll`` until their deadline.
    """

    def __init__(self, sock: socket.socket, incoming: Any, *, max_frame: int | None = None) -> None:
        self.sock = sock
        self.max_frame = frame_limit() if max_frame is None else max_frame
        self._blocking = sock.getblocking()
        self._closed = False
        self._send_lock = threading.RLock()
        """An RLock: it refuses a release by a thread that does not hold it, so a sender
        an exception struck can release it whether or not its acquire had returned."""
        self._rest: memoryview | None = None
        """The unwritten end of the frame the stream is in the middle of (non-blocking)."""
        self._careful_reads = not self._blocking
        """Reads that can be interrupted by ``KeyboardInterrupt`` (the host's) never lose
        the count of the bytes they read: see ``receive``."""
        self._got: list[int] = []
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(incoming)
        self._buffer = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        self._peeked: M | None = None
        self._peeked_end = 0

    # -- sending -----------------------------------------------------------------------

    def frame(self, message: msgspec.Struct) -> bytes:
        """``message`` as a frame; ``FrameTooLarge`` if it exceeds the frame limit."""
        body = self._encoder.encode(message)
        if len(body) > self.max_frame:
            raise FrameTooLarge(len(body), self.max_frame)
        return len(body).to_bytes(HEADER_SIZE, "big") + body

    def send(self, message: msgspec.Struct, deadline: float | None = None) -> None:
        """Send ``message`` (not checked against the frame limit: the peer judges)."""
        body = self._encoder.encode(message)
        self.send_frame(len(body).to_bytes(HEADER_SIZE, "big") + body, deadline)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use it to inject broken frames)."""
        self.send_frame(data)

    def send_frame(self, frame: bytes, deadline: float | None = None) -> None:
        """Write a whole frame, frames from several threads never interleaving.

        On a non-blocking socket, ``SendTimeout`` once ``deadline`` (monotonic) passes
        (a frame already late is not sent at all): with ``started`` false nothing of this
        frame was written; with it true the rest is written in the background, until done
        or until the channel is shut down (the peer receives the whole frame). ``OSError``
        if the channel is shut down or broken.
        """
        lock = self._send_lock
        if self._blocking:
            with lock:
                self.sock.sendall(frame)
            return
        try:  # an exception anywhere (KeyboardInterrupt too) leaves the lock free
            wait = _seconds_left(deadline)
            if wait == 0.0 or not lock.acquire(True, wait):
                raise SendTimeout(started=False)  # late already, or the channel stays busy
            if self._rest is not None:
                self._write_rest(deadline, mine=False)  # an earlier frame's, first
            if self._closed:
                raise BrokenPipeError("the channel is shut down")
            try:
                sent = self.sock.send(frame, _NO_SIGNAL)
            except BlockingIOError:
                sent = 0
            if sent < len(frame):
                self._rest = memoryview(frame)[sent:]
                self._write_rest(deadline, mine=True, fresh=not sent)
            lock.release()
        except BaseException:
            # The release is the first call (suppress() would run Python code before it): a
            # second interrupt cannot strand the lock. An RLock refuses (RuntimeError) a
            # thread that does not hold it.
            try:  # noqa: SIM105
                lock.release()
            except RuntimeError:
                pass
            raise

    def _write_rest(self, deadline: float | None, *, mine: bool, fresh: bool = False) -> None:
        """With the send lock held, write ``_rest`` (the end of a frame the stream is in
        the middle of) until ``deadline``; ``mine``: it is the caller's own frame, of which
        nothing was written yet if ``fresh``.

        When the deadline passes, or an exception such as ``KeyboardInterrupt`` strikes
        while waiting, a frame of which nothing was written is dropped (the stream is
        whole without it); any other is finished by a background thread: the stream never
        holds half a frame followed by another. ``SendTimeout`` says whether the caller's
        own frame was started.
        """
        writable = select.poll()
        writable.register(self.sock.fileno(), select.POLLOUT)
        try:
            while (rest := self._rest) is not None:
                left = _seconds_left(deadline)
                if left == 0.0:
                    raise SendTimeout(started=mine and not fresh)
                if not writable.poll(-1 if left < 0 else poll_ms(left)):
                    continue
                if self._closed:
                    raise BrokenPipeError("the channel is shut down")
                try:
                    sent = self.sock.send(rest, _NO_SIGNAL)
                except BlockingIOError:
                    continue
                if sent:
                    fresh = False
                self._rest = rest[sent:] if sent < len(rest) else None
        except BaseException as exc:
            if isinstance(exc, OSError) and not isinstance(exc, SendTimeout):
                raise  # broken or shut down: there is no stream to keep whole
            if mine and fresh:
                self._rest = None
            elif mine:
                self._finish_rest_later()  # an earlier frame's rest has its finisher already
            raise

    def _finish_rest_later(self) -> None:
        threading.Thread(
            target=self._finish_rest, name="plugbridge-channel-send", daemon=True
        ).start()

    def _finish_rest(self) -> None:
        """The background thread finishing a frame its sender left (see ``_write_rest``)."""
        with self._send_lock, contextlib.suppress(OSError):
            if self._rest is not None:
                self._write_rest(None, mine=False)

    @property
    def sending(self) -> bool:
        """Whether a frame is being written (or waits to be finished) right now."""
        if self._rest is not None or not self._send_lock.acquire(False):
            return True
        self._send_lock.release()
        return False

    # -- receiving ---------------------------------------------------------------------

    def receive(self, *, peek: bool = False) -> M | None:
        """The next message; None at a clean end of stream; ``ProtocolError`` if broken.
        On a blocking socket it waits; on a non-blocking one ``BlockingIOError`` says that
        the frame is not complete yet (see ``peek_ready``). With ``peek`` the message stays
        first in line (and is given again) until ``consume`` drops it."""
        message = self._peeked
        if message is not None:
            if not peek:
                self.consume()
            return message
        if self._got:  # bytes read when an exception struck: count them now
            self._end += self._got[-1]
            self._got.clear()
        while True:
            start = self._start
            if self._end - start >= HEADER_SIZE:
                size = int.from_bytes(self._buffer[start : start + HEADER_SIZE], "big")
                if size > self.max_frame:
                    raise ProtocolError(
                        f"frame length {size} exceeds the limit of {self.max_frame}"
                    )
                end = start + HEADER_SIZE + size
                if end <= self._end:
                    message = self._decode(self._view[start + HEADER_SIZE : end])
                    if peek:
                        self._peeked_end = end
                        self._peeked = message
                    elif end == self._end:
                        self._start = self._end = 0  # all consumed: refill from the front
                        if len(self._buffer) > RETAINED_BUFFER:
                            self._shrink()
                    else:
                        self._start = end
                    return message
            if self._end == len(self._buffer):
                self._make_room()
            if self._careful_reads:
                # A KeyboardInterrupt strikes as a call returns: the bytes of a plain
                # ``count = recv_into(...)`` would be read but never counted. Here C code
                # records the count with the read (list.extend over map), before any
                # Python code could be interrupted; ``_account`` counts what is left.
                got = self._got
                got.extend(map(self.sock.recv_into, (self._view[self._end :],)))
                count = got[-1]
                self._end += count
                got.clear()
            else:
                count = self.sock.recv_into(self._view[self._end :])
                self._end += count
            if not count:
                self.end_of_stream()
                return None

    def peek_ready(self) -> M | _NotReady | None:
        """The next message (kept until ``consume``, see ``receive``) if it is complete
        with what a non-blocking socket holds now, else ``NOT_READY``.

        Peeking and consuming apart make reading safe against an exception landing in
        between (``KeyboardInterrupt`` on the main thread): a message handled when it
        struck is handled again by the next reader, never lost.
        """
        try:
            return self.receive(peek=True)
        except BlockingIOError:
            return NOT_READY

    def consume(self) -> None:
        """Drop the message ``peek_ready`` gave (it has been handled)."""
        end = self._peeked_end
        self._peeked = None
        if end == self._end:
            self._start = self._end = 0  # all consumed: refill from the front
            if len(self._buffer) > RETAINED_BUFFER:
                self._shrink()
        else:
            self._start = end

    def end_of_stream(self) -> None:
        """The stream has ended (the peer is gone): ``ProtocolError`` if inside a frame."""
        if self._end > self._start:
            raise ProtocolError(
                f"stream ended inside a frame ({self._end - self._start} byte(s) of it)"
            )

    def has_frame(self) -> bool:
        """Whether receiving can answer without reading the socket (or raise at once)."""
        held = self._end - self._start
        if self._got:  # bytes a read got when an exception struck: the next read counts them
            held += sum(self._got)
        if held < HEADER_SIZE:
            return False
        size = int.from_bytes(self._buffer[self._start : self._start + HEADER_SIZE], "big")
        return size > self.max_frame or held >= HEADER_SIZE + size

    @property
    def capacity(self) -> int:
        """Bytes the receive buffer holds now (memory, not data)."""
        return len(self._buffer)

    def _make_room(self) -> None:
        """Room for more bytes: move the partial frame to the front, or grow the buffer —
        at most doubling it, and never beyond what the frame being read declares."""
        start, end = self._start, self._end
        held = end - start
        need = HEADER_SIZE
        if held >= HEADER_SIZE:
            need += int.from_bytes(self._buffer[start : start + HEADER_SIZE], "big")
        capacity = len(self._buffer)
        if need > capacity:
            buffer = bytearray(min(need, 2 * capacity))
            buffer[:held] = self._view[start:end]
            self._buffer, self._view = buffer, memoryview(buffer)
        else:
            self._view[:held] = self._view[start:end]
        self._start, self._end = 0, held

    def _shrink(self) -> None:
        """A big frame was consumed and nothing follows: give its memory back."""
        buffer = bytearray(_RECV_SIZE)
        self._buffer, self._view = buffer, memoryview(buffer)

    def _decode(self, body: memoryview) -> M:
        try:
            return self._decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"undecodable frame of {len(body)} byte(s): {exc}") from None

    # -- the end -----------------------------------------------------------------------

    def close_in_forked_children(self) -> None:
        """Make every process forked from this one (``os.fork``, multiprocessing's "fork"
        start method) lose this channel at once, if it is still open then: a forked child
        must neither write into nor read from the peer's stream, nor shut down the socket
        the two processes then share (that would end it for this process too), nor keep
        the socket open after this process ends (the peer would never see it end).

        In the child the descriptor is not closed but pointed at ``/dev/null``: its number
        stays taken by the socket object that owns it (nothing the child opens gets it by
        chance, and the object's eventual close closes ``/dev/null``), and a forked thread
        that strays back into the protocol fails on its next read or write. One at-fork
        hook does it for every channel (``_forking``), holding each weakly: a channel
        closed or collected before a fork is left alone. Only forks that run Python's
        at-fork hooks are covered; ``exec`` is covered by the descriptor being
        non-inheritable (close-on-exec).
        """
        lose_in_forked_children(self)

    def forget_after_fork(self) -> None:
        """In a forked child: point the descriptor at ``/dev/null`` (see above). A socket
        closed before the fork reads -1 (``close`` forgets the number before it closes the
        descriptor): it is left alone, the number may belong to another file by now."""
        fd = self.sock.fileno()
        if fd < 0:
            return
        self._closed = True
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd, inheritable=False)
        finally:
            os.close(null)

    def shutdown(self) -> None:
        """End both directions: a blocked reader sees the end of stream, a blocked or
        background send fails, and later sends fail at once. The socket stays open."""
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """``shutdown``, then release the socket (once no send uses it, or after a second)."""
        self.shutdown()
        try:
            self._send_lock.acquire(timeout=CLOSE_WAIT)
            self.sock.close()
        finally:
            try:  # noqa: SIM105 (ours if the acquire got it: an RLock refuses others)
                self._send_lock.release()
            except RuntimeError:
                pass


def _seconds_left(deadline: float | None) -> float:
    """Seconds until ``deadline`` (never negative), or -1 for no deadline."""
    if deadline is None:
        return -1
    return max(0.0, deadline - time.monotonic())
