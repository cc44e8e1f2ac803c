"""examples/web: the Starlette app, served by uvicorn as a real process on a loopback port.

It loads the hello plugin in its lifespan (in-process and in a worker process), answers
from routes with ``await plugin.acall``, and on SIGTERM shuts the plugins down and exits 0
with no worker process left behind. All traffic goes to 127.0.0.1, a bounded number of
requests, each with a timeout.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "web"
START_BOUND = 60.0
"""Seconds the server may take to start (spawning a worker under load included)."""
EXIT_BOUND = 30.0


def free_loopback_port() -> int:
    """A port free on 127.0.0.1 right now (the kernel picks it; the socket is closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """The example served by uvicorn (``python app.py``), its output collected line by line
    by a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        app = str(EXAMPLE / "app.py")
        command = [sys.executable, app, "--host", "127.0.0.1", "--port", str(port)]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put(None)  # the output ended: the server exited

    def wait_for_line(self, text: str, bound: float) -> None:
        """Return once a line containing ``text`` is out; fail if the server exits first
        or ``bound`` seconds pass."""
        deadline = time.monotonic() + bound
        while not any(text in line for line in self.lines):
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {text!r} within {bound}s:\n{self.output()}")
            if line is None:
                pytest.fail(f"the server exited before {text!r}:\n{self.output()}")

    def output(self) -> str:
        return "\n".join(self.lines)

    def children(self) -> list[int]:
        """The server's child processes (its plugin workers)."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(EXIT_BOUND)
        self._reader.join(EXIT_BOUND)
        return code


@pytest.fixture
def server() -> Iterator[Server]:
    started = Server(free_loopback_port())
    try:
        yield started
    finally:
        if started.process.poll() is None:  # the test failed before stopping it
            started.process.kill()
            started.process.wait(EXIT_BOUND)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_web_example_serves_plugins_and_stops_them(server: Server) -> None:
    # uvicorn says "Application startup complete" when the app's lifespan has started,
    # *before* it binds the port; "Uvicorn running on" comes once it listens.
    server.wait_for_line("Application startup complete", START_BOUND)
    server.wait_for_line("Uvicorn running on", START_BOUND)
    workers = [
        pid
        for pid in server.children()
        if b"plugbridge" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 1, server.output()  # the process-isolated instance

    with httpx.Client(base_url=server.base, timeout=30) as client:
        listed = client.get("/plugins")
        assert listed.status_code == 200
        assert {name: p["state"] for name, p in listed.json().items()} == {
            "inprocess": "ACTIVE",
            "process": "ACTIVE",
        }
        for isolation in ("inprocess", "process"):
            echo = client.post(f"/plugins/{isolation}/echo", json={"message": "hi"})
            assert (echo.status_code, echo.json()) == (200, {"message": "hi", "length": 2})
            added = client.post(f"/plugins/{isolation}/math.add", json={"a": 40, "b": 2})
            assert added.json() == {"result": 42}
            unknown = client.post(f"/plugins/{isolation}/no.such.tag", json={})
            assert unknown.status_code == 404
            assert unknown.json()["error"]["name"] == "UNKNOWN_MESSAGE_TYPE"
            bad = client.post(f"/plugins/{isolation}/math.add", json={"a": "forty"})
            assert bad.status_code == 400
            assert bad.json()["error"]["name"] == "SERIALIZATION_ERROR"
        greeting = "Hello, Ada! Welcome to plugbridge."
        assert client.get("/greet/Ada").json() == {"inprocess": greeting, "process": greeting}

    async def many_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(f"/plugins/{iso}/test.sleep", json={"duration_ms": 100})
                        for iso in ("inprocess", "process")
                        for _ in range(20)
                    )
                )
            )

    replies = asyncio.run(many_at_once())
    assert [r.json() for r in replies] == [{"slept_ms": 100}] * 40

    assert server.stop() == 0, server.output()
    output = server.output()
    for isolation in ("inprocess", "process"):
        assert f"[{isolation}] INFO hello_plugin: HelloPlugin stopping" in output
        assert f"web example: plugin {isolation} shut down: STOPPED" in output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
    assert not [pid for pid in workers if _running(pid)], "a worker outlived the server"
