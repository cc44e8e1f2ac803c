"""``openapi_document(host)``: one operation per plugin and type tag, whatever the plugin's
isolation, with the JSON Schemas of the Python handlers' annotations.

The schemas are made by each instance as it starts (in this process or in its worker) and
carried in ``PluginMetadata.schemas``; these tests read them through the document, on a real
host with an in-process plugin, the same file in a worker process, a second plugin with
same-named types, and a compiled C plugin.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from plugbridge import PluginHost
from plugbridge.gateway.openapi import ERROR_RESPONSES, component_name, openapi_document

from ..native.build import build_hello_c
from .conftest import GatewayServer

SHAPES = """
    import dataclasses
    from typing import TypedDict

    import msgspec
    from plugbridge import Plugin, handler


    class Point(msgspec.Struct):
        x: int
        y: int
        label: str = ""


    class Moved(msgspec.Struct):
        to: Point
        steps: int
        default: Point | None = None  # a field named like a keyword whose value is data


    @dataclasses.dataclass
    class Order:
        item: str
        count: int = 1


    class Totals(TypedDict):
        sum: float
        items: list[str]


    class Opaque:
        "A class msgspec can decode with a hook, but cannot describe."


    class Shapes(Plugin):
        name = "shapes"

        @handler("move")
        async def move(self, ctx, req: Point) -> Moved:
            return Moved(req, 1)

        @handler("order")
        def order(self, ctx, req: Order) -> dict:
            return {"item": req.item}

        @handler("totals")
        def totals(self, ctx, req: Totals) -> Totals:
            return req

        @handler("untyped")
        def untyped(self, ctx, req):
            return req

        @handler("opaque")
        def opaque(self, ctx, req: Opaque) -> Opaque:
            return req
"""

OTHER = """
    import msgspec
    from plugbridge import Plugin, handler


    class Point(msgspec.Struct):
        z: float


    Item = msgspec.defstruct("Item", [("a", int)])
    Item2 = msgspec.defstruct("Item", [("b", str)])  # same module and name: told apart too


    class Other(Plugin):
        name = "other"

        @handler("point")
        def point(self, ctx, req: Point) -> Point:
            return req

        @handler("first")
        def first(self, ctx, req: Item) -> dict:
            return {}

        @handler("second")
        def second(self, ctx, req: Item2) -> dict:
            return {}

        @handler("a/b {c}")
        def odd(self, ctx, req: dict) -> None:
            return None
"""

TAGS = ("move", "order", "totals", "untyped", "opaque")
OTHER_TAGS = ("point", "first", "second", "a%2Fb%20%7Bc%7D")  # as the path writes them
COMPONENT_NAME = re.compile(r"^[a-zA-Z0-9.\-_]+$")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginHost]:
    """``local`` (in-process) and ``worker`` (process) run the same file; ``other`` has its
    own ``Point``; ``native`` is the C hello plugin."""
    where = tmp_path_factory.mktemp("openapi")
    shapes, other = where / "shapes.py", where / "other.py"
    shapes.write_text(_dedent(SHAPES))
    other.write_text(_dedent(OTHER))
    library = build_hello_c(where / "native")
    with PluginHost() as plugins:
        plugins.add("local", str(shapes))
        plugins.add("worker", str(shapes), isolation="process")
        plugins.add("odd name", str(other))
        plugins.add("native", str(library))
        yield plugins


@pytest.fixture(scope="module")
def document(host: PluginHost) -> dict[str, Any]:
    return openapi_document(host)


def _dedent(source: str) -> str:
    import textwrap

    return textwrap.dedent(source)


def _operation(document: dict[str, Any], plugin: str, tag: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][f"/v1/plugins/{plugin}/call/{tag}"]["post"]
    return operation


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or what its ``$ref`` points to (a JSON pointer into the document)."""
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        schema = node
    return schema


def _request(document: dict[str, Any], plugin: str, tag: str) -> dict[str, Any]:
    body = _operation(document, plugin, tag)["requestBody"]
    return _resolve(document, body["content"]["application/json"]["schema"])


def _response(document: dict[str, Any], plugin: str, tag: str) -> dict[str, Any]:
    ok = _operation(document, plugin, tag)["responses"]["200"]
    return _resolve(document, ok["content"]["application/json"]["schema"])


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


# -- the document's shape ------------------------------------------------------------------


def test_the_document_is_openapi_3_1_and_every_reference_resolves(
    document: dict[str, Any],
) -> None:
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    msgspec.json.encode(document)  # plain JSON all through
    refs = list(_refs(document))
    assert any(ref.startswith("#/components/schemas/local.") for ref in refs)
    for ref in refs:
        assert _resolve(document, {"$ref": ref}) is not None, ref
    for name in document["components"]["schemas"]:
        assert COMPONENT_NAME.match(name), name
    for path, item in document["paths"].items():
        assert path.startswith("/v1/plugins/") and set(item) == {"post"}
        operation = item["post"]
        assert operation["responses"]["200"]["description"]
        for status in ("400", "404", "409", "413", "429", "500", "502", "504"):
            error = _resolve(document, operation["responses"][status])
            assert error["description"]
            body = error["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/Error"}
    ids = [item["post"]["operationId"] for item in document["paths"].values()]
    assert len(ids) == len(set(ids))


