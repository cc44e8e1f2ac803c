"""``handle.stats()``: exact counts from many threads, errors by code, every call form,
reloads, calls in flight, latency, uptime, and a worker's pid, memory, CPU and restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

import plugbridge
from plugbridge import PluginHandle, PluginStats

from ..conftest import wait_until

PLUGIN = """
import os, time
from pathlib import Path
from plugbridge import Plugin, handler, raw_handler

class Stats(Plugin):
    name = "stats"

    @handler("echo")
    def echo(self, ctx, req):
        return req

    @handler("fail")
    def fail(self, ctx, req):
        raise ValueError("asked to fail")

    @handler("number")
    def number(self, ctx, req: int) -> int:
        return req

    @handler("sleep")
    def sleep(self, ctx, req: float) -> float:
        time.sleep(req)
        return req

    @handler("block")
    def block(self, ctx, req: str) -> str:
        # Runs until the file ``req`` exists (the test creates it), for at most 60 s.
        Path(req + ".started").touch()
        end = time.monotonic() + 60
        while not Path(req).exists() and time.monotonic() < end:
            time.sleep(0.005)
        return req

    @handler("pid")
    def pid(self, ctx, req):
        return os.getpid()

    @raw_handler(1)
    def raw_echo(self, ctx, payload):
        return payload
"""

DEADLINE = 60.0
"""Generous: the suite runs under load."""


@pytest.fixture
def plugin_path(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(PLUGIN, name="stats_plugin.py")


def _load(path: Path, isolation: str, **config: object) -> PluginHandle:
    return plugbridge.load(path, isolation=isolation, config=config or None)


class Gate:
    """A ``block`` call's release: the handler runs until the file exists."""

    def __init__(self, tmp_path: Path, name: str = "gate") -> None:
        self.path = tmp_path / name

    def started(self) -> bool:
        return self.path.with_name(self.path.name + ".started").exists()

    def open(self) -> None:
        self.path.touch()


@pytest.mark.ray_too
def test_counts_are_exact_from_many_threads(plugin_path: Path, isolation: str) -> None:
    threads, per_thread = 8, (2_000 if isolation == "inprocess" else 150)
    failures_each = per_thread // 10
    errors: list[BaseException] = []
    with _load(plugin_path, isolation, max_concurrent_ops=0) as plugin:
        start = threading.Barrier(threads)

        def caller() -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    if i % 10 == 0:
                        with pytest.raises(plugbridge.HandlerError):
                            plugin.call("fail", i)
                    else:
                        assert plugin.call("echo", i) == i
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=caller) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert errors == []
        stats = plugin.stats()
    assert stats.calls == threads * per_thread
    assert stats.errors == {"HANDLER_ERROR": threads * failures_each}
    assert stats.rejected == 0
    assert stats.in_flight == 0
    assert 0 < stats.latency_samples <= stats.calls


