"""Native plugins under odd inputs and hostile libraries (issue 7).

Whatever goes wrong, the host sees a ``PluginError``, the call's slot comes back, the
instance keeps serving, and ``shutdown`` unmaps the private copy at once.
"""

from __future__ import annotations

import asyncio
import math
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plugbridge
from plugbridge import LifecycleState
from plugbridge._config import PluginConfig
from plugbridge._logsink import LogSink
from plugbridge._native.bounded import CallFailed, run_bounded
from plugbridge._native.library import mapped_count, wait_for_unmapping
from plugbridge._native.transport import NativeTransport
from plugbridge._sources import NativeSource

from ..conftest import LogCapture
from .build import build_hello_c, compiler, private_copies_mapped, private_copies_on_disk


@pytest.fixture(scope="session")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_hardening"))


@pytest.fixture
def plugin(hello_c: Path, isolation: str) -> Iterator[plugbridge.PluginHandle]:
    # One slot: a call that leaked its slot makes the next call TooManyRequests.
    config = {"max_concurrent_ops": 1, "shutdown_timeout": 2}
    with plugbridge.load(hello_c, config=config, isolation=isolation) as handle:  # type: ignore[arg-type]
        yield handle


CallForm = Callable[[plugbridge.PluginHandle, Any, Any], Any]

CALL_FORMS: dict[str, CallForm] = {
    "call": lambda p, tag, request: p.call(tag, request),
    "call_json": lambda p, tag, request: p.call_json(tag, plugbridge_json(request)),
    "call_timeout": lambda p, tag, request: p.call(tag, request, timeout=30),
    "acall": lambda p, tag, request: asyncio.run(p.acall(tag, request)),
    "acall_timeout": lambda p, tag, request: asyncio.run(p.acall(tag, request, timeout=30)),
}


def plugbridge_json(request: Any) -> str:
    import json

    return request if isinstance(request, str) else json.dumps(request)


def still_serves(plugin: plugbridge.PluginHandle) -> None:
    """The only slot is free, nothing is left inside: the instance serves as before."""
    assert plugin.in_flight == 0
    assert plugin.call("echo", {"message": "after"}) == {"message": "after", "length": 5}
    assert plugin.call("echo", {"message": "timed"}, timeout=30)["length"] == 5
    assert plugin.rejected_request_count == 0


def shuts_down_cleanly(plugin: plugbridge.PluginHandle, isolation: str, mapped: int) -> None:
    """``shutdown`` finds nothing inside the library: STOPPED, the copy unmapped at once."""
    plugin.shutdown()
    assert plugin.state is LifecycleState.STOPPED
    if isolation == "inprocess":
        assert private_copies_mapped() == mapped - 1


# -- defect 1: inputs that cannot be encoded never enter the library ----------------------


@pytest.mark.parametrize("form", CALL_FORMS)
def test_type_tag_with_a_lone_surrogate_is_unknown_message_type(
    plugin: plugbridge.PluginHandle, isolation: str, form: str
) -> None:
    mapped = private_copies_mapped()
    with pytest.raises(plugbridge.UnknownMessageType) as caught:
        CALL_FORMS[form](plugin, "ec\ud800ho", {"message": "x"})
    assert "ec\\ud800ho" in caught.value.message
    still_serves(plugin)
    shuts_down_cleanly(plugin, isolation, mapped)


@pytest.mark.parametrize("form", ["call", "call_json", "call_timeout", "acall"])
def test_request_with_a_lone_surrogate_is_a_serialization_error(
    plugin: plugbridge.PluginHandle, isolation: str, form: str
) -> None:
    mapped = private_copies_mapped()
    request: Any = {"message": "x\ud800y"}
    if form == "call_json":
        request = '{"message": "x\ud800y"}'  # a str that has no UTF-8 form
    with pytest.raises(plugbridge.SerializationError):
        CALL_FORMS[form](plugin, "echo", request)
    still_serves(plugin)
    shuts_down_cleanly(plugin, isolation, mapped)


# -- defect 4: nesting deeper than the recursion limit --------------------------------------


def deeply_nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("form", ["call", "call_json", "call_timeout", "acall"])
def test_request_nested_100000_deep_is_a_serialization_error(
    plugin: plugbridge.PluginHandle, isolation: str, form: str
) -> None:
    mapped = private_copies_mapped()
    request: Any = deeply_nested(100_000)
    if form == "call_json":
        request = "[" * 100_000 + "]" * 100_000
    with pytest.raises(plugbridge.SerializationError):
        CALL_FORMS[form](plugin, "echo", request)
    still_serves(plugin)
    shuts_down_cleanly(plugin, isolation, mapped)


