"""Property tests over the public inputs of a handle, in the three kinds of plugin.

Each test module gets one handle per kind (``subject``, module-scoped: handles are costly
to make). Every example then checks, through ``Subject``:

- only ``plugbridge.PluginError`` escapes the call (``attempt``);
- the call's concurrency slot comes back (``in_flight``, the ONE place that reads the
  limiter's private state) and the handle still serves a good call (``Subject.settle``).

An example that leaves the handle unusable fails, and the next example starts on a fresh
handle, so every example (and every shrunk reproducer) is judged on its own. At the end of
each test, ``SLOTS`` calls that meet inside the plugin at once must all be served, and
threads, file descriptors, plugin modules and native library copies are back to what they
were when the test began (``Snapshot``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from hypothesis import HealthCheck, settings

import plugbridge
from plugbridge import PluginConfig, PluginHandle

from ..conftest import wait_until
from ..native.build import build_hello_c, private_copies_mapped

T = TypeVar("T")
Isolation = Literal["inprocess", "process"]

SLOTS = 4
"""``max_concurrent_ops`` (and ``worker_threads``) of every handle under test."""

SETTLE_SECONDS = 3.0
"""How long a slot may stay taken after its call returned (a timed-out handler finishing:
the handlers here run for 50 ms at most), and how long released resources may take to go."""

REPLACE_SHUTDOWN_SECONDS = 0.5
"""Shutdown timeout for a handle an example broke (its failure is reported already)."""

GOOD_REQUEST = {"message": "ok"}
GOOD_ANSWER = {"message": "ok", "length": 2}

KINDS = ("python-inprocess", "python-process", "native-inprocess")

settings.register_profile(
    "properties",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the handle is meant to outlive an example
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
PROPERTIES = settings.get_profile("properties")
"""Base settings of every property here; each test sets its own ``max_examples``."""


def bounded(max_examples: int) -> settings:
    """The properties profile with a bounded number of generated examples."""
    return settings(PROPERTIES, max_examples=max_examples)


PLUGIN_SOURCE = '''
    """The plugin the properties call: typed, raw and async handlers, and a rendezvous."""

    import asyncio
    import threading
    import time

    import msgspec

    from plugbridge import Plugin, handler


    class EchoRequest(msgspec.Struct):
        message: str


    class SleepRequest(msgspec.Struct):
        duration_ms: int


    class RendezvousRequest(msgspec.Struct):
        parties: int


    _lock = threading.Lock()
    _arrived = 0


    class PropertiesPlugin(Plugin):
        name = "properties"
        version = "1.0.0"

        @handler("echo")
        def echo(self, ctx, req: EchoRequest) -> dict:
            return {"message": req.message, "length": len(req.message.encode())}

        @handler("mirror")
        def mirror(self, ctx, req):
            return req

        @handler("amirror")
        async def amirror(self, ctx, req):
            return req

        @handler("test.sleep")
        async def sleep(self, ctx, req: SleepRequest) -> dict:
            await asyncio.sleep(req.duration_ms / 1000)
            return {"slept_ms": req.duration_ms}

        @handler("test.rendezvous")
        def rendezvous(self, ctx, req: RendezvousRequest) -> dict:
            # Like hello-c's hook: the count of arrivals only grows; a caller waits (10 s at
            # most) until it reaches ``parties``.
            global _arrived
            with _lock:
                _arrived += 1
                arrived = _arrived
            end = time.monotonic() + 10
            while arrived < req.parties and time.monotonic() < end:
                time.sleep(0.001)
                arrived = _arrived
            return {"met": arrived >= req.parties}
'''


@pytest.fixture(scope="session")
def python_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("properties_plugin") / "properties_plugin.py"
    path.write_text(textwrap.dedent(PLUGIN_SOURCE))
    return path


@pytest.fixture(scope="session")
def native_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("properties_hello_c"))


def source_of(kind: str, python_plugin: Path, native_plugin: Path) -> tuple[Path, Isolation]:
    """The (source, isolation) a kind of plugin is loaded with."""
    if kind == "native-inprocess":
        return native_plugin, "inprocess"
    return python_plugin, "process" if kind == "python-process" else "inprocess"


# -- the one place that reads private state -----------------------------------------------


def in_flight(handle: PluginHandle) -> int:
    """Calls holding one of the handle's concurrency slots right now.

    The only function here that reads private state (the lead is rewriting the limiter:
    update this function alone when it changes).
    """
    return int(handle._limiter.in_use)


# -- outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Failed:
    """A call that raised a ``PluginError`` (the only kind of failure allowed out)."""

    error: plugbridge.PluginError


def attempt(call: Callable[[], T]) -> T | Failed:
    """Run ``call``; a ``PluginError`` is an outcome, any other exception fails the example."""
    try:
        return call()
    except plugbridge.PluginError as exc:
        return Failed(exc)


# -- leaks ------------------------------------------------------------------------------


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def plugin_modules() -> set[str]:
    return {name for name in sys.modules if name.startswith("_plugbridge_")}


@dataclass(frozen=True)
class Snapshot:
    """What must come back: threads, descriptors, plugin modules, native library copies."""

    threads: int
    fds: int
    modules: int
    library_copies: int

    @classmethod
    def take(cls) -> Snapshot:
        return cls(
            threading.active_count(), fd_count(), len(plugin_modules()), private_copies_mapped()
        )

    def assert_nothing_leaked(self, where: str) -> None:
        now = Snapshot.take
        back = wait_until(
            lambda: (
                threading.active_count() <= self.threads
                and fd_count() <= self.fds
                and len(plugin_modules()) <= self.modules
                and private_copies_mapped() <= self.library_copies
            ),
            timeout=SETTLE_SECONDS,
        )
        assert back, (
            f"{where}: leaked something; before {self}, after {now()}; "
            f"threads now: {sorted(t.name for t in threading.enumerate())}; "
            f"plugin modules now: {sorted(plugin_modules())}"
        )


# -- the handle under test ------------------------------------------------------------------


class Subject:
    """One kind's handle; replaced by a fresh one when an example left it unusable."""

    def __init__(self, kind: str, source: Path, isolation: Isolation) -> None:
        self.kind = kind
        self.source = source
        self.isolation = isolation
        self.handle = self._load()
        self.dirty = False
        """True from the start of an example until ``settle`` proved the handle sound."""
        self._rendezvous_arrivals = 0
        self.replaced = 0

    def __repr__(self) -> str:
        return f"<{self.kind} handle>"

    def _load(self) -> PluginHandle:
        config = PluginConfig(max_concurrent_ops=SLOTS, worker_threads=SLOTS)
        return plugbridge.load(self.source, config=config, isolation=self.isolation)

    def ready(self) -> PluginHandle:
        """The handle for the next example (a fresh one if the last example broke it)."""
        if self.dirty:
            self.replace()
        self.dirty = True
        return self.handle

    def replace(self) -> None:
        old, self.handle = self.handle, self._load()
        self._rendezvous_arrivals = 0
        self.dirty = False
        self.replaced += 1
        with contextlib.suppress(Exception):  # the example that broke it failed already
            old.shutdown(REPLACE_SHUTDOWN_SECONDS)

    def settle(self) -> None:
        """After an example: its slot is back and the handle still serves a good call."""
        handle = self.handle
        assert wait_until(lambda: in_flight(handle) == 0, timeout=SETTLE_SECONDS), (
            f"{self.kind}: {in_flight(handle)} concurrency slot(s) still taken after the call"
        )
        good = attempt(lambda: handle.call("echo", GOOD_REQUEST, timeout=30))
        assert good == GOOD_ANSWER, f"{self.kind}: the handle no longer serves: {good!r}"
        assert in_flight(handle) == 0, f"{self.kind}: the good call kept its slot"
        self.dirty = False

    def all_slots_serve(self) -> None:
        """``SLOTS`` calls that wait for each other inside the plugin are all served.

        Public proof that no slot is lost (one missing slot: the last call is refused or
        the others never meet). The calls carry a timeout, so they run on the instance's
        threads: this also grows its pools to full size before a ``Snapshot``.
        """
        handle = self.handle
        target = self._rendezvous_arrivals + SLOTS  # both plugins count arrivals for good
        self._rendezvous_arrivals = target
        results: list[object] = [None] * SLOTS
        start = threading.Barrier(SLOTS)

        def meet(i: int) -> None:
            start.wait()
            results[i] = attempt(
                lambda: handle.call("test.rendezvous", {"parties": target}, timeout=30)
            )

        threads = [threading.Thread(target=meet, args=(i,)) for i in range(SLOTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [{"met": True}] * SLOTS, f"{self.kind}: {results!r}"

    def close(self) -> None:
        self.handle.shutdown(5.0)


def check_example(subject: Subject, call: Callable[[], T]) -> T | Failed:
    """One example: only a ``PluginError`` may escape ``call``; then ``settle``."""
    outcome = attempt(call)
    subject.settle()
    return outcome


@pytest.fixture(scope="module", params=KINDS)
def module_subject(
    request: pytest.FixtureRequest, python_plugin: Path, native_plugin: Path
) -> Iterator[Subject]:
    before = Snapshot.take()
    source, isolation = source_of(str(request.param), python_plugin, native_plugin)
    subject = Subject(str(request.param), source, isolation)
    try:
        yield subject
    finally:
        subject.close()
    before.assert_nothing_leaked(f"{subject.kind}: after its handle was shut down")


@pytest.fixture
def subject(module_subject: Subject) -> Iterator[Subject]:
    """The module's handle of one kind, checked for lost slots and leaks around the test."""
    if module_subject.dirty:
        module_subject.replace()
    module_subject.all_slots_serve()
    before = Snapshot.take()
    yield module_subject
    if module_subject.dirty:
        module_subject.replace()  # that example failed already; judge what it left behind
    module_subject.all_slots_serve()
    before.assert_nothing_leaked(f"{module_subject.kind}: at the end of the test")


def run_async(coro_fn: Callable[[], Any]) -> Any:
    """Run an ``acall`` from a fresh event loop, as a caller's ``asyncio.run`` would."""
    import asyncio

    return asyncio.run(coro_fn())


APIS = ("call", "call_json", "acall")


def invoke(handle: PluginHandle, api: str, tag: Any, request: Any, timeout: Any = None) -> Any:
    """Call ``handle`` through ``api``; ``call_json`` takes ``request`` as raw JSON."""
    if api == "call":
        return handle.call(tag, request, timeout=timeout)
    if api == "call_json":
        return handle.call_json(tag, request, timeout=timeout)
    assert api == "acall", api
    return run_async(lambda: handle.acall(tag, request, timeout=timeout))
