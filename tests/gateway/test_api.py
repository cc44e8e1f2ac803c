"""The gateway's HTTP API (contract section 9) against a real uvicorn server on a free
loopback port, with httpx as the client and real plugin files: every route, every error
status from a real cause, the token, the log stream, metrics, and a disconnect cancelling
its call."""

from __future__ import annotations

import json
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plugbridge import PluginHost

from ..conftest import wait_until
from .conftest import REQUEST_TIMEOUT, GatewayServer

GATEWAY_PLUGIN = """
    import asyncio
    import logging
    import os
    import pathlib

    import msgspec

    from plugbridge import Plugin, handler, raw_handler

    log = logging.getLogger(__name__)


    class Point(msgspec.Struct):
        x: int
        y: int


    class Gateway(Plugin):
        name = "gw-test"
        version = "2.1.0"

        @handler("add")
        def add(self, ctx, req: Point) -> dict:
            return {"sum": req.x + req.y}

        @handler("say")
        def say(self, ctx, req: dict) -> dict:
            for number in range(req.get("count", 1)):
                message = req["message"].format(number)
                log.log(logging.getLevelName(req["level"]), message)
            return {}

        @handler("boom")
        def boom(self, ctx, req) -> dict:
            raise ValueError("boom on purpose")

        @handler("hold")
        async def hold(self, ctx, req: dict) -> dict:
            folder = pathlib.Path(req["dir"])
            (folder / "started").write_text("")
            try:
                for _ in range(6000):  # 60 s at most
                    if (folder / "release").exists():
                        return {"held": True}
                    await asyncio.sleep(0.01)
                return {"held": False}
            except asyncio.CancelledError:
                (folder / "cancelled").write_text("")
                raise

        @handler("crash")
        def crash(self, ctx, req) -> dict:
            os._exit(3)

        @raw_handler(7)
        def reverse(self, ctx, payload: bytes) -> bytes:
            return payload[::-1]
"""

BODY_LIMIT = 1024
TOKEN = "s3cret-token"


def _write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gateway_plugins")
    for stem in ("gw_plugin", "slow_plugin", "chatty_plugin", "worker_plugin", "crasher_plugin"):
        _write(folder, f"{stem}.py", GATEWAY_PLUGIN)
    _write(folder, "broken_plugin.py", "this is not python\n")
    return folder


@pytest.fixture(scope="module")
def api_host(plugin_dir: Path) -> Iterator[PluginHost]:
    """gw (limit 1), slow (call_timeout 0.5 s), chatty (for the replay), worker and crasher
    (processes; the crash test ends crasher's, which is optional), broken (optional,
    FAILED)."""
    host = PluginHost()
    host.start()
    try:
        host.add("gw", str(plugin_dir / "gw_plugin.py"), config={"max_concurrent_ops": 1})
        host.add("slow", str(plugin_dir / "slow_plugin.py"), config={"call_timeout": 0.5})
        host.add("chatty", str(plugin_dir / "chatty_plugin.py"))
        host.add("worker", str(plugin_dir / "worker_plugin.py"), isolation="process")
        host.add(
            "crasher", str(plugin_dir / "crasher_plugin.py"), isolation="process", required=False
        )
        host.add("broken", str(plugin_dir / "broken_plugin.py"), required=False)
        yield host
    finally:
        host.close()


@pytest.fixture(scope="module")
def api(
    api_host: PluginHost, serve_gateway: Callable[..., GatewayServer]
) -> Iterator[GatewayServer]:
    server = serve_gateway(api_host, max_body_bytes=BODY_LIMIT)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded(
    api_host: PluginHost, serve_gateway: Callable[..., GatewayServer]
) -> Iterator[GatewayServer]:
    """The same host behind a second gateway that needs ``TOKEN``."""
    server = serve_gateway(api_host, token=TOKEN)
    yield server
    server.stop()


@pytest.fixture
def client(api: GatewayServer) -> Iterator[httpx.Client]:
    with api.client() as http:
        yield http


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The JSON error body of ``response``, checked to have ``status`` and its shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "name", "message"}
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


