"""On the host: one actor's records, polled and delivered in order to its instance's log.

A thread per actor long-polls ``PluginActor.records`` (it returns as soon as a record is
there) and hands the records, in the order they were made, to the instance's
``InstanceLog`` (the handle's callback). It is the only thread that delivers them, so their
order is the actor's. An answer says how many records the actor had made when the call
ended: the caller waits (``catch_up``, bounded) until those are delivered, so a handler's
records reach the callback before its caller sees the answer, as in-process and with a
worker. The poll ends when the actor says its stream has ended (after its instance
stopped) or when the actor is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .._levels import LogLevel
from .._logsink import InstanceLog

POLL_WAIT = 1.0
"""Seconds one poll waits in the actor for a record before it returns empty."""
CATCH_UP_WAIT = 2.0
"""Seconds at most a caller waits for its call's records (a busy callback may hold them)."""


class RecordPump:
    """Polls one actor's records on a thread of its own until the stream ends."""

    def __init__(
        self,
        ray: Any,
        actor: Any,
        log: InstanceLog,
        name: str,
        on_gone: Callable[[BaseException], None],
    ) -> None:
        self._ray = ray
        self._actor = actor
        self._log = log
        self._on_gone = on_gone
        self._changed = threading.Condition()
        self.delivered = 0
        self.finished = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-records", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        gone: BaseException | None = None
        try:
            while True:
                try:
                    records, ended = self._ray.get(self._actor.records.remote(POLL_WAIT))
                except Exception as exc:  # the actor is gone (or Ray is): no more records
                    gone = exc
                    return
                for level, target, message in records:
                    self._log.emit(LogLevel(level), target, message)
                with self._changed:
                    self.delivered += len(records)
                    self._changed.notify_all()
                if ended:
                    return
        finally:
            with self._changed:
                self.finished = True
                self._changed.notify_all()
            if gone is not None:
                self._on_gone(gone)

    def catch_up(self, count: int) -> None:
        """Wait (bounded) until the first ``count`` records are delivered. Not on the
        pump's own thread (a log callback calling its plugin): it would wait for itself."""
        if self.delivered >= count or threading.current_thread() is self._thread:
            return
        with self._changed:
            self._changed.wait_for(lambda: self.delivered >= count or self.finished, CATCH_UP_WAIT)

    def join(self, deadline: float) -> bool:
        """Wait until the stream has ended (at most until ``deadline``); say whether."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()