def test_the_error_schema_is_the_gateways_error_body(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    inner = error["properties"]["error"]
    assert set(inner["properties"]) == set(inner["required"]) == {"code", "name", "message"}
    assert set(ERROR_RESPONSES) >= {"400", "404", "409", "413", "429", "500", "502", "504"}


def test_every_plugin_and_type_tag_has_its_path_whatever_the_isolation(
    host: PluginHost, document: dict[str, Any]
) -> None:
    expected = {
        f"/v1/plugins/{plugin}/call/{tag}" for plugin in ("local", "worker") for tag in TAGS
    } | {f"/v1/plugins/odd%20name/call/{tag}" for tag in OTHER_TAGS}
    expected |= {f"/v1/plugins/native/call/{tag}" for tag in host["native"].metadata.type_tags}
    assert set(document["paths"]) == expected
    assert host["native"].metadata.schemas == ()
    assert _operation(document, "worker", "move")["tags"] == ["worker"]


# -- schemas from the annotations ----------------------------------------------------------


@pytest.mark.parametrize("plugin", ["local", "worker"])
def test_a_struct_request_has_its_fields_and_required_list(
    document: dict[str, Any], plugin: str
) -> None:
    request = _request(document, plugin, "move")
    assert list(request["properties"]) == ["x", "y", "label"]
    assert request["required"] == ["x", "y"]
    assert request["properties"]["x"] == {"type": "integer"}
    assert _operation(document, plugin, "move")["requestBody"]["required"] is True
    response = _response(document, plugin, "move")
    assert response["required"] == ["to", "steps"]
    assert _resolve(document, response["properties"]["to"]) is request  # one Point


@pytest.mark.parametrize("plugin", ["local", "worker"])
def test_dataclass_and_typeddict_requests_and_annotated_responses(
    document: dict[str, Any], plugin: str
) -> None:
    order = _request(document, plugin, "order")
    assert list(order["properties"]) == ["item", "count"] and order["required"] == ["item"]
    assert _response(document, plugin, "order") == {"type": "object"}
    totals = _request(document, plugin, "totals")
    assert sorted(totals["required"]) == ["items", "sum"]
    assert totals["properties"]["items"] == {"type": "array", "items": {"type": "string"}}
    assert _response(document, plugin, "totals") is totals


@pytest.mark.parametrize("plugin", ["local", "worker"])
def test_an_unannotated_or_indescribable_handler_takes_any_json(
    host: PluginHost, document: dict[str, Any], plugin: str
) -> None:
    for tag in ("untyped", "opaque"):
        assert _request(document, plugin, tag) == {}
        assert _response(document, plugin, tag) == {}
        assert _operation(document, plugin, tag)["requestBody"]["required"] is False
    assert host[plugin].call("untyped", {"any": [1]}) == {"any": [1]}  # it loaded and serves


def test_a_workers_schemas_equal_the_in_process_ones(
    host: PluginHost, document: dict[str, Any]
) -> None:
    local, worker = host["local"].metadata.schemas, host["worker"].metadata.schemas
    assert [entry.type_tag for entry in local] == list(TAGS)
    assert local == worker
    for tag in TAGS:
        here, there = _operation(document, "local", tag), _operation(document, "worker", tag)
        for part in ("requestBody", "responses"):
            as_local = msgspec.json.encode(there[part]).replace(b"/worker.", b"/local.")
            assert msgspec.json.decode(as_local) == here[part]


def test_same_named_types_of_two_plugins_do_not_collide(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "local.Point" in schemas and component_name("odd name", "Point") in schemas
    assert _request(document, "local", "move") is schemas["local.Point"]
    other = _request(document, "odd%20name", "point")
    assert list(other["properties"]) == ["z"] and other is not schemas["local.Point"]
    first = _request(document, "odd%20name", "first")
    second = _request(document, "odd%20name", "second")
    assert (list(first["properties"]), list(second["properties"])) == (["a"], ["b"])
    assert _response(document, "odd%20name", "a%2Fb%20%7Bc%7D") == {"type": "null"}


def test_component_names_cannot_meet_across_plugins() -> None:
    names = {
        component_name("a.b", "C"),
        component_name("a", "b.C"),
        component_name("a-2e-b", "C"),
        component_name("a_b", "C"),
        component_name("a b", "C"),
    }
    assert len(names) == 5
    assert all(COMPONENT_NAME.match(name) for name in names)


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_a_reloaded_plugin_shows_its_new_schema(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    source = """
        import msgspec
        from plugbridge import Plugin, handler

        class Point(msgspec.Struct):
            {fields}

        class Changing(Plugin):
            @handler("move")
            def move(self, ctx, req: Point) -> dict:
                return {{}}
    """
    path = write_plugin(source.format(fields="x: int"))
    with PluginHost() as host:
        host.add("changing", str(path), isolation=isolation)
        before = _request(openapi_document(host), "changing", "move")
        assert before["required"] == ["x"]
        write_plugin(source.format(fields="x: int\n            depth: float"))
        host.reload("changing")
        after = _request(openapi_document(host), "changing", "move")
        assert list(after["properties"]) == ["x", "depth"] and after["required"] == ["x", "depth"]


# -- over HTTP ------------------------------------------------------------------------------


def test_get_openapi_json_serves_the_document(
    host: PluginHost, serve_gateway: Callable[..., GatewayServer]
) -> None:
    server = serve_gateway(host)
    try:
        with server.client() as client:
            response = client.get("/openapi.json")
    finally:
        server.stop()
    assert response.status_code == 200
    served = response.json()
    assert served["openapi"].startswith("3.1.")
    assert _request(served, "worker", "move")["required"] == ["x", "y"]
