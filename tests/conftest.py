"""Shared fixtures: real plugin files written to tmp dirs, and the isolation modes to run."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ray.cluster import ray_cluster  # noqa: F401 (a fixture: Ray for the "ray" runs)

LOCAL_ISOLATIONS = ["inprocess", "process"]
ISOLATIONS = [*LOCAL_ISOLATIONS, "ray"]
"""Every promise test (tests/contract) runs once per isolation mode listed here."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that takes ``isolation`` once per mode: every mode for the contract
    suite and for tests marked ``ray_too``; the two local modes for the rest. A Ray actor
    runs the in-process transport, so the ray run of, say, each native error-mapping case
    tests nothing the contract's ray run and tests/ray do not, and costs ~1 s; the marked
    tests are those where Ray changes something (shipping, reload, logs, limits, stats)."""
    if "isolation" not in metafunc.fixturenames or any(
        "isolation" in str(mark.args[0] if mark.args else mark.kwargs.get("argnames", ""))
        for mark in metafunc.definition.iter_markers("parametrize")
    ):
        return
    everywhere = (
        metafunc.definition.get_closest_marker("ray_too") is not None
        or metafunc.definition.path.parent.name == "contract"
    )
    metafunc.parametrize("isolation", ISOLATIONS if everywhere else LOCAL_ISOLATIONS, indirect=True)


@pytest.fixture
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


def _c_signal_handler(signum: int) -> int | None:
    """The handler address the kernel has for ``signum`` (``sigaction``), or None where it
    cannot be read: code in C (an extension, a library's runtime) can replace Python's
    handler without ``signal.getsignal`` ever seeing it."""
    import ctypes
    import sys

    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    old = ctypes.create_string_buffer(256)  # struct sigaction: sa_handler comes first
    if libc.sigaction(signum, None, old) != 0:
        return None
    return int.from_bytes(old.raw[: ctypes.sizeof(ctypes.c_void_p)], sys.byteorder)


def _signal_state() -> dict[str, object]:
    """What a test may leave changed that would stop a later Ctrl-C (``pthread_kill``)
    from reaching the main thread as a KeyboardInterrupt. Read on the main thread."""
    import signal

    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)  # reading it means setting it: put it back at once
    return {
        "SIGINT handler": signal.getsignal(signal.SIGINT),
        "SIGINT handler in C": _c_signal_handler(signal.SIGINT),
        "main thread's signal mask": signal.pthread_sigmask(signal.SIG_BLOCK, []),
        "wakeup fd": wakeup_fd,
    }


def _restore_signal_state(state: dict[str, object]) -> None:
    import signal

    handler = state["SIGINT handler"]
    if callable(handler) or isinstance(handler, int):
        signal.signal(signal.SIGINT, handler)  # also puts Python's C handler back
    mask = state["main thread's signal mask"]
    assert isinstance(mask, set)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    wakeup_fd = state["wakeup fd"]
    assert isinstance(wakeup_fd, int)
    signal.set_wakeup_fd(wakeup_fd)


_SESSION_SIGNAL_STATE: dict[str, object] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Give the run Python's own Ctrl-C handler if it started without one.

    The suite sends Ctrl-C (``SIGINT`` to the main thread) and expects a
    ``KeyboardInterrupt``. A shell that starts a command in the background without job
    control (``cmd &`` in a script, as a stress run in the background is) starts it with
    ``SIGINT`` ignored, and Python then installs no handler: every Ctrl-C test failed in
    such a run, and only there ("DID NOT RAISE KeyboardInterrupt"), which looked like a
    flake of the code under test."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def signals_left_as_found() -> Iterator[None]:
    """Fail the test that leaves the process's SIGINT handling changed (Python's or C's
    handler, the main thread's signal mask, the wakeup fd), then put it back: a leak would
    otherwise make a later test that sends Ctrl-C wait for a KeyboardInterrupt forever."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _SESSION_SIGNAL_STATE:
        _SESSION_SIGNAL_STATE.update(_signal_state())
    yield
    now = _signal_state()
    changed = {
        key: (was, now[key]) for key, was in _SESSION_SIGNAL_STATE.items() if now[key] != was
    }
    if changed:
        _restore_signal_state(_SESSION_SIGNAL_STATE)
        pytest.fail(f"the test left the process's signal handling changed: {changed}")
