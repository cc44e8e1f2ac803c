"""Replicas: throughput of 8 threads calling one handle, replicas=4 against one worker
(isolation="process"), in the same run: the baseline first, then alternating rounds.

Two handlers: the echo the target is set for, where a call costs the host about as much
as the worker, and a handler doing ~1 ms of pure-Python work, where the worker's side is
almost all of it. For each, the CPU time a call costs in the host process and in the
workers (psutil, over the timed rounds) says where the time goes.
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import plugbridge

from .harness import Row, median, ratio, verdict

SECTION = "replicas"

PLUGIN = """
import msgspec
from plugbridge import Plugin, handler

class EchoRequest(msgspec.Struct):
    message: str

class Bench(Plugin):
    name = "bench-replicas"

    @handler("echo")
    def echo(self, ctx, req: EchoRequest) -> dict:
        return {"message": req.message, "length": len(req.message)}

    @handler("work")
    def work(self, ctx, req: int) -> int:
        return sum(i * i for i in range(req))
"""

ECHO = {"message": "hello world"}
WORK = 25_000
"""Loop length of the ``work`` handler: about 1 ms of CPU on the 2-core VM."""
CALLERS = 8
REPLICAS = 4
TARGET = 1.7


@dataclass
class Figures:
    """One configuration's throughput rounds and the CPU its calls cost."""

    rates: list[float] = field(default_factory=list)
    calls: int = 0
    wall_s: float = 0.0
    host_cpu_s: float = 0.0
    worker_cpu_s: float = 0.0

    def per_call_us(self, seconds: float) -> str:
        return f"{seconds / self.calls * 1e6:.0f} µs"

    def cores(self) -> str:
        return f"{(self.host_cpu_s + self.worker_cpu_s) / self.wall_s:.2f}"


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(
    plugin: plugbridge.PluginHandle,
    workers: list[psutil.Process],
    figures: Figures,
    *,
    type_tag: str,
    request: object,
    per_caller: int,
) -> None:
    """One round: ``CALLERS`` threads each make ``per_caller`` calls; add its rate and
    the CPU time the host and ``workers`` spent meanwhile to ``figures``."""
    barrier = threading.Barrier(CALLERS + 1)

    def run() -> None:
        barrier.wait()
        for _ in range(per_caller):
            plugin.call(type_tag, request)

    threads = [threading.Thread(target=run) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    host = psutil.Process()
    host_before, workers_before = _cpu(host), sum(_cpu(w) for w in workers)
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    figures.host_cpu_s += _cpu(host) - host_before
    figures.worker_cpu_s += sum(_cpu(w) for w in workers) - workers_before
    figures.calls += CALLERS * per_caller
    figures.wall_s += wall
    figures.rates.append(CALLERS * per_caller / wall)


def _rows(what: str, one: Figures, many: Figures, *, target: bool) -> list[Row]:
    one_m, many_m = median(one.rates), median(many.rates)
    rows = [
        Row(SECTION, f"throughput, {what}, one worker (baseline)", f"{one_m:,.0f} calls/s"),
        Row(
            SECTION,
            f"throughput, {what}, replicas={REPLICAS}",
            f"{many_m:,.0f} calls/s",
            ratio=ratio(many_m, one_m),
            target=f"≥ {TARGET}×" if target else "",
            verdict=verdict(many_m >= TARGET * one_m) if target else "",
            note=f"rounds: one {[round(x) for x in one.rates]}, "
            f"replicas {[round(x) for x in many.rates]}",
        ),
    ]
    for label, figures in (("one worker", one), (f"replicas={REPLICAS}", many)):
        rows.append(
            Row(
                SECTION,
                f"CPU per call, {what}, {label}: host process / workers (cores busy)",
                f"{figures.per_call_us(figures.host_cpu_s)} / "
                f"{figures.per_call_us(figures.worker_cpu_s)} ({figures.cores()})",
            )
        )
    return rows


def _compare(
    configs: tuple[tuple[plugbridge.PluginHandle, list[psutil.Process]], ...],
    *,
    type_tag: str,
    request: object,
    per_caller: int,
    rounds: int,
) -> list[Figures]:
    """Figures of each configuration, in alternating rounds (the first one first)."""
    for plugin, _ in configs:  # warm up
        measure(plugin, [], Figures(), type_tag=type_tag, request=request, per_caller=10)
    figures = [Figures() for _ in configs]
    for _ in range(rounds):
        for (plugin, workers), figure in zip(configs, figures, strict=True):
            measure(
                plugin, workers, figure, type_tag=type_tag, request=request, per_caller=per_caller
            )
    return figures


def run(quick: bool = False) -> list[Row]:
    rounds = 3 if quick else 7
    me = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "bench_replicas_plugin.py"
        source.write_text(textwrap.dedent(PLUGIN))
        known = {p.pid for p in me.children()}
        with plugbridge.load(source, isolation="process") as single:
            single_workers = [p for p in me.children() if p.pid not in known]
            known |= {p.pid for p in single_workers}
            with plugbridge.load(source, isolation="process", replicas=REPLICAS) as replicated:
                replica_workers = [p for p in me.children() if p.pid not in known]
                assert len(single_workers) == 1 and len(replica_workers) == REPLICAS
                configs = ((single, single_workers), (replicated, replica_workers))
                echo = _compare(
                    configs,
                    type_tag="echo",
                    request=ECHO,
                    per_caller=250 if quick else 1000,
                    rounds=rounds,
                )
                work = _compare(
                    configs,
                    type_tag="work",
                    request=WORK,
                    per_caller=25 if quick else 100,
                    rounds=rounds,
                )
    return [
        *_rows(f"{CALLERS} threads calling echo", *echo, target=True),
        *_rows(f"{CALLERS} threads calling a ~1 ms CPU-bound handler", *work, target=False),
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
    os._exit(0)
