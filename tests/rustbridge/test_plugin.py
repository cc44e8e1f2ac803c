"""``NativePlugin`` against the C example, in both isolation modes, with rustbridge's own
package as the oracle on a copy of the same library: the same calls give the same values
and the same errors (code and text), and the object's lifecycle reads as rustbridge's.

Where the two differ on purpose, the difference is spelled out here (``their_text``): a
library that sets ``error_code`` with an error envelope gives rustbridge's host the whole
envelope JSON as its message, the facade the envelope's ``error_message``; a raw error
message ends at its NUL here, while rustbridge's keeps the NUL.
"""

from __future__ import annotations

import ctypes
import gc
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import rustbridge

import plugbridge
from plugbridge.rustbridge import (
    LifecycleState,
    LogLevel,
    NativePlugin,
    NativePluginLoader,
    PluginConfig,
    PluginException,
)
from tests.conftest import wait_until
from tests.native.bench_small import SmallRequestRaw, SmallResponseRaw

MSG_BENCH_SMALL, MSG_ECHO_BYTES, MSG_FILL, MSG_FAIL = 1, 10, 11, 12


class TooSmall(ctypes.Structure):
    _fields_ = (("value", ctypes.c_uint32),)


small_request = SmallRequestRaw.create


@pytest.fixture
def plugin(hello_c: Path, isolation: str) -> Iterator[NativePlugin]:
    config = PluginConfig.defaults().log_level(LogLevel.DEBUG)
    with NativePluginLoader.load_with_config(hello_c, config, isolation=isolation) as loaded:
        yield loaded


@pytest.fixture
def oracle(oracle_copy: Path) -> Iterator[Any]:
    """rustbridge's own plugin on a copy of the same library."""
    with rustbridge.NativePluginLoader.load(oracle_copy) as loaded:
        yield loaded


def failure(action: Callable[[], object]) -> tuple[str, int]:
    """The message and code of the ``PluginException`` (either package's) ``action`` raises."""
    try:
        action()
    except (PluginException, rustbridge.PluginException) as exc:
        return exc.message, exc.error_code
    raise AssertionError("no PluginException")


def their_text(message: str) -> str:
    """rustbridge's message as the facade words it: the ``error_message`` of an error
    envelope it passed on whole, and a raw error's text without its NUL."""
    if message.startswith("{"):
        return str(json.loads(message)["error_message"])
    return message.rstrip("\0")


CALLS = [
    ("echo", {"message": "héllo wörld"}),
    ("greet", {"name": "Ann"}),
    ("math.add", {"a": 40, "b": 2}),
    ("bench.small", {"key": "k", "flags": 1}),
    ("test.deep", {"depth": 0}),
    ("test.deep", {"depth": 3}),
]


@pytest.mark.parametrize(
    ("tag", "request_"), CALLS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(CALLS)]
)
def test_call_answers_as_rustbridge(
    plugin: NativePlugin, oracle: Any, tag: str, request_: Any
) -> None:
    """The same payload (the plugin's own JSON text here, rustbridge's re-serialisation
    there: the same value)."""
    text = json.dumps(request_)
    ours, theirs = plugin.call(tag, text), oracle.call(tag, text)
    assert isinstance(ours, str)
    assert json.loads(ours) == json.loads(theirs)


def test_a_payload_of_nothing_is_null(plugin: NativePlugin, oracle: Any) -> None:
    assert (
        plugin.call("test.deep", '{"depth": 0}')
        == "null"
        == oracle.call("test.deep", '{"depth": 0}')
    )


ERRORS = [
    ("no.such.tag", "{}"),
    ("echo", "not json"),
    ("echo", "[1, 2]"),
    ("echo", '{"text": "no message field"}'),
    ("math.add", '{"a": "one", "b": 2}'),
    ("test.bare_error", "{}"),
]


@pytest.mark.parametrize(("tag", "request_"), ERRORS)
def test_call_errors_as_rustbridge(
    plugin: NativePlugin, oracle: Any, tag: str, request_: str
) -> None:
    ours = failure(lambda: plugin.call(tag, request_))
    message, code = failure(lambda: oracle.call(tag, request_))
    assert ours == (their_text(message), code)


