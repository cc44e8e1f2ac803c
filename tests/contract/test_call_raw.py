"""The binary transport of Python plugins: ``@raw_handler`` methods behind ``call_raw`` and
``acall_raw``, with the same limit, timeout, logging and lifecycle rules as ``call``, in
every isolation mode."""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import plugbridge

from ..conftest import LogCapture, wait_until

RAW = """
    import asyncio, ctypes, logging, os, time
    from plugbridge import HandlerError, Plugin, TooManyRequests, handler, raw_handler

    log = logging.getLogger(__name__)

    class Pair(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32)]

    class Raw(Plugin):
        name = "raw"

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @raw_handler(1)
        def reverse(self, ctx, payload):
            assert type(payload) is bytes
            log.info("reversing %d bytes", len(payload))
            return payload[::-1]

        @raw_handler(2)
        async def shout(self, ctx, payload):
            assert type(payload) is bytes
            await asyncio.sleep(0)
            log.info("shouting %d bytes", len(payload))
            return bytearray(payload.upper())

        @raw_handler(3)
        def view(self, ctx, payload):
            return memoryview(payload)[1:]

        @raw_handler(4)
        def pair(self, ctx, payload):
            pair = Pair.from_buffer_copy(payload)
            return Pair(pair.b, pair.a + pair.b)  # a ctypes structure is bytes-like

        @raw_handler(5)
        def text(self, ctx, payload):
            return "not bytes"

        @raw_handler(6)
        def broken(self, ctx, payload):
            raise ValueError(payload.decode())

        @raw_handler(7)
        async def refuses(self, ctx, payload):
            raise TooManyRequests("busy elsewhere")

        @raw_handler(8)
        def park(self, ctx, payload):
            while not os.path.exists(payload.decode()):  # until the test lets it go
                time.sleep(0.01)
            return b"released"

        @raw_handler(9)
        async def apark(self, ctx, payload):
            while not os.path.exists(payload.decode()):
                await asyncio.sleep(0.01)
            return b"released"

        @raw_handler(10)
        def quiet(self, ctx, payload):  # no records: the interrupt storm's target
            return payload[::-1]

        @raw_handler(11)
        async def aquiet(self, ctx, payload):
            return payload.upper()

        @raw_handler(0xFFFFFFFF)
        def last(self, ctx, payload):
            return b"max id"
"""

JSON_ONLY = """
    from plugbridge import Plugin, handler

    class JsonOnly(Plugin):
        name = "json_only"

        @handler("echo")
        def echo(self, ctx, req):
            return req

        async def handle_request(self, ctx, type_tag, payload):
            return payload  # raw JSON dispatch: never reached by the binary transport
"""

MIB = 1 << 20


