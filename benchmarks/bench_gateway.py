"""The gateway over HTTP: a small JSON echo through ``create_app(host)`` against a bare
Starlette endpoint that calls the same handler function directly.

Both servers run the same way: uvicorn (the same config: its default loop and HTTP
implementation, no access log) in a child process of its own, on a free 127.0.0.1 port, so
the server's event loop never shares a process (or a GIL) with the load generator. The
gateway serves a ``PluginHost`` with the echo plugin in-process; the bare endpoint imports
the same plugin file and calls its handler function itself (decode, handler, encode).

The load generator is a raw asyncio HTTP/1.1 keep-alive client (lighter than httpx, so the
client is not what is measured; the baseline row says how much of a core it used):
``CONNECTIONS`` connections, each sending its next request when the previous answer is read,
until a round's request count or its time bound is reached.
Each round measures requests per second and every request's latency; the servers alternate
round by round (rounds are short and many: a busy machine disturbs a few of them, not one
server's whole run). Figures: the median round's throughput, p50/p99 of all latencies, and
each ratio as the median of the rounds' ratios (each round against the bare round just
before it). A third server, a bare endpoint awaiting ``handle.acall``, tells the gateway's
own cost from that of the call's hop to the plugin's threads.

``python -m benchmarks --only bench_gateway [--quick]`` runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from .harness import Row, median, ms, p99, verdict

ROOT = Path(__file__).resolve().parent.parent
SECTION = "gateway"
CONNECTIONS = 16
TARGET = 0.7
"""The gateway's throughput against the bare endpoint's."""
REQUEST = b'{"message": "hello world"}'
EXPECTED = b'{"message":"hello world","length":11}'

ECHO_PLUGIN = """
import msgspec
from plugbridge import Plugin, handler


class EchoRequest(msgspec.Struct):
    message: str


class EchoResponse(msgspec.Struct):
    message: str
    length: int


class Echo(Plugin):
    name = "echo"

    @handler("echo")
    def echo(self, ctx, req: EchoRequest) -> EchoResponse:
        return EchoResponse(req.message, len(req.message))
"""


# -- the servers (each in a child process: python -m benchmarks.bench_gateway KIND PLUGIN) --


def _gateway_app(plugin: Path) -> Any:
    from plugbridge import PluginHost
    from plugbridge.gateway import create_app

    host = PluginHost()
    host.start()
    host.add("echo", str(plugin))
    return create_app(host)


def _bare_app(plugin: Path) -> Any:
    """A Starlette endpoint calling the plugin's handler function itself."""
    import msgspec
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    spec = importlib.util.spec_from_file_location("bench_gateway_plugin", plugin)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    instance = module.Echo()
    echo = module.Echo.echo  # the handler function the plugin's handler table holds
    decoder = msgspec.json.Decoder(module.EchoRequest)
    encode = msgspec.json.Encoder().encode

    async def call(request: Request) -> Response:
        body = await request.body()
        response = echo(instance, None, decoder.decode(body))
        return Response(encode(response), media_type="application/json")

    return Starlette(routes=[Route("/v1/plugins/echo/call/echo", call, methods=["POST"])])


def _bare_acall_app(plugin: Path) -> Any:
    """A Starlette endpoint calling the plugin through ``handle.acall``: the gateway's own
    cost is what separates it from this one (the rest is the call's hop to the plugin's
    threads, which ``acall`` makes so that the server's loop never runs a handler)."""
    import msgspec
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from plugbridge import PluginHost

    host = PluginHost()
    host.start()
    host.add("echo", str(plugin))
    handle = host["echo"]
    decode = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode

    async def call(request: Request) -> Response:
        response = await handle.acall("echo", decode(await request.body()))
        return Response(encode(response), media_type="application/json")

    return Starlette(routes=[Route("/v1/plugins/echo/call/echo", call, methods=["POST"])])


APPS = {"bare": _bare_app, "acall": _bare_acall_app, "gateway": _gateway_app}


