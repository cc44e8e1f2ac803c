"""isolation="ray": echo latency against a bare Ray actor round trip, ``acall`` throughput
with replicas=4 against one actor, actor start / reload / shutdown time, memory per actor.

The section starts one local Ray of its own (2 CPUs, no dashboard, workers' output not
forwarded; its files under a temp directory of its own, so it never meets another Ray on
the machine) and shuts it down at the end.

The baseline is what a user would write without plugbridge: an *async* Ray actor (as
plugbridge's actor is) whose method takes the request as JSON bytes and returns the reply
as JSON bytes (msgspec, the same request and reply as the plugin's echo), called with
``ray.get`` from the host thread, the host encoding the request and decoding the reply as
``handle.call`` does. The two are sampled in alternating blocks, so a busy machine
disturbs both alike. The bare actor's start (create, first answer) and RSS are measured
the same way as the plugin's, as references.

``python -m benchmarks --only bench_ray [--quick]`` runs it alone.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import textwrap
import time
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
RAY_TEMP = os.path.join(tempfile.gettempdir(), "ray-bench")

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

    class BareEcho:
        async def echo(self, payload: bytes) -> bytes:
            request = msgspec.json.decode(payload)
            message = request["message"]
            return msgspec.json.encode({"message": message, "length": len(message)})

        async def rss_bytes(self) -> int:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
            return 0

    return ray.remote(BareEcho)


def _latency(
    ray: Any, bare: Any, plugin: plugbridge.PluginHandle, blocks: int, per_block: int
) -> tuple[list[float], list[float]]:
    """Per-call seconds of the bare round trip and of ``handle.call``, alternating blocks."""
    encode, decode = msgspec.json.encode, msgspec.json.decode

    def bare_call() -> object:
        return decode(ray.get(bare.echo.remote(encode(REQUEST))))

    def plugin_call() -> object:
        return plugin.call("echo", REQUEST)

    assert bare_call() == REPLY and plugin_call() == REPLY
    sample(bare_call, 1, warmup=100)
    sample(plugin_call, 1, warmup=100)
    bare_s: list[float] = []
    plugin_s: list[float] = []
    for _ in range(blocks):
        bare_s += sample(bare_call, per_block, warmup=5)
        plugin_s += sample(plugin_call, per_block, warmup=5)
    return bare_s, plugin_s


async def _burst(plugin: plugbridge.PluginHandle, count: int) -> float:
    """Calls per second of ``count`` concurrent ``acall``s."""
    start = time.perf_counter()
    replies = await asyncio.gather(*(plugin.acall("echo", REQUEST) for _ in range(count)))
    elapsed = time.perf_counter() - start
    assert replies[0] == REPLY and len(replies) == count
    return count / elapsed


async def _throughput(
    one: plugbridge.PluginHandle, many: plugbridge.PluginHandle, count: int, rounds: int
) -> tuple[list[float], list[float]]:
    """Rates of one actor and of the replicas, in alternating rounds on one loop."""
    await _burst(one, count // 4)  # warm up
    await _burst(many, count // 4)
    one_rates: list[float] = []
    many_rates: list[float] = []
    for _ in range(rounds):
        one_rates.append(await _burst(one, count))
        many_rates.append(await _burst(many, count))
    return one_rates, many_rates


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
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=RAY_TEMP,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "bench_ray_plugin.py"
            source.write_text(textwrap.dedent(PLUGIN))
            bare_class = _bare_actor_class(ray)
            bare = bare_class.remote()
            with plugbridge.load(source, isolation="ray") as plugin:
                bare_s, call_s = _latency(ray, bare, plugin, blocks, per_block)
            ray.kill(bare)
            with (
                plugbridge.load(source, isolation="ray") as one,
                plugbridge.load(source, isolation="ray", replicas=REPLICAS) as many,
            ):
                one_rates, many_rates = asyncio.run(_throughput(one, many, in_flight, rounds))
            starts, reloads, stops, rss = _lifecycle(source, lifecycle_rounds)
            bare_starts, bare_rss = _bare_lifecycle(ray, bare_class, lifecycle_rounds)
    finally:
        ray.shutdown()
    bare_m, call_m = median(bare_s), median(call_s)
    one_m, many_m = median(one_rates), median(many_rates)
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
            "call() sync echo, ray mode",
            us(call_m),
            us(p99(call_s)),
            ratio(call_m, bare_m),
            f"≤ {LATENCY_TARGET}× bare actor",
            verdict(call_m <= LATENCY_TARGET * bare_m),
        ),
        Row(
            SECTION,
            f"acall throughput, {in_flight} concurrent from one loop, one actor (baseline)",
            f"{one_m:,.0f} calls/s",
            note=f"rounds {[round(x) for x in one_rates]}",
        ),
        Row(
            SECTION,
            f"acall throughput, {in_flight} concurrent from one loop, replicas={REPLICAS}",
            f"{many_m:,.0f} calls/s",
            ratio=ratio(many_m, one_m),
            note=f"rounds {[round(x) for x in many_rates]}",
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
