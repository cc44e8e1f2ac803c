"""Native plugins (rustbridge C ABI): calls, errors, threads, timeouts and limits."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LifecycleState

from ..conftest import LogCapture, wait_until
from .build import build_hello_c

MEDIUM = {
    "user_id": 7,
    "include_fields": ["email"],
    "options": {"include_metadata": True, "include_permissions": True, "max_results": 5},
}


@pytest.fixture(scope="session")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_calls"))


@pytest.fixture
def plugin(hello_c: Path, isolation: str) -> Iterator[plugbridge.PluginHandle]:
    with plugbridge.load(hello_c, isolation=isolation) as handle:
        yield handle


@pytest.mark.ray_too
def test_every_message_type(plugin: plugbridge.PluginHandle) -> None:
    assert plugin.state is LifecycleState.ACTIVE
    assert plugin.metadata.name == "hello_c"
    assert plugin.call("echo", {"message": 'hé\n"q'}) == {"message": 'hé\n"q', "length": 6}
    assert plugin.call("greet", {"name": "Ada"}) == {
        "greeting": "Hello, Ada! Welcome to plugbridge."
    }
    first = plugin.call("user.create", {"username": "ada", "email": "ada@example.com"})
    second = plugin.call("user.create", {"username": "bob", "email": "bob@example.com"})
    assert first["user_id"] == "user-00000000" and second["user_id"] == "user-00000001"
    assert plugin.call("math.add", {"a": -5, "b": 12}) == {"result": 7}
    assert plugin.call("test.sleep", {"duration_ms": 1}) == {"slept_ms": 1}
    small = plugin.call("bench.small", {"key": "k1", "flags": 3})
    assert small == {"value": "value_for_k1", "ttl_seconds": 3600, "cache_hit": True}
    medium = plugin.call("bench.medium", MEDIUM)
    assert medium["email"] == "user_7@example.com"
    assert len(medium["metadata"]) == 10 and len(medium["permissions"]) == 15
    large = plugin.call(
        "bench.large",
        {
            "query_id": 3,
            "filters": [{"field": "a", "operator": "eq", "value": "b"}],
            "page_size": 4,
        },
    )
    assert [r["score"] for r in large["results"]] == [i * 0.1 + 0.5 for i in range(4)]
    assert large["next_page_token"] == "token_3_4" and large["total_count"] == 40


def test_call_json_returns_the_raw_payload(plugin: plugbridge.PluginHandle) -> None:
    assert plugin.call_json("echo", '{"message": "hi"}') == '{"message":"hi","length":2}'
    assert plugin.call_json("math.add", b'{"a": 1, "b": 2}') == '{"result":3}'


def test_acall_from_many_tasks(plugin: plugbridge.PluginHandle) -> None:
    async def main() -> list[object]:
        return list(
            await asyncio.gather(*(plugin.acall("math.add", {"a": i, "b": i}) for i in range(20)))
        )

    assert asyncio.run(main()) == [{"result": 2 * i} for i in range(20)]


@pytest.mark.parametrize(
    ("tag", "request_json", "error", "fragment"),
    [
        ("no.such.tag", "{}", plugbridge.UnknownMessageType, "no.such.tag"),
        ("echo", '{"message": ', plugbridge.SerializationError, "not valid JSON"),
        ("echo", "[1, 2]", plugbridge.SerializationError, "object"),
        ("math.add", '{"a": 1}', plugbridge.SerializationError, "`b`"),
        ("math.add", '{"a": 1.5, "b": 1}', plugbridge.SerializationError, "`$.a`"),
        (
            "math.add",
            '{"a": 9223372036854775807, "b": 1}',
            plugbridge.HandlerError,
            "OverflowError",
        ),
        ("test.bare_error", "{}", plugbridge.FfiError, "deliberate bare error message"),
    ],
)
def test_errors_map_to_their_classes(
    plugin: plugbridge.PluginHandle,
    tag: str,
    request_json: str,
    error: type[plugbridge.PluginError],
    fragment: str,
) -> None:
    with pytest.raises(error) as caught:
        plugin.call_json(tag, request_json)
    assert fragment in caught.value.message
    assert plugin.call("echo", {"message": "still fine"})["length"] == 10


def test_unencodable_request_is_a_serialization_error(plugin: plugbridge.PluginHandle) -> None:
    with pytest.raises(plugbridge.SerializationError):
        plugin.call("echo", {"message": object()})
    assert plugin.call("echo", {"message": "ok"}) == {"message": "ok", "length": 2}


@pytest.mark.ray_too
def test_eight_threads_are_inside_the_library_at_once(hello_c: Path, isolation: str) -> None:
    # Each call waits inside C until 8 calls are in there together: this only succeeds if
    # the calls really run in parallel (the GIL released around the native call).
    with plugbridge.load(hello_c, isolation=isolation) as plugin, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: plugin.call("test.rendezvous", {"parties": 8}), range(8)))
        assert results == [{"met": True}] * 8

        def many(worker: int) -> bool:
            return all(
                plugin.call("echo", {"message": f"w{worker}-{i}"})["message"] == f"w{worker}-{i}"
                for i in range(200)
            )

        assert all(pool.map(many, range(8)))


@pytest.mark.ray_too
def test_timeout_keeps_the_slot_until_the_native_call_returns(
    hello_c: Path, isolation: str
) -> None:
    capture = LogCapture()
    config = {"max_concurrent_ops": 1, "log_level": "debug"}
    with plugbridge.load(hello_c, config=config, log_callback=capture, isolation=isolation) as p:
        with pytest.raises(plugbridge.Timeout):
            p.call("test.sleep", {"duration_ms": 1500}, timeout=0.05)
        # The C call cannot be interrupted: it still holds the only slot.
        with pytest.raises(plugbridge.TooManyRequests):
            p.call("echo", {"message": "refused"})
        assert p.rejected_request_count == 1
        assert wait_until(lambda: _admitted(p), timeout=10)
        assert "Sleeping for 1500 ms" in capture.messages()


def _admitted(plugin: plugbridge.PluginHandle) -> bool:
    try:
        plugin.call("echo", {"message": "admitted"})
    except plugbridge.TooManyRequests:
        return False
    return True


def test_acall_timeout(plugin: plugbridge.PluginHandle) -> None:
    async def main() -> None:
        with pytest.raises(plugbridge.Timeout):
            await plugin.acall("test.sleep", {"duration_ms": 500}, timeout=0.05)

    asyncio.run(main())
    assert plugin.call("math.add", {"a": 1, "b": 1}) == {"result": 2}


@pytest.mark.ray_too
def test_concurrency_limit_refuses_at_once(hello_c: Path, isolation: str) -> None:
    capture = LogCapture()
    config = {"max_concurrent_ops": 2, "log_level": "debug"}
    with plugbridge.load(hello_c, config=config, log_callback=capture, isolation=isolation) as p:
        holders = [
            threading.Thread(target=p.call, args=("test.sleep", {"duration_ms": 800}))
            for _ in range(2)
        ]
        for thread in holders:
            thread.start()
        assert wait_until(lambda: capture.messages().count("Sleeping for 800 ms") == 2)
        for _ in range(3):
            with pytest.raises(plugbridge.TooManyRequests):
                p.call("echo", {"message": "x"})
        assert p.rejected_request_count == 3
        for thread in holders:
            thread.join()
        assert p.call("echo", {"message": "x"}) == {"message": "x", "length": 1}


def test_library_counts_its_own_refusals(hello_c: Path) -> None:
    """The library's limit (plugin_get_rejected_count) is reported too, not just the handle's."""
    from plugbridge._config import PluginConfig
    from plugbridge._logsink import LogSink
    from plugbridge._native.transport import NativeTransport
    from plugbridge._sources import NativeSource

    config = PluginConfig(max_concurrent_ops=1, log_level=plugbridge.LogLevel.DEBUG)
    capture = LogCapture()
    sink = LogSink(capture, config.log_level)
    transport = NativeTransport.start(NativeSource(hello_c), config, sink, None)
    released: list[None] = []
    try:
        holder = threading.Thread(
            target=transport.call,
            args=("test.sleep", {"duration_ms": 600}, None, lambda: released.append(None)),
        )
        holder.start()
        assert wait_until(lambda: "Sleeping for 600 ms" in capture.messages())
        with pytest.raises(plugbridge.TooManyRequests):
            transport.call("echo", {"message": "x"}, None, lambda: released.append(None))
        assert transport.rejected_count == 1
        holder.join()
        assert len(released) == 2  # release ran once per call, refused one included
    finally:
        transport.shutdown(5)
    assert transport.rejected_count == 1  # kept after the library is gone
    assert transport.state is LifecycleState.STOPPED


def test_bad_type_tags_give_their_slot_back(hello_c: Path, isolation: str) -> None:
    with plugbridge.load(hello_c, config={"max_concurrent_ops": 1}, isolation=isolation) as p:
        for tag in ("echo\0evil", 42, b"echo"):
            with pytest.raises(plugbridge.UnknownMessageType):
                p.call(tag, {"message": "x"})  # type: ignore[arg-type]
        assert p.call("echo", {"message": "x"}) == {"message": "x", "length": 1}
        assert p.rejected_request_count == 0


def test_transport_shutdown_is_idempotent_after_a_failure(hello_c: Path) -> None:
    from plugbridge._config import PluginConfig
    from plugbridge._logsink import LogSink
    from plugbridge._native.transport import NativeTransport
    from plugbridge._sources import NativeSource

    config = PluginConfig(data={"shutdown_sleep_ms": 500})
    transport = NativeTransport.start(
        NativeSource(hello_c), config, LogSink(None, config.log_level), None
    )
    with pytest.raises(plugbridge.ShutdownFailed):
        transport.shutdown(0.05)
    transport.shutdown(0.05)  # nothing more to do, and no touching the library again
    assert transport.state is LifecycleState.FAILED
    with pytest.raises(plugbridge.InvalidState):
        transport.call("echo", {"message": "x"}, None, lambda: None)


def test_handle_after_shutdown_is_invalid_state(hello_c: Path, isolation: str) -> None:
    plugin = plugbridge.load(hello_c, isolation=isolation)
    plugin.call("echo", {"message": "x"})
    plugin.shutdown()
    plugin.shutdown()  # idempotent
    assert plugin.state is LifecycleState.STOPPED
    with pytest.raises(plugbridge.InvalidState):
        plugin.call("echo", {"message": "x"})
    with pytest.raises(plugbridge.InvalidState):
        plugin.call_json("echo", '{"message": "x"}')
    with pytest.raises(plugbridge.InvalidState):
        asyncio.run(plugin.acall("echo", {"message": "x"}))
    plugin.set_log_level("debug")  # no crash, nothing to apply it to
    assert plugin.rejected_request_count == 0
    with pytest.raises(plugbridge.InvalidState):
        plugin.reload()


SAME_NAME_IN_PYTHON = """
    import os, time
    from plugbridge import Plugin, handler

    class Twin(Plugin):
        name = "hello_c"  # the native test library's name: the messages must be equal

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @handler("test.sleep")
        def sleep(self, ctx, req):
            while not os.path.exists({release!r}):  # runs until the test lets it go
                time.sleep(0.01)
            return {{}}
