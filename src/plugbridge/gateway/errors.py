"""Failures as HTTP answers: a ``PluginError``'s status, and the one JSON error body.

Every error the gateway sends has the body ``{"error": {"code": N, "name": "...",
"message": "..."}}``: ``code`` and ``name`` are the ``ErrorCode`` of a ``PluginError``,
or ``null`` and a gateway name (``UNKNOWN_PLUGIN``, ``UNAUTHORIZED``, ``BODY_TOO_LARGE``,
``NOT_FOUND``...) for a failure that never reached a plugin. One table maps codes to
statuses, so a given failure reads the same on every route.
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from .._errors import ErrorCode, PluginError

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.CONFIG_ERROR: 400,
    ErrorCode.SERIALIZATION_ERROR: 400,
    ErrorCode.UNKNOWN_MESSAGE_TYPE: 404,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.PLUGIN_CRASHED: 502,
    ErrorCode.TIMEOUT: 504,
}
"""HTTP status of each error code the client can act on; every other code is a 500."""

_encode = msgspec.json.Encoder().encode


def http_status(exc: PluginError) -> int:
    """The HTTP status that answers a call failing with ``exc``."""
    return STATUS_BY_CODE.get(exc.code, 500)


def error_response(
    status: int, code: int | None, name: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """The gateway's JSON error body with ``status``."""
    body = _encode({"error": {"code": code, "name": name, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def plugin_error_response(exc: PluginError) -> Response:
    """A ``PluginError`` as its status and the JSON error body naming its code."""
    return error_response(http_status(exc), int(exc.code), exc.code.name, exc.message)


def unknown_plugin(name: str) -> Response:
    """404 for a plugin name the host does not have (``code`` null: no plugin answered)."""
    return error_response(404, None, "UNKNOWN_PLUGIN", f"this host has no plugin named {name!r}")


class BodyTooLarge(Exception):
    """A request body over the gateway's limit (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over the limit of {limit} bytes")
        self.limit = limit

    def response(self) -> Response:
        return error_response(413, None, "BODY_TOO_LARGE", str(self))
