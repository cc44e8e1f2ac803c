"""``NativePlugin``: rustbridge's plugin object, on a plugbridge ``PluginHandle``.

Every call goes through the handle (its limiter, statistics, timeouts, isolation); every
``plugbridge.PluginError`` that comes out becomes a ``PluginException`` with the same
message and code.

The hot path. ``call`` and ``call_raw_bytes`` are made per instance at construction and
stored on it: a closure holding the handle's bound ``call_json`` / ``call_raw``, so a call is
one Python frame over the handle's own, with no attribute lookups, flags or locks. Closing
the plugin swaps them for ones that raise "Plugin has been closed". Whether the library has
the binary transport is read from the handle at each use (a ``handle.reload()`` may bring a
library that has it, or not); a raw call to one without it fails in the handle, with
rustbridge's words. The methods of the class with the same names do the same work the slow
way (for ``NativePlugin.call(plugin, ...)`` and for reading).

Plugins nobody closed. rustbridge's host shuts a plugin down when it is garbage-collected,
at interpreter exit too. Here a plugin dropped while the program runs is shut down by
``__del__``; the ones still open when the program ends are shut down by an ``atexit`` hook
(while threads can still start: plugbridge's shutdown needs one), and a finalizer that runs
later than that, as the interpreter tears its modules down, does nothing: starting a thread
then would hang the exit.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import sys
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from .._errors import PluginError, UnknownMessageType
from .._handle import PluginHandle
from ._exception import PluginException
from ._levels import LifecycleState, LogLevel

T = TypeVar("T")
TResponse = TypeVar("TResponse", bound=ctypes.Structure)

LogCallbackFn = Callable[[LogLevel, str, str], None]

CLOSED = "Plugin has been closed"
NO_BINARY_TRANSPORT = "Binary transport not supported by this library"
_STATES = tuple(LifecycleState)
_OFF = int(LogLevel.OFF)

_open: weakref.WeakSet[NativePlugin] = weakref.WeakSet()
"""Plugins not shut down yet (for the exit hook)."""


class NativePlugin:
    """A loaded native plugin. Make it with ``NativePluginLoader`` or ``BundleLoader``;
    close it with ``close()``/``shutdown()`` or a ``with`` block.

    Safe to call from many threads at once. ``handle`` is the plugbridge ``PluginHandle``
    underneath (``reload()``, ``stats()``, ``acall()``, timeouts per call...).
    """

    def __init__(
        self,
        handle: PluginHandle,
        *,
        log_callback: LogCallbackFn | None = None,
    ) -> None:
        """Wrap ``handle`` (ACTIVE). Not for direct use: the loaders make plugins."""
        self._handle = handle
        self._log_callback = log_callback
        self._closed = False
        fast = vars(self)
        fast["call"] = _json_caller(handle.call_json)
        fast["call_raw_bytes"] = _raw_caller(handle.call_raw)
        _open.add(self)

    # -- calls ---------------------------------------------------------------------------

    def call(self, type_tag: str, request: str) -> str:
        """Send the JSON text ``request`` to the handler of ``type_tag``; its response's
        payload as JSON text (``"null"`` when it has none)."""
        self._throw_if_closed()
        try:
            return self._handle.call_json(type_tag, request)
        except PluginError as exc:
            raise PluginException(exc.message, int(exc.code)) from exc

    def call_typed(self, type_tag: str, request: Any, response_type: type[T] | None = None) -> Any:
        """``call`` with ``json.dumps(request)``; the response decoded with ``json.loads``
        (``response_type`` is not used, as in rustbridge)."""
        del response_type
        return json.loads(self.call(type_tag, json.dumps(request)))

    def call_raw(self, message_id: int, request: Any, response_type: type[TResponse]) -> TResponse:
        """The binary transport with ctypes structures: ``request``'s bytes to the raw
        handler of ``message_id``; the response must be exactly ``sizeof(response_type)``
        bytes long."""
        self._throw_if_closed()
        if not self._handle.metadata.binary_transport:
            raise PluginException(NO_BINARY_TRANSPORT)
        try:
            data = self._handle.call_raw(message_id, request)
        except PluginError as exc:
            raise _raw_failure(exc) from exc
        expected = ctypes.sizeof(response_type)
        if len(data) != expected:
            raise PluginException(f"Response size mismatch: expected {expected}, got {len(data)}")
        return response_type.from_buffer_copy(data)

    def call_raw_bytes(self, message_id: int, request: bytes) -> bytes:
        """The binary transport with bytes: ``request`` to the raw handler of
        ``message_id``; its response bytes, of any length."""
        self._throw_if_closed()
        if not self._handle.metadata.binary_transport:
            raise PluginException(NO_BINARY_TRANSPORT)
        try:
            return self._handle.call_raw(message_id, request)
        except PluginError as exc:
            raise _raw_failure(exc) from exc

    @property
    def has_binary_transport(self) -> bool:
        """The library exports ``plugin_call_raw`` and ``rb_response_free`` (the one
        running now: a ``handle.reload()`` may change it)."""
        return self._handle.metadata.binary_transport

    # -- state and settings --------------------------------------------------------------

    @property
    def handle(self) -> PluginHandle:
        """The plugbridge handle underneath (a plugbridge extra)."""
        return self._handle

    @property
    def state(self) -> LifecycleState:
        """The plugin's state; STOPPED once it has been closed."""
        if self._closed:
            return LifecycleState.STOPPED
        try:
            return _STATES[self._handle.state]
        except PluginError as exc:
            raise PluginException(exc.message, int(exc.code)) from exc

    @property
    def rejected_request_count(self) -> int:
        """Calls refused so far because ``max_concurrent_ops`` were running."""
        self._throw_if_closed()
        return self._handle.rejected_request_count

    def set_log_level(self, level: LogLevel) -> None:
        """This plugin's level from the next record on (a code outside 0..5 is OFF, as
        rustbridge's runtime reads it)."""
        self._throw_if_closed()
        code = int(level)
        try:
            self._handle.set_log_level(code if 0 <= code <= _OFF else _OFF)
        except PluginError as exc:
            raise PluginException(exc.message, int(exc.code)) from exc

    # -- closing -------------------------------------------------------------------------

    def shutdown(self) -> bool:
        """Stop the plugin (within its shutdown timeout); True if it stopped cleanly, False
        if it failed to. Never raises; a second call returns True."""
        if self._closed:
            return True
        self._closed = True
        _open.discard(self)
        fast = vars(self)
        fast["call"] = fast["call_raw_bytes"] = _refuser(CLOSED)
        try:
            self._handle.shutdown()
        except Exception:  # ShutdownFailed, or anything else: the plugin is gone either way
            return False
        return True

    def close(self) -> None:
        """``shutdown()``, ignoring its result."""
        self.shutdown()

    def _throw_if_closed(self) -> None:
        if self._closed:
            raise PluginException(CLOSED)

    def __enter__(self) -> NativePlugin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __del__(self) -> None:
        # A plugin dropped without close() is shut down here (``shutdown`` never raises);
        # a half-built one has nothing to stop; past the exit hook nothing can be.
        if not vars(self).get("_closed", True) and not sys.is_finalizing():
            self.shutdown()