def _in_flight(client: httpx.Client, name: str) -> int:
    count: int = client.get(f"/v1/plugins/{name}").json()["stats"]["in_flight"]
    return count


# -- calls ---------------------------------------------------------------------------------


def test_call_returns_the_response_json(client: httpx.Client) -> None:
    response = client.post("/v1/plugins/gw/call/add", json={"x": 2, "y": 40})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"sum": 42}


def test_call_of_a_process_plugin(client: httpx.Client) -> None:
    response = client.post("/v1/plugins/worker/call/add", json={"x": 1, "y": 2})
    assert response.status_code == 200
    assert response.json() == {"sum": 3}


def test_raw_call_returns_the_response_bytes(client: httpx.Client) -> None:
    response = client.post("/v1/plugins/gw/raw/7", content=b"\x00\x01abc")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == b"cba\x01\x00"


def test_bad_json_body_is_400(client: httpx.Client) -> None:
    error = _error(client.post("/v1/plugins/gw/call/add", content=b'{"x": 1,'), 400)
    assert (error["code"], error["name"]) == (5, "SERIALIZATION_ERROR")


def test_body_not_matching_the_handler_type_is_400(client: httpx.Client) -> None:
    error = _error(client.post("/v1/plugins/gw/call/add", json={"x": "one", "y": 2}), 400)
    assert (error["code"], error["name"]) == (5, "SERIALIZATION_ERROR")
    assert "x" in error["message"]


def test_unknown_plugin_is_404_with_a_null_code(client: httpx.Client) -> None:
    for response in (
        client.post("/v1/plugins/nobody/call/add", json={}),
        client.post("/v1/plugins/nobody/raw/7", content=b""),
        client.get("/v1/plugins/nobody"),
        client.put("/v1/plugins/nobody/log-level", json={"level": "debug"}),
        client.post("/v1/plugins/nobody/reload"),
        client.get("/v1/plugins/nobody/logs"),
    ):
        error = _error(response, 404)
        assert (error["code"], error["name"]) == (None, "UNKNOWN_PLUGIN")
        assert "nobody" in error["message"]


def test_unknown_tag_and_message_id_are_404(client: httpx.Client) -> None:
    for response in (
        client.post("/v1/plugins/gw/call/nope", json={}),
        client.post("/v1/plugins/gw/raw/8", content=b"x"),
        client.post("/v1/plugins/gw/raw/not-a-number", content=b"x"),
    ):
        error = _error(response, 404)
        assert (error["code"], error["name"]) == (6, "UNKNOWN_MESSAGE_TYPE")


def test_a_failed_optional_plugin_is_409(client: httpx.Client) -> None:
    error = _error(client.post("/v1/plugins/broken/call/add", json={"x": 1, "y": 1}), 409)
    assert (error["code"], error["name"]) == (1, "INVALID_STATE")


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    oversized = b'"' + b"a" * BODY_LIMIT + b'"'
    error = _error(client.post("/v1/plugins/gw/call/add", content=oversized), 413)
    assert (error["code"], error["name"]) == (None, "BODY_TOO_LARGE")
    error = _error(client.post("/v1/plugins/gw/raw/7", content=oversized), 413)
    assert error["name"] == "BODY_TOO_LARGE"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'"'
        yield b"a" * BODY_LIMIT
        yield b'"'

    error = _error(client.post("/v1/plugins/gw/call/add", content=chunked()), 413)
    assert error["name"] == "BODY_TOO_LARGE"
    at_limit = b'"' + b"a" * (BODY_LIMIT - 2) + b'"'
    error = _error(client.post("/v1/plugins/gw/call/add", content=at_limit), 400)
    assert error["name"] == "SERIALIZATION_ERROR"  # read and decoded: a str is no Point


