"""Calling handlers: request validation, sync/async handlers, raw dispatch, call_json, acall."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import ErrorCode

from ..conftest import HELLO

TYPED = """
    from __future__ import annotations
    import dataclasses
    from typing import TypedDict
    import msgspec
    from plugbridge import Plugin, handler

    class Point(msgspec.Struct):
        x: int
        y: int

    @dataclasses.dataclass
    class Box:
        width: float
        label: str = "box"

    class Pair(TypedDict):
        left: str
        right: str

    class Typed(Plugin):
        name = "typed"
        version = "2.1.0"

        @handler("struct")
        def struct(self, ctx, req: Point) -> Point:
            return Point(req.y, req.x)

        @handler("dataclass")
        async def dc(self, ctx, req: Box) -> Box:
            return Box(req.width * 2, req.label.upper())

        @handler("typeddict")
        def td(self, ctx, req: Pair) -> dict:
            return {"joined": req["left"] + req["right"]}

        @handler("dict")
        def d(self, ctx, req: dict) -> dict:
            return {"keys": sorted(req)}

        @handler("raw")
        def raw(self, ctx, req):
            return {"got": req}

        @handler("boom")
        def boom(self, ctx, req):
            raise ValueError("bad thing")

        @handler("aboom")
        async def aboom(self, ctx, req):
            raise KeyError("missing")

        @handler("unserializable")
        def unserializable(self, ctx, req):
            return {"obj": object()}

        @handler("coded")
        def coded(self, ctx, req):
            from plugbridge import ConfigError
            raise ConfigError("plugin says config is wrong")
