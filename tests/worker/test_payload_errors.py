"""isolation="process": requests, responses and type tags JSON cannot carry.

Each is one ``PluginError`` (``UnknownMessageType`` for a tag, ``SerializationError`` for a
value), decided before anything is sent when the host can tell, the call's slot given back,
and the worker still serving: the same process answers the next call.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plugbridge
from plugbridge import PluginHandle

from ..conftest import wait_until

PAYLOADS = """
    import os
    from plugbridge import Plugin, handler

    DEPTH = 100_000

    def nested(depth):
        value = []
        for _ in range(depth):
            value = [value]
        return value

    class Payloads(Plugin):
        name = "payloads"

        @handler("pid")
        def pid(self, ctx, req):
            return os.getpid()

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @handler("aecho")
        async def aecho(self, ctx, req):
            return req

        @handler("deep")
        def deep(self, ctx, req):
            return nested(DEPTH)

        @handler("surrogate_error")
        def surrogate_error(self, ctx, req):
            raise ValueError("bad \\ud800 text")
"""

RAW = """
    import os
    from plugbridge import Plugin

    class Raw(Plugin):
        name = "raw"
        type_tags = ("bad_utf8", "deep", "pid")

        def handle_request(self, ctx, type_tag, payload):
            if type_tag == "pid":
                return str(os.getpid()).encode()
            if type_tag == "deep":
                return b"[" * 100_000 + b"]" * 100_000
            return b'{"text": "\\xff\\xfe"}'
