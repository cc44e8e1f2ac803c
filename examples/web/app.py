"""A Starlette app that serves the hello plugin twice: in this process and in a worker process.

The plugins are loaded when the app starts (its lifespan), called from the routes with
``await plugin.acall(...)``, and shut down when the app stops. Run it with

    python examples/web/app.py --port 8000      # or: uvicorn app:app --app-dir examples/web

and see examples/web/README.md for the routes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import plugbridge
from plugbridge import LogLevel

HELLO = Path(__file__).resolve().parent.parent / "hello" / "hello_plugin.py"
ISOLATIONS = ("inprocess", "process")

STATUS = {
    plugbridge.ConfigError: 400,
    plugbridge.SerializationError: 400,
    plugbridge.UnknownMessageType: 404,
    plugbridge.InvalidState: 409,
    plugbridge.TooManyRequests: 429,
    plugbridge.PluginCrashed: 502,
    plugbridge.Timeout: 504,
}
"""HTTP status per plugbridge error class; any other PluginError is a 500."""


def console(name: str) -> plugbridge.LogCallback:
    """A log callback printing the plugin's records, tagged with the instance's name."""

    def callback(level: LogLevel, target: str, message: str) -> None:
        print(f"[{name}] {level.name} {target}: {message}", flush=True)

    return callback


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    # load() and shutdown() block until the instance is up (or down): run them on a
    # thread so the event loop stays free, and load in the process that serves (after
    # any fork), which the lifespan guarantees.
    plugins: dict[str, plugbridge.PluginHandle] = {}
    try:
        for isolation in ISOLATIONS:
            plugins[isolation] = await asyncio.to_thread(
                plugbridge.load, HELLO, isolation=isolation, log_callback=console(isolation)
            )
        print(f"web example: plugins loaded: {', '.join(plugins)}", flush=True)
        yield {"plugins": plugins}
    finally:
        for name, plugin in plugins.items():
            await asyncio.to_thread(plugin.shutdown)
            print(f"web example: plugin {name} shut down: {plugin.state.name}", flush=True)


def error_response(error: plugbridge.PluginError) -> JSONResponse:
    body = {"error": {"code": int(error.code), "name": error.code.name, "message": error.message}}
    return JSONResponse(body, status_code=STATUS.get(type(error), 500))


async def list_plugins(request: Request) -> JSONResponse:
    plugins: dict[str, plugbridge.PluginHandle] = request.state.plugins
    return JSONResponse(
        {
            name: {
                "name": p.metadata.name,
                "version": p.metadata.version,
                "state": p.state.name,
                "type_tags": list(p.metadata.type_tags),
            }
            for name, p in plugins.items()
        }
    )


async def call_plugin(request: Request) -> JSONResponse:
    """POST /plugins/{isolation}/{type_tag} with a JSON body: the plugin's JSON answer."""
    plugin = request.state.plugins.get(request.path_params["isolation"])
    if plugin is None:
        return JSONResponse({"error": {"message": "no such plugin"}}, status_code=404)
    try:
        payload = await request.json()
    except json.JSONDecodeError:
        return JSONResponse({"error": {"message": "the body is not JSON"}}, status_code=400)
    try:
        answer = await plugin.acall(request.path_params["type_tag"], payload, timeout=10)
    except plugbridge.PluginError as error:
        return error_response(error)
    return JSONResponse(answer)


async def greet(request: Request) -> JSONResponse:
    """GET /greet/{name}: both instances greet, concurrently."""
    plugins: dict[str, plugbridge.PluginHandle] = request.state.plugins
    name = request.path_params["name"]
    answers = await asyncio.gather(*(p.acall("greet", {"name": name}) for p in plugins.values()))
    greetings = {isolation: a["greeting"] for isolation, a in zip(plugins, answers, strict=True)}
    return JSONResponse(greetings)


app = Starlette(
    routes=[
        Route("/plugins", list_plugins),
        Route("/plugins/{isolation}/{type_tag}", call_plugin, methods=["POST"]),
        Route("/greet/{name}", greet),
    ],
    lifespan=lifespan,
)


def main() -> None:
    parser = argparse.ArgumentParser(description="plugbridge's web example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # uvicorn stops cleanly on SIGINT/SIGTERM (lifespan end included), then raises the
    # signal again so the process dies of it (status 143 for SIGTERM). Here a signal is a
    # normal way to stop: it ends the process with status 0 instead.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _exit_cleanly)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port))
    server.run()
    sys.exit(0 if server.started else 1)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
