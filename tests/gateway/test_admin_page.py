"""The admin page in a real browser: Debian's Chromium, driven by Playwright, on a real
gateway (uvicorn on a free loopback port) serving real plugin files.

The page is checked against the server: what it shows is what ``GET /v1/plugins`` says,
and what it does (a level change, a reload, a request) is seen by the server. Plugin
strings that look like HTML (a version, an error, a log message) must show as text.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from plugbridge import PluginHost

from ..conftest import HELLO, wait_until
from .browser import browser, new_page, save_screenshot
from .conftest import GatewayServer

__all__ = ["browser", "new_page"]  # fixtures, imported for pytest

TOKEN = "admin-page-token-7f3a"
POLL_DEADLINE_S = 20.0
"""How long a server-side condition may take to show (generous: the suite runs under load)."""
P99 = re.compile(r"^\d[\d.,]* (µs|ms|s)$")
"""A latency as the page writes it."""

GREETER = """\
import logging

import msgspec

from plugbridge import Plugin, handler

log = logging.getLogger(__name__)
EDITION = "{edition}"


class Hello(msgspec.Struct):
    name: str


class Greeter(Plugin):
    name = "greeter"
    version = "{version}"

    @handler("hello")
    def hello(self, ctx, req: Hello) -> dict:
        return {{"greeting": f"Hello, {{req.name}}!"}}

    @handler("note")
    def note(self, ctx, req: dict) -> dict:
        getattr(log, req.get("level", "info"))("%s", req["text"])
        return {{"noted": True}}

    @handler("burst")
    def burst(self, ctx, req: dict) -> dict:
        for i in range(req["n"]):
            log.info("burst %d of %s", i, req["tag"])
        return {{"logged": req["n"]}}

    @handler("edition")
    def edition(self, ctx, req) -> dict:
        return {{"edition": EDITION}}
"""

BROKEN = """\
from plugbridge import Plugin


class Broken(Plugin):
    name = "broken"

    async def on_start(self, ctx):
        raise RuntimeError("{message}")
"""


class AdminGateway:
    """The host and server the page is tested on, and the greeter plugin's file."""

    def __init__(self, host: PluginHost, server: GatewayServer, greeter_file: Path) -> None:
        self.host = host
        self.server = server
        self.greeter_file = greeter_file
        self.http = server.client()

    def __enter__(self) -> AdminGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def status(self, name: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/plugins/{name}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def call(self, name: str, tag: str, body: object, client: httpx.Client | None = None) -> Any:
        response = (client or self.http).post(f"/v1/plugins/{name}/call/{tag}", json=body)
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.contextmanager
def admin_gateway(
    where: Path,
    serve_gateway: Callable[..., GatewayServer],
    version: str = "2.1.0 <b>beta</b>",
    broken: str = "no database at <i>db.local</i>",
) -> Iterator[AdminGateway]:
    """Three plugins: ``greeter`` (in-process, a file of this test), ``hello`` (the example,
    in a worker process) and ``broken`` (optional, FAILED: its ``on_start`` raises)."""
    greeter = where / "greeter_plugin.py"
    greeter.write_text(GREETER.format(edition="first", version=version))
    (where / "broken_plugin.py").write_text(BROKEN.format(message=broken))
    host = PluginHost()
    host.start()
    try:
        host.add("greeter", greeter)
        host.add("hello", HELLO, isolation="process")
        host.add("broken", where / "broken_plugin.py", required=False)
        server = serve_gateway(host)
        try:
            with AdminGateway(host, server, greeter) as admin:
                yield admin
        finally:
            server.stop()
    finally:
        host.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, serve_gateway: Callable[..., GatewayServer]
) -> Iterator[AdminGateway]:
    """The gateway most tests share (each leaves it usable by the next)."""
    with admin_gateway(tmp_path_factory.mktemp("admin_page"), serve_gateway) as admin:
        yield admin


def open_page(page: Page, url: str) -> Page:
    page.goto(url + "/")
    expect(page.locator("tr[data-plugin]")).to_have_count(3)
    return page


def row(page: Page, name: str) -> Locator:
    return page.locator(f'tr[data-plugin="{name}"]')


def count_text(value: int) -> str:
    return f"{value:,}"


