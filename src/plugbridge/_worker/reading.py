"""The reading turn: which thread reads the worker's channel now, and how it waits.

Frames from the worker are read by one thread at a time, the one holding the turn, and
dispatched in order. A sync caller whose call is the only one in flight and that finds the
turn free takes it and reads until its own answer is settled (or its deadline passes, or the
channel ends): the answer then needs no hop between threads. Otherwise the session's reader
thread reads (for asyncio callers, for several calls in flight, for records while nobody
calls). Only the reader thread acts on the channel's end: a caller that meets it records why
and leaves.

The host's end of the channel is non-blocking and every wait is a ``poll`` on it *and* on
the worker process (``WorkerProcess.pidfd``; without one, the exit status is polled every
``EXIT_POLL_MS``). A worker that has ended is noticed even if the end of stream never comes
(a process it forked still holds the channel), and a caller waiting in the middle of a
frame (a frozen worker) still leaves at its deadline.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Sized

from .._calls.completion import ThreadCompletion
from .channel import NOT_READY, Channel, ProtocolError, _NotReady, poll_ms
from .process import WorkerProcess
from .protocol import WorkerMessage

IDLE_GRACE = 0.005
"""Seconds the reader thread leaves the channel to sync callers after one's turn ended
with no call in flight: back-to-back calls read their own answers without waking it.
Records sent while nobody calls may wait this long (twice at most)."""
POLL_RECHECK_MS = 500
"""The reader thread's wait for the channel re-checks that the session is alive this often."""
EXIT_POLL_MS = 200
"""Without a pidfd, waits re-check the worker's exit status this often."""


class ChannelWatch:
    """Waits until the worker's channel is readable or the worker has ended.

    One per waiting thread: a ``poll`` object must not be used by two threads at once.
    """

    def __init__(self, channel: Channel[WorkerMessage], process: WorkerProcess) -> None:
        self.channel = channel
        self.process = process
        self.poller = select.poll()
        self.poller.register(channel.sock.fileno(), select.POLLIN)
        self._exit: select.poll | None = None
        pidfd = process.pidfd
        if pidfd is not None:
            self.poller.register(pidfd, select.POLLIN)
            self._exit = select.poll()
            self._exit.register(pidfd, select.POLLIN)
        self.slice_ms = -1 if pidfd is not None else EXIT_POLL_MS
        """Longest single wait: -1 (none) when the pidfd wakes us, else ``EXIT_POLL_MS``."""

    def wait(self, deadline: float | None) -> bool:
        """Wait until there is something to read (or the worker ended); False once
        ``deadline`` (monotonic) has passed first."""
        poller, slice_ms = self.poller, self.slice_ms
        while True:
            if deadline is None:
                timeout = slice_ms
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                timeout = poll_ms(left)
                if 0 <= slice_ms < timeout:
                    timeout = slice_ms
            if poller.poll(timeout) or (slice_ms >= 0 and self.worker_ended()):
                return True

    def ready(self) -> bool:
        """Whether there is something to read (or the worker ended), without waiting."""
        return bool(self.poller.poll(0)) or (self._exit is None and self.worker_ended())

    def worker_ended(self) -> bool:
        if self._exit is not None:
            return bool(self._exit.poll(0))
        return self.process.poll() is not None

    def receive(self) -> WorkerMessage | _NotReady | None:
        """The next message (consumed) if it is complete, else ``NOT_READY``; None at the
        channel's end, which includes the worker's end once all it wrote has been read."""
        message = self.peek()
        if message is not NOT_READY and message is not None:
            self.channel.consume()
        return message

    def peek(self) -> WorkerMessage | _NotReady | None:
        """``Channel.peek_ready``, with the worker's end taken as the channel's end."""
        message = self.channel.peek_ready()
        if message is NOT_READY and self.worker_ended():
            return self.leftover()
        return message

    def leftover(self) -> WorkerMessage | None:
        """The worker has ended: the next of the frames it wrote before (peeked), or None
        (the end: even if a process it forked still holds the channel open)."""
        message = self.channel.peek_ready()
        if message is NOT_READY:
            self.channel.end_of_stream()  # ProtocolError inside a frame
            return None
        return message  # type: ignore[return-value]


