"""``plugbridge serve CONFIG.toml`` as a real subprocess on a free loopback port: it serves,
SIGTERM drains a call in flight (and ends log streams) then exits 0, the token comes from
--token-file or PLUGBRIDGE_TOKEN, --watch reloads; bad input is one line and non-zero."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbridge._cli import main

from ..conftest import wait_until
from .conftest import REQUEST_TIMEOUT

HOLDING_PLUGIN = """
    import asyncio
    import logging
    import pathlib

    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)


    class Holding(Plugin):
        name = "holding"
        version = "1.0.0"

        @handler("version")
        def which(self, ctx, req) -> str:
            return "{version}"

        @handler("hold")
        async def hold(self, ctx, req: dict) -> dict:
            folder = pathlib.Path(req["dir"])
            (folder / "started").write_text("")
            for _ in range(6000):  # 60 s at most
                if (folder / "release").exists():
                    return {"held": True}
                await asyncio.sleep(0.01)
            return {"held": False}
"""


def _host_file(folder: Path, version: str = "1.0.0", shutdown_timeout: float = 5.0) -> Path:
    plugin = folder / "holding_plugin.py"
    plugin.write_text(textwrap.dedent(HOLDING_PLUGIN).replace("{version}", version))
    config = folder / "plugbridge.toml"
    config.write_text(
        f'[plugins.holding]\nsource = "holding_plugin.py"\nshutdown_timeout = {shutdown_timeout}\n'
    )
    return config


class ServeProcess:
    """``plugbridge serve`` in a subprocess on a port the system picks (``--port 0``)."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plugbridge", "serve", str(config), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        first = self.next_line()
        assert first is not None and " on http://" in first, (first, self.stderr_text())
        self.url = first.split(" on ", 1)[1].split()[0].rstrip(",")
        self.port = int(self.url.rsplit(":", 1)[1])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout.append(line.rstrip("\n"))
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next_line(self) -> str | None:
        try:
            return self._lines.get(timeout=REQUEST_TIMEOUT)
        except queue.Empty:
            return None

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT, headers=headers)

    def exit_code(self) -> int:
        """Wait for the process to end and its output to be read; its exit code."""
        code = self.process.wait(REQUEST_TIMEOUT)
        self._reader.join(REQUEST_TIMEOUT)
        return code

    def stderr_text(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(REQUEST_TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def spawn() -> Iterator[Any]:
    started: list[ServeProcess] = []

    def spawn(config: Path, *args: str, env: dict[str, str] | None = None) -> ServeProcess:
        server = ServeProcess(config, *args, env=env)
        started.append(server)
        return server

    yield spawn
    for server in started:
        server.stop()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


def test_serves_and_sigterm_drains_a_call_in_flight(spawn: Any, tmp_path: Path) -> None:
    # a drain timeout of 60 s: exiting well before it shows the open log stream did not
    # hold the drain, and the held call had all the time it needed
    server = spawn(_host_file(tmp_path, shutdown_timeout=60.0))
    with server.client() as http:
        assert http.post("/v1/plugins/holding/call/version").json() == "1.0.0"
        assert http.get("/healthz").status_code == 200
    outcome: dict[str, Any] = {}

    def hold() -> None:
        with server.client() as http:
            outcome["call"] = http.post(
                "/v1/plugins/holding/call/hold", json={"dir": str(tmp_path)}
            )

    def follow_logs() -> None:
        with server.client() as http, http.stream("GET", "/v1/plugins/holding/logs") as stream:
            lines = stream.iter_lines()
            outcome["opened"] = next(lines).startswith(": log stream")
            outcome["rest"] = list(lines)  # ends when the server ends the stream

    caller = threading.Thread(target=hold)
    follower = threading.Thread(target=follow_logs)
    caller.start()
    follower.start()
    assert wait_until((tmp_path / "started").exists, REQUEST_TIMEOUT)
    assert wait_until(lambda: "opened" in outcome, REQUEST_TIMEOUT)
    server.process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: _refused(server.port), REQUEST_TIMEOUT)  # stopped accepting
    follower.join(REQUEST_TIMEOUT)
    assert not follower.is_alive()  # the log stream was ended, not left to the drain timeout
    assert server.process.poll() is None  # still draining the held call
    began = time.monotonic()
    (tmp_path / "release").write_text("")
    caller.join(REQUEST_TIMEOUT)
    assert outcome["call"].status_code == 200
    assert outcome["call"].json() == {"held": True}
    assert server.exit_code() == 0
    assert time.monotonic() - began < 30.0  # at once, not after the 60 s drain timeout
    assert server.stdout[-1] == "plugbridge: stopped"
    assert "Traceback" not in server.stderr_text()


def test_sigint_stops_it_too(spawn: Any, tmp_path: Path) -> None:
    server = spawn(_host_file(tmp_path))
    with server.client() as http:
        assert http.post("/v1/plugins/holding/call/version").json() == "1.0.0"
    server.process.send_signal(signal.SIGINT)
    assert server.exit_code() == 0
    assert server.stdout[-1] == "plugbridge: stopped"
    assert "Traceback" not in server.stderr_text()


def test_token_from_a_file(spawn: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    server = spawn(_host_file(tmp_path), "--token-file", str(token_file))
    with server.client() as anonymous:
        assert anonymous.post("/v1/plugins/holding/call/version").status_code == 401
        assert anonymous.get("/healthz").status_code == 200
    with server.client(token="from-the-file") as allowed:
        assert allowed.post("/v1/plugins/holding/call/version").json() == "1.0.0"
    with server.client(token="wrong") as wrong:
        assert wrong.get("/v1/plugins").status_code == 401


def test_token_from_the_environment(spawn: Any, tmp_path: Path) -> None:
    server = spawn(_host_file(tmp_path), env={"PLUGBRIDGE_TOKEN": "from-the-env"})
    with server.client() as anonymous:
        assert anonymous.get("/v1/plugins").status_code == 401
    with server.client(token="from-the-env") as allowed:
        assert allowed.get("/v1/plugins").status_code == 200


def test_watch_reloads_a_changed_plugin(spawn: Any, tmp_path: Path) -> None:
    config = _host_file(tmp_path)
    server = spawn(config, "--watch")
    with server.client() as http:
        assert http.post("/v1/plugins/holding/call/version").json() == "1.0.0"
        _host_file(tmp_path, version="2.0.0")

        def version() -> str:
            answer: str = http.post("/v1/plugins/holding/call/version").json()
            return answer

        assert wait_until(lambda: version() == "2.0.0", REQUEST_TIMEOUT)
        assert http.get("/v1/plugins/holding").json()["stats"]["reloads"] >= 1


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("plugbridge: "), err
    assert "Traceback" not in err
    return err


def test_non_loopback_without_a_token_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLUGBRIDGE_TOKEN", raising=False)
    config = _host_file(tmp_path)
    for bind in ("0.0.0.0", "::", "192.0.2.1", "example.com"):
        assert main(["serve", str(config), "--host", bind, "--port", "0"]) != 0
        assert "without a token" in _one_line_error(capsys)


def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLUGBRIDGE_TOKEN", raising=False)
    config = _host_file(tmp_path)
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    assert main(["serve", str(config), "--token-file", str(empty)]) != 0
    assert "empty" in _one_line_error(capsys)
    assert main(["serve", str(config), "--token-file", str(tmp_path / "missing")]) != 0
    assert "token file" in _one_line_error(capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(config), "--port", str(port)]) != 0
        assert "cannot listen" in _one_line_error(capsys)
    bad = tmp_path / "bad.toml"
    bad.write_text("[plugins.x]\nsource = 'nowhere.py'\nno_such_key = 1\n")
    assert main(["serve", str(bad), "--port", "0"]) != 0
    assert "no_such_key" in _one_line_error(capsys)