@pytest.mark.parametrize("form", CALL_FORMS)
def test_response_nested_100000_deep_is_a_serialization_error(
    plugin: plugbridge.PluginHandle, isolation: str, form: str
) -> None:
    mapped = private_copies_mapped()
    assert CALL_FORMS[form](plugin, "test.deep", {"depth": 3}) in ([[[]]], "[[[]]]")
    with pytest.raises(plugbridge.SerializationError) as caught:
        CALL_FORMS[form](plugin, "test.deep", {"depth": 100_000})
    assert caught.value.code == 5
    still_serves(plugin)
    shuts_down_cleanly(plugin, isolation, mapped)


# -- defect 5: invalid UTF-8 from the library -----------------------------------------------


@pytest.mark.parametrize("form", CALL_FORMS)
def test_invalid_utf8_in_a_response_is_a_serialization_error(
    plugin: plugbridge.PluginHandle, isolation: str, form: str
) -> None:
    mapped = private_copies_mapped()
    with pytest.raises(plugbridge.SerializationError) as caught:
        CALL_FORMS[form](plugin, "test.bad_utf8", {})
    assert caught.value.code == 5
    assert "UTF-8" in caught.value.message or "utf-8" in caught.value.message
    still_serves(plugin)
    shuts_down_cleanly(plugin, isolation, mapped)


@pytest.mark.parametrize("timeout", [None, 30])
def test_call_json_request_with_invalid_utf8_is_a_serialization_error(
    plugin: plugbridge.PluginHandle, timeout: float | None
) -> None:
    # The bytes reach the library as given; this one echoes them back, and the answer it
    # gives cannot be carried as JSON text.
    with pytest.raises(plugbridge.SerializationError):
        plugin.call_json("echo", b'{"message": "bad \xff here"}', timeout=timeout)
    still_serves(plugin)


@pytest.mark.parametrize("form", CALL_FORMS)
@pytest.mark.parametrize(
    ("tag", "error", "message"),
    [
        ("test.bad_utf8_error", plugbridge.HandlerError, "bad \ufffd here"),
        ("test.bad_utf8_bare", plugbridge.FfiError, "bare \ufffd( message"),
    ],
)
def test_invalid_utf8_in_an_error_message_is_replaced(
    plugin: plugbridge.PluginHandle,
    form: str,
    tag: str,
    error: type[plugbridge.PluginError],
    message: str,
) -> None:
    with pytest.raises(error) as caught:
        CALL_FORMS[form](plugin, tag, {})
    assert caught.value.message == message
    still_serves(plugin)


# -- defects 3 and 6: what a native start may and may not do --------------------------------


def start_native(library: Path, config: PluginConfig) -> NativeTransport:
    return NativeTransport.start(
        NativeSource(library), config, LogSink(None, config.log_level), None
    )


@pytest.fixture
def load_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file the test library appends "loaded" to each time it is mapped (its constructor)."""
    marker = tmp_path / "loaded.txt"
    monkeypatch.setenv("HELLO_C_LOAD_MARKER", str(marker))
    return marker


def times_loaded(marker: Path) -> int:
    return marker.read_text().count("loaded") if marker.exists() else 0


@pytest.mark.parametrize(
    ("key", "value"),
    [("shutdown_timeout", math.inf), ("data", {"x": object()}), ("data", {"s": "\ud800"})],
)
def test_a_config_with_no_json_form_never_maps_the_library(
    hello_c: Path, load_marker: Path, key: str, value: Any
) -> None:
    mapped = private_copies_mapped()
    config = PluginConfig()
    setattr(config, key, value)  # after validation: what reaches the transport is checked too
    with pytest.raises(plugbridge.ConfigError):
        start_native(hello_c, config)
    assert times_loaded(load_marker) == 0
    assert private_copies_mapped() == mapped
    start_native(hello_c, PluginConfig()).shutdown(5)  # the marker works: this one is seen
    assert times_loaded(load_marker) == 1


@pytest.mark.parametrize(
    "data", [{"x": object()}, {"s": "\ud800"}, {"deep": deeply_nested(100_000)}]
)
def test_load_with_data_that_has_no_json_form_is_a_config_error(
    hello_c: Path, load_marker: Path, isolation: str, data: dict[str, Any]
) -> None:
    mapped = private_copies_mapped()
    with pytest.raises(plugbridge.ConfigError):
        plugbridge.load(hello_c, config={"data": data}, isolation=isolation)  # type: ignore[arg-type]
    assert times_loaded(load_marker) == 0  # in this process, or in a worker started for it
    assert private_copies_mapped() == mapped


CREATE_FAILS = """
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
typedef struct { uint8_t *data; size_t len; size_t capacity; uint32_t error_code; } FfiBuffer;
typedef void (*LogCallback)(uint8_t, const char *, const uint8_t *, size_t);
void *plugin_create(void) { return NULL; }
void *plugin_init(void *p, const uint8_t *c, size_t n, LogCallback cb) {
    (void)p, (void)c, (void)n, (void)cb; return NULL; }