def test_errors_rustbridge_cannot_read(plugin: NativePlugin, oracle: Any) -> None:
    """Invalid UTF-8 in an error message: rustbridge's host lets a ``UnicodeDecodeError``
    out; the facade reports the plugin's error with the bytes replaced."""
    message, code = failure(lambda: plugin.call("test.bad_utf8_bare", "{}"))
    assert (message, code) == ("bare \ufffd( message", int(plugbridge.ErrorCode.FFI_ERROR))
    with pytest.raises(UnicodeDecodeError):
        oracle.call("test.bad_utf8_bare", "{}")


def test_call_typed(plugin: NativePlugin, oracle: Any) -> None:
    request = {"a": 2, "b": 3}
    assert plugin.call_typed("math.add", request) == {"result": 5}
    assert plugin.call_typed("math.add", request, dict) == oracle.call_typed("math.add", request)
    assert failure(lambda: plugin.call_typed("nope", {}))[1] == 6


def test_call_raw_as_rustbridge(plugin: NativePlugin, oracle: Any) -> None:
    request = small_request(b"answer", flags=1)
    ours = plugin.call_raw(MSG_BENCH_SMALL, request, SmallResponseRaw)
    theirs = oracle.call_raw(MSG_BENCH_SMALL, small_request(b"answer", 1), SmallResponseRaw)
    assert type(ours) is SmallResponseRaw
    assert bytes(ours) == bytes(theirs)
    assert bytes(ours.value[: ours.value_len]) == b"value_for_answer"
    assert (ours.ttl_seconds, ours.cache_hit) == (3600, 1)


def test_call_raw_errors_as_rustbridge(plugin: NativePlugin, oracle: Any) -> None:
    mismatch = failure(lambda: plugin.call_raw(MSG_BENCH_SMALL, small_request(b"k", 0), TooSmall))
    assert mismatch == failure(
        lambda: oracle.call_raw(MSG_BENCH_SMALL, small_request(b"k", 0), TooSmall)
    )
    assert mismatch == ("Response size mismatch: expected 4, got 80", 1)
    old = small_request(b"k", 0, version=2)
    ours = failure(lambda: plugin.call_raw(MSG_BENCH_SMALL, old, SmallResponseRaw))
    message, code = failure(lambda: oracle.call_raw(MSG_BENCH_SMALL, old, SmallResponseRaw))
    assert ours == (their_text(message), code)
    assert ours[1] == int(plugbridge.ErrorCode.HANDLER_ERROR)


RAW_CALLS = [
    (MSG_ECHO_BYTES, b"\x00binary\xffbytes"),
    (MSG_ECHO_BYTES, b""),
    (MSG_FILL, struct.pack("=II", 70_000, 7)),
    (MSG_FAIL, struct.pack("=I", 9) + b"it failed"),
    (MSG_FAIL, struct.pack("=I", 13) + "späť".encode()),
    (99, b"who"),
]


@pytest.mark.parametrize(("message_id", "request_"), RAW_CALLS)
def test_call_raw_bytes_as_rustbridge(
    plugin: NativePlugin, oracle: Any, message_id: int, request_: bytes
) -> None:
    try:
        expected: Any = oracle.call_raw_bytes(message_id, request_)
    except rustbridge.PluginException as exc:
        expected = (their_text(exc.message), exc.error_code)
        assert failure(lambda: plugin.call_raw_bytes(message_id, request_)) == expected
    else:
        assert plugin.call_raw_bytes(message_id, request_) == expected
        assert NativePlugin.call_raw_bytes(plugin, message_id, request_) == expected


def test_call_raw_bytes_takes_any_bytes_like(plugin: NativePlugin) -> None:
    """bytes, bytearray, memoryview and ctypes objects (their bytes), as plugbridge does."""
    for request in (bytearray(b"abc"), memoryview(b"abc"), (ctypes.c_uint8 * 3)(97, 98, 99)):
        assert plugin.call_raw_bytes(MSG_ECHO_BYTES, request) == b"abc"  # type: ignore[arg-type]


def test_without_the_binary_transport(
    hello_c_without_raw: Path, oracle: Any, isolation: str
) -> None:
    refused = ("Binary transport not supported by this library", 1)
    with NativePluginLoader.load(hello_c_without_raw, isolation=isolation) as plugin:
        assert plugin.has_binary_transport is False
        request = small_request(b"k", 0)
        assert failure(lambda: plugin.call_raw(1, request, SmallResponseRaw)) == refused
        assert failure(lambda: plugin.call_raw_bytes(1, b"x")) == refused
        assert failure(lambda: NativePlugin.call_raw_bytes(plugin, 1, b"x")) == refused
        assert json.loads(plugin.call("echo", '{"message": "json"}'))["length"] == 4
    assert str(PluginException(*refused)) == "[1] Binary transport not supported by this library"


