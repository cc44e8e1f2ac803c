"""A log stream client that reads too slowly loses records, and is told how many where
they went missing: a raw socket with a small receive buffer opens the stream and reads
nothing while the plugin logs far more than the stream's queue holds; then it reads
everything. Every record logged is either delivered, in order, or counted by a drop
notice standing exactly where the missing records were."""

from __future__ import annotations

import json
import socket
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plugbridge.gateway.logstream import QUEUE_LIMIT

from .conftest import REQUEST_TIMEOUT, GatewayServer, serving

SPAMMER = """
    import logging

    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)


    class Spammer(Plugin):
        name = "spammer"

        @handler("spam")
        def spam(self, ctx, req: dict) -> int:
            for number in range(req["first"], req["first"] + req["count"]):
                log.warning("record %d %s", number, "x" * req["padding"])
            return req["count"]
"""

LOGGED = 5 * QUEUE_LIMIT
PADDING = 2000
"""Bytes per record: ``LOGGED`` of them are far more than the socket buffers hold."""


@pytest.fixture
def server(tmp_path: Path, serve_gateway: Callable[..., GatewayServer]) -> Iterator[GatewayServer]:
    path = tmp_path / "spammer_plugin.py"
    path.write_text(textwrap.dedent(SPAMMER))
    # log_callback: not the stdlib logging, thousands of records
    with serving(serve_gateway, "spammer", str(path), log_callback=_discard) as server:
        yield server


def _discard(level: object, target: str, message: str) -> None:
    del level, target, message


class RawEventStream:
    """``GET /v1/plugins/{name}/logs`` over a plain socket whose receive buffer is small,
    so the server cannot push much ahead of what this client reads."""

    def __init__(self, port: int, plugin: str) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._sock.settimeout(REQUEST_TIMEOUT)
        self._sock.connect(("127.0.0.1", port))
        self._sock.sendall(
            b"GET /v1/plugins/%s/logs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % plugin.encode()
        )
        self._buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding: chunked" in head.lower(), head

    def _until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            received = self._sock.recv(65536)
            assert received, "the server closed the stream"
            self._buffer += received
        found, self._buffer = self._buffer.split(marker, 1)
        return found

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            received = self._sock.recv(65536)
            assert received, "the server closed the stream"
            self._buffer += received
        found, self._buffer = self._buffer[:size], self._buffer[size:]
        return found

    def events(self) -> Iterator[str]:
        """Each event's text (a chunk of the response holds whole events)."""
        while True:
            size = int(self._until(b"\r\n"), 16)
            if size == 0:
                return
            chunk = self._exactly(size + 2)[:-2].decode()
            yield from (event for event in chunk.split("\n\n") if event)

    def close(self) -> None:
        self._sock.close()


def _data(event: str) -> dict[str, Any] | None:
    for line in event.splitlines():
        if line.startswith("data: "):
            record: dict[str, Any] = json.loads(line[len("data: ") :])
            return record
    return None  # a comment


def test_a_slow_client_is_told_how_many_records_it_lost_and_where(
    server: GatewayServer,
) -> None:
    stream = RawEventStream(server.port, "spammer")
    try:
        events = stream.events()
        assert next(events).startswith(": log stream of plugin")  # subscribed
        with server.client() as http:
            spam = {"first": 0, "count": LOGGED, "padding": PADDING}
            assert http.post("/v1/plugins/spammer/call/spam", json=spam).json() == LOGGED
            expected = 0  # the number of the next record this client should see
            notices: list[int] = []
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while expected < LOGGED:
                assert time.monotonic() < deadline, f"stuck before record {expected}"
                record = _data(next(events))
                if record is None:
                    continue
                if record["target"] == "plugbridge":
                    assert record["level"] == "warn"
                    lost = int(record["message"].split()[0])
                    assert record["message"] == (
                        f"{lost} log records were dropped: this client read them too slowly"
                    )
                    assert lost > 0
                    notices.append(lost)
                    expected += lost
                    continue
                assert record["message"].split()[:2] == ["record", str(expected)]
                expected += 1
            assert expected == LOGGED
            assert notices, "nothing was lost: the client was not slow enough to test this"
            assert sum(notices) <= LOGGED - QUEUE_LIMIT  # a full queue's worth is delivered
            # once caught up, the stream is live again, losing nothing
            after = {"first": LOGGED, "count": 1, "padding": 0}
            assert http.post("/v1/plugins/spammer/call/spam", json=after).json() == 1
            record = _data(next(events))
            while record is None:
                record = _data(next(events))
        assert record["message"].split()[:2] == ["record", str(LOGGED)]
    finally:
        stream.close()
