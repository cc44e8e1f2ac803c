"""``GET /v1/plugins/{name}`` (and the routes answering with one status) build that
plugin's status alone, never the whole host's (which reads every plugin's statistics,
a worker's memory and CPU included)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from plugbridge import PluginHost
from plugbridge._host_status import PluginStatus

from ..conftest import HELLO
from .conftest import GatewayServer


class CountingHost(PluginHost):
    """A real host that counts the times its whole status is built."""

    whole_status_builds = 0

    def status(self) -> list[PluginStatus]:
        self.whole_status_builds += 1
        return super().status()


@pytest.fixture(scope="module")
def host() -> Iterator[CountingHost]:
    host = CountingHost()
    host.start()
    try:
        host.add("one", str(HELLO))
        host.add("two", str(HELLO), config={"log_level": "warn"})
        yield host
    finally:
        host.close()


@pytest.fixture(scope="module")
def server(
    host: CountingHost, serve_gateway: Callable[..., GatewayServer]
) -> Iterator[GatewayServer]:
    server = serve_gateway(host)
    yield server
    server.stop()


def _fixed(status: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if key != "stats"}


def test_one_plugins_status_builds_only_its_own(host: CountingHost, server: GatewayServer) -> None:
    with server.client() as http:
        listed = {status["name"]: status for status in http.get("/v1/plugins").json()}
        before = host.whole_status_builds
        one = http.get("/v1/plugins/two")
        assert one.status_code == 200
        assert host.whole_status_builds == before
    assert _fixed(one.json()) == _fixed(listed["two"])
    assert one.json()["log_level"] == "warn"
    assert set(one.json()["stats"]) == set(listed["two"]["stats"])


def test_level_change_and_reload_answer_without_the_whole_status(
    host: CountingHost, server: GatewayServer
) -> None:
    with server.client() as http:
        before = host.whole_status_builds
        changed = http.put("/v1/plugins/one/log-level", json={"level": "debug"})
        reloaded = http.post("/v1/plugins/one/reload")
        assert host.whole_status_builds == before
    assert changed.status_code == 200
    assert changed.json()["log_level"] == "debug"
    assert reloaded.status_code == 200
    assert reloaded.json()["name"] == "one"
    assert reloaded.json()["stats"]["reloads"] == 1


def test_an_unknown_plugin_is_still_404(server: GatewayServer) -> None:
    with server.client() as http:
        response = http.get("/v1/plugins/nobody")
    assert response.status_code == 404
    assert response.json()["error"]["name"] == "UNKNOWN_PLUGIN"