def test_errors_are_counted_by_code(plugin_path: Path, isolation: str, tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    with _load(plugin_path, isolation, max_concurrent_ops=1) as plugin:
        with pytest.raises(plugbridge.HandlerError):
            plugin.call("fail")
        with pytest.raises(plugbridge.UnknownMessageType):
            plugin.call("no such tag")
        with pytest.raises(plugbridge.SerializationError):
            plugin.call("number", "not a number")
        with pytest.raises(plugbridge.Timeout):
            plugin.call("sleep", 0.3, timeout=0.05)
        assert wait_until(lambda: plugin.in_flight == 0, timeout=DEADLINE)  # its slot back
        blocked = threading.Thread(target=plugin.call, args=("block", str(gate.path)))
        blocked.start()
        try:
            assert wait_until(gate.started, timeout=DEADLINE)
            with pytest.raises(plugbridge.TooManyRequests):
                plugin.call("echo", 1)
        finally:
            gate.open()
            blocked.join()
        stats = plugin.stats()
        assert stats.rejected == plugin.rejected_request_count == 1
    assert stats.errors == {
        "SERIALIZATION_ERROR": 1,
        "UNKNOWN_MESSAGE_TYPE": 1,
        "HANDLER_ERROR": 1,
        "TIMEOUT": 1,
        "TOO_MANY_REQUESTS": 1,
    }
    assert stats.calls == 5  # four failures and the blocked call; the refusal is not a call


def test_every_call_form_is_counted(plugin_path: Path, isolation: str) -> None:
    async def both_async(plugin: PluginHandle) -> None:
        assert await plugin.acall("echo", 1) == 1
        assert await plugin.acall_raw(1, b"xy") == b"xy"
        with pytest.raises(plugbridge.HandlerError):
            await plugin.acall("fail")

    with _load(plugin_path, isolation) as plugin:
        assert plugin.stats().calls == 0
        assert plugin.call("echo", 1) == 1
        assert plugin.call_json("echo", "[1]") == "[1]"
        assert plugin.call_raw(1, b"ab") == b"ab"
        asyncio.run(both_async(plugin))
        with pytest.raises(plugbridge.SerializationError):
            plugin.call_json("echo", 12)  # refused before it ran: an error, not a call
        with pytest.raises(plugbridge.UnknownMessageType):
            plugin.call_raw(2, b"")  # sent: the instance has no raw handler 2
        stats = plugin.stats()
    assert stats.calls == 7
    assert stats.errors == {
        "SERIALIZATION_ERROR": 1,
        "UNKNOWN_MESSAGE_TYPE": 1,
        "HANDLER_ERROR": 1,
    }


@pytest.mark.ray_too
def test_calls_refused_before_running_are_errors_not_calls(
    plugin_path: Path, isolation: str
) -> None:
    """``calls`` counts the calls that ran; one refused before it ran (a bad argument
    found before admission, a zero timeout) is counted in ``errors`` by its code only,
    and is not timed."""

    async def refused_async(plugin: PluginHandle) -> None:
        with pytest.raises(plugbridge.ConfigError):
            await plugin.acall("echo", 1, timeout=-1)
        with pytest.raises(plugbridge.UnknownMessageType):
            await plugin.acall_raw(-1, b"")

    with _load(plugin_path, isolation) as plugin:
        assert plugin.call("echo", 1) == 1
        with pytest.raises(plugbridge.ConfigError):
            plugin.call("echo", 1, timeout=-1)
        with pytest.raises(plugbridge.ConfigError):
            plugin.call_json("echo", "1", timeout="soon")  # type: ignore[arg-type]
        with pytest.raises(plugbridge.Timeout):
            plugin.call("echo", 1, timeout=0)  # a zero timeout never runs a call
        with pytest.raises(plugbridge.SerializationError):
            plugin.call_json("echo", 12)  # type: ignore[arg-type]
        with pytest.raises(plugbridge.UnknownMessageType):
            plugin.call_raw(1 << 32, b"")
        with pytest.raises(plugbridge.SerializationError):
            plugin.call_raw(1, object())
        asyncio.run(refused_async(plugin))
        stats = plugin.stats()
    assert stats.calls == stats.latency_samples == 1
    assert stats.errors == {
        "CONFIG_ERROR": 3,
        "SERIALIZATION_ERROR": 2,
        "UNKNOWN_MESSAGE_TYPE": 2,
        "TIMEOUT": 1,
    }
    assert stats.rejected == 0


def test_calls_on_a_closed_handle_are_errors_not_calls(plugin_path: Path, isolation: str) -> None:
    async def both_async(plugin: PluginHandle) -> None:
        with pytest.raises(plugbridge.InvalidState):
            await plugin.acall("echo", 1)
        with pytest.raises(plugbridge.InvalidState):
            await plugin.acall_raw(1, b"x")

    plugin = _load(plugin_path, isolation)
    assert plugin.call("echo", 1) == 1
    plugin.shutdown()
    with pytest.raises(plugbridge.InvalidState):
        plugin.call("echo", 1)
    with pytest.raises(plugbridge.InvalidState):
        plugin.call_json("echo", "1")
    with pytest.raises(plugbridge.InvalidState):
        plugin.call_raw(1, b"x")
    asyncio.run(both_async(plugin))
    stats = plugin.stats()
    assert stats.calls == stats.latency_samples == 1
    assert stats.errors == {"INVALID_STATE": 5}
    assert stats.in_flight == 0


def test_calls_to_a_failed_optional_plugin_are_errors_not_calls(
    write_plugin: Callable[..., Path],
) -> None:
    broken = write_plugin("raise RuntimeError('broken at import')\n", name="broken_plugin.py")
    with plugbridge.PluginHost() as host:
        plugin = host.add("broken", broken, required=False)
        assert plugin.state is plugbridge.LifecycleState.FAILED
        for _ in range(3):
            with pytest.raises(plugbridge.InvalidState, match="broken at import"):
                plugin.call("echo", 1)
        stats = plugin.stats()
        assert (stats.calls, stats.errors, stats.latency_samples) == (0, {"INVALID_STATE": 3}, 0)
        broken.write_text(PLUGIN)
        host.reload("broken")
        assert plugin.call("echo", 2) == 2
        stats = plugin.stats()
    assert (stats.calls, stats.errors) == (1, {"INVALID_STATE": 3})


@pytest.mark.ray_too
def test_stats_survive_reloads_and_count_them(plugin_path: Path, isolation: str) -> None:
    with _load(plugin_path, isolation) as plugin:
        for i in range(3):
            plugin.call("echo", i)
        with pytest.raises(plugbridge.HandlerError):
            plugin.call("fail")
        before = plugin.stats()
        plugin.reload()
        plugin.call("echo", 3)
        after = plugin.stats()
        assert (before.reloads, after.reloads) == (0, 1)
        assert after.calls == 5
        assert after.errors == {"HANDLER_ERROR": 1}
        assert after.uptime_s >= before.uptime_s  # the handle's age, not the instance's
        plugin_path.write_text("this is not python\n")
        with pytest.raises(plugbridge.InitializationFailed):
            plugin.reload()
        assert plugin.stats().reloads == 1  # a failed reload is not counted
        plugin.call("echo", 4)
        assert plugin.stats().calls == 6


RELOADS = 40


def test_a_call_retried_across_reloads_counts_once(plugin_path: Path) -> None:
    """Calls racing reloads: some find the old instance stopping and are retried on the
    new one; each still counts once, so ``calls`` is exactly the calls that returned.
    (A short switch interval makes threads interleave often: ~15 retries in 40 reloads,
    counted while writing this test.)"""
    returned = [0] * 2
    stop = threading.Event()
    interval = sys.getswitchinterval()
    with _load(plugin_path, "inprocess") as plugin:

        def caller(slot: int) -> None:
            while not stop.is_set():
                plugin.call("echo", slot)
                returned[slot] += 1

        pool = [threading.Thread(target=caller, args=(i,)) for i in range(len(returned))]
        sys.setswitchinterval(1e-5)
        try:
            for thread in pool:
                thread.start()
            for _ in range(RELOADS):
                plugin.reload()
        finally:
            stop.set()
            sys.setswitchinterval(interval)
            for thread in pool:
                thread.join()
        stats = plugin.stats()
    assert stats.reloads == RELOADS
    assert stats.errors == {}
    assert stats.calls == sum(returned)


@pytest.mark.parametrize("limit", [0, 10], ids=["unlimited", "limited"])
@pytest.mark.ray_too
def test_in_flight_counts_blocked_calls(
    plugin_path: Path, isolation: str, tmp_path: Path, limit: int
) -> None:
    gates = [Gate(tmp_path, "first"), Gate(tmp_path, "second")]
    with _load(plugin_path, isolation, max_concurrent_ops=limit) as plugin:
        assert plugin.stats().in_flight == 0
        blocked = [
            threading.Thread(target=plugin.call, args=("block", str(gate.path))) for gate in gates
        ]
        try:
            for thread, gate in zip(blocked, gates, strict=True):
                thread.start()
                assert wait_until(gate.started, timeout=DEADLINE)
            assert plugin.stats().in_flight == plugin.in_flight == 2
            gates[0].open()
            blocked[0].join()
            assert wait_until(lambda: plugin.stats().in_flight == 1, timeout=DEADLINE)
            assert plugin.in_flight == 1
        finally:
            for thread, gate in zip(blocked, gates, strict=True):
                gate.open()
                thread.join()
        assert wait_until(lambda: plugin.stats().in_flight == 0, timeout=DEADLINE)
        assert plugin.in_flight == 0
        assert plugin.stats().calls == 2


def test_latency_covers_a_known_sleep(plugin_path: Path, isolation: str) -> None:
    with _load(plugin_path, isolation) as plugin:
        empty = plugin.stats()
        assert (empty.latency_p50_ms, empty.latency_p99_ms, empty.latency_max_ms) == (
            None,
            None,
            None,
        )
        assert plugin.call("sleep", 0.1) == 0.1
        for _ in range(3):
            plugin.call("echo", None)
        stats = plugin.stats()
    assert stats.latency_samples == stats.calls == 4  # a quiet handle times every call
    assert stats.latency_max_ms is not None and stats.latency_max_ms >= 100.0
    assert stats.latency_p99_ms is not None and stats.latency_p99_ms >= 100.0 / 1.04
    assert stats.latency_p50_ms is not None and stats.latency_p50_ms < 100.0
    assert stats.latency_p50_ms <= stats.latency_p99_ms <= stats.latency_max_ms


def test_a_busy_handle_times_a_sample_then_every_call_again_when_quiet(
    plugin_path: Path,
) -> None:
    with _load(plugin_path, "inprocess") as plugin:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # far above 2000 calls a second, even under load
            plugin.call("echo", None)
        busy = plugin.stats()
        assert busy.latency_samples < busy.calls
        assert busy.latency_p50_ms is not None and busy.latency_max_ms is not None

        def every_call_timed() -> bool:
            before = plugin.stats()
            for _ in range(5):
                plugin.call("echo", None)
            after = plugin.stats()
            return after.latency_samples - before.latency_samples == 5

        assert wait_until(every_call_timed, timeout=DEADLINE)


def test_uptime_grows(plugin_path: Path) -> None:
    with _load(plugin_path, "inprocess") as plugin:
        first = plugin.stats().uptime_s
        assert first >= 0.0
        assert wait_until(lambda: plugin.stats().uptime_s > first + 0.05, timeout=DEADLINE)


def test_stats_are_plain_json(plugin_path: Path) -> None:
    with _load(plugin_path, "inprocess") as plugin:
        plugin.call("echo", 1)
        with pytest.raises(plugbridge.HandlerError):
            plugin.call("fail")
        stats = plugin.stats()
    as_dict = dataclasses.asdict(stats)
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert msgspec.json.decode(msgspec.json.encode(stats)) == as_dict
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.calls = 0  # type: ignore[misc]
    assert isinstance(stats, PluginStats)


def test_in_process_has_no_process_figures(plugin_path: Path) -> None:
    with _load(plugin_path, "inprocess") as plugin:
        stats = plugin.stats()
    assert (stats.pid, stats.rss_bytes, stats.cpu_seconds, stats.restarts) == (None, None, None, 0)


def test_a_worker_reports_its_pid_memory_and_cpu(plugin_path: Path) -> None:
    with _load(plugin_path, "process") as plugin:
        pid = plugin.call("pid")
        stats = plugin.stats()
        assert pid != os.getpid()
        assert stats.pid == pid
        assert stats.rss_bytes is not None and stats.rss_bytes > 0
        assert stats.cpu_seconds is not None and stats.cpu_seconds >= 0.0
        plugin.reload()
        assert plugin.stats().pid == plugin.call("pid") != pid  # the current worker's
    gone = plugin.stats()  # a worker that is gone: no figures, no exception
    assert (gone.pid, gone.rss_bytes, gone.cpu_seconds) == (None, None, None)


def test_restarts_are_counted_and_survive_a_reload(plugin_path: Path) -> None:
    config = {"restart_on_crash": True, "restart_backoff": 0.01}
    with _load(plugin_path, "process", **config) as plugin:
        first = plugin.call("pid")
        assert plugin.stats().restarts == 0
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: plugin.stats().restarts == 1, timeout=DEADLINE)
        assert wait_until(lambda: plugin.stats().pid not in (None, first), timeout=DEADLINE)
        second = plugin.call("pid")
        assert plugin.stats().pid == second != first
        plugin.reload()
        assert plugin.stats().restarts == 1  # the retired worker transport's restarts stay


def test_the_latency_histogram_keeps_its_stated_error() -> None:
    """Percentiles within 3.2 % of the exact ones from 128 ns to hours; the max exact;
    610 counters however many durations."""
    from plugbridge._stats import LatencyHistogram

    durations = [1e-7 * 1.001**i for i in range(20_000)]  # 100 ns to ~48 s
    histogram = LatencyHistogram()
    for start in range(0, len(durations), 1000):
        histogram.add(durations[start : start + 1000])
    ordered = sorted(durations)
    shares = (0.5, 0.9, 0.99, 0.999)
    for share, found in zip(shares, histogram.percentiles(*shares), strict=True):
        exact = ordered[max(0, int(share * len(ordered) + 0.999999) - 1)]
        assert found is not None and abs(found - exact) <= 0.032 * exact, (share, found, exact)
    assert histogram.max == max(durations)
    assert histogram.total == len(durations)
    assert len(histogram.counts) == 610
    assert LatencyHistogram().percentiles(0.5) == [None]