class ReadingTurn:
    """The turn to read the worker's channel, handing each frame to ``dispatch``.

    ``in_flight`` is the session's table of calls in flight (only its size is read).
    """

    def __init__(
        self,
        channel: Channel[WorkerMessage],
        process: WorkerProcess,
        dispatch: Callable[[WorkerMessage], None],
        in_flight: Sized,
    ) -> None:
        self._channel = channel
        self._process = process
        self._dispatch = dispatch
        self._in_flight = in_flight
        self._mutex = threading.Lock()
        """Guards the turn. Always entered as ``with self._mutex`` (a C ``__enter__``):
        a ``Condition``'s ``__enter__`` is Python code, and a ``KeyboardInterrupt`` striking
        as its inner acquire returns would leave the lock held outside any ``with``."""
        self._wakeup = threading.Condition(self._mutex)
        """On ``_mutex``, only to wait and notify: the reader thread waits while a caller reads."""
        self.reading: threading.Thread | None = None
        """The thread whose turn it is to read the channel, if any."""
        self._quiet = False
        """A caller's turn ended with nothing left to read: the reader thread leaves the
        channel to callers a little longer (see ``IDLE_GRACE``)."""
        self.ended = False
        self._end_problem: str | None = None
        """Why the channel ended (None: it just closed), once ``ended``."""
        self._closed = False
        self._watch = ChannelWatch(channel, process)
        """Used by whoever holds the turn."""

    # -- a caller's turn ---------------------------------------------------------------

    def take(self, me: threading.Thread) -> bool:
        """Make it ``me``'s turn to read, if its call is the only one in flight, nobody
        reads and the channel has not ended. With several in flight the reader thread reads
        for all (a reading caller would race it for every frame)."""
        with self._mutex:
            if self.reading is not None or self.ended or self._closed or len(self._in_flight) > 1:
                return False
            self.reading = me
        return True

    def handed_back(self) -> None:
        """A caller's turn has ended (it reset ``reading`` itself, with one builtin call,
        so that a ``KeyboardInterrupt`` cannot leave the turn taken): the reader thread
        takes over at once if there is work, else after ``IDLE_GRACE``."""
        with self._mutex:
            if self._in_flight or self._channel.has_frame():
                self._quiet = False
                self._wakeup.notify()
            elif self.reading is None:
                self._quiet = True

    def wake(self) -> None:
        """The reader thread must read now (not after ``IDLE_GRACE``)."""
        with self._mutex:
            self._quiet = False
            self._wakeup.notify()

    def close(self) -> None:
        """The session is over: nobody takes the turn any more, the reader thread stops."""
        with self._mutex:
            self._closed = True
            self._quiet = False
            self._wakeup.notify()

    # -- reading -----------------------------------------------------------------------

    def read(self, completion: ThreadCompletion | None, deadline: float | None) -> None:
        """In our turn: read and dispatch frames until ``completion`` is settled, or until
        ``deadline``, or the channel's end; without a completion (the reader thread), while
        frames are at hand. Frames already buffered are always dispatched before returning,
        so that the next reader only has to wait for the socket."""
        channel, watch, dispatch = self._channel, self._watch, self._dispatch
        readable, forever = watch.poller, watch.slice_ms
        try:
            while True:
                if not channel.has_frame():
                    if completion is None:
                        if not watch.ready():
                            return
                    elif completion.settled:
                        return
                    elif deadline is None and forever < 0:
                        readable.poll(-1)
                    elif not watch.wait(deadline):
                        return
                message = channel.peek_ready()
                if message is NOT_READY:
                    if not watch.worker_ended():
                        continue  # a partial frame: wait for the rest
                    message = watch.leftover()
                if message is None:
                    self._channel_ended(None)
                    return
                dispatch(message)  # type: ignore[arg-type]
                channel.consume()  # only now: an exception before it means "handle again"
        except ProtocolError as exc:
            self._channel_ended(f"sent a malformed frame ({exc})")
        except OSError as exc:
            self._channel_ended(f"broke its channel ({exc})")

    def _channel_ended(self, problem: str | None) -> None:
        with self._mutex:
            if not self.ended:  # the first reader to see the end says why
                self.ended = True
                self._end_problem = problem
            self._wakeup.notify()

    def run(self) -> str | None:
        """The reader thread: read whenever no caller does, until the channel ends or the
        turn is closed; say why the channel ended (None: it just closed)."""
        idle = ChannelWatch(self._channel, self._process)
        recheck = POLL_RECHECK_MS if idle.slice_ms < 0 else min(POLL_RECHECK_MS, idle.slice_ms)
        me = threading.current_thread()
        mutex, wakeup = self._mutex, self._wakeup
        while True:
            with mutex:
                while not (self.ended or self._closed):
                    if self.reading is None and not self._quiet:
                        break
                    if self.reading is None:
                        self._quiet = False  # one more grace period, unless a call comes
                    wakeup.wait(IDLE_GRACE)
                else:
                    return self._end_problem
                if self._channel.has_frame():
                    self.reading = me  # left over by a caller's last read
            if self.reading is not me and (
                idle.poller.poll(recheck) or (idle.slice_ms >= 0 and idle.worker_ended())
            ):
                with mutex:
                    if self.reading is None and not self.ended:
                        self.reading = me
            if self.reading is me:
                try:
                    self.read(None, None)
                finally:
                    with mutex:
                        self.reading = None