def test_a_call_over_the_concurrency_limit_is_429(
    api: GatewayServer, client: httpx.Client, tmp_path: Path
) -> None:
    held: dict[str, Any] = {}

    def hold() -> None:
        with api.client() as other:
            held["response"] = other.post("/v1/plugins/gw/call/hold", json={"dir": str(tmp_path)})

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert wait_until((tmp_path / "started").exists, REQUEST_TIMEOUT)
        error = _error(client.post("/v1/plugins/gw/call/add", json={"x": 1, "y": 1}), 429)
        assert (error["code"], error["name"]) == (13, "TOO_MANY_REQUESTS")
    finally:
        (tmp_path / "release").write_text("")
        holder.join(REQUEST_TIMEOUT)
    assert held["response"].status_code == 200
    assert held["response"].json() == {"held": True}


def test_a_crashed_worker_is_502(client: httpx.Client) -> None:
    error = _error(client.post("/v1/plugins/crasher/call/crash", json={}), 502)
    assert (error["code"], error["name"]) == (14, "PLUGIN_CRASHED")


def test_a_call_past_its_timeout_is_504(client: httpx.Client, tmp_path: Path) -> None:
    started = time.monotonic()
    error = _error(client.post("/v1/plugins/slow/call/hold", json={"dir": str(tmp_path)}), 504)
    assert (error["code"], error["name"]) == (10, "TIMEOUT")
    assert time.monotonic() - started < REQUEST_TIMEOUT / 2  # the 0.5 s, not the hold


def test_a_handler_that_raises_is_500(client: httpx.Client) -> None:
    error = _error(client.post("/v1/plugins/gw/call/boom", json={}), 500)
    assert (error["code"], error["name"]) == (7, "HANDLER_ERROR")
    assert "boom on purpose" in error["message"]