"""


def _failure(call: Callable[[], object]) -> tuple[type[BaseException], str]:
    with pytest.raises(plugbridge.PluginError) as failed:
        call()
    return type(failed.value), failed.value.message


def test_the_same_failure_reads_the_same_in_process_and_native(
    hello_c: Path, tmp_path: Path
) -> None:
    """Not ACTIVE, no handler for the tag, cancelled by shutdown: one builder each."""
    source, release = tmp_path / "twin.py", tmp_path / "release"
    source.write_text(textwrap.dedent(SAME_NAME_IN_PYTHON.format(release=str(release))))
    config = {"shutdown_timeout": 0.2}
    python, native = plugbridge.load(source, config=config), plugbridge.load(hello_c, config=config)
    try:
        for tag in (42, None, "ec\ud800ho", "echo\0evil"):
            in_python = _failure(lambda t=tag: python.call(t, {"message": "x"}))  # type: ignore[misc]
            in_native = _failure(lambda t=tag: native.call(t, {"message": "x"}))  # type: ignore[misc]
            assert in_python[0] is plugbridge.UnknownMessageType
            assert in_native == in_python, tag
        # A call still running when shutdown gives up on it (no timeout: inline, both).
        cancelled: dict[str, tuple[type[BaseException], str]] = {}

        def sleep(kind: str, handle: plugbridge.PluginHandle) -> None:
            cancelled[kind] = _failure(lambda: handle.call("test.sleep", {"duration_ms": 800}))

        callers = [
            threading.Thread(target=sleep, args=("python", python)),
            threading.Thread(target=sleep, args=("native", native)),
        ]
        for caller in callers:
            caller.start()
        assert wait_until(lambda: python.in_flight == 1 and native.in_flight == 1)
        python.shutdown()
        native.shutdown()
    finally:
        release.touch()
        for handle in (python, native):
            with contextlib.suppress(plugbridge.PluginError):
                handle.shutdown()  # idempotent; here for a test that failed half-way
    for caller in callers:
        caller.join()
    assert cancelled["python"][0] is plugbridge.Cancelled
    assert cancelled["native"] == cancelled["python"]
    # Calls after shutdown: InvalidState, the same words.
    in_python = _failure(lambda: python.call("echo", {"message": "x"}))
    assert in_python[0] is plugbridge.InvalidState
    assert _failure(lambda: native.call("echo", {"message": "x"})) == in_python


def test_a_huge_bad_type_tag_is_not_copied_into_its_error(hello_c: Path) -> None:
    with plugbridge.load(hello_c) as plugin, pytest.raises(plugbridge.UnknownMessageType) as failed:
        plugin.call("\ud800" * 100_000, {})
    assert len(failed.value.message) < 1000
    assert failed.value.message.endswith("...")
