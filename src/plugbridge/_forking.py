"""What a plugin handle is worth in a forked child: nothing, and it says so at once.

``os.fork()`` (gunicorn ``--preload``, Celery's prefork pool, multiprocessing's "fork" start
method) copies the process but only the thread that forks. A handle loaded before the fork
would reach, in the child, an instance whose threads are gone (its event loop, its sync
pool), a library whose own threads are gone, or the parent's worker process through the
parent's own socket: answers would be read by the wrong process, call ids would collide,
and a ``shutdown`` in the child would stop the parent's worker.

So the rule, the same in every transport: in a forked child every handle that was alive at
the fork is *forked*. Its calls (``call``, ``call_json``, ``acall``, from any event loop)
fail at once with ``InvalidState`` ("handles do not survive fork: load plugins in each
worker process"), its ``reload`` too; its ``shutdown`` returns at once and releases
nothing, since nothing it holds is the child's to release; its ``state`` reads STOPPED
(nothing of it runs in the child). The parent's handle is untouched and keeps working.

One at-fork hook, registered once at import, does it: it walks a ``WeakSet`` of live
handles and gives each a ``ForkedTransport`` (see ``PluginHandle._forked_in_child``). The
call paths cost nothing: a forked handle is an ordinary transport swap, the kind a reload
makes. The same hook points each worker channel still open at the fork at ``/dev/null`` in
the child (``Channel.close_in_forked_children``), so nothing the child runs can write into
or read from the parent's channel, or shut down the socket the two processes share.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import TYPE_CHECKING, Any

from ._errors import InvalidState
from ._levels import LogLevel
from ._lifecycle import LifecycleState
from ._transport import PluginMetadata, Release, Transport

if TYPE_CHECKING:
    from ._handle import PluginHandle
    from ._worker.channel import Channel

FORKED = "handles do not survive fork: load plugins in each worker process"
"""Why a handle loaded before a fork refuses everything in the child."""


def forked(plugin: str) -> InvalidState:
    """The one ``InvalidState`` a forked handle answers with."""
    return InvalidState(f"plugin {plugin!r}: {FORKED}")


class ForkedTransport(Transport):
    """A handle's transport in a child forked after the handle was loaded: refuses every
    call at once (giving the slot back first) and holds nothing to stop."""

    def __init__(self, metadata: PluginMetadata) -> None:
        self.metadata = metadata

    @property
    def state(self) -> LifecycleState:
        return LifecycleState.STOPPED

    def call(self, type_tag: str, request: Any, timeout: float | None, release: Release) -> Any:
        release()
        raise forked(self.metadata.name)

    def call_json(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        release()
        raise forked(self.metadata.name)

    async def acall(
        self, type_tag: str, request: Any, timeout: float | None, release: Release
    ) -> Any:
        release()
        raise forked(self.metadata.name)

    def call_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        release()
        raise forked(self.metadata.name)

    async def acall_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        release()
        raise forked(self.metadata.name)

    def set_log_level(self, level: LogLevel) -> None:
        pass  # the handle keeps the level; no instance here to tell

    def shutdown(self, timeout: float) -> None:
        pass  # the instance is the parent's: nothing here to stop or release


_handles: weakref.WeakSet[PluginHandle] = weakref.WeakSet()
"""Handles alive in this process (loaded here, or before the last fork and now forked)."""
_channels: weakref.WeakSet[Channel[Any]] = weakref.WeakSet()
"""Worker channels a forked child must not keep (see ``Channel.close_in_forked_children``)."""


def track_handle(handle: PluginHandle) -> None:
    """``handle`` is forked in every child forked while it is alive."""
    _handles.add(handle)


def lose_in_forked_children(channel: Channel[Any]) -> None:
    """``channel`` is pointed at ``/dev/null`` in every child forked while it is alive and
    open (a weak reference: a channel is never kept alive by this)."""
    _channels.add(channel)


def _after_fork_in_child() -> None:
    """In the child, on the forking thread (the only one): nothing else runs, so nothing
    here takes a lock. Both sets are emptied: the child's own loads start them afresh.
    Handles first, as that cannot fail; a channel that cannot be pointed at ``/dev/null``
    (no descriptor left) is left as it is: no handle of the child reaches it anyway."""
    channels, handles = list(_channels), list(_handles)
    _channels.clear()
    _handles.clear()
    for handle in handles:
        handle._forked_in_child()
    for channel in channels:
        with contextlib.suppress(OSError):
            channel.forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
