"""The gateway's routes: a ``PluginHost`` as the HTTP API of the contract's section 9.

Calls go through ``acall``/``acall_raw``, so the event loop never waits for a plugin; the
slow host operations (reload, a level change that may talk to a worker) run on a thread.
A call watches its connection meanwhile: a client that disconnects cancels it, and the
plugin sees the cancellation. No part of a request's path or body is ever used as a
file-system path: plugin names and tags are only looked up in the host, and the admin
page's files are served by ``StaticFiles`` from the package's own directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .._errors import ConfigError, ErrorCode, PluginError, SerializationError, no_raw_handler
from .._handle import PluginHandle
from .._host import PluginHost
from .._host_status import PluginStatus
from .._lifecycle import LifecycleState
from .auth import BearerTokenGuard
from .errors import BodyTooLarge, error_response, plugin_error_response, unknown_plugin
from .logstream import HISTORY, LogHub, event_stream
from .metrics import CONTENT_TYPE, GatewayMetrics

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Default limit of a request body (413 above it)."""
WATCH_AFTER_S = 0.02
"""A call watches its client's connection once it has run this long (see
``_cancel_on_disconnect``)."""
SYNC_INTERVAL_S = 1.0
"""How often the log hub looks for plugins added to (or removed from) the host."""
STATIC_DIR = Path(__file__).resolve().parent / "static"

_JSON = "application/json"
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_internal_log = logging.getLogger("plugbridge.gateway")
_T = TypeVar("_T")


class ClientGone(Exception):
    """The client disconnected while its call ran; the call was cancelled."""


def create_app(
    host: PluginHost,
    *,
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    log_history: int = HISTORY,
) -> Starlette:
    """The gateway's ASGI application for ``host`` (which stays the caller's to close).

    ``token``: every request but ``/healthz`` and the admin page's files needs
    ``Authorization: Bearer <token>``. ``max_body_bytes``: larger request bodies get 413.
    ``log_history``: records per plugin replayed to a new log stream client.
    """
    if token is not None and not token:
        raise ConfigError("the gateway's token must not be empty (None: no token)")
    if max_body_bytes < 0:
        raise ConfigError(f"max_body_bytes must not be negative, not {max_body_bytes}")
    gateway = Gateway(host, max_body_bytes=max_body_bytes, log_history=log_history)
    middleware = [] if token is None else [Middleware(BearerTokenGuard, token=token)]
    app = Starlette(
        routes=gateway.routes(),
        middleware=middleware,
        lifespan=gateway.lifespan,
        exception_handlers={HTTPException: _http_exception, Exception: _unexpected},
    )
    app.state.gateway = gateway
    return app


