"""isolation="ray": echo latency against a bare Ray actor round trip, ``acall`` throughput
with replicas=4 against one actor, actor start / reload / shutdown time, memory per actor.

The section starts one local Ray of its own (2 CPUs, no dashboard, workers' output not
forwarded; its files under a temp directory of its own, so it never meets another Ray on
the machine) and shuts it down (and removes that directory) at the end.

The baseline is what a user would write without plugbridge: an *async* Ray actor (as
plugbridge's actor is) whose method takes the request as JSON bytes and returns the reply
as JSON bytes (msgspec, the same request and reply as the plugin's echo), called with
``ray.get`` from the host thread, the host encoding the request and decoding the reply as
``handle.call`` does. One more bare method says where a gap comes from: the same echo run
on the actor's thread pool (as plugbridge runs a sync handler). All are sampled in
alternating blocks, so a busy machine disturbs them alike. For ``acall`` throughput, bare
actor calls awaited from the same loop are a reference, and the host process's CPU per
call says whether the host is the limit (then replicas cannot help). The bare actor's
start (create, first answer) and RSS are measured the same way as the plugin's, as
references.

``python -m benchmarks --only bench_ray [--quick]`` runs it alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

import plugbridge

from .harness import Row, median, ms, p99, ratio, sample, us, verdict

SECTION = "ray"
LATENCY_TARGET = 1.2
"""``handle.call`` against the bare actor round trip."""
REPLICAS = 4
IN_FLIGHT = 1000
"""Concurrent ``acall``s per throughput round, all from one asyncio loop."""

PLUGIN = """
import msgspec
from plugbridge import Plugin, handler

class EchoRequest(msgspec.Struct):
    message: str

class Bench(Plugin):
    name = "bench-ray"

    @handler("echo")
    def echo(self, ctx, req: EchoRequest) -> dict:
        return {"message": req.message, "length": len(req.message)}
"""

REQUEST = {"message": "hello world"}
REPLY = {"message": "hello world", "length": 11}


def _bare_actor_class(ray: Any) -> Any:
    """The baseline actor, defined here so that Ray ships it by value (the ``benchmarks``
    package need not be importable in Ray's workers)."""

    def reply(payload: bytes) -> bytes:
        message = msgspec.json.decode(payload)["message"]
        return msgspec.json.encode({"message": message, "length": len(message)})

    class BareEcho:
        def __init__(self) -> None:
            self.threads = ThreadPoolExecutor(4)

        async def echo(self, payload: bytes) -> bytes:
            return reply(payload)

        async def echo_on_thread(self, payload: bytes) -> bytes:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.threads, reply, payload)

        async def rss_bytes(self) -> int:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
            return 0

    return ray.remote(BareEcho)


def _latency(
    ray: Any, bare: Any, plugin: plugbridge.PluginHandle, blocks: int, per_block: int
) -> list[list[float]]:
    """Per-call seconds of the bare round trip, of the same with the echo run on the
    actor's thread pool, and of ``handle.call``, sampled in alternating blocks."""
    encode, decode = msgspec.json.encode, msgspec.json.decode

    def bare_call() -> object:
        return decode(ray.get(bare.echo.remote(encode(REQUEST))))

    def bare_threaded_call() -> object:
        return decode(ray.get(bare.echo_on_thread.remote(encode(REQUEST))))

    def plugin_call() -> object:
        return plugin.call("echo", REQUEST)

    calls = (bare_call, bare_threaded_call, plugin_call)
    series: list[list[float]] = [[] for _ in calls]
    for call in calls:
        assert call() == REPLY
        sample(call, 1, warmup=100)
    for _ in range(blocks):
        for call, samples in zip(calls, series, strict=True):
            samples.extend(sample(call, per_block, warmup=5))
    return series


async def _burst(plugin: plugbridge.PluginHandle, count: int) -> float:
    """Calls per second of ``count`` concurrent ``acall``s."""
    start = time.perf_counter()
    replies = await asyncio.gather(*(plugin.acall("echo", REQUEST) for _ in range(count)))
    elapsed = time.perf_counter() - start
    assert replies[0] == REPLY and len(replies) == count
    return count / elapsed


async def _bare_burst(bare: Any, count: int) -> float:
    """Calls per second of ``count`` concurrent bare actor calls, their refs awaited."""
    encode, decode = msgspec.json.encode, msgspec.json.decode

    async def one() -> object:
        return decode(await bare.echo.remote(encode(REQUEST)))

    start = time.perf_counter()
    replies = await asyncio.gather(*(one() for _ in range(count)))
    elapsed = time.perf_counter() - start
    assert replies[0] == REPLY and len(replies) == count
    return count / elapsed


