"""Type tags with a ``/`` in them (``math/add``) are callable over HTTP, written plainly
or percent-encoded (as ``/openapi.json`` writes them)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator

import httpx
import pytest

from .conftest import GatewayServer, serving

SLASHED_PLUGIN = """
    from plugbridge import Plugin, handler


    class Slashed(Plugin):
        name = "slashed"

        @handler("math/add")
        def add(self, ctx, req: dict) -> dict:
            return {"sum": req["a"] + req["b"]}

        @handler("a/b/c")
        def deep(self, ctx, req) -> str:
            return "deep"

        @handler("add")
        def plain(self, ctx, req) -> str:
            return "plain"
"""


@pytest.fixture(scope="module")
def slashed(
    tmp_path_factory: pytest.TempPathFactory, serve_gateway: Callable[..., GatewayServer]
) -> Iterator[GatewayServer]:
    path = tmp_path_factory.mktemp("slashed") / "slashed_plugin.py"
    path.write_text(textwrap.dedent(SLASHED_PLUGIN))
    with serving(serve_gateway, "s", str(path)) as server:
        yield server


@pytest.fixture
def client(slashed: GatewayServer) -> Iterator[httpx.Client]:
    with slashed.client() as http:
        yield http


def test_a_tag_with_a_slash_is_called(client: httpx.Client) -> None:
    response = client.post("/v1/plugins/s/call/math/add", json={"a": 2, "b": 3})
    assert response.status_code == 200, response.text
    assert response.json() == {"sum": 5}
    assert client.post("/v1/plugins/s/call/a/b/c").json() == "deep"
    assert client.post("/v1/plugins/s/call/add").json() == "plain"


def test_a_percent_encoded_slash_is_the_same_tag(client: httpx.Client) -> None:
    response = client.post("/v1/plugins/s/call/math%2Fadd", json={"a": 1, "b": 1})
    assert response.status_code == 200, response.text
    assert response.json() == {"sum": 2}


def test_openapi_paths_of_slashed_tags_are_callable(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    slashed = [path for path in paths if path.startswith("/v1/plugins/s/call/") and "2F" in path]
    assert len(slashed) == 2
    for path in slashed:
        assert client.post(path, json={"a": 0, "b": 0}).status_code == 200


def test_an_unknown_slashed_tag_is_the_plugins_404(client: httpx.Client) -> None:
    response = client.post("/v1/plugins/s/call/math/sub", json={})
    assert response.status_code == 404
    assert response.json()["error"]["name"] == "UNKNOWN_MESSAGE_TYPE"