def _serve(kind: str, plugin: Path) -> None:
    import uvicorn

    app = APPS[kind](plugin)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets)
        print(sock.getsockname()[1], flush=True)  # the parent waits for the port

    server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])


class ServerProcess:
    """One server in a child process; its port once it accepts connections."""

    def __init__(self, kind: str, plugin: Path) -> None:
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_gateway", kind, str(plugin)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the {kind} server did not start")
        self.port = int(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the load generator -----------------------------------------------------------------


async def _connection(
    port: int, budget: list[int], deadline: float, latencies: list[float]
) -> None:
    """One keep-alive connection sending requests back to back while budget remains."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /v1/plugins/echo/call/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(REQUEST), REQUEST)
    )
    clock = time.perf_counter
    try:
        while budget[0] > 0 and clock() < deadline:
            budget[0] -= 1
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(clock() - started)
            if not head.startswith(b"HTTP/1.1 200") or body != EXPECTED:
                raise RuntimeError(f"unexpected answer: {head!r} {body!r}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _round(port: int, requests: int, seconds: float) -> tuple[float, list[float]]:
    """Requests per second and the latencies of one round."""
    budget = [requests]
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(port, budget, deadline, latencies) for _ in range(CONNECTIONS))
    )
    return len(latencies) / (time.perf_counter() - started), latencies


def _new_loop() -> asyncio.AbstractEventLoop:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(quick: bool = False) -> list[Row]:
    rounds, requests, seconds = (6, 2_000, 10.0) if quick else (15, 5_000, 30.0)
    with tempfile.TemporaryDirectory() as tmp:
        plugin = Path(tmp) / "echo_plugin.py"
        plugin.write_text(textwrap.dedent(ECHO_PLUGIN))
        servers = [ServerProcess(kind, plugin) for kind in APPS]
        loop = _new_loop()
        try:
            throughput: dict[str, list[float]] = {s.kind: [] for s in servers}
            latencies: dict[str, list[float]] = {s.kind: [] for s in servers}
            for server in servers:  # warm both up: imports, caches, TCP
                loop.run_until_complete(_round(server.port, 1_000, seconds))
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(rounds):
                for server in servers:
                    rate, samples = loop.run_until_complete(_round(server.port, requests, seconds))
                    throughput[server.kind].append(rate)
                    latencies[server.kind] += samples
            client_cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)
        finally:
            loop.close()
            for server in servers:
                server.stop()
    bare = median(throughput["bare"])

    def against_bare(kind: str) -> float:
        """The median of the rounds' ratios (each round against the bare one just before)."""
        pairs = zip(throughput[kind], throughput["bare"], strict=True)
        return median([rate / baseline for rate, baseline in pairs])

    def latency(kind: str) -> str:
        return f"p50 {ms(median(latencies[kind]))}, p99 {ms(p99(latencies[kind]))}"

    setup = (
        f"{CONNECTIONS} connections, {rounds} rounds of {requests:,}; "
        f"the client used {client_cpu:.0%} of a core"
    )
    acall, gateway = against_bare("acall"), against_bare("gateway")
    return [
        Row(
            SECTION,
            f"bare Starlette endpoint calling the handler function (baseline; {setup})",
            f"{bare:,.0f} req/s",
            latency("bare"),
        ),
        Row(
            SECTION,
            "bare Starlette endpoint calling handle.acall (the gateway minus its own work)",
            f"{median(throughput['acall']):,.0f} req/s",
            latency("acall"),
            f"{acall:.2f}× throughput",
        ),
        Row(
            SECTION,
            "gateway POST /v1/plugins/echo/call/echo (in-process plugin)",
            f"{median(throughput['gateway']):,.0f} req/s",
            latency("gateway"),
            f"{gateway:.2f}× throughput",
            f"≥ {TARGET}× bare",
            verdict(gateway >= TARGET),
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in APPS:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        _serve(sys.argv[1], Path(sys.argv[2]))
    else:
        from .__main__ import table

        print(table(run(quick="--quick" in sys.argv)))
