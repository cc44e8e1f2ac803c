"""Routes: how a type tag reaches plugin code, with msgspec validation on the way in and out."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from .._errors import (
    InitializationFailed,
    PluginError,
    SerializationError,
    Timeout,
    call_timed_out,
    not_carried_as_json,
    raw_call_timed_out,
)
from .._json import encode_unchecked
from .._plugin import HANDLER_TAG_ATTR, RAW_HANDLER_ID_ATTR, Plugin, PluginContext
from .._schemas import handler_schemas
from .._transport import HandlerSchema

_RAW_ROUTE_CACHE = 1024
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_to_builtins = msgspec.to_builtins
PLAIN_TYPES = frozenset({dict, list, str, int, float, bool, type(None)})


class Route:
    """A type tag bound to a ``@handler`` method, validating against its annotation."""

    __slots__ = (
        "_decoder",
        "convert_to",
        "is_async",
        "method",
        "request_type",
        "type_tag",
    )

    def __init__(self, type_tag: str, method: Callable[..., Any], request_type: Any) -> None:
        self.type_tag = type_tag
        self.method = method
        self.is_async = inspect.iscoroutinefunction(method)
        self.request_type = request_type
        self.convert_to: Any = None if request_type is Any else request_type
        """For the inline fast path: plain requests go straight to ``msgspec.convert``."""
        try:
            self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(request_type)
        except TypeError as exc:
            raise InitializationFailed(
                f"handler {type_tag!r}: request annotation {request_type!r} is not supported: {exc}"
            ) from None

    def timed_out(self, timeout: float | None) -> Timeout:
        """The ``Timeout`` of a call of this route that ran out of time."""
        return call_timed_out(self.type_tag, timeout)

    def invalid_request(self, exc: Exception) -> SerializationError:
        return SerializationError(f"invalid request for {self.type_tag!r}: {exc}")

    def bad_request(self, exc: Exception) -> PluginError:
        """The error for a request that failed to decode, convert or validate."""
        return _json_error(exc, f"request for {self.type_tag!r}", self.invalid_request)

    def bad_response(self, exc: Exception) -> PluginError:
        """The error for a response that failed to encode (or, raw, to decode)."""
        return _json_error(exc, f"response of {self.type_tag!r}", None)

    def request_from_json(self, payload: bytes) -> Any:
        try:
            return self._decoder.decode(payload)
        except Exception as exc:
            raise self.bad_request(exc) from None

    def request_from_object(self, request: Any) -> Any:
        """Validate a Python request exactly as if it had crossed the wire as JSON."""
        try:
            if type(request) not in PLAIN_TYPES:
                request = msgspec.to_builtins(request)
            if self.request_type is Any:
                return request
            return msgspec.convert(request, self.request_type)
        except Exception as exc:
            raise self.bad_request(exc) from None

    def response_to_object(self, result: Any) -> Any:
        try:
            return _to_builtins(result)
        except Exception as exc:
            raise self.bad_response(exc) from None

    def response_to_json(self, result: Any) -> bytes:
        try:
            return encode_unchecked(result)
        except Exception as exc:
            raise self.bad_response(exc) from None


def _json_error(
    exc: Exception, what: str, invalid: Callable[[Exception], SerializationError] | None
) -> PluginError:
    """One mapping from what msgspec (or the interpreter) raised to the error the host sees."""
    if isinstance(exc, PluginError):
        return exc
    if isinstance(exc, msgspec.ValidationError) and invalid is not None:
        return invalid(exc)
    if isinstance(exc, msgspec.DecodeError):
        return SerializationError(f"{what} is not valid JSON: {exc}")
    if isinstance(exc, TypeError | msgspec.EncodeError):
        return SerializationError(f"{what} is not JSON-serializable: {exc}")
    return not_carried_as_json(what, exc)  # too deep, not UTF-8, a lone surrogate, ...


class RawRoute(Route):
    """A type tag sent to a plugin's own ``handle_request(ctx, type_tag, payload)``."""

    __slots__ = ()

    def __init__(self, type_tag: str, plugin: Plugin) -> None:
        raw = plugin.handle_request
        if inspect.iscoroutinefunction(raw):

            async def call_async(ctx: PluginContext, payload: bytes) -> Any:
                return await raw(ctx, type_tag, payload)

            super().__init__(type_tag, call_async, bytes)
        else:

            def call_sync(ctx: PluginContext, payload: bytes) -> Any:
                return raw(ctx, type_tag, payload)

            super().__init__(type_tag, call_sync, bytes)
        self.convert_to = None

    def request_from_json(self, payload: bytes) -> Any:
        return bytes(payload)

    def request_from_object(self, request: Any) -> Any:
        try:
            return _encode(request)
        except Exception as exc:
            raise self.bad_request(exc) from None

    def response_to_object(self, result: Any) -> Any:
        try:
            return _decode(self._response_bytes(result))
        except Exception as exc:
            raise self.bad_response(exc) from None

    def response_to_json(self, result: Any) -> bytes:
        try:
            data = self._response_bytes(result)
            _decode(data)  # a response must be valid JSON whichever way it is read
        except Exception as exc:
            raise self.bad_response(exc) from None
        return data

    def _response_bytes(self, result: Any) -> bytes:
        if isinstance(result, bytes | bytearray | memoryview):
            return bytes(result)
        if isinstance(result, str):
            return result.encode()
        raise SerializationError(
            f"handle_request for {self.type_tag!r} must return JSON bytes,"
            f" not {type(result).__name__}"
        )