async def _throughput(
    bare: Any, one: plugbridge.PluginHandle, many: plugbridge.PluginHandle, count: int, rounds: int
) -> tuple[list[list[float]], list[float]]:
    """Rates of the bare actor, one plugin actor and the replicas, in alternating rounds
    on one loop; and for each, the CPU time a call cost the host process (all its
    threads, Ray's own included)."""
    bursts: tuple[Callable[[], Awaitable[float]], ...] = (
        lambda: _bare_burst(bare, count),
        lambda: _burst(one, count),
        lambda: _burst(many, count),
    )
    await _bare_burst(bare, count // 4)  # warm up
    await _burst(one, count // 4)
    await _burst(many, count // 4)
    rates: list[list[float]] = [[] for _ in bursts]
    host_cpu = [0.0 for _ in bursts]
    for _ in range(rounds):
        for index, burst in enumerate(bursts):
            before = time.process_time()
            rates[index].append(await burst())
            host_cpu[index] += time.process_time() - before
    return rates, [cpu / (rounds * count) for cpu in host_cpu]


def _lifecycle(
    source: Path, rounds: int
) -> tuple[list[float], list[float], list[float], int | None]:
    """load() to ACTIVE, reload and shutdown times; the RSS of one actor."""
    starts: list[float] = []
    stops: list[float] = []
    for _ in range(rounds):
        begin = time.perf_counter()
        handle = plugbridge.load(source, isolation="ray")
        starts.append(time.perf_counter() - begin)
        assert handle.state is plugbridge.LifecycleState.ACTIVE
        begin = time.perf_counter()
        handle.shutdown()
        stops.append(time.perf_counter() - begin)
    with plugbridge.load(source, isolation="ray") as plugin:
        plugin.call("echo", REQUEST)
        rss = plugin.stats().rss_bytes
        reloads = sample(plugin.reload, rounds, warmup=1)
        assert plugin.call("echo", REQUEST) == REPLY
    return starts, reloads, stops, rss


def _bare_lifecycle(ray: Any, actor_class: Any, rounds: int) -> tuple[list[float], int]:
    """Bare actor: create to first answer; its RSS."""
    starts: list[float] = []
    rss = 0
    for _ in range(rounds):
        begin = time.perf_counter()
        actor = actor_class.remote()
        rss = ray.get(actor.rss_bytes.remote())
        starts.append(time.perf_counter() - begin)
        ray.kill(actor)
    return starts, rss


def run(quick: bool = False) -> list[Row]:
    import ray

    blocks, per_block = (6, 100) if quick else (10, 250)
    rounds = 3 if quick else 5
    in_flight = IN_FLIGHT // 2 if quick else IN_FLIGHT
    lifecycle_rounds = 3 if quick else 5
    ray_temp = tempfile.mkdtemp(prefix="ray-bench-")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=ray_temp,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "bench_ray_plugin.py"
            source.write_text(textwrap.dedent(PLUGIN))
            bare_class = _bare_actor_class(ray)
            bare = bare_class.remote()
            with plugbridge.load(source, isolation="ray") as plugin:
                bare_s, threaded_s, call_s = _latency(ray, bare, plugin, blocks, per_block)
            with (
                plugbridge.load(source, isolation="ray") as one,
                plugbridge.load(source, isolation="ray", replicas=REPLICAS) as many,
            ):
                (bare_rates, one_rates, many_rates), host_cpu = asyncio.run(
                    _throughput(bare, one, many, in_flight, rounds)
                )
            ray.kill(bare)
            starts, reloads, stops, rss = _lifecycle(source, lifecycle_rounds)
            bare_starts, bare_rss = _bare_lifecycle(ray, bare_class, lifecycle_rounds)
    finally:
        ray.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)
    bare_m, threaded_m, call_m = median(bare_s), median(threaded_s), median(call_s)
    bare_rate, one_m, many_m = median(bare_rates), median(one_rates), median(many_rates)
    mib = 1024 * 1024
    return [
        Row(
            SECTION,
            "bare async Ray actor method, JSON bytes in/out, ray.get from the host thread "
            "(baseline)",
            us(bare_m),
            us(p99(bare_s)),
        ),
        Row(
            SECTION,
            "same bare method, echo run on the actor's thread pool (run_in_executor; reference)",
            us(threaded_m),
            us(p99(threaded_s)),
            ratio(threaded_m, bare_m),
        ),
        Row(
            SECTION,
            "call() sync echo, ray mode",
            us(call_m),
            us(p99(call_s)),
            ratio(call_m, bare_m),
            f"≤ {LATENCY_TARGET}× bare actor",
            verdict(call_m <= LATENCY_TARGET * bare_m),
        ),
        Row(
            SECTION,
            f"bare actor, {in_flight} concurrent calls awaited from one loop (reference)",
            f"{bare_rate:,.0f} calls/s",
            note=f"rounds {[round(x) for x in bare_rates]}",
        ),
        Row(
            SECTION,
            f"acall throughput, {in_flight} concurrent from one loop, one actor "
            "(baseline for replicas)",
            f"{one_m:,.0f} calls/s",
            ratio=f"{ratio(one_m, bare_rate)} bare",
            note=f"rounds {[round(x) for x in one_rates]}",
        ),
        Row(
            SECTION,
            f"acall throughput, {in_flight} concurrent from one loop, replicas={REPLICAS}",
            f"{many_m:,.0f} calls/s",
            ratio=f"{ratio(many_m, one_m)} one actor",
            note=f"rounds {[round(x) for x in many_rates]}",
        ),
        Row(
            SECTION,
            f"host process CPU per call: bare / one actor / replicas={REPLICAS}",
            " / ".join(f"{cpu * 1e6:.0f} µs" for cpu in host_cpu),
        ),
        Row(SECTION, "bare actor start (create to first answer)", ms(median(bare_starts))),
        Row(
            SECTION,
            "actor start (load() to ACTIVE)",
            ms(median(starts)),
            ms(p99(starts)),
            ratio(median(starts), median(bare_starts)),
        ),
        Row(SECTION, "reload (new actor, swap, stop old)", ms(median(reloads)), ms(p99(reloads))),
        Row(SECTION, "shutdown", ms(median(stops)), ms(p99(stops))),
        Row(SECTION, "memory per bare actor (RSS)", f"{bare_rss / mib:.1f} MiB"),
        Row(
            SECTION,
            "memory per actor (RSS, stats().rss_bytes)",
            "n/a" if rss is None else f"{rss / mib:.1f} MiB",
            ratio="" if rss is None else ratio(rss, bare_rss),
        ),
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
    os._exit(0)
