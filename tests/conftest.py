"""Shared fixtures: real plugin files written to tmp dirs, and the isolation modes to run."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ray.cluster import ray_cluster  # noqa: F401 (a fixture: Ray for the "ray" runs)

ISOLATIONS = ["inprocess", "process", "ray"]
"""Every promise test runs once per isolation mode listed here."""


@pytest.fixture(params=ISOLATIONS)
def isolation(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":  # one Ray for the session, started by the first ray run
        request.getfixturevalue("ray_cluster")
    return str(request.param)


@pytest.fixture
def write_plugin(tmp_path: Path) -> Callable[..., Path]:
    """Write a plugin module (dedented source) into tmp_path; return its path."""

    def write(source: str, name: str = "plugin_mod.py", where: Path | None = None) -> Path:
        path = (where or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    return write


HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello" / "hello_plugin.py"


class LogCapture:
    """A log callback that records (level, target, message) triples, thread-safely."""

    def __init__(self) -> None:
        import threading

        self.records: list[tuple[object, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, level: object, target: str, message: str) -> None:
        with self._lock:
            self.records.append((level, target, message))

    def messages(self) -> list[str]:
        with self._lock:
            return [m for _, _, m in self.records]

    def targets(self) -> list[str]:
        with self._lock:
            return [t for _, t, _ in self.records]


@pytest.fixture
def capture() -> LogCapture:
    return LogCapture()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until true or ``timeout``; return its last value."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
