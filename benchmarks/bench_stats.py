"""Statistics: what counting costs an in-process sync ``call()``, and what ``stats()`` costs.

The baseline is the same call path with counting compiled out: ``_uncounted_call`` below is
``PluginHandle.call`` as it reads in ``_handle.py`` without its statistics lines (the
``started`` clock read, the ``failed`` calls on the error paths, the duration append and
fold check on success), bound to the *same* handle, so both variants reach the same
transport, limiter and plugin through one bound-method call each. Keep it in step with
``PluginHandle.call``: it must differ only by those lines.

Counting is exact for every call; durations are taken for every call of a handle serving
under ``TIMED_PER_S`` (2000) calls a second and for a sample above (see ``_stats``). A
tight call loop is far above, so the target row measures the sampled steady state; the row
after it times every call (the sampling switched off through ``_stats.TIMED_PER_S``) to
show what a quiet handle's calls pay, for the record.

The two variants alternate in rounds (counted, uncounted, counted, ...) so that drift in
the machine's speed (other processes, frequency changes) falls on both alike; each figure
is the median (and p99) of per-sample times, a sample timing ``INNER`` calls.
"""

from __future__ import annotations

import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plugbridge
from plugbridge import _stats
from plugbridge._calls.limiter import ONE_SLOT
from plugbridge._errors import InvalidState, PluginError
from plugbridge._handle import PluginHandle

from .bench_inprocess import BENCH_PLUGIN
from .harness import Row, median, p99, ratio, us, verdict

SECTION = "stats"
INNER = 200
"""Calls per sample: enough to dwarf the clock reads around a sample."""
TARGET_SHARE = 0.05
TARGET_EXTRA_S = 0.1e-6


def _uncounted_call(
    self: PluginHandle, type_tag: str, request: Any = None, *, timeout: float | None = None
) -> Any:
    """``PluginHandle.call`` with its statistics lines removed (the baseline)."""
    timeout = self._default_timeout if timeout is None else self._call_timeout(timeout)
    while True:
        release = self._new_release(iter(ONE_SLOT))
        try:
            self._take_slot()
        except IndexError:
            raise self._limiter.refuse() from None
        except BaseException:
            release()
            raise
        try:
            transport = self._transport
            response = transport.call(type_tag, request, timeout, release)
        except InvalidState:
            if transport is self._transport:
                raise
        except PluginError:
            raise
        except BaseException:
            release()
            raise
        else:
            return response


def _alternating(
    variants: dict[str, Callable[[], object]], rounds: int, warmup_s: float = 0.5
) -> dict[str, list[float]]:
    """Seconds per call of each variant: ``rounds`` samples each, taken in turn, after
    ``warmup_s`` seconds of calls (the sampling adapts to the call rate within 0.1 s)."""
    until = time.perf_counter() + warmup_s
    while time.perf_counter() < until:
        for fn in variants.values():
            fn()
    clock = time.perf_counter
    out: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = clock()
            for _ in range(INNER):
                fn()
            out[name].append((clock() - start) / INNER)
    return out


def _overhead_rows(plugin: PluginHandle, rounds: int) -> list[Row]:
    request = {"message": "hello world"}
    counted = plugin.call
    uncounted = _uncounted_call.__get__(plugin)
    assert counted("echo", request) == uncounted("echo", request)
    samples = _alternating(
        {
            "counted": lambda: counted("echo", request),
            "uncounted": lambda: uncounted("echo", request),
        },
        rounds,
    )
    on, off = median(samples["counted"]), median(samples["uncounted"])
    extra = on - off
    sampled_at = plugin.stats()
    share = sampled_at.latency_samples / sampled_at.calls
    saved, _stats.TIMED_PER_S = _stats.TIMED_PER_S, 1 << 62
    try:
        every = _alternating(
            {
                "counted": lambda: counted("echo", request),
                "uncounted": lambda: uncounted("echo", request),
            },
            rounds // 4,
        )
    finally:
        _stats.TIMED_PER_S = saved
    all_on, all_off = median(every["counted"]), median(every["uncounted"])
    return [
        Row(
            SECTION,
            "call() sync echo, counting compiled out (baseline)",
            us(off),
            us(p99(samples["uncounted"])),
        ),
        Row(
            SECTION,
            "call() sync echo, statistics on",
            us(on),
            us(p99(samples["counted"])),
            f"{ratio(on, off)} ({extra * 1e9:+.0f} ns)",
            "≤ 5 % or ≤ 0.1 µs",
            verdict(extra <= TARGET_SHARE * off or extra <= TARGET_EXTRA_S),
            f"{share:.2%} of calls timed over the run",
        ),
        Row(
            SECTION,
            "call() sync echo, every call timed (a handle under 2000 calls/s)",
            us(all_on),
            us(p99(every["counted"])),
            f"{ratio(all_on, all_off)} ({(all_on - all_off) * 1e9:+.0f} ns)",
        ),
    ]


def _snapshot_row(plugin: PluginHandle, rounds: int) -> Row:
    """``stats()`` itself: a fold of what is pending plus the percentiles (610 buckets)."""
    times = []
    for _ in range(rounds):
        for _ in range(100):
            plugin.call("echo", {"message": "x"})  # something to fold, as in real use
        start = time.perf_counter()
        plugin.stats()
        times.append(time.perf_counter() - start)
    return Row(
        SECTION, "stats() after 100 calls (fold + percentiles)", us(median(times)), us(p99(times))
    )


def run(quick: bool = False) -> list[Row]:
    rounds = 300 if quick else 2_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_stats_plugin.py"
        path.write_text(textwrap.dedent(BENCH_PLUGIN))  # its sync "echo"
        with plugbridge.load(path) as plugin:
            rows = _overhead_rows(plugin, rounds)
            rows.append(_snapshot_row(plugin, rounds // 4))
    return rows