def test_page_lists_every_plugin_with_its_fields_and_refreshes(
    gateway: AdminGateway, new_page: Callable[..., Page]
) -> None:
    gateway.call("greeter", "hello", {"name": "Ada"})
    failing = gateway.http.post("/v1/plugins/greeter/call/hello", json={"name": 5})
    assert failing.status_code == 400
    page = open_page(new_page(), gateway.server.url)

    for name in ("greeter", "hello", "broken"):
        status = gateway.status(name)
        cells = row(page, name)
        stats = status["stats"]
        expect(cells.locator("td.name .plugin-name")).to_have_text(name)
        expect(cells.locator("td.version")).to_have_text(status["metadata"]["version"] or "—")
        expect(cells.locator("td.isolation")).to_have_text(status["isolation"])
        expect(cells.locator("td.state .badge")).to_have_text(status["state"])
        expect(cells.locator("td.level select")).to_have_value(status["log_level"])
        expect(cells.locator("td.calls")).to_have_text(count_text(stats["calls"]))
        expect(cells.locator("td.errors")).to_have_text(count_text(sum(stats["errors"].values())))
        expect(cells.locator("td.rejected")).to_have_text(count_text(stats["rejected"]))
        expect(cells.locator("td.trust")).to_have_text(status["metadata"]["trust"])
        expect(cells.locator("td.actions button")).to_have_text("Reload")

    greeter = row(page, "greeter")
    expect(greeter.locator("td.isolation")).to_have_text("inprocess")
    expect(row(page, "hello").locator("td.isolation")).to_have_text("process")
    assert sum(gateway.status("greeter")["stats"]["errors"].values()) >= 1
    expect(greeter.locator("td.errors")).to_have_attribute("data-nonzero", "true")
    expect(greeter.locator("td.p99")).to_have_text(P99)
    # plugin strings are text, never markup
    expect(greeter.locator("td.version")).to_have_text("2.1.0 <b>beta</b>")
    assert greeter.locator("b").count() == 0
    broken = row(page, "broken")
    expect(broken.locator("td.state .badge")).to_have_text("FAILED")
    expect(broken.locator(".plugin-error")).to_contain_text("no database at <i>db.local</i>")
    assert broken.locator("i").count() == 0
    expect(page.locator("#summary")).to_have_text("3 plugins · 2 active · 1 failed")

    # the page refreshes itself: a call made elsewhere shows up without reloading the page
    before = gateway.status("greeter")["stats"]["calls"]
    gateway.call("greeter", "hello", {"name": "Grace"})
    expect(greeter.locator("td.calls")).to_have_text(count_text(before + 1))


def test_changing_a_level_changes_it_on_the_server_and_on_the_page(
    gateway: AdminGateway, new_page: Callable[..., Page]
) -> None:
    page = open_page(new_page(), gateway.server.url)
    select = row(page, "greeter").locator("td.level select")
    expect(select).to_have_value("info")

    select.select_option("debug")

    assert wait_until(lambda: gateway.status("greeter")["log_level"] == "debug", POLL_DEADLINE_S), (
        "the server's level did not change"
    )
    expect(page.locator("#action-status")).to_have_text("Log level of greeter set to debug.")
    page.reload()
    expect(row(page, "greeter").locator("td.level select")).to_have_value("debug")
    # and the other way: a change made elsewhere reaches the page by its polling
    gateway.http.put("/v1/plugins/greeter/log-level", json={"level": "info"})
    expect(row(page, "greeter").locator("td.level select")).to_have_value("info")


def test_reload_button_reloads_the_plugin_from_disk(
    gateway: AdminGateway, new_page: Callable[..., Page]
) -> None:
    page = open_page(new_page(), gateway.server.url)
    reloads = gateway.status("greeter")["stats"]["reloads"]
    edition = f"edition-{uuid.uuid4().hex[:8]}"
    source = gateway.greeter_file.read_text()
    gateway.greeter_file.write_text(re.sub(r'EDITION = ".*"', f'EDITION = "{edition}"', source))
    assert gateway.call("greeter", "edition", None) != {"edition": edition}  # not yet

    row(page, "greeter").locator("button.reload").click()

    expect(page.locator("#action-status")).to_have_text(
        f"greeter reloaded (reload #{reloads + 1})."
    )
    assert gateway.status("greeter")["stats"]["reloads"] == reloads + 1
    assert gateway.call("greeter", "edition", None) == {"edition": edition}
    expect(row(page, "greeter").locator("button.reload")).to_have_text("Reload")


def send(page: Page, plugin: str, tag: str, body: str) -> Locator:
    page.locator("#request-plugin").select_option(plugin)
    page.locator("#request-tag").select_option(tag)
    page.locator("#request-body").fill(body)
    page.locator("#request-send").click()
    result = page.locator("#request-result")
    expect(result).not_to_have_attribute("data-outcome", "busy")
    return result