"""

DEEP: Any = []
for _ in range(100_000):
    DEEP = [DEEP]

APIS = ("call", "call_json", "acall")


def invoke(
    plugin: PluginHandle, api: str, tag: Any, request: Any, timeout: float | None = None
) -> Any:
    """One call through ``api``; for ``call_json``, ``request`` is the JSON text."""
    if api == "call":
        return plugin.call(tag, request, timeout=timeout)
    if api == "call_json":
        return plugin.call_json(tag, request, timeout=timeout)
    return asyncio.run(plugin.acall(tag, request, timeout=timeout))


@pytest.fixture
def payloads(write_plugin: Callable[..., Path]) -> Iterator[PluginHandle]:
    source = write_plugin(PAYLOADS, name="payloads.py")
    with plugbridge.load(source, config={"max_concurrent_ops": 1}, isolation="process") as plugin:
        yield plugin


@pytest.fixture
def raw(write_plugin: Callable[..., Path]) -> Iterator[PluginHandle]:
    source = write_plugin(RAW, name="raw_plugin.py")
    with plugbridge.load(source, config={"max_concurrent_ops": 1}, isolation="process") as plugin:
        yield plugin


def serves(plugin: PluginHandle, pid: int) -> bool:
    """The only slot is free again and the same worker answers (it did not crash)."""
    try:
        return bool(plugin.call("pid") == pid)
    except plugbridge.TooManyRequests:
        return False


def assert_still_serving(plugin: PluginHandle, pid: int) -> None:
    assert wait_until(lambda: serves(plugin, pid))
    assert plugin.state is plugbridge.LifecycleState.ACTIVE


def frozen(plugin: PluginHandle) -> Any:
    """A context in which the worker is stopped (SIGSTOP): anything sent gets no answer, so
    an error raised within it was decided by the host before sending."""
    pid = plugin.call("pid")

    class Frozen:
        def __enter__(self) -> None:
            os.kill(pid, signal.SIGSTOP)

        def __exit__(self, *_: object) -> None:
            os.kill(pid, signal.SIGCONT)

    return Frozen()


# -- type tags (defect 1) -------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_type_tag_with_a_lone_surrogate_is_unknown_before_sending(
    payloads: PluginHandle, api: str
) -> None:
    pid = payloads.call("pid")
    request = "1" if api == "call_json" else 1
    with frozen(payloads), pytest.raises(plugbridge.UnknownMessageType) as info:
        invoke(payloads, api, "ec\ud800ho", request, timeout=5.0)
    assert "no handler" in info.value.message
    assert_still_serving(payloads, pid)


def test_type_tag_of_a_str_subclass_is_its_text(payloads: PluginHandle) -> None:
    class Tag(str):
        pass

    assert payloads.call(Tag("echo"), {"a": 1}) == {"a": 1}
    assert payloads.call_json(Tag("echo"), "[1]") == "[1]"


def test_a_bad_type_tag_on_a_stopped_handle_is_invalid_state(payloads: PluginHandle) -> None:
    payloads.shutdown()
    with pytest.raises(plugbridge.InvalidState):
        payloads.call("ec\ud800ho", 1)
    with pytest.raises(plugbridge.InvalidState):
        payloads.call("echo", "a\ud800")


# -- lone surrogates in requests (defect 2) ------------------------------------------------


@pytest.mark.parametrize("api", ["call", "acall"])
@pytest.mark.parametrize(
    "request_value",
    ["a\ud800b", {"a\udc80": 1}, [{"k": ["\udfff"]}]],
    ids=["value", "key", "nested"],
)
def test_request_with_a_lone_surrogate_fails_before_sending(
    payloads: PluginHandle, api: str, request_value: Any
) -> None:
    pid = payloads.call("pid")
    with frozen(payloads), pytest.raises(plugbridge.SerializationError) as info:
        invoke(payloads, api, "echo", request_value, timeout=5.0)
    assert "request for 'echo'" in info.value.message
    assert_still_serving(payloads, pid)


# -- nesting 100,000 deep (defect 4) --------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_request_nested_100000_deep_is_a_serialization_error(
    payloads: PluginHandle, api: str
) -> None:
    pid = payloads.call("pid")
    request = "[" * 100_000 + "]" * 100_000 if api == "call_json" else DEEP
    with pytest.raises(plugbridge.SerializationError) as info:
        invoke(payloads, api, "echo", request)
    assert "nested too deeply" in info.value.message
    assert_still_serving(payloads, pid)


@pytest.mark.parametrize("timeout", [None, 10.0])
@pytest.mark.parametrize("api", APIS)
def test_response_nested_100000_deep_is_a_serialization_error(
    payloads: PluginHandle, api: str, timeout: float | None
) -> None:
    pid = payloads.call("pid")
    with pytest.raises(plugbridge.SerializationError) as info:
        invoke(payloads, api, "deep", "null" if api == "call_json" else None, timeout)
    assert "nested too deeply" in info.value.message
    assert_still_serving(payloads, pid)


@pytest.mark.parametrize("timeout", [None, 10.0])
@pytest.mark.parametrize("api", APIS)
def test_raw_response_nested_100000_deep_is_a_serialization_error(
    raw: PluginHandle, api: str, timeout: float | None
) -> None:
    pid = raw.call("pid")
    with pytest.raises(plugbridge.SerializationError) as info:
        invoke(raw, api, "deep", "null" if api == "call_json" else None, timeout)
    assert "nested too deeply" in info.value.message
    assert_still_serving(raw, pid)


# -- invalid UTF-8 inside JSON strings (defect 5) -----------------------------------------


def test_call_json_request_with_invalid_utf8_is_a_serialization_error(
    payloads: PluginHandle,
) -> None:
    pid = payloads.call("pid")
    for request in (b'"\xff\xfe"', b'{"\xc3": 1}'):
        with pytest.raises(plugbridge.SerializationError):
            payloads.call_json("echo", request)
        assert_still_serving(payloads, pid)


@pytest.mark.parametrize("timeout", [None, 10.0])
@pytest.mark.parametrize("api", APIS)
def test_raw_response_with_invalid_utf8_is_a_serialization_error(
    raw: PluginHandle, api: str, timeout: float | None
) -> None:
    pid = raw.call("pid")
    with pytest.raises(plugbridge.SerializationError):
        invoke(raw, api, "bad_utf8", "null" if api == "call_json" else None, timeout)
    assert_still_serving(raw, pid)


# -- text the channel cannot carry as it is -------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_handler_error_with_a_lone_surrogate_does_not_kill_the_worker(
    payloads: PluginHandle, api: str
) -> None:
    pid = payloads.call("pid")
    with pytest.raises(plugbridge.HandlerError) as info:
        invoke(payloads, api, "surrogate_error", "null" if api == "call_json" else None)
    assert info.value.message == "ValueError: bad \\ud800 text"
    assert_still_serving(payloads, pid)
