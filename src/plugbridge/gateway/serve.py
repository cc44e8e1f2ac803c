"""Running the gateway: a listening socket, uvicorn, and a drain on SIGINT/SIGTERM.

uvicorn's own signal handling re-raises the signal once it has shut down, which would kill
the process before the host's plugins are stopped. ``DrainingServer`` keeps uvicorn's
shutdown (stop accepting, let the responses in flight finish within the drain timeout)
but not the re-raise, so the caller goes on to stop the plugins and exit 0. Log streams
never finish by themselves, so the shutdown ends them first: otherwise every open admin
page would hold the drain for its whole timeout (which bounds the drain in any case).

The socket is bound by the caller before the plugins load: a port in use is a one-line
error at once, and ``--port 0`` works (the chosen port is announced).
"""

from __future__ import annotations

import contextlib
import math
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from .._host import PluginHost
from .app import Gateway, create_app

DEFAULT_DRAIN_S = 5.0
"""The drain timeout of a host without plugins (else the longest shutdown timeout)."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (``OSError`` if it cannot be)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def drain_timeout(host: PluginHost) -> float:
    """Seconds calls in flight get to finish after a signal: the longest shutdown timeout
    of the host's plugins."""
    timeouts = []
    for name in host.names():
        with contextlib.suppress(KeyError):
            timeouts.append(host[name].config.shutdown_timeout)
    return max(timeouts, default=DEFAULT_DRAIN_S)


class DrainingServer(uvicorn.Server):
    """uvicorn's server without the signal re-raise, ending the log streams at shutdown."""

    def __init__(
        self, config: uvicorn.Config, gateway: Gateway, announce: Callable[[], None] | None
    ) -> None:
        super().__init__(config)
        self._gateway = gateway
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._announce is not None:
            self._announce()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, end every log stream, then uvicorn's drain. A log stream never
        ends by itself: left open, it would hold the drain for its whole timeout and then
        be cut off mid-response. Ended here, its client sees the end at once."""
        for server in self.servers:
            server.close()  # uvicorn closes them again: harmless
        self._gateway.logs.close()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(
    host: PluginHost,
    sock: socket.socket,
    *,
    token: str | None = None,
    announce: Callable[[], None] | None = None,
) -> None:
    """Serve ``create_app(host, token=token)`` on ``sock`` until SIGINT or SIGTERM, then
    drain. ``announce`` is called once the server accepts connections. The host is left
    running: the caller stops it."""
    app = create_app(host, token=token)
    gateway: Gateway = app.state.gateway
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(drain_timeout(host)),
        server_header=False,
    )
    server = DrainingServer(config, gateway, announce)
    server.run(sockets=[sock])