def test_request_form_shows_the_response_or_the_error(
    gateway: AdminGateway, new_page: Callable[..., Page]
) -> None:
    page = open_page(new_page(), gateway.server.url)
    expect(page.locator("#request-tag option")).to_have_count(
        len(gateway.status("greeter")["metadata"]["type_tags"])
    )

    result = send(page, "greeter", "hello", '{"name": "Ada <script>"}')
    expect(result).to_have_attribute("data-outcome", "ok")
    expect(page.locator("#result-status")).to_contain_text("200 OK")
    expect(page.locator("#result-body")).to_contain_text('"greeting": "Hello, Ada <script>!"')
    expect(page.locator("#result-error")).to_be_hidden()

    result = send(page, "greeter", "hello", '{"name": 5}')  # the wrong type
    expect(result).to_have_attribute("data-outcome", "error")
    expect(page.locator("#result-status")).to_contain_text("400")
    expect(page.locator("#result-error-name")).to_have_text("SERIALIZATION_ERROR")
    expect(page.locator("#result-error-code")).to_have_text("code 5")
    expect(page.locator("#result-error-message")).to_contain_text("name")
    expect(page.locator("#result-body")).to_be_hidden()

    result = send(page, "greeter", "hello", "{not json")
    expect(page.locator("#result-error-name")).to_have_text("SERIALIZATION_ERROR")

    # the tags follow the chosen plugin; Ctrl+Enter in the body sends
    page.locator("#request-plugin").select_option("hello")
    expect(page.locator("#request-tag")).to_have_value("echo")
    page.locator("#request-body").fill('{"message": "keyboard"}')
    page.locator("#request-body").press("Control+Enter")
    expect(page.locator("#result-body")).to_contain_text('"length": 8')
    expect(result).to_have_attribute("data-outcome", "ok")


def follow_logs(page: Page, plugin: str) -> None:
    page.locator("#log-plugin").select_option(plugin)
    expect(page.locator("#log-state")).to_have_attribute("data-state", "live")
    expect(page.locator("#log-state")).to_have_text(f"live · {plugin}")


def test_log_pane_shows_records_logged_after_it_opened(
    gateway: AdminGateway, new_page: Callable[..., Page]
) -> None:
    page = open_page(new_page(), gateway.server.url)
    follow_logs(page, "greeter")
    unique = f"after-open-{uuid.uuid4().hex}"
    text = f'<img src=x onerror="window.__pwned = 1"> {unique}'

    gateway.call("greeter", "note", {"text": text, "level": "warning"})

    line = page.locator(".log-line", has_text=unique)
    expect(line).to_have_count(1)
    expect(line).to_have_attribute("data-level", "warn")
    expect(line.locator(".log-level")).to_have_text("warn")
    expect(line.locator(".log-target")).to_have_text("greeter_plugin")
    expect(line.locator(".log-message")).to_have_text(text)
    assert page.locator("#log-lines img").count() == 0
    assert page.evaluate("window.__pwned") is None
    # the level colours differ (warn is not info)
    plain = f"plain-{uuid.uuid4().hex}"
    gateway.call("greeter", "note", {"text": plain})
    info = page.locator(".log-line", has_text=plain)
    expect(info).to_have_attribute("data-level", "info")
    colour = "el => getComputedStyle(el.querySelector('.log-level')).color"
    assert info.evaluate(colour) != line.evaluate(colour)

    # bounded to 500 lines, newest at the bottom, scrolled there
    tag = uuid.uuid4().hex
    gateway.call("greeter", "burst", {"n": 600, "tag": tag})
    last = page.locator(".log-line").last
    expect(last.locator(".log-message")).to_have_text(f"burst 599 of {tag}")
    assert page.locator(".log-line").count() == 500
    expect(page.locator(".log-line").first.locator(".log-message")).to_have_text(
        f"burst 100 of {tag}"
    )
    pane = page.locator("#log-lines")
    assert wait_until(
        lambda: pane.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 2,
        POLL_DEADLINE_S,
    ), "the pane did not scroll to its newest line"


def test_with_a_token_the_page_asks_for_it_once_then_works(
    gateway: AdminGateway,
    new_page: Callable[..., Page],
    serve_gateway: Callable[..., GatewayServer],
    tmp_path: Path,
) -> None:
    server = serve_gateway(gateway.host, token=TOKEN)
    page = new_page()
    try:
        page.goto(server.url + "/")
        panel = page.locator("#token-panel")
        expect(panel).to_be_visible()
        expect(page.locator("#token-input")).to_be_focused()
        assert png_size(save_screenshot(page, "admin-page-token", tmp_path)) == (1280, 800)
        assert page.locator("tr[data-plugin]").count() == 0

        page.locator("#token-input").fill("not-the-token")
        page.locator("#token-input").press("Enter")
        expect(page.locator("#token-message")).to_have_text("That token was refused.")
        expect(panel).to_be_visible()

        page.locator("#token-input").fill(TOKEN)
        page.locator("#token-form button[type=submit]").click()
        expect(panel).to_be_hidden()
        expect(page.locator("tr[data-plugin]")).to_have_count(3)

        # the log pane (token in the query: EventSource sends no headers) and the request form
        follow_logs(page, "greeter")
        unique = f"with-token-{uuid.uuid4().hex}"
        with server.client(token=TOKEN) as http:
            gateway.call("greeter", "note", {"text": unique}, client=http)
        expect(page.locator(".log-line", has_text=unique)).to_have_count(1)
        send(page, "greeter", "hello", '{"name": "Token"}')
        expect(page.locator("#result-body")).to_contain_text("Hello, Token!")

        # asked once: the tab keeps it (sessionStorage) across a reload of the page
        page.reload()
        expect(page.locator("tr[data-plugin]")).to_have_count(3)
        expect(panel).to_be_hidden()
    finally:
        page.context.close()  # its log stream would hold the server's shutdown open
        server.stop()