FfiBuffer plugin_call(void *h, const char *t, const uint8_t *r, size_t n) {
    (void)h, (void)t, (void)r, (void)n; FfiBuffer b = {0}; return b; }
void plugin_free_buffer(FfiBuffer *b) { (void)b; }
bool plugin_shutdown(void *h) { (void)h; return true; }
void plugin_set_log_level(void *h, uint8_t l) { (void)h, (void)l; }
uint8_t plugin_get_state(void *h) { (void)h; return 255; }
uint64_t plugin_get_rejected_count(void *h) { (void)h; return 0; }
"""


def test_plugin_create_returning_null_leaves_nothing_mapped(tmp_path: Path, isolation: str) -> None:
    source = tmp_path / "create_fails.c"
    source.write_text(CREATE_FAILS)
    library = tmp_path / "libcreate_fails.so"
    subprocess.run(
        [compiler(), "-shared", "-fPIC", "-Wall", "-Werror", "-o", str(library), str(source)],
        check=True,
        capture_output=True,
    )
    mapped = private_copies_mapped()
    with pytest.raises(plugbridge.InitializationFailed, match="plugin_init failed"):
        plugbridge.load(library, isolation=isolation)  # type: ignore[arg-type]
    assert private_copies_mapped() == mapped
    assert private_copies_on_disk() == []


def test_init_past_the_start_deadline_is_unmapped_once_it_returns(
    hello_c: Path, isolation: str
) -> None:
    before, mapped = mapped_count(), private_copies_mapped()
    capture = LogCapture()
    config = {"start_timeout": 0.2, "data": {"init_sleep_ms": 600}, "log_level": "debug"}
    with pytest.raises(plugbridge.InitializationFailed):
        plugbridge.load(hello_c, config=config, log_callback=capture, isolation=isolation)  # type: ignore[arg-type]
    # Once plugin_init returns, its plugin is stopped and its copy unmapped.
    assert wait_for_unmapping(before, 10)
    assert private_copies_mapped() == mapped
    assert capture.messages() == []  # the late instance never reached the callback


def test_large_finite_durations_work_end_to_end(hello_c: Path) -> None:
    # In-process only: the worker transport overflows poll() with a 1e9 s start deadline.
    isolation = "inprocess"
    mapped = private_copies_mapped()
    config = {
        "shutdown_timeout": 1e9,
        "start_timeout": 1e9,
        "call_timeout": 1e9,
    }
    plugin = plugbridge.load(hello_c, config=config, isolation=isolation)  # type: ignore[arg-type]
    assert plugin.call("echo", {"message": "x"}) == {"message": "x", "length": 1}
    assert plugin.call("echo", {"message": "x"}, timeout=1e9)["length"] == 1
    assert asyncio.run(plugin.acall("echo", {"message": "x"}, timeout=1e9))["length"] == 1
    plugin.reload(timeout=1e9)
    plugin.shutdown()
    assert plugin.state is LifecycleState.STOPPED
    assert private_copies_mapped() == mapped


@pytest.mark.parametrize("timeout", [1e9, 1e12, math.inf])
def test_run_bounded_accepts_any_long_timeout(timeout: float) -> None:
    assert run_bounded(lambda: 42, timeout, "bounded-test") == (True, 42)


def test_run_bounded_tells_a_failed_call_from_an_interrupted_wait() -> None:
    def fails() -> int:
        raise ValueError("boom")

    with pytest.raises(CallFailed) as failed:  # fn's own error: it is not running any more
        run_bounded(fails, 5, "bounded-test", late=lambda _: pytest.fail("late ran"))
    assert isinstance(failed.value.error, ValueError)

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    release, late = threading.Event(), queue.SimpleQueue[object]()
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted):  # the wait is interrupted while fn still runs...
            run_bounded(lambda: release.wait(10) and 42, 10, "bounded-test", late=late.put)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    release.set()
    assert late.get(timeout=10) == 42  # ...so late runs when it returns


def test_shutdown_failed_message_has_no_float_noise(hello_c: Path) -> None:
    capture = LogCapture()
    config = {"shutdown_timeout": 5, "data": {"shutdown_sleep_ms": 1000}}
    plugin = plugbridge.load(hello_c, config=config, log_callback=capture)
    plugin.reload(timeout=0.7)  # the old instance gets what is left of 0.7 s: not a round number
    with pytest.raises(plugbridge.ShutdownFailed) as failed:
        plugin.shutdown(0.25)
    assert "(0.25s)" in failed.value.message
    warnings = [m for m in capture.messages() if "failed to stop" in m]
    assert len(warnings) == 1
    # What is left of 0.7 s, with its significant digits (at most 4) and no float noise.
    duration = re.search(r"\((\d+(?:\.\d+)?)s\)", warnings[0])
    assert duration, warnings[0]
    assert len(duration[1].replace(".", "").lstrip("0")) <= 4, warnings[0]
