"""Stopping a gateway while a client follows a log stream: the stream ends, the client
sees a clean end of the response, and the server stops at once instead of waiting for a
stream that never finishes by itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from plugbridge import PluginHost

from ..conftest import HELLO
from .conftest import GRACEFUL_SHUTDOWN_S, REQUEST_TIMEOUT, GatewayServer


@pytest.fixture
def host() -> Iterator[PluginHost]:
    host = PluginHost()
    host.start()
    try:
        host.add("hello", str(HELLO))
        yield host
    finally:
        host.close()


def test_stop_ends_an_open_log_stream_at_once(
    host: PluginHost, serve_gateway: Callable[..., GatewayServer]
) -> None:
    server = serve_gateway(host)
    stopped: list[float] = []

    def stop() -> None:
        began = time.monotonic()
        server.stop()
        stopped.append(time.monotonic() - began)

    stopper = threading.Thread(target=stop)
    with server.client() as http, http.stream("GET", "/v1/plugins/hello/logs") as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith(": log stream of plugin")
        stopper.start()
        rest = list(lines)  # a cut-off response raises here; a timeout too
    stopper.join(REQUEST_TIMEOUT)
    assert not stopper.is_alive()
    assert [line for line in rest if line] == []
    assert stopped, "stop() raised: the server did not stop"
    # at once: well under the drain's bound, which would cut the stream off instead
    assert stopped[0] < GRACEFUL_SHUTDOWN_S / 2
