"""In-process Python plugins: call latency, call_json sizes, load/reload, bursts, logging."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

import plugbridge

from .harness import Row, median, ms, p99, ratio, sample, us, verdict

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello_plugin.py"
SECTION = "in-process"

BENCH_PLUGIN = """
import asyncio, logging
import msgspec
from plugbridge import Plugin, handler

log = logging.getLogger(__name__)

class EchoRequest(msgspec.Struct):
    message: str

class EchoResponse(msgspec.Struct):
    message: str
    length: int

class Bench(Plugin):
    name = "bench"

    @handler("echo")
    def echo(self, ctx, req: EchoRequest) -> EchoResponse:
        return EchoResponse(req.message, len(req.message))

    @handler("aecho")
    async def aecho(self, ctx, req: EchoRequest) -> EchoResponse:
        return EchoResponse(req.message, len(req.message))

    @handler("sleep")
    async def sleep(self, ctx, req: float) -> float:
        await asyncio.sleep(req)
        return req

    @handler("log_filtered")
    def log_filtered(self, ctx, n: int) -> None:
        for _ in range(n):
            log.debug("filtered %d", n)

    @handler("log_delivered")
    def log_delivered(self, ctx, n: int) -> None:
        for _ in range(n):
            log.info("delivered %d", n)
