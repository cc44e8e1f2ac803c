"""Routes: how a type tag reaches plugin code, with msgspec validation on the way in and out."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from .._errors import InitializationFailed, SerializationError
from .._json import decode_json, encode_json, encode_unchecked, to_builtins
from .._plugin import HANDLER_TAG_ATTR, Plugin, PluginContext

_RAW_ROUTE_CACHE = 1024
PLAIN_TYPES = frozenset({dict, list, str, int, float, bool, type(None)})


class Route:
    """A type tag bound to a ``@handler`` method, validating against its annotation."""

    __slots__ = (
        "_decoder",
        "convert_to",
        "is_async",
        "method",
        "request_type",
        "to_json",
        "to_object",
        "type_tag",
    )

    def __init__(self, type_tag: str, method: Callable[..., Any], request_type: Any) -> None:
        self.type_tag = type_tag
        self.method = method
        self.is_async = inspect.iscoroutinefunction(method)
        self.request_type = request_type
        self.convert_to: Any = None if request_type is Any else request_type
        """For the inline fast path: plain requests go straight to ``msgspec.convert``."""
        self.to_object: Callable[[Any], Any] = msgspec.to_builtins
        """Response to JSON builtins (may raise TypeError/EncodeError: see ``encode_error``)."""
        self.to_json: Callable[[Any], bytes] = encode_unchecked
        try:
            self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(request_type)
        except TypeError as exc:
            raise InitializationFailed(
                f"handler {type_tag!r}: request annotation {request_type!r} is not supported: {exc}"
            ) from None

    def invalid_request(self, exc: Exception) -> SerializationError:
        return SerializationError(f"invalid request for {self.type_tag!r}: {exc}")

    def invalid_response(self, exc: Exception) -> SerializationError:
        return SerializationError(f"response of {self.type_tag!r} is not JSON-serializable: {exc}")

    def request_from_json(self, payload: bytes) -> Any:
        try:
            return self._decoder.decode(payload)
        except msgspec.ValidationError as exc:
            raise SerializationError(f"invalid request for {self.type_tag!r}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise SerializationError(
                f"request for {self.type_tag!r} is not valid JSON: {exc}"
            ) from None

    def request_from_object(self, request: Any) -> Any:
        """Validate a Python request exactly as if it had crossed the wire as JSON."""
        if type(request) not in PLAIN_TYPES:
            request = to_builtins(request)
        if self.request_type is Any:
            return request
        try:
            return msgspec.convert(request, self.request_type)
        except msgspec.ValidationError as exc:
            raise self.invalid_request(exc) from None

    def response_to_object(self, result: Any) -> Any:
        try:
            return self.to_object(result)
        except (TypeError, msgspec.EncodeError) as exc:
            raise self.invalid_response(exc) from None

    def response_to_json(self, result: Any) -> bytes:
        try:
            return self.to_json(result)
        except (TypeError, msgspec.EncodeError) as exc:
            raise self.invalid_response(exc) from None


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
        self.to_object = self.response_to_object
        self.to_json = self.response_to_json

    def request_from_json(self, payload: bytes) -> Any:
        return bytes(payload)

    def request_from_object(self, request: Any) -> Any:
        return encode_json(request)

    def response_to_object(self, result: Any) -> Any:
        return decode_json(_response_bytes(self.type_tag, result))

    def response_to_json(self, result: Any) -> bytes:
        data = _response_bytes(self.type_tag, result)
        decode_json(data)  # a response must be valid JSON whichever way it is read
        return data


def _response_bytes(type_tag: str, result: Any) -> bytes:
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result)
    if isinstance(result, str):
        return result.encode()
    raise SerializationError(
        f"handle_request for {type_tag!r} must return JSON bytes, not {type(result).__name__}"
    )


class RouteTable:
    """All routes of one plugin instance."""

    def __init__(self, plugin: Plugin) -> None:
        self._plugin = plugin
        self.raw = type(plugin).handle_request is not Plugin.handle_request
        self.routes: dict[str, Route] = {}
        for klass in reversed(type(plugin).__mro__):
            for attr, value in vars(klass).items():
                tag = getattr(value, HANDLER_TAG_ATTR, None)
                if isinstance(tag, str):
                    method = getattr(plugin, attr)
                    self.routes[tag] = Route(tag, method, _request_annotation(method, tag))
        self._handler_tags = tuple(self.routes)

    @property
    def type_tags(self) -> tuple[str, ...]:
        declared = getattr(type(self._plugin), "type_tags", ())
        return tuple(dict.fromkeys([*self._handler_tags, *declared]))

    def get(self, type_tag: str) -> Route | None:
        route = self.routes.get(type_tag)
        if route is None and self.raw and isinstance(type_tag, str):
            route = RawRoute(type_tag, self._plugin)
            if len(self.routes) < _RAW_ROUTE_CACHE:
                self.routes[type_tag] = route
        return route

    def clear(self) -> None:
        self.routes.clear()
        self._plugin = None  # type: ignore[assignment]


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