@pytest.mark.parametrize("plugin", ["gw", "worker"])
def test_a_client_that_disconnects_cancels_its_call(
    api: GatewayServer, client: httpx.Client, tmp_path: Path, plugin: str
) -> None:
    body = json.dumps({"dir": str(tmp_path)}).encode()
    request = (
        b"POST /v1/plugins/%s/call/hold HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    ) % (plugin.encode(), len(body), body)
    with socket.create_connection(("127.0.0.1", api.port), timeout=REQUEST_TIMEOUT) as conn:
        conn.sendall(request)
        assert wait_until((tmp_path / "started").exists, REQUEST_TIMEOUT)
    # the handler is cancelled (it never sees the release) and its slot comes back
    assert wait_until((tmp_path / "cancelled").exists, REQUEST_TIMEOUT)
    assert wait_until(lambda: _in_flight(client, plugin) == 0, REQUEST_TIMEOUT)
    added = client.post(f"/v1/plugins/{plugin}/call/add", json={"x": 1, "y": 1})
    assert added.status_code == 200


# -- status and administration ---------------------------------------------------------


def test_list_and_one_status(client: httpx.Client, plugin_dir: Path) -> None:
    client.post("/v1/plugins/gw/call/add", json={"x": 1, "y": 1})
    listed = client.get("/v1/plugins")
    assert listed.status_code == 200
    by_name = {status["name"]: status for status in listed.json()}
    assert list(by_name) == ["gw", "slow", "chatty", "worker", "crasher", "broken"]
    gw = client.get("/v1/plugins/gw").json()
    assert gw["name"] == "gw"
    assert gw["source"] == str(plugin_dir / "gw_plugin.py")
    assert (gw["isolation"], gw["state"], gw["log_level"]) == ("inprocess", "ACTIVE", "info")
    assert gw["metadata"] == {
        "name": "gw-test",
        "version": "2.1.0",
        "type_tags": ["add", "say", "boom", "hold", "crash"],
        "trust": "unsigned",
    }
    assert gw["stats"]["calls"] >= 1
    assert gw["stats"]["pid"] is None
    assert gw["error"] is None
    assert by_name["worker"]["isolation"] == "process"
    assert isinstance(by_name["worker"]["stats"]["pid"], int)
    broken = by_name["broken"]
    assert broken["state"] == "FAILED"
    assert broken["error"]


def test_log_level_route(client: httpx.Client, api_host: PluginHost) -> None:
    response = client.put("/v1/plugins/chatty/log-level", json={"level": "DEBUG"})
    assert response.status_code == 200
    assert response.json()["log_level"] == "debug"
    assert api_host["chatty"].log_level.name == "DEBUG"
    assert client.get("/v1/plugins/chatty").json()["log_level"] == "debug"
    for bad in ({"level": "loud"}, {"level": 3}, {"lvl": "debug"}):
        error = _error(client.put("/v1/plugins/chatty/log-level", json=bad), 400)
        assert (error["code"], error["name"]) == (4, "CONFIG_ERROR")
    error = _error(client.put("/v1/plugins/chatty/log-level", content=b"{"), 400)
    assert error["name"] == "SERIALIZATION_ERROR"
    assert client.put("/v1/plugins/chatty/log-level", json={"level": "info"}).status_code == 200
    assert api_host["chatty"].log_level.name == "INFO"


def test_reload_route(api_host: PluginHost, client: httpx.Client, tmp_path: Path) -> None:
    source = """
        from plugbridge import Plugin, handler

        class Versioned(Plugin):
            name = "versioned"
            version = "{version}"

            @handler("version")
            def which(self, ctx, req) -> str:
                return "{version}"
    """
    path = _write(tmp_path, "versioned_plugin.py", source.replace("{version}", "1.0.0"))
    api_host.add("versioned", str(path))
    try:
        assert client.post("/v1/plugins/versioned/call/version").json() == "1.0.0"
        _write(tmp_path, "versioned_plugin.py", source.replace("{version}", "2.0.0"))
        response = client.post("/v1/plugins/versioned/reload")
        assert response.status_code == 200
        assert response.json()["metadata"]["version"] == "2.0.0"
        assert response.json()["stats"]["reloads"] == 1
        assert client.post("/v1/plugins/versioned/call/version").json() == "2.0.0"
        _write(tmp_path, "versioned_plugin.py", "not python either\n")
        error = _error(client.post("/v1/plugins/versioned/reload"), 500)
        assert (error["code"], error["name"]) == (2, "INITIALIZATION_FAILED")
        assert client.post("/v1/plugins/versioned/call/version").json() == "2.0.0"
        assert client.get("/v1/plugins/versioned").json()["error"]
    finally:
        api_host.remove("versioned")


def test_healthz_ignores_an_optional_failure(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200  # "broken" is FAILED but optional (crasher may be)
    assert response.json()["status"] == "ok"


def test_healthz_503_names_a_required_plugin_that_stopped(
    serve_gateway: Callable[..., GatewayServer], plugin_dir: Path
) -> None:
    with PluginHost() as host:
        host.add("solo", str(plugin_dir / "gw_plugin.py"))
        host.add("spare", str(plugin_dir / "chatty_plugin.py"))
        server = serve_gateway(host)
        try:
            with server.client() as http:
                assert http.get("/healthz").status_code == 200
                host["solo"].shutdown()
                response = http.get("/healthz")
                assert response.status_code == 503
                failing = response.json()["failing"]
                assert [(f["name"], f["state"]) for f in failing] == [("solo", "STOPPED")]
                error = _error(http.post("/v1/plugins/solo/call/add", json={"x": 1, "y": 1}), 409)
                assert error["name"] == "INVALID_STATE"
        finally:
            server.stop()


def test_unknown_route_is_a_json_404(client: httpx.Client) -> None:
    error = _error(client.get("/v2/nothing"), 404)
    assert error["name"] == "NOT_FOUND"
    error = _error(client.delete("/v1/plugins"), 405)
    assert error["name"] == "METHOD_NOT_ALLOWED"


def _resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a local ``$ref`` followed (``#/components/schemas/...``)."""
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def test_openapi_lists_each_plugins_tags_with_the_typed_request_schema(
    client: httpx.Client,
) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    for tag in ("add", "say", "boom", "hold", "crash"):
        assert "post" in document["paths"][f"/v1/plugins/gw/call/{tag}"]
    add = document["paths"]["/v1/plugins/gw/call/add"]["post"]
    schema = _resolved(document, add["requestBody"]["content"]["application/json"]["schema"])
    assert {"x", "y"} <= set(schema["properties"])
    assert schema["properties"]["x"]["type"] == "integer"


def test_admin_page_and_its_files(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/static/admin.js" in page.text
    assert "/static/admin.css" in page.text
    script = client.get("/static/admin.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    style = client.get("/static/admin.css")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    assert _error(client.get("/static/nothing.js"), 404)


def test_no_request_path_reaches_files_outside_static(api: GatewayServer) -> None:
    for path in (b"/static/../app.py", b"/static/..%2fapp.py", b"/static/%2e%2e/app.py"):
        with socket.create_connection(("127.0.0.1", api.port), timeout=REQUEST_TIMEOUT) as conn:
            conn.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        assert b"create_app" not in answer


# -- logs ----------------------------------------------------------------------------------


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The decoded ``data`` of each event in an SSE line stream (comments skipped)."""
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def _stream_opened(lines: Iterator[str]) -> None:
    """Read up to the stream's opening comment: from then on the client is subscribed."""
    for line in lines:
        if line.startswith(": log stream of plugin"):
            return
    raise AssertionError("the log stream ended before it opened")


def test_log_stream_delivers_a_record_logged_after_connecting(
    api: GatewayServer, client: httpx.Client
) -> None:
    with (
        api.client() as streaming,
        streaming.stream("GET", "/v1/plugins/gw/logs") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        _stream_opened(lines)
        said = client.post(
            "/v1/plugins/gw/call/say", json={"level": "WARNING", "message": "live after connect"}
        )
        assert said.status_code == 200
        for record in _events(lines):  # bounded by the client's read timeout
            if record["message"] == "live after connect":
                break
    assert record["level"] == "warn"
    assert record["target"] == "gw_plugin"
    assert record["time"].endswith("Z")


def test_log_stream_follows_plugins_added_and_removed_later(
    api: GatewayServer, api_host: PluginHost, client: httpx.Client, plugin_dir: Path
) -> None:
    api_host.add("late", str(plugin_dir / "chatty_plugin.py"))
    removed = False
    try:
        with (
            api.client() as streaming,
            streaming.stream("GET", "/v1/plugins/late/logs") as stream,
        ):
            lines = stream.iter_lines()
            _stream_opened(lines)
            said = client.post(
                "/v1/plugins/late/call/say", json={"level": "ERROR", "message": "late record"}
            )
            assert said.status_code == 200
            assert next(_events(lines))["message"] == "late record"
            api_host.remove("late")
            removed = True
            assert list(_events(lines)) == []  # it ends once the gateway sees it removed
        assert _error(client.get("/v1/plugins/late/logs"), 404)["name"] == "UNKNOWN_PLUGIN"
    finally:
        if not removed:
            api_host.remove("late")


def test_log_stream_replays_the_last_200_records(api: GatewayServer, client: httpx.Client) -> None:
    said = client.post(
        "/v1/plugins/chatty/call/say",
        json={"level": "INFO", "message": "record {}", "count": 250},
    )
    assert said.status_code == 200
    with api.client() as streaming, streaming.stream("GET", "/v1/plugins/chatty/logs") as stream:
        messages = []
        for record in _events(stream.iter_lines()):
            messages.append(record["message"])
            if record["message"] == "record 249":
                break
    assert messages == [f"record {number}" for number in range(50, 250)]


def test_log_stream_resumes_after_last_event_id(api: GatewayServer, client: httpx.Client) -> None:
    client.post("/v1/plugins/chatty/call/say", json={"level": "ERROR", "message": "first"})
    client.post("/v1/plugins/chatty/call/say", json={"level": "ERROR", "message": "second"})
    ids: dict[str, str] = {}
    with api.client() as streaming, streaming.stream("GET", "/v1/plugins/chatty/logs") as stream:
        event_id = None
        for line in stream.iter_lines():
            if line.startswith("id: "):
                event_id = line[len("id: ") :]
            elif line.startswith("data: "):
                message = json.loads(line[len("data: ") :])["message"]
                assert event_id is not None
                ids[message] = event_id
                if message == "second":
                    break
    headers = {"Last-Event-ID": ids["first"]}  # as an EventSource reconnecting sends it
    with (
        api.client() as streaming,
        streaming.stream("GET", "/v1/plugins/chatty/logs", headers=headers) as stream,
    ):
        resumed = next(_events(stream.iter_lines()))
    assert resumed["message"] == "second"


# -- metrics -------------------------------------------------------------------------------


def _samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_show_the_calls_made(client: httpx.Client) -> None:
    gw = (("plugin", "gw"),)
    before = _samples(client)
    for number in range(3):
        assert client.post("/v1/plugins/gw/call/add", json={"x": number, "y": 1}).status_code == 200
    assert client.post("/v1/plugins/gw/call/boom", json={}).status_code == 500
    after = _samples(client)
    assert after[("plugbridge_calls_total", gw)] - before[("plugbridge_calls_total", gw)] == 4
    errors = ("plugbridge_errors_total", (("code", "HANDLER_ERROR"), ("plugin", "gw")))
    assert after[errors] - before.get(errors, 0.0) == 1
    carried = (
        "plugbridge_gateway_call_duration_seconds_count",
        (("plugin", "gw"), ("route", "call")),
    )
    assert after[carried] - before.get(carried, 0.0) == 4
    assert after[("plugbridge_in_flight", gw)] == 0
    assert after[("plugbridge_up", gw)] == 1
    assert after[("plugbridge_up", (("plugin", "broken"),))] == 0
    assert ("plugbridge_call_latency_seconds", (("plugin", "gw"), ("quantile", "0.99"))) in after
    assert ("plugbridge_worker_rss_bytes", (("plugin", "worker"),)) in after


# -- the token -----------------------------------------------------------------------------


def test_token_is_required_and_checked(guarded: GatewayServer) -> None:
    with guarded.client() as anonymous:
        for response in (
            anonymous.get("/v1/plugins"),
            anonymous.post("/v1/plugins/gw/call/add", json={"x": 1, "y": 1}),
            anonymous.get("/metrics"),
            anonymous.get("/openapi.json"),
            anonymous.get("/v1/plugins/gw/logs"),
        ):
            error = _error(response, 401)
            assert error["name"] == "UNAUTHORIZED"
            assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/healthz").status_code == 200
        for path in ("/", "/static/admin.css", "/static/admin.js"):  # the page holds no data
            assert anonymous.get(path).status_code == 200
        wrong = {"Authorization": f"Bearer {TOKEN}x"}
        assert anonymous.get("/v1/plugins", headers=wrong).status_code == 401
        assert anonymous.get("/v1/plugins", headers={"Authorization": TOKEN}).status_code == 401
        query = {"token": TOKEN}
        assert anonymous.get("/v1/plugins", params=query).status_code == 401  # logs only
    with guarded.client(token=TOKEN) as allowed:
        assert allowed.post("/v1/plugins/gw/call/add", json={"x": 1, "y": 1}).json() == {"sum": 2}
        assert allowed.get("/metrics").status_code == 200
        lower = {"Authorization": f"bearer {TOKEN}"}
        assert allowed.get("/v1/plugins", headers=lower).status_code == 200


def test_log_stream_takes_the_token_as_a_query_parameter(guarded: GatewayServer) -> None:
    with guarded.client() as anonymous:
        wrong = anonymous.get("/v1/plugins/gw/logs", params={"token": "nope"})
        assert _error(wrong, 401)["name"] == "UNAUTHORIZED"
        with anonymous.stream("GET", "/v1/plugins/gw/logs", params={"token": TOKEN}) as stream:
            assert stream.status_code == 200
            _stream_opened(stream.iter_lines())