def test_the_binary_transport_follows_a_reload(
    hello_c: Path, hello_c_without_raw: Path, tmp_path: Path, isolation: str
) -> None:
    """``plugin.handle.reload()`` takes the library as it is on disk now: with the binary
    transport, or without it."""
    library = tmp_path / "libswapped.so"
    shutil.copyfile(hello_c_without_raw, library)
    refused = ("Binary transport not supported by this library", 1)
    with NativePluginLoader.load(library, isolation=isolation) as plugin:
        assert plugin.has_binary_transport is False
        assert failure(lambda: plugin.call_raw_bytes(MSG_ECHO_BYTES, b"x")) == refused
        shutil.copyfile(hello_c, library)
        plugin.handle.reload()
        assert plugin.has_binary_transport is True
        assert plugin.call_raw_bytes(MSG_ECHO_BYTES, b"abc") == b"abc"
        assert NativePlugin.call_raw_bytes(plugin, MSG_ECHO_BYTES, b"abc") == b"abc"
        shutil.copyfile(hello_c_without_raw, library)
        plugin.handle.reload()
        assert plugin.has_binary_transport is False
        assert failure(lambda: plugin.call_raw_bytes(MSG_ECHO_BYTES, b"x")) == refused
        assert failure(lambda: plugin.call_raw(1, b"x", TooSmall)) == refused


def test_set_log_level(hello_c: Path, isolation: str) -> None:
    records: list[tuple[LogLevel, str]] = []
    with NativePluginLoader.load_with_config(
        hello_c,
        PluginConfig.defaults(),
        lambda level, target, message: records.append((level, message)),
        isolation=isolation,
    ) as plugin:
        plugin.call("echo", '{"message": "quiet"}')
        plugin.set_log_level(LogLevel.DEBUG)
        plugin.call("echo", '{"message": "loud"}')
        plugin.set_log_level(9)  # type: ignore[arg-type]  # outside 0..5: OFF, as rustbridge
        plugin.call("echo", '{"message": "off"}')
        assert plugin.handle.log_level is plugbridge.LogLevel.OFF
        plugin.set_log_level(plugbridge.LogLevel.DEBUG)  # type: ignore[arg-type]
        plugin.call("echo", '{"message": "again"}')
    echoes = [m for _, m in records if m.startswith("Handling echo")]
    assert echoes == ["Handling echo request: loud", "Handling echo request: again"]
    assert (LogLevel.DEBUG, "Handling echo request: loud") in records


def test_state_as_rustbridge(plugin: NativePlugin, oracle: Any) -> None:
    assert plugin.state is LifecycleState.ACTIVE
    assert int(plugin.state) == int(oracle.state)
    handle = plugin.handle
    plugin.close()
    oracle.close()
    assert plugin.state is LifecycleState.STOPPED
    assert int(plugin.state) == int(oracle.state)
    assert handle.state is plugbridge.LifecycleState.STOPPED


def test_rejected_request_count(hello_c: Path, isolation: str) -> None:
    config = PluginConfig.defaults().max_concurrent_ops(1)
    with NativePluginLoader.load_with_config(hello_c, config, isolation=isolation) as plugin:
        assert plugin.rejected_request_count == 0
        with ThreadPoolExecutor(1) as pool:
            # The slot is held from in_flight == 1 until the sleep ends: 2 s is the margin
            # for this thread to make its call even on busy cores.
            slow = pool.submit(plugin.call, "test.sleep", '{"duration_ms": 2000}')
            assert wait_until(lambda: plugin.handle.in_flight == 1)
            refused = failure(lambda: plugin.call("echo", '{"message": "x"}'))
            assert refused[1] == int(plugbridge.ErrorCode.TOO_MANY_REQUESTS)
            assert plugin.rejected_request_count == 1
            assert isinstance(slow.result(), str)  # the call holding the slot was not hurt


def test_many_threads_at_once(plugin: NativePlugin) -> None:
    def work(worker: int) -> bool:
        return all(
            json.loads(plugin.call("math.add", json.dumps({"a": worker, "b": i})))["result"]
            == worker + i
            and plugin.call_raw_bytes(MSG_ECHO_BYTES, bytes([worker, i])) == bytes([worker, i])
            for i in range(50)
        )

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(8)))


CLOSED = ("Plugin has been closed", 1)


