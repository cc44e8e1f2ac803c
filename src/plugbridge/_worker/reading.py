"""The reading turn: which thread reads the worker's channel now, and how it reads.

Frames from the worker are read by one thread at a time, the one holding the turn, and
dispatched in order. A sync caller whose call is the only one in flight and that finds the
turn free takes it and reads until its own answer is settled (or its deadline passes, or the
channel ends): the answer then needs no hop between threads. Otherwise the session's reader
thread reads (for asyncio callers, for several calls in flight, for records while nobody
calls). Only the reader thread acts on the channel's end: a caller that meets it records why
and leaves.
"""

from __future__ import annotations

import math
import select
import threading
import time
from collections.abc import Callable, Sized

from .._calls.completion import ThreadCompletion
from .protocol import Channel, ProtocolError, WorkerMessage

IDLE_GRACE = 0.005
"""Seconds the reader thread leaves the channel to sync callers after one's turn ended
with no call in flight: back-to-back calls read their own answers without waking it.
Records sent while nobody calls may wait this long (twice at most)."""
POLL_RECHECK_MS = 500
"""The reader thread's wait for the channel re-checks that the session is alive this often."""


class ReadingTurn:
    """The turn to read ``channel``, handing each frame to ``dispatch``.

    ``in_flight`` is the session's table of calls in flight (only its size is read).
    """

    def __init__(
        self,
        channel: Channel[WorkerMessage],
        dispatch: Callable[[WorkerMessage], None],
        in_flight: Sized,
    ) -> None:
        self._channel = channel
        self._dispatch = dispatch
        self._in_flight = in_flight
        self._lock = threading.Condition(threading.Lock())
        """Guards the turn; the reader thread waits on it while a caller reads."""
        self.reading: threading.Thread | None = None
        """The thread whose turn it is to read the channel, if any."""
        self._quiet = False
        """A caller's turn ended with nothing left to read: the reader thread leaves the
        channel to callers a little longer (see ``IDLE_GRACE``)."""
        self.ended = False
        self._end_problem: str | None = None
        """Why the channel ended (None: it just closed), once ``ended``."""
        self._closed = False
        self._readable = select.poll()
        self._readable.register(channel.sock.fileno(), select.POLLIN)

    # -- a caller's turn ---------------------------------------------------------------

    def take(self, me: threading.Thread) -> bool:
        """Make it ``me``'s turn to read, if its call is the only one in flight, nobody
        reads and the channel has not ended. With several in flight the reader thread reads
        for all (a reading caller would race it for every frame)."""
        with self._lock:
            if self.reading is not None or self.ended or len(self._in_flight) > 1:
                return False
            self.reading = me
        return True

    def give_back(self) -> None:
        """End a caller's turn; the reader thread takes over at once if there is work."""
        with self._lock:
            self.reading = None
            if self._in_flight or self._channel.has_frame():
                self._quiet = False
                self._lock.notify()
            else:
                self._quiet = True

    def read_for(self, completion: ThreadCompletion, deadline: float | None) -> None:
        """In a caller's turn: read until ``completion`` is settled, ``deadline`` or the end."""
        self._read_frames(completion, deadline)

    def wake(self) -> None:
        """The reader thread must read now (not after ``IDLE_GRACE``)."""
        with self._lock:
            self._quiet = False
            self._lock.notify()

    def close(self) -> None:
        """The session is over: the reader thread stops reading."""
        with self._lock:
            self._closed = True
            self._quiet = False
            self._lock.notify()

    # -- reading -----------------------------------------------------------------------

    def _read_frames(self, completion: ThreadCompletion | None, deadline: float | None) -> None:
        """In our turn: read and dispatch frames until ``completion`` is settled, or until
        ``deadline``, or the channel's end; without a completion (the reader thread), while
        frames are at hand. Frames already buffered are always dispatched before returning,
        so that the next reader only has to wait for the socket."""
        channel, readable, dispatch = self._channel, self._readable, self._dispatch
        try:
            while True:
                if not channel.has_frame():
                    if completion is None:
                        if not readable.poll(0):
                            return
                    elif completion.settled:
                        return
                    elif deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0 or not readable.poll(math.ceil(left * 1000)):
                            return
                message = channel.receive()
                if message is None:
                    self._channel_ended(None)
                    return
                dispatch(message)
        except ProtocolError as exc:
            self._channel_ended(f"sent a malformed frame ({exc}) and was killed")
        except OSError as exc:
            self._channel_ended(f"broke its channel ({exc})")

    def _channel_ended(self, problem: str | None) -> None:
        with self._lock:
            if not self.ended:  # the first reader to see the end says why
                self.ended = True
                self._end_problem = problem
            self._lock.notify()

    def run(self) -> str | None:
        """The reader thread: read whenever no caller does, until the channel ends or the
        turn is closed; say why the channel ended (None: it just closed)."""
        sock_fd = self._channel.sock.fileno()
        ready = select.poll()
        ready.register(sock_fd, select.POLLIN)
        me = threading.current_thread()
        lock = self._lock
        while True:
            with lock:
                while not (self.ended or self._closed):
                    if self.reading is None and not self._quiet:
                        break
                    if self.reading is None:
                        self._quiet = False  # one more grace period, unless a call comes
                    lock.wait(IDLE_GRACE)
                else:
                    return self._end_problem
                if self._channel.has_frame():
                    self.reading = me  # left over by a caller's last read
            if self.reading is not me and ready.poll(POLL_RECHECK_MS):
                with lock:
                    if self.reading is None and not self.ended:
                        self.reading = me
            if self.reading is me:
                try:
                    self._read_frames(None, None)
                finally:
                    with lock:
                        self.reading = None
