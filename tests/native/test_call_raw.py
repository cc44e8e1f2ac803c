"""The binary transport of native plugins: plugin_call_raw + rb_response_free, in process and
in a worker (the ``isolation`` fixture), against the C hello plugin (examples/hello-c)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import plugbridge

from ..conftest import LogCapture, wait_until
from .bench_small import SmallRequestRaw, SmallResponseRaw
from .build import build_hello_c

MSG_BENCH_SMALL = 1
MSG_ECHO_BYTES = 10
MSG_FILL = 11
MSG_FAIL = 12
MSG_SLEEP = 13
MIB = 1 << 20


@pytest.fixture(scope="session")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_raw"))


@pytest.fixture(scope="session")
def hello_c_without_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_no_raw"), "-DHELLO_C_NO_BINARY")


@pytest.fixture
def plugin(hello_c: Path, isolation: str) -> Iterator[plugbridge.PluginHandle]:
    with plugbridge.load(hello_c, isolation=isolation) as handle:
        yield handle


def fail_request(code: int, text: bytes) -> bytes:
    return struct.pack("<I", code) + text


def sleep_request(ms: int) -> bytes:
    return struct.pack("<I", ms)


def raw_forms(
    handle: plugbridge.PluginHandle, message_id: int, body: bytes
) -> list[Callable[[], bytes]]:
    """The same raw call in its three forms: inline, on a pool thread (a timeout), acall."""
    return [
        lambda: handle.call_raw(message_id, body),
        lambda: handle.call_raw(message_id, body, timeout=30),
        lambda: asyncio.run(handle.acall_raw(message_id, body)),
    ]


def outstanding(handle: plugbridge.PluginHandle) -> int:
    """Response buffers the library handed out and the host has not freed yet."""
    count: int = handle.call("test.outstanding", {})["outstanding"]
    return count


def test_bench_small_struct_in_and_out(plugin: plugbridge.PluginHandle) -> None:
    """rustbridge's MSG_BENCH_SMALL: a ctypes structure as the request, its response bytes
    read back as the response structure."""
    assert ctypes.sizeof(SmallRequestRaw) == 76 and ctypes.sizeof(SmallResponseRaw) == 80
    for key, flags, hit in ((b"test_key", 1, 1), (b"another_key", 0, 0), (b"k" * 64, 3, 1)):
        data = plugin.call_raw(MSG_BENCH_SMALL, SmallRequestRaw.create(key, flags))
        assert len(data) == 80
        response = SmallResponseRaw.from_buffer_copy(data)
        assert response.version == 1
        assert response.text() == (b"value_for_" + key)[:64]
        assert (response.ttl_seconds, response.cache_hit) == (3600, hit)


@pytest.mark.parametrize("size", [0, 1, 1000, MIB])
def test_variable_length_payloads(plugin: plugbridge.PluginHandle, size: int) -> None:
    payload = os.urandom(size)
    assert plugin.call_raw(MSG_ECHO_BYTES, payload) == payload
    assert plugin.call_raw(MSG_ECHO_BYTES, bytearray(payload), timeout=30) == payload
    assert asyncio.run(plugin.acall_raw(MSG_ECHO_BYTES, memoryview(payload))) == payload
    filled = plugin.call_raw(MSG_FILL, struct.pack("<II", size, 7))
    assert filled == bytes((7 + i) & 0xFF for i in range(size))
    assert outstanding(plugin) == 0


def test_any_bytes_like_request(plugin: plugbridge.PluginHandle) -> None:
    import array

    assert plugin.call_raw(MSG_ECHO_BYTES, array.array("H", [1, 2])) == b"\x01\x00\x02\x00"
    assert plugin.call_raw(MSG_ECHO_BYTES, (ctypes.c_uint8 * 3)(1, 2, 3)) == b"\x01\x02\x03"
    assert plugin.call_raw(MSG_ECHO_BYTES, memoryview(b"abcdef")[2:4]) == b"cd"
    for bad in ("text", 42, None, [1, 2]):
        with pytest.raises(plugbridge.SerializationError, match="bytes-like"):
            plugin.call_raw(MSG_ECHO_BYTES, bad)


@pytest.mark.parametrize(
    ("message_id", "request_bytes", "error", "message"),
    [
        (MSG_FAIL, fail_request(7, b"it broke"), plugbridge.HandlerError, "it broke"),
        (MSG_FAIL, fail_request(13, b"busy"), plugbridge.TooManyRequests, "busy"),
        (MSG_FAIL, fail_request(6, b"x\0after the NUL"), plugbridge.UnknownMessageType, "x"),
        (MSG_FAIL, fail_request(7, "é ✓".encode()), plugbridge.HandlerError, "é ✓"),
        (MSG_FAIL, fail_request(7, b"bad \xff"), plugbridge.HandlerError, "bad \ufffd"),
        (
            MSG_FAIL,
            fail_request(7, b""),
            plugbridge.HandlerError,
            "native raw call failed (code 7)",
        ),
        (MSG_FAIL, fail_request(99, b"o"), plugbridge.InternalError, "unknown error code 99: o"),
        (777, b"", plugbridge.UnknownMessageType, "Unknown message ID: 777"),
        (
            MSG_BENCH_SMALL,
            b"short",
            plugbridge.HandlerError,
            "handler error: Request too small",
        ),
        (
            MSG_BENCH_SMALL,
            bytes(SmallRequestRaw.create(b"k", 0, version=2)),
            plugbridge.HandlerError,
            "handler error: Unsupported request version: 2 (expected 1)",
        ),
    ],
)
def test_errors_have_their_class_and_text(
    plugin: plugbridge.PluginHandle,
    message_id: int,
    request_bytes: bytes,
    error: type[plugbridge.PluginError],
    message: str,
) -> None:
    """The error code picks the class; the text is the message without its NUL."""
    for form, call in enumerate(raw_forms(plugin, message_id, request_bytes)):
        with pytest.raises(plugbridge.PluginError) as failed:
            call()
        assert type(failed.value) is error, form
        assert failed.value.message == message, form
    assert outstanding(plugin) == 0  # every error response was freed, exactly once
    assert plugin.call_raw(MSG_ECHO_BYTES, b"still fine") == b"still fine"


def test_bad_message_ids_are_unknown_and_take_no_slot(hello_c: Path, isolation: str) -> None:
    class Msg(enum.IntEnum):
        ECHO = MSG_ECHO_BYTES

    with plugbridge.load(hello_c, config={"max_concurrent_ops": 1}, isolation=isolation) as p:
        for bad in (-1, 1 << 32, "1", 1.0, True, None):
            with pytest.raises(plugbridge.UnknownMessageType, match="message_id"):
                p.call_raw(bad, b"")  # type: ignore[arg-type]
            with pytest.raises(plugbridge.UnknownMessageType, match="message_id"):
                asyncio.run(p.acall_raw(bad, b""))  # type: ignore[arg-type]
        assert p.call_raw(Msg.ECHO, b"enum") == b"enum"
        assert p.call_raw(MSG_ECHO_BYTES, b"slot free") == b"slot free"
        assert p.rejected_request_count == 0 and p.in_flight == 0


@pytest.mark.ray_too
def test_every_response_is_freed_exactly_once(plugin: plugbridge.PluginHandle) -> None:
    """Successes, errors, timed-out calls and acalls: the library's count of responses not
    yet handed back to rb_response_free returns to 0 (a double free would make it < 0)."""
    request = SmallRequestRaw.create(b"key", 1)

    def many(worker: int) -> None:
        for i in range(100):
            assert len(plugin.call_raw(MSG_BENCH_SMALL, request)) == 80
            with pytest.raises(plugbridge.HandlerError):
                plugin.call_raw(MSG_FAIL, fail_request(7, b"e"))
            assert plugin.call_raw(MSG_ECHO_BYTES, b"%d" % i, timeout=30) == b"%d" % i

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(many, range(8)))

    async def gathered() -> list[bytes]:
        return list(
            await asyncio.gather(*(plugin.acall_raw(MSG_ECHO_BYTES, b"t%d" % i) for i in range(50)))
        )

    assert asyncio.run(gathered()) == [b"t%d" % i for i in range(50)]
    with pytest.raises(plugbridge.Timeout):
        plugin.call_raw(MSG_SLEEP, sleep_request(300), timeout=0.01)
    assert wait_until(lambda: plugin.in_flight == 0, timeout=30)
    assert outstanding(plugin) == 0


@pytest.mark.ray_too
def test_calls_run_in_parallel(hello_c: Path, isolation: str) -> None:
    """The GIL is released around plugin_call_raw: 4 sleeping calls are all inside C before
    any returns (and each one's DEBUG record reaches the instance's callback)."""
    capture = LogCapture()
    config = {"log_level": "debug"}
    with (
        plugbridge.load(hello_c, config=config, log_callback=capture, isolation=isolation) as p,
        ThreadPoolExecutor(4) as pool,
    ):
        running = [pool.submit(p.call_raw, MSG_SLEEP, sleep_request(2000)) for _ in range(4)]
        assert wait_until(
            lambda: capture.messages().count("Sleeping for 2000 ms (raw)") == 4, timeout=30
        )
        assert not any(f.done() for f in running)  # one after another, 3 would be done
        assert [f.result() for f in running] == [sleep_request(2000)] * 4
        assert ("hello_c", "Sleeping for 2000 ms (raw)") in [
            (target, message) for _, target, message in capture.records
        ]


def test_concurrency_limit_is_shared_with_call(hello_c: Path, isolation: str) -> None:
    with (
        plugbridge.load(hello_c, config={"max_concurrent_ops": 1}, isolation=isolation) as p,
        ThreadPoolExecutor(1) as pool,
    ):
        holder = pool.submit(p.call_raw, MSG_SLEEP, sleep_request(800))
        assert wait_until(lambda: p.in_flight == 1)
        with pytest.raises(plugbridge.TooManyRequests):
            p.call_raw(MSG_ECHO_BYTES, b"x")
        with pytest.raises(plugbridge.TooManyRequests):
            asyncio.run(p.acall_raw(MSG_ECHO_BYTES, b"x"))
        with pytest.raises(plugbridge.TooManyRequests):
            p.call("echo", {"message": "x"})
        assert p.rejected_request_count == 3
        assert holder.result() == sleep_request(800)
        assert p.call_raw(MSG_ECHO_BYTES, b"x") == b"x"
        holder = pool.submit(p.call, "test.sleep", {"duration_ms": 800})
        assert wait_until(lambda: p.in_flight == 1)
        with pytest.raises(plugbridge.TooManyRequests):
            p.call_raw(MSG_ECHO_BYTES, b"x")  # a JSON call holds the slot raw calls need
        holder.result()


def test_timeout_keeps_the_slot_until_the_native_call_returns(
    hello_c: Path, isolation: str
) -> None:
    with plugbridge.load(hello_c, config={"max_concurrent_ops": 1}, isolation=isolation) as p:
        with pytest.raises(plugbridge.Timeout) as late:
            p.call_raw(MSG_SLEEP, sleep_request(1500), timeout=0.05)
        assert late.value.message == "raw call 13 exceeded its timeout of 0.05s"
        with pytest.raises(plugbridge.TooManyRequests):  # the C call still runs
            p.call_raw(MSG_ECHO_BYTES, b"x")
        assert wait_until(lambda: p.in_flight == 0, timeout=10)
        assert p.call_raw(MSG_ECHO_BYTES, b"x") == b"x"

        async def late_async() -> None:
            with pytest.raises(plugbridge.Timeout, match="raw call 13 exceeded"):
                await p.acall_raw(MSG_SLEEP, sleep_request(500), timeout=0.05)

        asyncio.run(late_async())
        assert wait_until(lambda: p.in_flight == 0, timeout=10)
        assert outstanding(p) == 0


def test_call_timeout_from_the_config_applies(hello_c: Path, isolation: str) -> None:
    with plugbridge.load(hello_c, config={"call_timeout": 0.05}, isolation=isolation) as p:
        with pytest.raises(plugbridge.Timeout, match="raw call 13"):
            p.call_raw(MSG_SLEEP, sleep_request(400))
        # the limit is the config's; this call is given room (a loaded machine can take
        # more than 50 ms to answer even a quick call in a worker)
        assert p.call_raw(MSG_ECHO_BYTES, b"quick", timeout=30) == b"quick"


def test_acall_raw_from_many_tasks_never_blocks_the_loop(plugin: plugbridge.PluginHandle) -> None:
    async def main() -> tuple[list[bytes], int]:
        ticks = 0
        stop = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        results = await asyncio.gather(
            plugin.acall_raw(MSG_SLEEP, sleep_request(300)),
            *(plugin.acall_raw(MSG_ECHO_BYTES, b"%d" % i) for i in range(20)),
        )
        stop.set()
        await ticker
        return list(results), ticks

    results, ticks = asyncio.run(main())
    assert results == [sleep_request(300), *(b"%d" % i for i in range(20))]
    assert ticks >= 5  # the loop ran while the 300 ms call was inside C


def test_after_shutdown_is_invalid_state(
    hello_c: Path, hello_c_without_raw: Path, isolation: str
) -> None:
    """With or without the binary transport, a call on a closed handle is InvalidState."""
    for library in (hello_c, hello_c_without_raw):
        p = plugbridge.load(library, isolation=isolation)
        p.shutdown()
        for call in raw_forms(p, MSG_ECHO_BYTES, b"x"):
            with pytest.raises(plugbridge.InvalidState):
                call()
        assert p.in_flight == 0


@pytest.mark.ray_too
def test_call_in_flight_at_shutdown_is_cancelled(hello_c: Path, isolation: str) -> None:
    # The call sleeps far longer than the shutdown allows; the shutdown leaves room for the
    # cancellation and plugin_shutdown on a loaded machine (the ray actor gets 80 % of it).
    p = plugbridge.load(hello_c, config={"shutdown_timeout": 1.0}, isolation=isolation)
    outcome: list[BaseException] = []

    def hold() -> None:
        try:
            p.call_raw(MSG_SLEEP, sleep_request(2500))
        except plugbridge.PluginError as exc:
            outcome.append(exc)

    holder = threading.Thread(target=hold)
    holder.start()
    assert wait_until(lambda: p.in_flight == 1)
    p.shutdown()
    holder.join()
    assert [type(e) for e in outcome] == [plugbridge.Cancelled]


@pytest.mark.ray_too
def test_library_without_the_binary_transport(hello_c_without_raw: Path, isolation: str) -> None:
    with plugbridge.load(
        hello_c_without_raw, config={"max_concurrent_ops": 1}, isolation=isolation
    ) as p:
        for call in raw_forms(p, MSG_ECHO_BYTES, b"x"):
            with pytest.raises(plugbridge.UnknownMessageType) as failed:
                call()
            assert failed.value.message == (
                "plugin 'hello_c' has no binary transport (its library does not export "
                "plugin_call_raw and rb_response_free)"
            )
        assert p.in_flight == 0 and p.rejected_request_count == 0  # each gave its slot back
        assert p.call("echo", {"message": "json still works"})["length"] == 16


@pytest.mark.ray_too
def test_raw_calls_go_to_the_new_instance_after_reload(hello_c: Path, isolation: str) -> None:
    with plugbridge.load(hello_c, isolation=isolation) as p, ThreadPoolExecutor(1) as pool:
        running = pool.submit(p.call_raw, MSG_SLEEP, sleep_request(500))
        assert wait_until(lambda: p.in_flight == 1)
        p.reload()
        assert running.result() == sleep_request(500)  # finished on the old instance
        assert p.call_raw(MSG_ECHO_BYTES, b"new") == b"new"
        assert outstanding(p) == 0


def test_transport_releases_once_per_raw_call(hello_c: Path) -> None:
    """Below the handle: every path of NativeTransport.call_raw calls ``release`` once."""
    from plugbridge._config import PluginConfig
    from plugbridge._logsink import LogSink
    from plugbridge._native.transport import NativeTransport
    from plugbridge._sources import NativeSource

    config = PluginConfig()
    transport = NativeTransport.start(
        NativeSource(hello_c), config, LogSink(None, config.log_level), None
    )
    released: list[int] = []
    try:
        for number, (message_id, body) in enumerate(
            [(MSG_ECHO_BYTES, b"ok"), (MSG_FAIL, fail_request(7, b"no")), (999, b"")]
        ):
            for timeout in (None, 5.0):
                with contextlib.suppress(plugbridge.PluginError):
                    transport.call_raw(
                        message_id, body, timeout, lambda n=number: released.append(n)
                    )
    finally:
        transport.shutdown(5)
    with pytest.raises(plugbridge.InvalidState):
        transport.call_raw(MSG_ECHO_BYTES, b"", None, lambda: released.append(-1))
    assert sorted(released) == [-1, 0, 0, 1, 1, 2, 2]


STORM = """
    import asyncio, faulthandler, json, signal, sys, time
    import plugbridge

    faulthandler.dump_traceback_later(75, exit=True)  # a hang shows where every thread is

    source, isolation, message_id, native = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    SLOTS = 4
    plugin = plugbridge.load(source, isolation=isolation,
                             config={"max_concurrent_ops": SLOTS, "shutdown_timeout": 10})
    storm = {"on": True, "hits": 0}
    other = []

    def interrupt(signum, frame):
        # Like Ctrl-C, but only while plugbridge (or plugin) code runs.
        if storm["on"] and frame is not None and frame.f_code not in OWN_CODE:
            storm["hits"] += 1
            raise KeyboardInterrupt

    def attempt(fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except KeyboardInterrupt:
            pass
        except plugbridge.PluginError as exc:
            other.append(f"{type(exc).__name__}: {exc.message}")

    def run_acall():
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(plugin.acall_raw(message_id, b"abc"))
        finally:
            try:
                loop.close()
            except Exception:
                pass  # asyncio's own state, broken half-way by an interrupt: not under test

    def loop():
        calls = 0
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            calls += 1
            attempt(plugin.call_raw, message_id, b"abc")
            attempt(plugin.call_raw, message_id, bytearray(b"abc"), timeout=5)
            if calls % 10 == 0:
                attempt(run_acall)
        return calls

    OWN_CODE = {loop.__code__, attempt.__code__, interrupt.__code__, run_acall.__code__}
    OWN_CODE.add(sys._getframe().f_code)  # this script's own lines, between loop() and the stop
    signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.00003, 0.00003)
    calls = loop()
    storm["on"] = False
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    deadline = time.monotonic() + 10
    while plugin.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    in_flight = plugin.in_flight
    served = [plugin.call_raw(message_id, b"after") for _ in range(SLOTS)]
    outstanding = plugin.call("test.outstanding", {})["outstanding"] if native == "1" else 0
    started = time.monotonic()
    plugin.shutdown()
    print(json.dumps({
        "calls": calls, "interrupted": storm["hits"], "other": other[:5],
        "in_flight": in_flight, "served": [s.decode("latin-1") for s in served],
        "outstanding": outstanding, "shutdown_s": time.monotonic() - started,
        "state": plugin.state.name,
    }))
"""


def interrupt_storm(
    tmp_path: Path, source: Path, isolation: str, message_id: int, native: bool
) -> dict[str, Any]:
    """Run STORM in a child interpreter (an interrupt escaping into pytest would end it)."""
    script = tmp_path / "raw_storm.py"
    script.write_text(textwrap.dedent(STORM))
    done = subprocess.run(
        [sys.executable, str(script), str(source), isolation, str(message_id), str(int(native))],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_interrupt_storm_strands_no_slot_and_no_response(hello_c: Path, tmp_path: Path) -> None:
    """KeyboardInterrupts landing anywhere in call_raw (inline, with a timeout, acall_raw)
    leave no slot taken, nothing inside the gate, and every response freed exactly once."""
    report = interrupt_storm(tmp_path, hello_c, "inprocess", MSG_ECHO_BYTES, native=True)
    assert report["interrupted"], report  # the storm really hit the calls
    assert report["in_flight"] == 0, report
    assert report["served"] == ["after"] * 4, report
    assert report["outstanding"] == 0, report
    assert report["other"] == [], report
    assert report["state"] == "STOPPED", report
    assert report["shutdown_s"] < 8, report  # no gate left entered (the drain would wait)