class BinaryRoute(Route):
    """A binary-transport message id bound to a ``@raw_handler`` method: the request
    arrives as ``bytes`` (the handle made them), the method returns a bytes-like object.
    Both directions are the same for every call form (``call_raw`` runs the JSON-bytes
    path of the transport, ``acall_raw`` its object path)."""

    __slots__ = ("message_id",)

    def __init__(self, message_id: int, method: Callable[..., Any]) -> None:
        label = f"raw message {message_id}"
        params = list(inspect.signature(method).parameters.values())
        if len(params) != 2:
            raise InitializationFailed(
                f"raw handler of message {message_id} must take (self, ctx, payload); it "
                f"takes {len(params) + 1} parameters"
            )
        super().__init__(label, method, bytes)
        self.message_id = message_id
        self.convert_to = None

    def timed_out(self, timeout: float | None) -> Timeout:
        return raw_call_timed_out(self.message_id, timeout)

    def request_from_json(self, payload: bytes) -> Any:
        return payload

    def request_from_object(self, request: Any) -> Any:
        return request

    def response_to_object(self, result: Any) -> Any:
        return self.response_to_json(result)

    def response_to_json(self, result: Any) -> bytes:
        if type(result) is bytes:
            return result
        try:
            with memoryview(result) as view:
                return view.tobytes()
        except (TypeError, ValueError, BufferError):
            raise SerializationError(
                f"the raw handler of message {self.message_id} must return a bytes-like "
                f"object, not {type(result).__name__}"
            ) from None


class RouteTable:
    """All routes of one plugin instance."""

    def __init__(self, plugin: Plugin) -> None:
        self._plugin = plugin
        self.raw = type(plugin).handle_request is not Plugin.handle_request
        self.routes: dict[str, Route] = {}
        self.binary: dict[int, Route] = {}
        """``@raw_handler`` routes by message id (the binary transport)."""
        for klass in reversed(type(plugin).__mro__):
            for attr, value in vars(klass).items():
                tag = getattr(value, HANDLER_TAG_ATTR, None)
                if isinstance(tag, str):
                    method = getattr(plugin, attr)
                    self.routes[tag] = Route(tag, method, _request_annotation(method, tag))
                message_id = getattr(value, RAW_HANDLER_ID_ATTR, None)
                if type(message_id) is int:
                    self.binary[message_id] = BinaryRoute(message_id, getattr(plugin, attr))
        self._handler_tags = tuple(self.routes)

    @property
    def type_tags(self) -> tuple[str, ...]:
        declared = getattr(type(self._plugin), "type_tags", ())
        return tuple(dict.fromkeys([*self._handler_tags, *declared]))

    def schemas(self) -> tuple[HandlerSchema, ...]:
        """The JSON Schemas of the ``@handler`` routes (made once per instance, at start)."""
        return handler_schemas(
            (route.type_tag, route.method, route.request_type)
            for route in self.routes.values()
            if type(route) is Route
        )

    def get(self, type_tag: str) -> Route | None:
        route = self.routes.get(type_tag)
        if route is None and self.raw and isinstance(type_tag, str) and _has_utf8(type_tag):
            route = RawRoute(str(type_tag), self._plugin)
            if len(self.routes) < _RAW_ROUTE_CACHE:
                self.routes[type_tag] = route
        return route

    def clear(self) -> None:
        self.routes.clear()
        self.binary.clear()
        self._plugin = None  # type: ignore[assignment]


def _has_utf8(type_tag: str) -> bool:
    """Whether a tag has a UTF-8 form: one with a lone surrogate names no handler in any
    transport (it could not cross to a worker or a library), so none reaches raw dispatch."""
    if type_tag.isascii():
        return True
    try:
        type_tag.encode()
    except UnicodeEncodeError:
        return False
    return True


def _request_annotation(method: Callable[..., Any], tag: str) -> Any:
    params = list(inspect.signature(method).parameters.values())
    if len(params) != 2:
        raise InitializationFailed(
            f"handler {tag!r} must take (self, ctx, request); it takes {len(params) + 1} parameters"
        )
    request_param = params[1]
    if request_param.annotation is inspect.Parameter.empty:
        return Any
    try:
        hints = typing.get_type_hints(method)
    except Exception as exc:
        raise InitializationFailed(f"handler {tag!r}: cannot resolve annotations: {exc}") from None
    return hints.get(request_param.name, Any)
