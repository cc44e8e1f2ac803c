"""isolation="process": echo latency against a raw socketpair round trip, throughput,
worker start / reload / shutdown time, and memory per worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import plugbridge
from plugbridge._worker.protocol import Call, Result

from .harness import Row, median, ms, p99, ratio, sample, us, verdict

SECTION = "worker"

PLUGIN = """
import os
import msgspec
from plugbridge import Plugin, handler

class EchoRequest(msgspec.Struct):
    message: str

class Bench(Plugin):
    name = "bench-worker"

    @handler("echo")
    def echo(self, ctx, req: EchoRequest) -> dict:
        return {"message": req.message, "length": len(req.message)}

    @handler("aecho")
    async def aecho(self, ctx, req: EchoRequest) -> dict:
        return {"message": req.message, "length": len(req.message)}

    @handler("pid")
    def pid(self, ctx, req) -> int:
        return os.getpid()
"""

RAW_ECHO_CHILD = """
import socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
reply = bytes.fromhex(sys.argv[2])
buf = bytearray(65536)
view = memoryview(buf)
while True:
    got = 0
    while got < 4:
        n = sock.recv_into(view[got:])
        if not n:
            sys.exit(0)
        got += n
    size = int.from_bytes(buf[:4], "big") + 4
    while got < size:
        got += sock.recv_into(view[got:])
    sock.sendall(reply)
"""

REQUEST = {"message": "hello world"}


def _raw_round_trip(rounds: int) -> list[float]:
    """The same frames our echo call sends and receives, echoed by a bare Python process."""
    import msgspec

    encoder = msgspec.msgpack.Encoder()
    body = encoder.encode(Call(1, "echo", b'{"message":"hello world"}', None, False))
    reply_body = encoder.encode(Result(1, b'{"message":"hello world","length":11}', True))
    frame = len(body).to_bytes(4, "big") + body
    reply = len(reply_body).to_bytes(4, "big") + reply_body
    host, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW_ECHO_CHILD, str(child.fileno()), reply.hex()],
        pass_fds=[child.fileno()],
    )
    child.close()
    buf = bytearray(65536)
    view = memoryview(buf)
    want = len(reply)

    def round_trip() -> None:
        host.sendall(frame)
        got = 0
        while got < want:
            got += host.recv_into(view[got:])

    try:
        return sample(round_trip, rounds)
    finally:
        host.shutdown(socket.SHUT_RDWR)
        host.close()
        proc.wait(5)


def _throughput(plugin: plugbridge.PluginHandle, callers: int, per_caller: int) -> float:
    barrier = threading.Barrier(callers + 1)

    def run() -> None:
        barrier.wait()
        for _ in range(per_caller):
            plugin.call("echo", REQUEST)

    threads = [threading.Thread(target=run) for _ in range(callers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return callers * per_caller / (time.perf_counter() - start)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(quick: bool) -> list[Row]:
    rounds = 1000 if quick else 5000
    lifecycle_rounds = 5 if quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "bench_worker_plugin.py"
        source.write_text(textwrap.dedent(PLUGIN))
        raw = _raw_round_trip(rounds)
        with plugbridge.load(source, isolation="process") as plugin:
            assert plugin.call("echo", REQUEST) == {"message": "hello world", "length": 11}
            sync_s = sample(lambda: plugin.call("echo", REQUEST), rounds)
            async_s = sample(lambda: plugin.call("aecho", REQUEST), rounds // 2)
            per_second = _throughput(plugin, 8, 200 if quick else 1000)
            rss = _rss_kib(plugin.call("pid"))
            reloads = sample(plugin.reload, lifecycle_rounds, warmup=1)
        starts: list[float] = []
        stops: list[float] = []
        for _ in range(lifecycle_rounds):
            begin = time.perf_counter()
            handle = plugbridge.load(source, isolation="process")
            starts.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            handle.shutdown()
            stops.append(time.perf_counter() - begin)
    raw_m, sync_m, async_m = median(raw), median(sync_s), median(async_s)
    return [
        Row(SECTION, "raw socketpair round trip, same bytes (baseline)", us(raw_m), us(p99(raw))),
        Row(
            SECTION,
            "call() sync echo, process mode",
            us(sync_m),
            us(p99(sync_s)),
            ratio(sync_m, raw_m),
            "≤ 1.3× raw",
            verdict(sync_m <= 1.3 * raw_m),
        ),
        Row(
            SECTION,
            "call() async echo, process mode",
            us(async_m),
            us(p99(async_s)),
            ratio(async_m, raw_m),
        ),
        Row(SECTION, "throughput, 8 threads calling echo", f"{per_second:,.0f} calls/s"),
        Row(SECTION, "worker start (load)", ms(median(starts)), ms(p99(starts))),
        Row(
            SECTION,
            "reload (new worker, swap, stop old)",
            ms(median(reloads)),
            ms(p99(reloads)),
            target="≤ 300 ms",
            verdict=verdict(median(reloads) <= 0.3),
        ),
        Row(SECTION, "shutdown", ms(median(stops)), ms(p99(stops))),
        Row(SECTION, "memory per worker (RSS)", f"{rss / 1024:.1f} MiB"),
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
    os._exit(0)