"""


@pytest.fixture
def typed(write_plugin: Callable[..., Path], isolation: str) -> plugbridge.PluginHandle:
    handle = plugbridge.load(write_plugin(TYPED), isolation=isolation)
    yield handle
    handle.shutdown()


def test_hello_example_calls(isolation: str) -> None:
    with plugbridge.load(HELLO, isolation=isolation) as plugin:
        assert plugin.state is plugbridge.LifecycleState.ACTIVE
        assert plugin.call("echo", {"message": "hi"}) == {"message": "hi", "length": 2}
        assert plugin.call_json("echo", '{"message": "hi"}') == '{"message":"hi","length":2}'
        assert plugin.call("math.add", {"a": 40, "b": 2}) == {"result": 42}
        assert plugin.call("test.sleep", {"duration_ms": 5}) == {"slept_ms": 5}
        greeting = plugin.call("greet", {"name": "Ada"})["greeting"]
        assert "Ada" in greeting
        user = plugin.call("user.create", {"username": "ada", "email": "a@x"})
        assert user["user_id"] == "user-00000000"
        large = plugin.call("bench.large", {"query_id": 1, "filters": [], "page_size": 3})
        assert [r["id"] for r in large["results"]] == [10000, 10001, 10002]


def test_metadata(typed: plugbridge.PluginHandle) -> None:
    meta = typed.metadata
    assert (meta.name, meta.version) == ("typed", "2.1.0")
    assert set(meta.type_tags) >= {"struct", "dataclass", "typeddict", "dict", "raw"}


@pytest.mark.parametrize(
    ("tag", "request_value", "expected"),
    [
        ("struct", {"x": 1, "y": 2}, {"x": 2, "y": 1}),
        ("dataclass", {"width": 1.5}, {"width": 3.0, "label": "BOX"}),
        ("typeddict", {"left": "a", "right": "b"}, {"joined": "ab"}),
        ("dict", {"b": 1, "a": 2}, {"keys": ["a", "b"]}),
        ("raw", [1, "two", None], {"got": [1, "two", None]}),
        ("raw", 7, {"got": 7}),
    ],
)
def test_request_annotations(
    typed: plugbridge.PluginHandle, tag: str, request_value: object, expected: object
) -> None:
    assert typed.call(tag, request_value) == expected


def test_struct_and_dataclass_requests_are_accepted(typed: plugbridge.PluginHandle) -> None:
    import dataclasses

    import msgspec

    class Point(msgspec.Struct):
        x: int
        y: int

    @dataclasses.dataclass
    class Box:
        width: float
        label: str

    assert typed.call("struct", Point(3, 4)) == {"x": 4, "y": 3}
    assert typed.call("dataclass", Box(1.0, "a")) == {"width": 2.0, "label": "A"}


@pytest.mark.parametrize(
    ("tag", "request_value", "field"),
    [
        ("struct", {"x": 1, "y": "two"}, "$.y"),
        ("struct", {"x": 1}, "y"),
        ("dataclass", {"width": "wide"}, "$.width"),
        ("typeddict", {"left": "a", "right": 3}, "$.right"),
        ("dict", [1, 2], "object"),
    ],
)
def test_validation_error_names_the_field(
    typed: plugbridge.PluginHandle, tag: str, request_value: object, field: str
) -> None:
    with pytest.raises(plugbridge.SerializationError) as info:
        typed.call(tag, request_value)
    assert info.value.code == ErrorCode.SERIALIZATION_ERROR == 5
    assert field in info.value.message


def test_call_json_validates_too(typed: plugbridge.PluginHandle) -> None:
    assert typed.call_json("struct", b'{"x": 1, "y": 2}') == '{"x":2,"y":1}'
    with pytest.raises(plugbridge.SerializationError, match=r"\$\.y"):
        typed.call_json("struct", '{"x": 1, "y": "no"}')
    with pytest.raises(plugbridge.SerializationError, match="not valid JSON"):
        typed.call_json("struct", "{not json")


def test_handler_exceptions_become_handler_error(typed: plugbridge.PluginHandle) -> None:
    with pytest.raises(plugbridge.HandlerError) as info:
        typed.call("boom")
    assert info.value.code == 7
    assert info.value.message == "ValueError: bad thing"
    with pytest.raises(plugbridge.HandlerError, match="KeyError"):
        typed.call("aboom")
    with pytest.raises(plugbridge.SerializationError):
        typed.call("unserializable")
    with pytest.raises(plugbridge.ConfigError, match="plugin says"):
        typed.call("coded")
    # the instance keeps serving after every failure
    assert typed.call("struct", {"x": 0, "y": 1}) == {"x": 1, "y": 0}


def test_unknown_type_tag(typed: plugbridge.PluginHandle) -> None:
    with pytest.raises(plugbridge.UnknownMessageType, match="nope"):
        typed.call("nope", {})
    with pytest.raises(plugbridge.UnknownMessageType):
        typed.call_json("nope", "{}")


def test_acall_sync_and_async_handlers(typed: plugbridge.PluginHandle) -> None:
    async def main() -> list[object]:
        return await asyncio.gather(
            typed.acall("struct", {"x": 1, "y": 2}),
            typed.acall("dataclass", {"width": 2}),
            *(typed.acall("raw", i) for i in range(50)),
        )

    results = asyncio.run(main())
    assert results[0] == {"x": 2, "y": 1}
    assert results[1] == {"width": 4.0, "label": "BOX"}
    assert results[2:] == [{"got": i} for i in range(50)]


def test_acall_errors(typed: plugbridge.PluginHandle) -> None:
    async def main() -> None:
        with pytest.raises(plugbridge.HandlerError, match="ValueError"):
            await typed.acall("boom")
        with pytest.raises(plugbridge.SerializationError):
            await typed.acall("struct", {"x": "no"})

    asyncio.run(main())


RAW = """
    import json
    from plugbridge import Plugin, UnknownMessageType

    class Raw(Plugin):
        name = "raw"
        type_tags = ("upper",)

        async def handle_request(self, ctx, type_tag, payload):
            if type_tag != "upper":
                raise UnknownMessageType(f"raw plugin has no {type_tag}")
            return json.dumps({"text": json.loads(payload)["text"].upper()}).encode()
"""


def test_raw_handle_request(write_plugin: Callable[..., Path], isolation: str) -> None:
    with plugbridge.load(write_plugin(RAW), isolation=isolation) as plugin:
        assert plugin.metadata.type_tags == ("upper",)
        assert plugin.call("upper", {"text": "abc"}) == {"text": "ABC"}
        assert plugin.call_json("upper", '{"text": "x"}') == '{"text": "X"}'
        with pytest.raises(plugbridge.UnknownMessageType):
            plugin.call("lower", {"text": "abc"})


def test_sync_hooks_and_context(write_plugin: Callable[..., Path], isolation: str) -> None:
    source = write_plugin(
        """
        from plugbridge import Plugin, handler, LifecycleState

        class Hooks(Plugin):
            name = "hooks"

            def on_start(self, ctx):
                self.started_state = ctx.state
                self.greeting = ctx.data["greeting"]

            @handler("info")
            def info(self, ctx, req):
                return {
                    "greeting": self.greeting,
                    "started_state": self.started_state.name,
                    "state": ctx.state.name,
                    "max_ops": ctx.config.max_concurrent_ops,
                    "logger": ctx.logger.name.rpartition(".")[2],
                }
        """
    )
    config = {"data": {"greeting": "hey"}, "max_concurrent_ops": 7}
    with plugbridge.load(source, config=config, isolation=isolation) as plugin:
        assert plugin.call("info") == {
            "greeting": "hey",
            "started_state": "STARTING",
            "state": "ACTIVE",
            "max_ops": 7,
            "logger": "hooks",
        }
