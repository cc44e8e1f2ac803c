"""Who may talk to the gateway: a bearer token, and the loopback-only default.

With a token, every request needs ``Authorization: Bearer <token>`` except ``/healthz``
(probes carry no secrets) and the admin page's own files (``/`` and ``/static/...``: the
page holds no data, it asks the user for the token and sends it with every data request).
A browser's ``EventSource`` cannot send headers, so the log stream route alone also takes
the token as its ``token`` query parameter. Tokens are compared with
``hmac.compare_digest`` on bytes: the time taken says nothing about how much matched.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

OPEN_PATHS = frozenset({"/healthz", "/"})
"""Paths served without a token (besides everything under ``/static/``)."""
_SCHEME = b"bearer "
LOGS_PATH = re.compile(r"^/v1/plugins/[^/]+/logs$")
"""The one route that also takes the token as a query parameter (for ``EventSource``)."""


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class BearerTokenGuard:
    """ASGI middleware answering 401 to a request without the right token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the gateway's token must not be empty")
        self.app = app
        self._token = token.encode()
        self._expected = _SCHEME + self._token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            None,
            "UNAUTHORIZED",
            "this gateway needs 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in OPEN_PATHS or path.startswith("/static/"):
            return True
        for key, value in scope["headers"]:
            if key == b"authorization":
                given = value.strip()  # the scheme is case-blind (RFC 9110), the token not
                return hmac.compare_digest(given[:7].lower() + given[7:], self._expected)
        if LOGS_PATH.match(path):
            query = scope.get("query_string", b"").decode("latin-1")
            for key, value in parse_qsl(query):
                if key == "token":
                    return hmac.compare_digest(value.encode(), self._token)
        return False
