"""The authoring API: ``Plugin``, ``@handler``, ``@raw_handler`` and ``PluginContext``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._lifecycle import Lifecycle, LifecycleState

if TYPE_CHECKING:
    from ._config import PluginConfig

F = TypeVar("F", bound=Callable[..., Any])

HANDLER_TAG_ATTR = "__plugbridge_type_tag__"
RAW_HANDLER_ID_ATTR = "__plugbridge_message_id__"
MAX_MESSAGE_ID = 0xFFFF_FFFF


def handler(type_tag: str) -> Callable[[F], F]:
    """Mark a plugin method as the handler of ``type_tag``.

    The method is called as ``method(self, ctx, request)``; it may be ``async def`` or plain
    ``def``. The request parameter's annotation (a msgspec Struct, a dataclass, a TypedDict,
    ``dict`` or none) says how the JSON payload is validated.
    """
    if not isinstance(type_tag, str) or not type_tag:
        raise TypeError("handler() needs a non-empty type tag string")

    def mark(fn: F) -> F:
        setattr(fn, HANDLER_TAG_ATTR, type_tag)
        return fn

    return mark


def raw_handler(message_id: int) -> Callable[[F], F]:
    """Mark a plugin method as the binary-transport handler of ``message_id`` (a ``uint32``,
    the id a host passes to ``call_raw``).

    The method is called as ``method(self, ctx, payload)`` with the request as ``bytes``,
    and returns a bytes-like object (``bytes``, ``bytearray``, ``memoryview``, a ctypes
    structure, ...); it may be ``async def`` or plain ``def``.
    """
    if (
        isinstance(message_id, bool)
        or not isinstance(message_id, int)
        or not 0 <= message_id <= MAX_MESSAGE_ID
    ):
        raise TypeError(f"raw_handler() needs a message id from 0 to {MAX_MESSAGE_ID}")
    plain = int(message_id)

    def mark(fn: F) -> F:
        setattr(fn, RAW_HANDLER_ID_ATTR, plain)
        return fn

    return mark


@dataclass(eq=False)
class PluginContext:
    """What a plugin instance sees of its host: config, settings, logger and state."""

    config: PluginConfig
    logger: logging.Logger
    _lifecycle: Lifecycle = field(repr=False)

    @property
    def data(self) -> Any:
        """``config.data``: the settings the host hands this plugin (any JSON value; a dict
        unless the host chose otherwise)."""
        return self.config.data

    @property
    def state(self) -> LifecycleState:
        return self._lifecycle.state


class Plugin:
    """Base class of Python plugins. Subclass it, set ``name``/``version``, add handlers."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"

    async def on_start(self, ctx: PluginContext) -> None:
        """Called once before the first request; raising fails the load."""

    async def on_stop(self, ctx: PluginContext) -> None:
        """Called once at shutdown after calls in flight have finished."""

    async def handle_request(self, ctx: PluginContext, type_tag: str, payload: bytes) -> bytes:
        """Raw dispatch: override to receive every request as JSON bytes.

        Only consulted when a plugin overrides it; the default dispatches to ``@handler``
        methods and is never called.
        """
        raise NotImplementedError
