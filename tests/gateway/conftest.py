"""Fixtures for the gateway's tests: a real uvicorn server on a free loopback port.

``serve_gateway(host, **create_app_kwargs) -> GatewayServer`` (session scope, so module-
scoped fixtures may use it) builds ``create_app(host, ...)`` and serves it with uvicorn in
a thread of this process, on ``127.0.0.1`` and a port the system picked (the socket is bound
before uvicorn starts, so no other process can take it meanwhile). It returns once the
server accepts connections; it is the ``DrainingServer`` that ``plugbridge serve`` runs
(its log streams end when it stops). ``GatewayServer.url`` is the base URL, ``.client()`` an
``httpx.Client`` on it with a timeout on every request (``token=`` adds the bearer header),
``.stop()`` ends it (every server still running is stopped at the end of the session). The
host stays the caller's: close it yourself, after the server.

``serving(serve_gateway, name, source, **host_kwargs)``: a context manager giving a server
of a fresh started ``PluginHost`` with one plugin; the server then the host are stopped.

``hello_gateway`` (module scope) serves a ``PluginHost`` with ``examples/hello`` as the
plugin ``hello`` (in-process), no token: ``hello_gateway.host`` is that host.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from plugbridge import PluginHost
from plugbridge.gateway import create_app
from plugbridge.gateway.serve import DrainingServer

from ..conftest import HELLO

REQUEST_TIMEOUT = 30.0
"""Seconds any one request of a test may take (generous: the suite runs under load)."""
GRACEFUL_SHUTDOWN_S = 10
"""uvicorn's drain bound when a test server stops (responses still running are cut off)."""


class GatewayServer:
    """One gateway served by uvicorn on a thread of this process."""

    def __init__(self, host: PluginHost, app: Any) -> None:
        self.host = host
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        self._server = DrainingServer(config, app.state.gateway, None)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])),
            name=f"gateway-server-{self.port}",
            daemon=True,
        )

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway's uvicorn server did not start")
            time.sleep(0.01)
        return self

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT, headers=headers, **kwargs)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(REQUEST_TIMEOUT)
        self._socket.close()
        assert not self._thread.is_alive(), "the gateway's server did not stop"


@pytest.fixture(scope="session")
def serve_gateway() -> Iterator[Callable[..., GatewayServer]]:
    """``serve_gateway(host, token=None, max_body_bytes=..., ...)``: a started server."""
    running: list[GatewayServer] = []

    def serve(host: PluginHost, **app_kwargs: Any) -> GatewayServer:
        server = GatewayServer(host, create_app(host, **app_kwargs)).start()
        running.append(server)
        return server

    yield serve
    for server in running:
        if server._thread.is_alive():
            server.stop()


@contextlib.contextmanager
def serving(
    serve_gateway: Callable[..., GatewayServer], name: str, source: str, **host_kwargs: Any
) -> Iterator[GatewayServer]:
    """A server of a fresh started host with the one plugin ``name`` (from ``source``)."""
    host = PluginHost(**host_kwargs)
    host.start()
    try:
        host.add(name, source)
        server = serve_gateway(host)
        try:
            yield server
        finally:
            server.stop()
    finally:
        host.close()


@pytest.fixture(scope="module")
def hello_gateway(
    serve_gateway: Callable[..., GatewayServer],
) -> Iterator[GatewayServer]:
    """The hello example as plugin ``hello`` of a host, served without a token."""
    with serving(serve_gateway, "hello", str(HELLO)) as server:
        yield server