"""


def _direct_plugin(path: Path) -> Any:
    """The same plugin module imported plainly, for the direct-call baselines."""
    spec = importlib.util.spec_from_file_location("bench_direct_plugin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _latency_rows(plugin: plugbridge.PluginHandle, path: Path, rounds: int) -> list[Row]:
    module = _direct_plugin(path)
    direct = module.Bench()
    request = {"message": "hello world"}
    request_type = module.EchoRequest

    def direct_sync() -> object:
        return msgspec.to_builtins(direct.echo(None, msgspec.convert(request, request_type)))

    def direct_async() -> object:
        coro = direct.aecho(None, msgspec.convert(request, request_type))
        try:
            coro.send(None)
        except StopIteration as done:
            return msgspec.to_builtins(done.value)
        raise RuntimeError("unexpected suspension")

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def echo_on_loop() -> object:
        return await direct.aecho(None, msgspec.convert(request, request_type))

    def rcts_round_trip() -> object:
        return asyncio.run_coroutine_threadsafe(echo_on_loop(), loop).result()

    assert plugin.call("echo", request) == direct_sync() == {"message": "hello world", "length": 11}
    samples = {
        "direct sync": sample(direct_sync, rounds),
        "call sync": sample(lambda: plugin.call("echo", request), rounds),
        "direct async": sample(direct_async, rounds),
        "call async": sample(lambda: plugin.call("aecho", request), rounds // 4),
        "rcts": sample(rcts_round_trip, rounds // 4),
    }
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()
    sync_m, base_m = median(samples["call sync"]), median(samples["direct sync"])
    async_m = median(samples["call async"])
    rcts_m = median(samples["rcts"])
    return [
        Row(
            SECTION,
            "direct call of sync echo (baseline)",
            us(base_m),
            us(p99(samples["direct sync"])),
        ),
        Row(
            SECTION,
            "call() sync echo",
            us(sync_m),
            us(p99(samples["call sync"])),
            ratio(sync_m, base_m),
            "≤ 1.5× and ≈ 2 µs",
            verdict(sync_m <= 1.5 * base_m),
        ),
        Row(
            SECTION,
            "direct call of async echo (baseline)",
            us(median(samples["direct async"])),
            us(p99(samples["direct async"])),
        ),
        Row(
            SECTION,
            "run_coroutine_threadsafe round trip (baseline)",
            us(rcts_m),
            us(p99(samples["rcts"])),
        ),
        Row(
            SECTION,
            "call() async echo (instance loop thread)",
            us(async_m),
            us(p99(samples["call async"])),
            f"{ratio(async_m, median(samples['direct async']))} direct; "
            f"{ratio(async_m, rcts_m)} rcts",
            "≤ 12 µs, < rcts",
            verdict(async_m <= 12e-6 and async_m < rcts_m),
        ),
    ]


def _json_rows(plugin: plugbridge.PluginHandle, rounds: int) -> list[Row]:
    payloads = {
        "bench.small": {"key": "user:42", "flags": 1},
        "bench.medium": {
            "user_id": 42,
            "include_fields": ["name", "email", "metadata"],
            "options": {"include_metadata": True, "include_permissions": True, "max_results": 10},
        },
        "bench.large": {
            "query_id": 7,
            "filters": [{"field": "f", "operator": "eq", "value": "v"}] * 5,
            "page_size": 1000,
        },
    }
    rows = []
    for tag, body in payloads.items():
        raw = msgspec.json.encode(body)
        n = rounds if tag != "bench.large" else max(20, rounds // 200)
        values = sample(lambda t=tag, r=raw: plugin.call_json(t, r), n, warmup=10)
        size = len(plugin.call_json(tag, raw))
        name = f"call_json {tag} ({size:,} B response)"
        rows.append(Row(SECTION, name, us(median(values)), us(p99(values))))
    return rows


def _lifecycle_rows(path: Path, quick: bool) -> list[Row]:
    n = 10 if quick else 40
    loads = []
    for _ in range(n):
        start = time.perf_counter()
        handle = plugbridge.load(path)
        loads.append(time.perf_counter() - start)
        handle.shutdown()
    handle = plugbridge.load(path)
    reloads = []
    for _ in range(n):
        start = time.perf_counter()
        handle.reload()
        reloads.append(time.perf_counter() - start)
    shutdowns = []
    handle.shutdown()
    for _ in range(n):
        h = plugbridge.load(path)
        start = time.perf_counter()
        h.shutdown()
        shutdowns.append(time.perf_counter() - start)
    reload_m = median(reloads)
    return [
        Row(SECTION, "load() to ACTIVE", ms(median(loads)), ms(p99(loads))),
        Row(
            SECTION,
            "reload() (start new, swap, stop old)",
            ms(reload_m),
            ms(p99(reloads)),
            "",
            "≤ 20 ms",
            verdict(reload_m <= 0.020),
        ),
        Row(SECTION, "shutdown()", ms(median(shutdowns)), ms(p99(shutdowns))),
    ]


def _burst_row(plugin: plugbridge.PluginHandle, quick: bool) -> Row:
    async def burst() -> float:
        start = time.perf_counter()
        results = await asyncio.gather(*(plugin.acall("sleep", 0.01) for _ in range(1000)))
        elapsed = time.perf_counter() - start
        assert results == [0.01] * 1000
        return elapsed

    walls = [asyncio.run(burst()) for _ in range(3 if quick else 7)]
    wall = median(walls)
    return Row(
        SECTION,
        "1000 concurrent acall of a 10 ms async sleep (wall)",
        ms(wall),
        ms(max(walls)) + " (max)",
        "",
        "≤ 50 ms",
        verdict(wall <= 0.050),
    )


def _logging_rows(path: Path, quick: bool) -> list[Row]:
    n = 20_000 if quick else 100_000
    delivered: list[int] = []

    def callback(level: object, target: str, message: str) -> None:
        delivered.append(1)

    handle = plugbridge.load(path, log_callback=callback, config={"log_level": "info"})
    try:

        def per_record(tag: str) -> float:
            runs = []
            for _ in range(5):
                start = time.perf_counter()
                handle.call(tag, n)
                full = time.perf_counter() - start
                start = time.perf_counter()
                handle.call(tag, 0)
                empty = time.perf_counter() - start
                runs.append((full - empty) / n)
            return statistics.median(runs)

        filtered = per_record("log_filtered")
        delivered_cost = per_record("log_delivered")
        assert len(delivered) == 5 * n
    finally:
        handle.shutdown()
    plain = logging.getLogger("bench.plain.logger")
    plain.setLevel(logging.INFO)
    start = time.perf_counter()
    for _ in range(n):
        plain.debug("filtered %d", n)
    plain_cost = (time.perf_counter() - start) / n
    return [
        Row(SECTION, "stdlib filtered-out log.debug, plain logger (baseline)", us(plain_cost)),
        Row(
            SECTION,
            "filtered-out log.debug inside a plugin",
            us(filtered),
            "",
            ratio(filtered, plain_cost),
        ),
        Row(SECTION, "record delivered to a Python callback", us(delivered_cost)),
    ]


def run(quick: bool = False) -> list[Row]:
    rounds = 5_000 if quick else 50_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_plugin.py"
        path.write_text(textwrap.dedent(BENCH_PLUGIN))
        rows: list[Row] = []
        with plugbridge.load(path) as plugin:
            rows += _latency_rows(plugin, path, rounds)
            rows.append(_burst_row(plugin, quick))
        with plugbridge.load(HELLO) as hello:
            rows += _json_rows(hello, rounds // 5)
        rows += _lifecycle_rows(HELLO, quick)
        rows += _logging_rows(path, quick)
    return rows