@atexit.register
def _shut_down_open_plugins() -> None:
    """At exit: shut down the plugins still open, as rustbridge's finalizers would."""
    for plugin in list(_open):
        plugin.shutdown()


def _json_caller(call_json: Callable[[str, str], str]) -> Callable[[str, str], str]:
    def call(type_tag: str, request: str) -> str:
        try:
            return call_json(type_tag, request)
        except PluginError as exc:
            raise PluginException(exc.message, int(exc.code)) from exc

    call.__doc__ = NativePlugin.call.__doc__
    return call


def _raw_caller(call_raw: Callable[[int, Any], bytes]) -> Callable[[int, bytes], bytes]:
    def call_raw_bytes(message_id: int, request: bytes) -> bytes:
        try:
            return call_raw(message_id, request)
        except PluginError as exc:
            raise _raw_failure(exc) from exc

    call_raw_bytes.__doc__ = NativePlugin.call_raw_bytes.__doc__
    return call_raw_bytes


def _refuser(message: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PluginException(message)

    return refuse


def _raw_failure(exc: PluginError) -> PluginException:
    """A binary-transport failure; plugbridge's "no binary transport" reads as rustbridge's."""
    if type(exc) is UnknownMessageType and "has no binary transport" in exc.message:
        return PluginException(NO_BINARY_TRANSPORT)
    return PluginException(exc.message, int(exc.code))