class Gateway:
    """The state behind the routes: the host, its log hub, its metrics, the body limit."""

    def __init__(self, host: PluginHost, *, max_body_bytes: int, log_history: int) -> None:
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.logs = LogHub(host, log_history)
        self.logs.sync()  # records from now on are kept, even before the server starts
        self.metrics = GatewayMetrics(host)
        self._durations: dict[tuple[str, str], Any] = {}

    def routes(self) -> list[Route | Mount]:
        return [  # the call routes first: Starlette tries each route in turn
            Route("/v1/plugins/{name}/call/{type_tag:path}", self.call, methods=["POST"]),
            Route("/v1/plugins/{name}/raw/{message_id}", self.call_raw, methods=["POST"]),
            Route("/v1/plugins", self.list_plugins, methods=["GET"]),
            Route("/v1/plugins/{name}", self.plugin_status, methods=["GET"]),
            Route("/v1/plugins/{name}/log-level", self.set_log_level, methods=["PUT"]),
            Route("/v1/plugins/{name}/reload", self.reload, methods=["POST"]),
            Route("/v1/plugins/{name}/logs", self.log_stream, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/", self.admin_page, methods=["GET"]),
            Mount("/static", app=_static_files()),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """While serving: keep the log hub in step with the host's plugins; at the end,
        untap them and end every log stream (the host itself is the caller's)."""
        del app

        async def keep_in_step() -> None:
            while True:
                await asyncio.sleep(SYNC_INTERVAL_S)
                try:
                    self.logs.sync()
                except Exception:  # a bug: log it, keep looking
                    _internal_log.exception("plugbridge gateway: following the host failed")

        follower = asyncio.get_running_loop().create_task(keep_in_step())
        try:
            yield
        finally:
            follower.cancel()
            self.logs.close()

    # -- calls -------------------------------------------------------------------------

    async def call(self, request: Request) -> Response:
        """``POST /v1/plugins/{name}/call/{type_tag}``: JSON in, the response JSON out."""
        name = request.path_params["name"]
        handle = self._handle(name)
        if handle is None:
            return unknown_plugin(name)
        started = time.perf_counter()
        try:
            body = await self._body(request)
            try:
                value = _decode(body) if body.strip() else None
            except msgspec.DecodeError as exc:
                raise SerializationError(f"the request body is not valid JSON: {exc}") from None
            response = await _cancel_on_disconnect(
                request, handle.acall(request.path_params["type_tag"], value)
            )
            content = _encode(response)
        except PluginError as exc:
            return self._timed(name, "call", started, plugin_error_response(exc))
        except BodyTooLarge as exc:
            return exc.response()
        except ClientGone:
            return Response(status_code=499)  # nobody reads it
        return self._timed(name, "call", started, Response(content, media_type=_JSON))

    async def call_raw(self, request: Request) -> Response:
        """``POST /v1/plugins/{name}/raw/{message_id}``: bytes in, bytes out."""
        name = request.path_params["name"]
        handle = self._handle(name)
        if handle is None:
            return unknown_plugin(name)
        started = time.perf_counter()
        try:
            message_id = _message_id(name, request.path_params["message_id"])
            body = await self._body(request)
            content = await _cancel_on_disconnect(request, handle.acall_raw(message_id, body))
        except PluginError as exc:
            return self._timed(name, "raw", started, plugin_error_response(exc))
        except BodyTooLarge as exc:
            return exc.response()
        except ClientGone:
            return Response(status_code=499)
        response = Response(content, media_type="application/octet-stream")
        return self._timed(name, "raw", started, response)

    async def _body(self, request: Request) -> bytes:
        """The request body, refused (``BodyTooLarge``) as soon as it is over the limit;
        ``ClientGone`` if the client leaves first. Read from ``receive`` itself: the
        usual one-message body costs one await (``request.stream()`` builds the headers
        and an async generator for it)."""
        limit = self.max_body_bytes
        for key, value in request.scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise BodyTooLarge(limit)
                break
        receive = request.receive
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge(limit)
        if not message.get("more_body", False):
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _timed(self, name: str, route: str, started: float, response: Response) -> Response:
        key = (name, route)
        observe = self._durations.get(key)
        if observe is None:
            observe = self._durations[key] = self.metrics.call_duration.labels(name, route).observe
        observe(time.perf_counter() - started)
        return response

    # -- status and administration -----------------------------------------------------

    async def list_plugins(self, request: Request) -> Response:
        """``GET /v1/plugins``: every plugin's status."""
        del request
        return _json([status_json(status) for status in self.host.status()])

    async def plugin_status(self, request: Request) -> Response:
        """``GET /v1/plugins/{name}``: one plugin's status."""
        name = request.path_params["name"]
        status = self._status(name)
        return unknown_plugin(name) if status is None else _json(status_json(status))

    async def set_log_level(self, request: Request) -> Response:
        """``PUT /v1/plugins/{name}/log-level`` with ``{"level": "debug"}``; the new status."""
        name = request.path_params["name"]
        handle = self._handle(name)
        if handle is None:
            return unknown_plugin(name)
        try:
            body = await self._body(request)
            try:
                level = msgspec.json.decode(body, type=_LevelChange).level
            except msgspec.ValidationError as exc:
                raise ConfigError(f'the body must be {{"level": "<name>"}}: {exc}') from None
            except msgspec.DecodeError as exc:
                raise SerializationError(f"the request body is not valid JSON: {exc}") from None
            await run_in_threadpool(handle.set_log_level, level)
        except PluginError as exc:
            return plugin_error_response(exc)
        except BodyTooLarge as exc:
            return exc.response()
        except ClientGone:
            return Response(status_code=499)
        return await self.plugin_status(request)

    async def reload(self, request: Request) -> Response:
        """``POST /v1/plugins/{name}/reload``: 200 (and the status) once the new instance
        serves; a failed reload leaves the old one serving and answers its error."""
        name = request.path_params["name"]
        try:
            await run_in_threadpool(self.host.reload, name)
        except KeyError:
            return unknown_plugin(name)
        except PluginError as exc:
            return plugin_error_response(exc)
        return await self.plugin_status(request)

    async def log_stream(self, request: Request) -> Response:
        """``GET /v1/plugins/{name}/logs``: Server-Sent Events, the last records then live
        ones; an ``EventSource`` reconnecting with ``Last-Event-ID`` gets only newer ones."""
        name = request.path_params["name"]
        log = self.logs.get(name)
        if log is None:
            return unknown_plugin(name)
        last = request.headers.get("last-event-id", "")
        return StreamingResponse(
            event_stream(log, name, int(last) if last.isdigit() else 0),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def metrics_text(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text format."""
        del request
        return Response(self.metrics.text(), media_type=CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: 200 while every required plugin is ACTIVE, else 503 naming
        the ones that are not."""
        del request
        statuses = self.host.status()
        failing = [
            {"name": s.name, "state": s.state.name, "error": s.error}
            for s in statuses
            if s.required and s.state is not LifecycleState.ACTIVE
        ]
        if failing or self.host.closed:
            return _json({"status": "unavailable", "failing": failing}, 503)
        return _json({"status": "ok", "plugins": len(statuses)})

    async def openapi(self, request: Request) -> Response:
        """``GET /openapi.json``: the OpenAPI 3 document of this host's plugins."""
        del request
        from .openapi import openapi_document  # imported on first use

        return _json(openapi_document(self.host))

    async def admin_page(self, request: Request) -> Response:
        """``GET /``: the admin page (it asks for the token itself, then uses the API)."""
        del request
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return error_response(404, None, "NOT_FOUND", "the admin page is not installed")
        return FileResponse(page, media_type="text/html")

    # -- lookups -----------------------------------------------------------------------

    def _handle(self, name: str) -> PluginHandle | None:
        try:
            return self.host[name]
        except KeyError:
            return None

    def _status(self, name: str) -> PluginStatus | None:
        """``name``'s status alone: ``host.status()`` would read every plugin's statistics
        (a worker's memory and CPU too) to answer for one."""
        try:
            entry = self.host._entry(name)  # the host's own per-plugin view
        except KeyError:
            return None
        return entry.status()


def _static_files() -> ASGIApp:
    """The admin page's files: ``StaticFiles`` keeps every path inside ``STATIC_DIR``
    (``..`` and links out of it are 404). Without the directory: 404 for everything."""
    if STATIC_DIR.is_dir():
        return StaticFiles(directory=STATIC_DIR)

    async def missing(scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(404, None, "NOT_FOUND", "the admin page is not installed")
        await response(scope, receive, send)

    return missing


class _LevelChange(msgspec.Struct, forbid_unknown_fields=True):
    level: str


def status_json(status: PluginStatus) -> dict[str, Any]:
    """A ``PluginStatus`` as the API writes it: state and level by name, stats as JSON."""
    meta = status.metadata
    return {
        "name": status.name,
        "source": status.source,
        "isolation": status.isolation,
        "state": status.state.name,
        "log_level": status.log_level.name.lower(),
        "required": status.required,
        "metadata": {
            "name": meta.name,
            "version": meta.version,
            "type_tags": list(meta.type_tags),
            "trust": meta.trust,
        },
        "stats": msgspec.to_builtins(status.stats),
        "error": status.error,
    }


def _json(value: Any, status: int = 200) -> Response:
    return Response(_encode(value), status_code=status, media_type=_JSON)


def _message_id(plugin: str, text: str) -> int:
    """A raw route's message id; a path segment that is not one names no raw handler."""
    if text.isdigit() and text.isascii():
        return int(text)  # the handle checks the range
    raise no_raw_handler(plugin, text)


async def _cancel_on_disconnect(request: Request, call: Awaitable[_T]) -> _T:
    """Await ``call``; if the client disconnects first, cancel it (the plugin sees the
    cancellation) and raise ``ClientGone``. The body must have been read already: from
    then on the server's ``receive`` answers only when the connection ends.

    The watch starts only once the call has run ``WATCH_AFTER_S``: a task per call costs
    a tenth of the gateway's throughput, and a call that ends sooner needs no watching
    (a client gone meanwhile is seen at once when the watch starts)."""
    task = asyncio.current_task()
    assert task is not None
    loop = task.get_loop()
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER_S, start_watching)
    try:
        return await call
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A bug in the gateway: 500 in the JSON error shape (uvicorn still logs the traceback)."""
    del request
    return error_response(
        500, int(ErrorCode.INTERNAL_ERROR), ErrorCode.INTERNAL_ERROR.name, f"gateway bug: {exc!r}"
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the gateway's JSON error shape."""
    del request
    assert isinstance(exc, HTTPException)
    names = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    return error_response(
        exc.status_code, None, names.get(exc.status_code, "HTTP_ERROR"), str(exc.detail)
    )