@pytest.fixture
def raw_source(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(RAW, name="raw_plugin.py")


def forms(
    handle: plugbridge.PluginHandle, message_id: int, body: object
) -> list[Callable[[], bytes]]:
    """One raw call in its three forms: inline (sync handlers), on the instance's threads
    (a timeout), and ``acall_raw``."""
    return [
        lambda: handle.call_raw(message_id, body),
        lambda: handle.call_raw(message_id, body, timeout=30),
        lambda: asyncio.run(handle.acall_raw(message_id, body)),
    ]


@pytest.mark.parametrize("size", [0, 1, MIB])
def test_sync_and_async_raw_handlers(raw_source: Path, isolation: str, size: int) -> None:
    payload = os.urandom(size)
    with plugbridge.load(raw_source, isolation=isolation) as plugin:
        assert plugin.metadata.binary_transport is True
        for call in forms(plugin, 1, payload):
            assert call() == payload[::-1]
        for call in forms(plugin, 2, bytearray(payload)):
            assert call() == payload.upper()
        for call in forms(plugin, 3, memoryview(payload)):
            assert call() == payload[1:]


def test_ctypes_structures_in_and_out(raw_source: Path, isolation: str) -> None:
    class Pair(ctypes.Structure):
        _fields_ = (("a", ctypes.c_uint32), ("b", ctypes.c_uint32))

    with plugbridge.load(raw_source, isolation=isolation) as plugin:
        for call in forms(plugin, 4, Pair(3, 4)):
            answer = Pair.from_buffer_copy(call())
            assert (answer.a, answer.b) == (4, 7)
        assert plugin.call_raw(0xFFFFFFFF, b"") == b"max id"


@pytest.mark.parametrize(
    ("message_id", "error", "message"),
    [
        (
            5,
            plugbridge.SerializationError,
            "the raw handler of message 5 must return a bytes-like object, not str",
        ),
        (6, plugbridge.HandlerError, "ValueError: bad input"),
        (7, plugbridge.TooManyRequests, "busy elsewhere"),
        (42, plugbridge.UnknownMessageType, "plugin 'raw' has no raw handler for message 42"),
    ],
)
def test_errors_have_their_class_and_text(
    raw_source: Path,
    isolation: str,
    message_id: int,
    error: type[plugbridge.PluginError],
    message: str,
) -> None:
    with plugbridge.load(raw_source, config={"max_concurrent_ops": 1}, isolation=isolation) as p:
        for form, call in enumerate(forms(p, message_id, b"bad input")):
            with pytest.raises(plugbridge.PluginError) as failed:
                call()
            assert type(failed.value) is error, form
            assert failed.value.message == message, form
        assert p.in_flight == 0 and p.rejected_request_count == 0
        assert p.call_raw(1, b"ok") == b"ko"


def test_bad_message_ids_and_requests(raw_source: Path, isolation: str) -> None:
    with plugbridge.load(raw_source, config={"max_concurrent_ops": 1}, isolation=isolation) as p:
        for bad in (-1, 1 << 32, "1", None, True):
            with pytest.raises(plugbridge.UnknownMessageType, match="message_id"):
                p.call_raw(bad, b"")  # type: ignore[arg-type]
        for request in ("text", 7, None):
            with pytest.raises(plugbridge.SerializationError, match="bytes-like"):
                p.call_raw(1, request)
        assert p.in_flight == 0 and p.rejected_request_count == 0
        assert p.call_raw(1, b"ab") == b"ba"


def test_a_plugin_without_raw_handlers(write_plugin: Callable[..., Path], isolation: str) -> None:
    """Raw JSON dispatch (``handle_request``) is not the binary transport."""
    source = write_plugin(JSON_ONLY, name="json_only.py")
    with plugbridge.load(source, isolation=isolation) as plugin:
        assert plugin.metadata.binary_transport is False
        for call in forms(plugin, 1, b"x"):
            with pytest.raises(plugbridge.UnknownMessageType, match="no raw handler"):
                call()
        assert plugin.call("echo", {"a": 1}) == {"a": 1}
    for call in forms(plugin, 1, b"x"):
        with pytest.raises(plugbridge.InvalidState):
            call()


def test_after_shutdown_is_invalid_state(raw_source: Path, isolation: str) -> None:
    plugin = plugbridge.load(raw_source, isolation=isolation)
    assert plugin.call_raw(1, b"ab") == b"ba"
    plugin.shutdown()
    for message_id in (1, 2, 42):
        for call in forms(plugin, message_id, b"x"):
            with pytest.raises(plugbridge.InvalidState):
                call()
    assert plugin.in_flight == 0


@pytest.mark.parametrize("message_id", [8, 9])
def test_concurrency_limit_is_shared_with_call(
    raw_source: Path, isolation: str, message_id: int
) -> None:
    flag = raw_source.parent / f"let_go_{message_id}"
    with (
        plugbridge.load(raw_source, config={"max_concurrent_ops": 1}, isolation=isolation) as p,
        ThreadPoolExecutor(1) as pool,
    ):
        holder = pool.submit(p.call_raw, message_id, str(flag).encode())
        assert wait_until(lambda: p.in_flight == 1, timeout=30)
        with pytest.raises(plugbridge.TooManyRequests):
            p.call_raw(1, b"x")
        with pytest.raises(plugbridge.TooManyRequests):
            asyncio.run(p.acall_raw(2, b"x"))
        with pytest.raises(plugbridge.TooManyRequests):
            p.call("echo", {})
        assert p.rejected_request_count == 3
        flag.touch()
        assert holder.result(timeout=30) == b"released"
        assert p.call_raw(1, b"x") == b"x"


@pytest.mark.parametrize("message_id", [8, 9])
def test_timeout_keeps_the_slot_until_the_handler_returns(
    raw_source: Path, isolation: str, message_id: int
) -> None:
    flag = raw_source.parent / f"let_go_{message_id}"
    with plugbridge.load(raw_source, config={"max_concurrent_ops": 1}, isolation=isolation) as p:
        with pytest.raises(plugbridge.Timeout) as late:
            p.call_raw(message_id, str(flag).encode(), timeout=0.2)
        assert late.value.message == f"raw call {message_id} exceeded its timeout of 0.2s"
        if message_id == 8:  # a sync handler cannot be stopped: it keeps the slot
            with pytest.raises(plugbridge.TooManyRequests):
                p.call_raw(1, b"x")
        flag.touch()
        assert wait_until(lambda: p.in_flight == 0, timeout=30)
        flag.unlink()

        async def late_async() -> None:
            with pytest.raises(plugbridge.Timeout, match=f"raw call {message_id} exceeded"):
                await p.acall_raw(message_id, str(flag).encode(), timeout=0.2)

        asyncio.run(late_async())
        flag.touch()
        assert wait_until(lambda: p.in_flight == 0, timeout=30)
        assert p.call_raw(1, b"x") == b"x"


def test_records_are_attributed_to_the_instance(raw_source: Path, isolation: str) -> None:
    capture = LogCapture()
    with plugbridge.load(raw_source, log_callback=capture, isolation=isolation) as plugin:
        plugin.call_raw(1, b"abc")
        plugin.call_raw(2, b"abcd", timeout=30)
        asyncio.run(plugin.acall_raw(1, b"ab"))
        assert wait_until(lambda: len(capture.messages()) >= 3)
        plugin.set_log_level("warn")
        plugin.call_raw(1, b"filtered")
    records = [(str(target), message) for _, target, message in capture.records]
    assert ("raw_plugin", "reversing 3 bytes") in records
    assert ("raw_plugin", "shouting 4 bytes") in records
    assert ("raw_plugin", "reversing 2 bytes") in records
    assert not any("8 bytes" in message for _, message in records)


def test_acall_raw_from_many_tasks(raw_source: Path, isolation: str) -> None:
    async def main(plugin: plugbridge.PluginHandle) -> list[bytes]:
        return list(
            await asyncio.gather(*(plugin.acall_raw(1 + i % 2, b"a%d" % i) for i in range(30)))
        )

    with plugbridge.load(raw_source, isolation=isolation) as plugin:
        answers = asyncio.run(main(plugin))
    assert answers == [(b"a%d" % i)[::-1] if i % 2 == 0 else b"A%d" % i for i in range(30)]


def test_reload_serves_the_new_code(
    raw_source: Path, write_plugin: Callable[..., Path], isolation: str
) -> None:
    with plugbridge.load(raw_source, isolation=isolation) as plugin:
        assert plugin.call_raw(1, b"abc") == b"cba"
        write_plugin(
            RAW.replace("return payload[::-1]", "return b'v2:' + payload"), name="raw_plugin.py"
        )
        plugin.reload()
        assert plugin.call_raw(1, b"abc") == b"v2:abc"


def test_raw_handler_arguments_are_checked(write_plugin: Callable[..., Path]) -> None:
    for bad in (-1, 1 << 32, "1", 1.5, True):
        with pytest.raises(TypeError):
            plugbridge.raw_handler(bad)  # type: ignore[arg-type]
    source = write_plugin(
        """
        from plugbridge import Plugin, raw_handler

        class Wrong(Plugin):
            @raw_handler(1)
            def wrong(self, payload):
                return payload
        """,
        name="wrong_arity.py",
    )
    with pytest.raises(plugbridge.InitializationFailed, match="raw handler of message 1"):
        plugbridge.load(source)


def test_interrupt_storm_strands_no_slot(
    tmp_path: Path, write_plugin: Callable[..., Path], isolation: str
) -> None:
    """KeyboardInterrupts landing anywhere in call_raw / acall_raw (sync and async raw
    handlers) never cost a slot or leave a call inside the instance. (Handlers that log no
    records: an interrupt inside the delivery of a record is another matter.)"""
    from ..native.test_call_raw import interrupt_storm

    source = write_plugin(RAW, name="raw_plugin.py")
    for message_id, answer in ((10, "retfa"), (11, "AFTER")):
        report = interrupt_storm(tmp_path, source, isolation, message_id, native=False)
        assert report["interrupted"], report
        assert report["in_flight"] == 0, report
        assert report["served"] == [answer] * 4, report
        assert report["other"] == [], report
        assert report["state"] == "STOPPED", report
        assert report["shutdown_s"] < 8, report