def tab_to(page: Page, locator: Locator, limit: int = 60) -> None:
    """Press Tab until ``locator`` has the focus."""
    for _ in range(limit):
        if locator.evaluate("el => el === document.activeElement"):
            return
        page.keyboard.press("Tab")
    pytest.fail(f"Tab never reached {locator}")


def test_keyboard_reaches_and_operates_the_level_select_and_reload_button(
    gateway: AdminGateway, new_page: Callable[..., Page]
) -> None:
    page = open_page(new_page(), gateway.server.url)
    hello = row(page, "hello")
    select = hello.locator("td.level select")
    expect(select).to_have_value("info")

    tab_to(page, select)
    assert select.evaluate("el => getComputedStyle(el).outlineStyle") != "none"  # visible focus
    page.keyboard.press("Space")  # opens the list
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    assert wait_until(lambda: gateway.status("hello")["log_level"] == "warn", POLL_DEADLINE_S)
    expect(select).to_have_value("warn")

    button = hello.locator("button.reload")
    tab_to(page, button)
    assert button.evaluate("el => getComputedStyle(el).outlineStyle") != "none"
    reloads = gateway.status("hello")["stats"]["reloads"]
    page.keyboard.press("Enter")
    expect(page.locator("#action-status")).to_have_text(f"hello reloaded (reload #{reloads + 1}).")
    expect(button).to_be_focused()  # the focus stays put while it reloads
    page.keyboard.press("Space")
    expect(page.locator("#action-status")).to_have_text(f"hello reloaded (reload #{reloads + 2}).")
    assert gateway.status("hello")["stats"]["reloads"] == reloads + 2


def test_screenshots_of_a_page_in_use(
    tmp_path: Path,
    new_page: Callable[..., Page],
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    """admin-page.png (light) and admin-page-dark.png, 1280x800 (into docs/images with
    PLUGBRIDGE_SCREENSHOTS=1, else a tmp dir): a fresh
    gateway with calls made, a response shown and live records at several levels."""
    broken = "cannot connect to postgres://db.internal:5432"
    with admin_gateway(tmp_path, serve_gateway, version="2.1.0", broken=broken) as gateway:
        for i in range(40):
            gateway.call("hello", "echo", {"message": f"ping {i}"})
            gateway.call("greeter", "hello", {"name": f"user {i}"})
        gateway.http.post("/v1/plugins/greeter/call/hello", json={"name": 5})
        gateway.http.put("/v1/plugins/hello/log-level", json={"level": "debug"})
        notes = [
            ("info", "greeting templates loaded: 12 locales"),
            ("debug", "cache warmed: 1,204 greetings in 38 ms"),
            ("info", "served 40 greetings since start"),
            ("warning", "translator slow: 840 ms for locale fr-CA"),
            ("error", "translator unavailable: falling back to English"),
            ("info", "translator back online"),
        ]
        gateway.http.put("/v1/plugins/greeter/log-level", json={"level": "debug"})
        for scheme, image in (("light", "admin-page"), ("dark", "admin-page-dark")):
            page = open_page(new_page(scheme), gateway.server.url)
            follow_logs(page, "greeter")
            if scheme == "light":  # live; the dark page gets them from the replay
                for level, text in notes:
                    gateway.call("greeter", "note", {"text": text, "level": level})
            expect(page.locator(".log-line").last).to_contain_text(notes[-1][1])
            send(page, "greeter", "hello", '{"name": "Ada"}')
            expect(page.locator("#result-body")).to_contain_text("Hello, Ada!")
            expect(row(page, "hello").locator("td.calls")).to_have_text("40")
            path = save_screenshot(page, image, tmp_path / "images")
            assert png_size(path) == (1280, 800)
            page.context.close()  # before the server stops: its log stream holds it open


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
