"""Timing helpers shared by the benchmark sections: medians, p99s and result rows."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    section: str
    name: str
    median: str
    p99: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""
    note: str = ""


def sample(fn: Callable[[], object], rounds: int, inner: int = 1, warmup: int = 200) -> list[float]:
    """Seconds per call of ``fn``: ``rounds`` samples, each timing ``inner`` calls."""
    for _ in range(warmup):
        fn()
    clock = time.perf_counter
    out: list[float] = []
    for _ in range(rounds):
        start = clock()
        for _ in range(inner):
            fn()
        out.append((clock() - start) / inner)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}×"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
