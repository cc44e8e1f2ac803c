"""Each plugin's recent log records, and their fan-out to Server-Sent Events clients.

The hub taps every handle of the host (``PluginHandle.add_log_listener``) and keeps a ring
of the last ``history`` records per plugin. A record arrives on whatever thread logged it;
the tap stamps it, numbers it and appends it under the plugin's lock, and hands it to each
subscriber's event loop with ``call_soon_threadsafe`` (only when someone listens). A new
subscriber is registered and handed the ring's copy under that same lock, so it sees every
record exactly once: the older ones from the copy, the newer ones live.

Everything is bounded: the ring holds ``history`` records, each subscriber's queue
``QUEUE_LIMIT``; a subscriber that reads too slowly loses records, and is told how many
by a notice standing where they went missing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import msgspec

from .._handle import PluginHandle
from .._host import PluginHost
from .._levels import LogLevel

HISTORY = 200
"""Records replayed to a client that connects (per plugin)."""
QUEUE_LIMIT = 1000
"""Records waiting for one slow client before newer ones are dropped."""
KEEPALIVE_S = 15.0
"""Idle seconds before a comment line keeps proxies (and the client) from timing out."""

LogEntry = tuple[int, float, LogLevel, str, str]
"""``(sequence, unix time, level, target, message)``."""

_encode = msgspec.json.Encoder().encode


class _Subscriber:
    """One client's queue of live records, fed from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: collections.deque[LogEntry | None] = collections.deque()
        self.ready = asyncio.Event()
        self.dropped = 0

    def offer(self, entry: LogEntry | None) -> None:
        """Hand ``entry`` over (None: the stream ends); from any thread."""
        with contextlib.suppress(RuntimeError):  # its loop is closed: the client is gone
            self.loop.call_soon_threadsafe(self._push, entry)

    def _push(self, entry: LogEntry | None) -> None:
        """On the subscriber's loop. A full queue drops ``entry`` and counts it; the next
        entry taken is preceded by the notice of that count, so the notice stands exactly
        where the records went missing (the stream tells of drops at its tail itself)."""
        if entry is not None and len(self.queue) >= QUEUE_LIMIT:
            self.dropped += 1
            return  # the stream is behind: it is already awake
        if self.dropped:
            self.queue.append(_dropped_notice(self.dropped))
            self.dropped = 0
        self.queue.append(entry)
        self.ready.set()

    def take_dropped(self) -> LogEntry | None:
        """The notice of the records dropped since the queue was last full, if any."""
        if not self.dropped:
            return None
        notice, self.dropped = _dropped_notice(self.dropped), 0
        return notice


class PluginLog:
    """One plugin's ring of recent records and its live subscribers."""

    def __init__(self, handle: PluginHandle, history: int) -> None:
        self.handle = handle
        self._ring: collections.deque[LogEntry] = collections.deque(maxlen=history)
        self._subscribers: tuple[_Subscriber, ...] = ()
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._remove: Callable[[], None] = handle.add_log_listener(self._record)

    def _record(self, level: LogLevel, target: str, message: str) -> None:
        """The tap, on the logging thread."""
        with self._lock:
            entry = (next(self._sequence), time.time(), level, target, message)
            self._ring.append(entry)
            for subscriber in self._subscribers:
                subscriber.offer(entry)

    def subscribe(self, after: int = 0) -> tuple[list[LogEntry], _Subscriber]:
        """Register a live subscriber on the running loop; the ring's records numbered
        above ``after`` (an ``EventSource``'s ``Last-Event-ID``) come with it."""
        subscriber = _Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)
            replay = [entry for entry in self._ring if entry[0] > after]
        return replay, subscriber

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

    def close(self) -> None:
        """Stop tapping the handle and end every stream."""
        self._remove()
        with self._lock:
            subscribers, self._subscribers = self._subscribers, ()
        for subscriber in subscribers:
            subscriber.offer(None)


class LogHub:
    """A ``PluginLog`` for every plugin of the host, kept in step with it by ``sync``."""

    def __init__(self, host: PluginHost, history: int = HISTORY) -> None:
        self._host = host
        self._history = history
        self._logs: dict[str, PluginLog] = {}
        self._lock = threading.Lock()
        self._closed = False

    def sync(self) -> None:
        """Tap the plugins added since the last look, forget the removed ones (a name
        given to a new handle is a new plugin: its history starts afresh)."""
        current: dict[str, PluginHandle] = {}
        for name in self._host.names():
            try:
                current[name] = self._host[name]
            except KeyError:  # removed meanwhile
                continue
        stale: list[PluginLog] = []
        with self._lock:
            if self._closed:
                return
            for name, log in list(self._logs.items()):
                if current.get(name) is not log.handle:
                    stale.append(self._logs.pop(name))
            for name, handle in current.items():
                if name not in self._logs:
                    self._logs[name] = PluginLog(handle, self._history)
        for log in stale:
            log.close()

    def get(self, name: str) -> PluginLog | None:
        """The log of ``name`` (looking at the host again if it is not known yet)."""
        with self._lock:
            log = self._logs.get(name)
        if log is None:
            self.sync()
            with self._lock:
                log = self._logs.get(name)
        return log

    def close(self) -> None:
        """Untap every handle and end every stream; ``sync`` does nothing afterwards."""
        with self._lock:
            self._closed = True
            logs, self._logs = list(self._logs.values()), {}
        for log in logs:
            log.close()


def record_json(entry: LogEntry) -> bytes:
    """A record as the JSON of its event: level by name, target, message, ISO time."""
    _, stamp, level, target, message = entry
    moment = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
    return _encode(
        {
            "level": level.name.lower(),
            "target": target,
            "message": message,
            "time": moment.replace("+00:00", "Z"),
        }
    )


def _event(entry: LogEntry) -> bytes:
    """One event; its ``id`` is the record's number (a notice of the stream's own has
    none, so a reconnecting ``EventSource`` resumes after the last real record)."""
    if entry[0] == 0:
        return b"data: %s\n\n" % record_json(entry)
    return b"id: %d\ndata: %s\n\n" % (entry[0], record_json(entry))


async def event_stream(log: PluginLog, name: str, after: int = 0) -> AsyncIterator[bytes]:
    """The Server-Sent Events of ``log``: a comment once subscribed, the replay, then live
    records until the hub closes (or the client leaves and the response cancels this)."""
    replay, subscriber = log.subscribe(after)
    try:
        yield b": log stream of plugin %s\n\n" % _encode(name)
        for entry in replay:
            yield _event(entry)
        while True:
            if not subscriber.queue:
                subscriber.ready.clear()
                try:
                    await asyncio.wait_for(subscriber.ready.wait(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
            while subscriber.queue:
                live = subscriber.queue.popleft()
                if live is None:
                    return
                yield _event(live)
            notice = subscriber.take_dropped()  # records lost after the last one sent
            if notice is not None:
                yield _event(notice)
    finally:
        log.unsubscribe(subscriber)


def _dropped_notice(dropped: int) -> LogEntry:
    message = f"{dropped} log records were dropped: this client read them too slowly"
    return (0, time.time(), LogLevel.WARN, "plugbridge", message)