def test_after_close_everything_says_closed_as_rustbridge(
    plugin: NativePlugin, oracle: Any
) -> None:
    assert plugin.shutdown() is True
    oracle.shutdown()
    request = small_request(b"k", 0)
    for target in (plugin, oracle):
        for action in (
            lambda t=target: t.call("echo", "{}"),
            lambda t=target: t.call_typed("echo", {}),
            lambda t=target: t.call_raw(1, request, SmallResponseRaw),
            lambda t=target: t.call_raw_bytes(1, b"x"),
            lambda t=target: t.set_log_level(LogLevel.INFO),
            lambda t=target: t.rejected_request_count,
        ):
            assert failure(action) == CLOSED
    assert failure(lambda: NativePlugin.call(plugin, "echo", "{}")) == CLOSED
    assert failure(lambda: NativePlugin.call_raw_bytes(plugin, 1, b"")) == CLOSED
    assert plugin.shutdown() is True and oracle.shutdown() is True
    plugin.close()
    assert plugin.has_binary_transport is True


def test_the_class_methods_do_what_the_fast_ones_do(plugin: NativePlugin) -> None:
    assert NativePlugin.call(plugin, "echo", '{"message": "slow"}') == plugin.call(
        "echo", '{"message": "slow"}'
    )
    assert failure(lambda: NativePlugin.call(plugin, "nope", "{}"))[1] == 6


def test_shutdown_that_fails_returns_false(hello_c: Path, isolation: str) -> None:
    """A plugin_shutdown that overruns the shutdown timeout: False, never an exception; the
    plugin reads STOPPED (as rustbridge's does once shut down) and says it is closed."""
    config = PluginConfig.defaults().shutdown_timeout_ms(50).set("shutdown_sleep_ms", 600)
    plugin = NativePluginLoader.load_with_config(hello_c, config, isolation=isolation)
    assert plugin.shutdown() is False
    assert plugin.state is LifecycleState.STOPPED
    assert plugin.shutdown() is True
    assert failure(lambda: plugin.call("echo", "{}")) == CLOSED


def test_context_manager(hello_c: Path, isolation: str) -> None:
    """``with`` gives the plugin itself and shuts it down on the way out, an exception too."""
    plugin = NativePluginLoader.load(hello_c, isolation=isolation)
    handle = plugin.handle
    try:
        with plugin as entered:
            assert entered is plugin
            raise KeyError("inside")
    except KeyError:
        pass
    assert plugin.state is LifecycleState.STOPPED
    assert handle.state is plugbridge.LifecycleState.STOPPED


def test_a_dropped_plugin_is_shut_down(hello_c: Path, isolation: str) -> None:
    plugin = NativePluginLoader.load(hello_c, isolation=isolation)
    handle = plugin.handle
    del plugin
    gc.collect()
    assert handle.state is plugbridge.LifecycleState.STOPPED


def test_a_crash_in_a_worker_is_a_plugin_exception(hello_c: Path) -> None:
    """With isolation="process" a segfault in the library is an error, not the end of the
    host (rustbridge's host would die with it)."""
    with NativePluginLoader.load(hello_c, isolation="process") as plugin:
        _, code = failure(lambda: plugin.call("test.crash", "{}"))
        assert code == int(plugbridge.ErrorCode.PLUGIN_CRASHED)
        assert plugin.state is LifecycleState.FAILED


EXIT_SCRIPT = """
import sys
from plugbridge.rustbridge import NativePluginLoader, PluginConfig

def on_log(level, target, message):
    print(f"{sys.argv[3]}: {message}", flush=True)

kept = NativePluginLoader.load_with_config(
    sys.argv[1], PluginConfig.defaults(), on_log, isolation=sys.argv[2]
)
cycle = [NativePluginLoader.load(sys.argv[1], isolation=sys.argv[2])]
cycle.append(cycle)  # collected late, if at all
print(kept.call("echo", '{"message": "bye"}'), flush=True)
"""


def test_plugins_left_open_are_shut_down_at_exit(
    hello_c: Path, isolation: str, tmp_path: Path
) -> None:
    """As rustbridge's finalizer: a plugin still open when the program ends is shut down
    (its plugin_shutdown runs, its log callback sees it), and the exit does not hang."""
    script = tmp_path / "exit_open.py"
    script.write_text(EXIT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(hello_c), isolation, "kept"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert '{"message":"bye","length":3}' in lines
    assert lines[-2:] == ["kept: HelloPlugin (C) stopping", "kept: HelloPlugin (C) stopped"]
