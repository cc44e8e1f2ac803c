"""The boundary between a handle and the place its plugin instance runs.

A ``PluginHandle`` owns what must outlive one instance: the concurrency limit, the log
sink and level, and the current transport, which it swaps on reload. A ``Transport`` is one
running instance: in this process (Python), in a worker process, or a native library. Every
transport takes the same calls and raises the same ``PluginError`` classes, so the handle
never knows which one it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._errors import InvalidState
from ._levels import LogLevel
from ._lifecycle import LifecycleState

DRAIN_SHARE = 0.75
"""Share of the shutdown timeout given to calls in flight; the rest is for stopping the plugin
(``on_stop``, ``plugin_shutdown``), so a hung call never leaves it no time at all."""

Release = Callable[[], object]
"""Gives a call's concurrency slot back. Transports call it when the plugin's work for the
call has really ended. It is idempotent (see ``_calls.limiter``): only the first call counts."""


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """What the process (or processes) running an instance use, as its statistics show."""

    pid: int | None
    """The worker's pid; None when several processes run the instance (replicas)."""
    rss_bytes: int | None
    cpu_seconds: float | None


class HandlerSchema(NamedTuple):
    """One ``@handler``'s request and response types as JSON Schema text: each a standalone
    schema whose ``$defs`` hold the types it refers to (names shared by all the handlers of
    one instance). JSON text, so metadata stays hashable and crosses to a worker as is.
    None: not annotated, or a type msgspec cannot describe (any JSON value)."""

    type_tag: str
    request: str | None
    response: str | None


@dataclass(frozen=True, slots=True)
class PluginMetadata:
    """What a plugin says about itself."""

    name: str
    version: str
    type_tags: tuple[str, ...]
    trust: str = "unsigned"
    """For a bundle: ``"trusted"`` (signed by a trusted key), ``"self-signed"`` (valid
    against the bundle's own key only) or ``"unsigned"``; Python plugins and bare libraries
    are ``"unsigned"``."""
    schemas: tuple[HandlerSchema, ...] = ()
    """The JSON Schemas of the Python handlers' annotations, made once when the instance
    started (see ``_schemas``); empty for native plugins."""
    binary_transport: bool = False
    """``call_raw`` can reach a handler: a native library exports ``plugin_call_raw`` and
    ``rb_response_free``; a Python plugin declares a ``raw_handler``. Known once the
    instance started (the facade's ``has_binary_transport`` reads it)."""


class InstanceReplaced(InvalidState):
    """A transport's refusal of a call that never ran because the instance it reached was
    replaced meanwhile (a rolling reload of replicas): the handle retries the call, with a
    fresh concurrency slot (the refusal gave the first one back). Never reaches a caller."""


class Transport(ABC):
    """One running plugin instance, wherever it runs.

    Contract for implementers:
    - ``call``/``call_json``/``acall`` and the binary transport's ``call_raw``/``acall_raw``
      call ``release`` when the plugin's work for that call
      has finished (after a timeout too: the slot stays taken until then), including when
      they raise before starting. Every failure they raise is a ``PluginError``; the handle
      releases the slot itself for anything else that escapes (a ``KeyboardInterrupt``).
    - They raise ``InvalidState`` without side effects when the instance no longer accepts
      calls; the handle then retries on the instance that replaced it, if any.
    - ``shutdown`` is idempotent and returns within ``timeout`` seconds; the instance's
      ``InstanceLog`` is closed when it returns.
    """

    metadata: PluginMetadata

    @property
    @abstractmethod
    def state(self) -> LifecycleState: ...

    @property
    def rejected_count(self) -> int:
        """Refusals counted inside the plugin itself (native libraries keep their own)."""
        return 0

    @property
    def restart_count(self) -> int:
        """Times the restart policy replaced a crashed worker of this instance."""
        return 0

    def process_usage(self) -> ProcessUsage | None:
        """The pid, RSS and CPU time of the process running the instance; None in-process."""
        return None

    def reload_in_place(
        self, start_within: float, stop_within: float, deadline: float | None
    ) -> bool:
        """Reload by itself and return True, or return False and let the handle swap in a
        fresh transport (the default). A transport made of several instances (replicas)
        replaces them one at a time here, so the others serve meanwhile: each fresh one is
        ACTIVE within ``start_within`` seconds of its start (``InitializationFailed`` if
        not; the ones not yet replaced keep serving), each old one gets ``stop_within``
        seconds to stop, and no step runs past ``deadline`` (monotonic; None: no bound on
        the whole reload)."""
        del start_within, stop_within, deadline
        return False

    @abstractmethod
    def call(self, type_tag: str, request: Any, timeout: float | None, release: Release) -> Any:
        """Request as a Python value; returns JSON builtins."""

    @abstractmethod
    def call_json(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        """Request and response as JSON bytes."""

    @abstractmethod
    async def acall(
        self, type_tag: str, request: Any, timeout: float | None, release: Release
    ) -> Any:
        """``call`` for asyncio callers; never blocks the caller's loop."""

    @abstractmethod
    def call_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        """The binary transport: ``payload`` to the raw handler of ``message_id`` (a
        ``uint32``, checked by the handle), its response bytes back. ``InvalidState`` if
        the instance is not ACTIVE, whether or not it has a binary transport at all;
        ``UnknownMessageType`` if it has no handler for ``message_id`` (or none at all)."""

    @abstractmethod
    async def acall_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        """``call_raw`` for asyncio callers; never blocks the caller's loop."""

    @abstractmethod
    def set_log_level(self, level: LogLevel) -> None: ...

    @abstractmethod
    def shutdown(self, timeout: float) -> None:
        """Stop the instance within ``timeout`` seconds; ``ShutdownFailed`` if it cannot."""


TransportFactory = Callable[[float | None], Transport]
"""Starts a fresh instance (``deadline``: monotonic time by which it must be ACTIVE)."""
