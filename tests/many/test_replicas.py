"""Replicas (``load(..., replicas=N)``, process isolation): N workers behind one handle.

Real workers throughout: each replica is a worker process whose handlers answer with
``os.getpid()``, so a test sees which replica served each call. A worker costs ~0.25 s to
start, so each test starts as few as it needs (two, three where spreading is the point).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

import plugbridge
from plugbridge import (
    ConfigError,
    InitializationFailed,
    InvalidState,
    LifecycleState,
    LogLevel,
    PluginCrashed,
    PluginError,
    ShutdownFailed,
)
from plugbridge._config import PluginConfig
from plugbridge._handle import PluginHandle
from plugbridge._load import transport_factory
from plugbridge._logsink import LogSink
from plugbridge._replicas import ReplicaTransport
from plugbridge._transport import PluginMetadata, ProcessUsage, Release, Transport

from ..conftest import LogCapture, wait_until

PLUGIN = """
import asyncio, logging, os, pathlib, time
from plugbridge import Plugin, handler, raw_handler

VERSION = {version}
log = logging.getLogger(__name__)

class Replicated(Plugin):
    name = "replicated"

    async def on_start(self, ctx):
        (pathlib.Path(ctx.data["pids"]) / str(os.getpid())).touch()
{on_start}
    async def on_stop(self, ctx):
        await asyncio.sleep(ctx.data.get("stop_sleep", 0))
        if ctx.data.get("stop_fails"):
            raise RuntimeError("on_stop refuses")

    @handler("whoami")
    def whoami(self, ctx, req):
        time.sleep((req or {{}}).get("sleep", 0))
        return {{"pid": os.getpid(), "version": VERSION}}

    @handler("hold")
    def hold(self, ctx, req):
        pathlib.Path(req["started"]).write_text(str(os.getpid()))
        end = time.monotonic() + 30
        while not pathlib.Path(req["release"]).exists() and time.monotonic() < end:
            time.sleep(0.005)
        return os.getpid()

    @handler("log")
    def log_both(self, ctx, req):
        log.debug("debug from %d", os.getpid())
        log.info("info from %d", os.getpid())
        return os.getpid()

    @raw_handler(7)
    def raw_pid(self, ctx, payload):
        return str(os.getpid()).encode()
"""

REFUSE_ONCE = """
        # The first instance to create the marker refuses to start; the others start.
        try:
            os.close(os.open(ctx.data["refuse_marker"], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            raise RuntimeError("this replica refuses to start")
"""

REFUSE_SECOND = """
        # The second instance to start refuses (the first one makes the marker).
        try:
            os.close(os.open(ctx.data["refuse_marker"], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            raise RuntimeError("the second instance refuses to start") from None
"""


def plugin_source(version: int = 1, on_start: str = "") -> str:
    return PLUGIN.format(version=version, on_start=on_start)


class Replicated:
    """A plugin file in a tmp dir, and the pids its instances recorded when they started."""

    def __init__(self, root: Path) -> None:
        self.path = root / "replicated.py"
        self.pids_dir = root / "pids"
        self.pids_dir.mkdir()
        self.write()

    def write(self, version: int = 1, on_start: str = "") -> None:
        self.path.write_text(plugin_source(version, on_start))

    def pids(self) -> set[int]:
        """Every worker that started an instance so far."""
        return {int(p.name) for p in self.pids_dir.iterdir()}

    def load(self, replicas: int, **kwargs: Any) -> plugbridge.PluginHandle:
        config = dict(kwargs.pop("config", {}))
        config["data"] = {"pids": str(self.pids_dir), **config.get("data", {})}
        return plugbridge.load(
            self.path, isolation="process", replicas=replicas, config=config, **kwargs
        )


@pytest.fixture
def replicated(tmp_path: Path) -> Replicated:
    return Replicated(tmp_path)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def whoami(handle: plugbridge.PluginHandle, sleep: float = 0.0) -> tuple[int, int]:
    answer = handle.call("whoami", {"sleep": sleep})
    return answer["pid"], answer["version"]


T = TypeVar("T")


def on_each_replica(handle: plugbridge.PluginHandle, count: int, call: Callable[[], T]) -> list[T]:
    """``call`` run once on each of ``count`` replicas, in slot order.

    Ties go to the lowest index, so with all idle a call goes to replica 1; a call held
    there makes replica 2 the least busy, and so on."""
    got: list[T] = []
    holders: list[threading.Thread] = []
    with tempfile.TemporaryDirectory() as spot:
        release = Path(spot) / "release"
        try:
            for n in range(count):
                got.append(call())
                if n == count - 1:
                    break
                started = Path(spot) / f"started{n}"
                request = {"started": str(started), "release": str(release)}
                holder = threading.Thread(target=handle.call, args=("hold", request))
                holder.start()
                holders.append(holder)
                assert wait_until(lambda path=started: path.exists() and path.read_text() != "")
        finally:
            release.touch()
            for holder in holders:
                holder.join(30)
    return got


class Callers:
    """Threads calling a handle in a loop until stopped; what they got, and what failed."""

    def __init__(
        self, handle: plugbridge.PluginHandle, forms: list[str], sleep: float = 0.001
    ) -> None:
        self.handle = handle
        self.sleep = sleep
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[int, int]] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(form,)) for form in forms]

    def __enter__(self) -> Callers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _record(self, call: Callable[[], dict[str, int]]) -> None:
        try:
            answer = call()
        except PluginError as exc:
            with self.lock:
                self.errors.append(exc)
        else:
            with self.lock:
                self.results.append((answer["pid"], answer["version"]))

    def _run(self, form: str) -> None:
        request = {"sleep": self.sleep}
        if form == "acall":

            async def loop() -> None:
                while not self.stop.is_set():
                    try:
                        answer = await self.handle.acall("whoami", request)
                    except PluginError as exc:
                        with self.lock:
                            self.errors.append(exc)
                    else:
                        with self.lock:
                            self.results.append((answer["pid"], answer["version"]))

            asyncio.run(loop())
            return
        while not self.stop.is_set():
            if form == "call_json":
                self._record(
                    lambda: json.loads(self.handle.call_json("whoami", json.dumps(request)))
                )
            else:
                self._record(lambda: self.handle.call("whoami", request))

    def served(self) -> list[tuple[int, int]]:
        with self.lock:
            return list(self.results)


@pytest.fixture
def no_workers_left() -> Iterator[None]:
    """The test leaves no child process of this one behind."""
    before = {p.pid for p in psutil.Process().children()}
    yield
    assert wait_until(
        lambda: (
            not [p for p in psutil.Process().children() if p.pid not in before and alive(p.pid)]
        ),
        timeout=10,
    )


def test_calls_spread_over_the_replicas_and_shutdown_ends_every_worker(
    replicated: Replicated,
) -> None:
    handle = replicated.load(3)
    started = replicated.pids()
    assert len(started) == 3
    assert handle.state.name == "ACTIVE"
    assert handle.metadata.name == "replicated"
    # Four threads calling at once keep more than one replica busy, so every replica
    # serves (a lone caller would keep to the first: ties go to the lowest index).
    with Callers(handle, ["call", "call", "call_json", "acall"], sleep=0.01) as callers:
        assert wait_until(lambda: {pid for pid, _ in callers.served()} == started, timeout=30)
    assert callers.errors == []

    handle.shutdown()
    assert handle.state is LifecycleState.STOPPED
    assert not [pid for pid in started if alive(pid)]
    handle.shutdown()  # idempotent
    with pytest.raises(InvalidState):
        handle.call("whoami")


def test_a_call_goes_to_the_least_busy_replica_in_every_call_form(
    replicated: Replicated, tmp_path: Path
) -> None:
    started_file, release_file = tmp_path / "hold.started", tmp_path / "hold.release"
    with replicated.load(2) as handle:
        # Nothing busy: ties go to the first replica, every time.
        (first,) = {whoami(handle)[0] for _ in range(4)}
        held: list[int] = []
        holder = threading.Thread(
            target=lambda: held.append(
                handle.call("hold", {"started": str(started_file), "release": str(release_file)})
            )
        )
        holder.start()
        try:
            assert wait_until(lambda: started_file.exists() and started_file.read_text() != "")
            busy = int(started_file.read_text())
            assert busy == first  # a tie too
            (idle,) = replicated.pids() - {busy}
            # The first replica is busy with the held call, so each call goes to the other.
            assert {whoami(handle)[0] for _ in range(4)} == {idle}
            assert json.loads(handle.call_json("whoami", "{}"))["pid"] == idle
            assert asyncio.run(handle.acall("whoami"))["pid"] == idle
            assert int(handle.call_raw(7, b"")) == idle
            assert int(asyncio.run(handle.acall_raw(7, b""))) == idle
        finally:
            release_file.touch()
            holder.join(30)
        assert held == [busy]
        # Nothing busy again: back to the first.
        assert {whoami(handle)[0] for _ in range(4)} == {busy}


def test_rolling_reload_under_four_calling_threads_fails_no_call(
    replicated: Replicated, no_workers_left: None
) -> None:
    with replicated.load(2) as handle:
        old = replicated.pids()
        with Callers(handle, ["call", "call", "call_json", "acall"]) as callers:
            assert wait_until(lambda: len(callers.served()) >= 20, timeout=30)
            replicated.write(version=2)
            handle.reload()
            seen = len(callers.served())
            assert wait_until(lambda: len(callers.served()) >= seen + 20, timeout=30)
        assert callers.errors == []
        new = replicated.pids() - old
        assert len(new) == 2
        after_reload = {pid for pid, version in callers.served() if version == 2}
        assert after_reload <= new
        # Every replica now serves the new code.
        assert set(on_each_replica(handle, 2, lambda: whoami(handle))) == {(p, 2) for p in new}
        assert not [pid for pid in old if alive(pid)]
        assert handle.state is LifecycleState.ACTIVE


def test_a_reload_with_a_timeout_lets_the_old_replicas_finish_their_calls(
    replicated: Replicated, no_workers_left: None
) -> None:
    # reload(timeout=t) with t no longer than the start timeout once gave each old replica
    # 0 s to stop, so the calls it carried were cancelled.
    with replicated.load(2, config={"start_timeout": 20.0}) as handle:
        with Callers(handle, ["call", "call", "call_json", "acall"], sleep=0.05) as callers:
            assert wait_until(lambda: len(callers.served()) >= 8, timeout=30)
            for version in (2, 3):
                replicated.write(version=version)
                handle.reload(timeout=20.0)
            seen = len(callers.served())
            assert wait_until(lambda: len(callers.served()) >= seen + 8, timeout=30)
        assert callers.errors == []
        assert {version for _, version in callers.served()[-4:]} == {3}


def test_each_fresh_replica_gets_the_whole_start_timeout_in_a_rolling_reload(
    replicated: Replicated, no_workers_left: None
) -> None:
    # Each old replica takes 1.25 s to stop, so the third fresh one starts after 2.5 s.
    # All three once shared one start deadline (2.5 s after the reload began), so the third
    # failed at once; each start now has the whole start timeout from its own beginning.
    config = {"start_timeout": 2.5, "data": {"stop_sleep": 1.25}}
    with replicated.load(3, config=config) as handle:
        old = replicated.pids()
        replicated.write(version=2)
        handle.reload()
        new = replicated.pids() - old
        assert len(new) == 3
        assert set(on_each_replica(handle, 3, lambda: whoami(handle))) == {(p, 2) for p in new}


def test_a_rolling_reload_with_a_timeout_ends_within_it_when_old_replicas_hang_stopping(
    replicated: Replicated, no_workers_left: None
) -> None:
    # Old replicas never finish on_stop, and shutdown_timeout is long: each one stopping
    # once took up to the whole reload timeout, so reload(timeout=4) took ~7 s (~2T).
    # Every step now gets only the time left of the whole reload: it ends (here with an
    # error, as the time ran out half-way) about when its timeout says.
    # The fresh code takes 1 s to start. Replica 1's old instance is given the ~2.8 s left
    # and its worker returns after ~80 % of it (_worker/session.py), leaving < 0.6 s: too
    # little for replica 2's start, whatever the machine's speed. (With fast starts the
    # third one once squeezed into the last half second and the reload succeeded.)
    limit = 4.0
    handle = replicated.load(3, config={"shutdown_timeout": 30.0, "data": {"stop_sleep": 60}})
    try:
        old = replicated.pids()
        replicated.write(version=2, on_start="        time.sleep(1.0)\n")
        began = time.monotonic()
        with pytest.raises(InitializationFailed) as failed:
            handle.reload(timeout=limit)
        took = time.monotonic() - began
        assert took < limit + 1.5, took  # not ~2 x limit
        message = failed.value.message
        assert "reload of 'replicated' stopped at replica 2 of 3" in message, message
        assert "the previous one" in message
        # Replica 1 (at least) was replaced; the old ones not yet replaced still serve.
        served = on_each_replica(handle, 3, lambda: whoami(handle))
        assert served[0][1] == 2 and served[0][0] not in old
        assert served[2] in {(p, 1) for p in old}
    finally:
        with pytest.raises(ShutdownFailed):
            handle.shutdown(0.5)


def test_reload_of_broken_code_raises_and_the_old_code_keeps_serving(
    replicated: Replicated,
) -> None:
    with replicated.load(2) as handle:
        old = replicated.pids()
        replicated.path.write_text("raise RuntimeError('broken at import')\n")
        with pytest.raises(InitializationFailed, match="broken at import"):
            handle.reload()
        assert set(on_each_replica(handle, 2, lambda: whoami(handle))) == {(p, 1) for p in old}
        assert handle.state is LifecycleState.ACTIVE


def test_a_reload_failing_half_way_leaves_the_replaced_replicas_on_the_new_code(
    replicated: Replicated, tmp_path: Path
) -> None:
    with replicated.load(2, config={"data": {"refuse_marker": str(tmp_path / "refused")}}) as h:
        old = replicated.pids()
        replicated.write(version=2, on_start=REFUSE_SECOND)
        with pytest.raises(InitializationFailed) as failed:
            h.reload()
        assert re.search(r"replica 2 of 2: .*second instance refuses", failed.value.message)
        assert failed.value.message.endswith(
            "; replica 1 runs the new code, replica 2 the previous one"
        ), failed.value.message
        served = on_each_replica(h, 2, lambda: whoami(h))
        assert [version for _, version in served] == [2, 1], served  # replica 1 was replaced
        assert served[0][0] not in old and served[1][0] in old
        assert h.state is LifecycleState.ACTIVE


def test_a_replica_that_fails_to_start_fails_the_load_and_leaves_no_worker(
    replicated: Replicated, tmp_path: Path, no_workers_left: None
) -> None:
    replicated.write(on_start=REFUSE_ONCE)
    with pytest.raises(
        InitializationFailed, match=r"replica \d of 3 failed to start.*refuses to start"
    ):
        replicated.load(3, config={"data": {"refuse_marker": str(tmp_path / "refused")}})
    started = replicated.pids()
    assert len(started) == 3  # all three were started (at once), then stopped
    assert not [pid for pid in started if alive(pid)]


def test_a_killed_replica_is_restarted_while_the_others_serve(
    replicated: Replicated, no_workers_left: None
) -> None:
    config = {"restart_on_crash": True, "restart_backoff": 0.5}
    with replicated.load(2, config=config) as handle:
        old = replicated.pids()
        victim = whoami(handle)[0]  # the first replica: ties go to it, so calls must skip it
        not_active: list[LifecycleState] = []
        with Callers(handle, ["call", "call", "call"]) as callers:
            assert wait_until(lambda: len(callers.served()) >= 20, timeout=30)
            os.kill(victim, signal.SIGKILL)
            killed_at = len(callers.served())

            def restarted_serves() -> bool:
                state = handle.state
                if state is not LifecycleState.ACTIVE:
                    not_active.append(state)
                fresh = replicated.pids() - old
                return bool(fresh) and any(pid in fresh for pid, _ in callers.served())

            assert wait_until(restarted_serves, timeout=30)
            # While the victim was down (0.5 s of backoff and a start), calls went on.
            assert len(callers.served()) >= killed_at + 20
        # Only calls in flight on the killed worker may fail (one per thread at most).
        assert all(isinstance(e, PluginCrashed) for e in callers.errors), callers.errors
        assert len(callers.errors) <= 3
        assert not_active == []
        (fresh,) = replicated.pids() - old
        assert fresh != victim
        # The restarted replica is first again, and ties go to it.
        assert {whoami(handle)[0] for _ in range(4)} == {fresh}
        assert on_each_replica(handle, 2, lambda: whoami(handle)[0]) == [fresh, *old - {victim}]


def test_old_replicas_that_fail_to_stop_warn_and_a_failed_shutdown_tries_them_all(
    replicated: Replicated,
) -> None:
    capture = LogCapture()
    handle = replicated.load(
        2, config={"data": {"stop_fails": True}, "shutdown_timeout": 2.0}, log_callback=capture
    )
    old = replicated.pids()
    handle.reload()
    warnings = [
        message
        for level, _, message in capture.records
        if level is LogLevel.WARN and "failed to stop" in message
    ]
    assert len(warnings) == 2, capture.records
    assert "on_stop refuses" in warnings[0]
    new = replicated.pids() - old
    assert set(on_each_replica(handle, 2, lambda: whoami(handle)[0])) == new
    with pytest.raises(ShutdownFailed, match=r"replica 1 of 2: .*replica 2 of 2: "):
        handle.shutdown()
    assert handle.state is LifecycleState.FAILED
    assert not [pid for pid in replicated.pids() if alive(pid)]


def test_log_records_of_every_replica_reach_the_one_callback_and_levels_reach_all(
    replicated: Replicated,
) -> None:
    capture = LogCapture()
    with replicated.load(2, log_callback=capture) as handle:
        pids = replicated.pids()

        def logged(kind: str) -> set[int]:
            return {int(m.rsplit(" ", 1)[1]) for m in capture.messages() if m.startswith(kind)}

        assert set(on_each_replica(handle, 2, lambda: handle.call("log"))) == pids
        assert wait_until(lambda: logged("info from") == pids)
        assert logged("debug from") == set()
        handle.set_log_level("debug")
        assert set(on_each_replica(handle, 2, lambda: handle.call("log"))) == pids
        assert wait_until(lambda: logged("debug from") == pids)


@pytest.mark.parametrize("replicas", [0, -1, "2", 2.0, True])
def test_replicas_must_be_a_whole_number_of_at_least_one(
    replicated: Replicated, replicas: object
) -> None:
    with pytest.raises(ConfigError, match="replicas"):
        plugbridge.load(replicated.path, isolation="process", replicas=replicas)  # type: ignore[arg-type]
    assert replicated.pids() == set()


def test_replicas_need_an_isolated_plugin(replicated: Replicated) -> None:
    with pytest.raises(ConfigError, match="isolation='process'"):
        plugbridge.load(replicated.path, replicas=2)
    with pytest.raises(ConfigError, match="isolation='process'"):
        plugbridge.load(replicated.path, isolation="inprocess", replicas=2)
    assert replicated.pids() == set()


def test_a_native_c_plugin_runs_as_replicas(tmp_path: Path, no_workers_left: None) -> None:
    from ..native.build import build_hello_c

    library = build_hello_c(tmp_path / "c", hooks=False)
    before = {p.pid for p in psutil.Process().children()}
    with plugbridge.load(library, isolation="process", replicas=2) as handle:
        workers = {p.pid for p in psutil.Process().children()} - before
        assert len(workers) == 2
        assert handle.metadata.name == "hello_c"
        answers: list[object] = []

        def caller() -> None:
            for n in range(20):
                answers.append(handle.call("test.sleep", {"duration_ms": 5}))
                answers.append(handle.call("echo", {"message": f"m{n}"}))

        threads = [threading.Thread(target=caller) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert answers.count({"slept_ms": 5}) == 60
        assert sum(1 for a in answers if isinstance(a, dict) and "length" in a) == 60
    assert not [pid for pid in workers if alive(pid)]


# -- the moment a reload replaces a replica a call has just picked -------------------------
#
# That window (a call has chosen a replica, a reload swaps it out before the call reaches
# it) lasts microseconds, too short to hit on purpose with threads alone. A ``Door`` holds
# one call there: between the replica transport choosing a replica and the replica's real
# transport receiving it. The replicas are real in-process instances (the replica
# transport knows only the Transport interface), so these tests need no worker.

TOKENED = """
import pathlib, time, uuid
from plugbridge import Plugin, handler, raw_handler

class Tokened(Plugin):
    name = "tokened"

    def on_start(self, ctx):
        self.token = uuid.uuid4().hex
        self.events = pathlib.Path(ctx.data["events"])
        self.note("start")

    def on_stop(self, ctx):
        self.note("stop")

    def note(self, what):
        with self.events.open("a") as events:
            events.write(f"{what} {self.token}\\n")

    @handler("whoami")
    def whoami(self, ctx, req):
        self.note("call")
        if req:  # hold the call until that file exists
            end = time.monotonic() + 30
            while not pathlib.Path(req).exists() and time.monotonic() < end:
                time.sleep(0.005)
        return self.token

    @raw_handler(7)
    def raw_whoami(self, ctx, payload):
        return self.whoami(ctx, payload.decode()).encode()
"""


class Door:
    """Holds the first call that reaches it until ``opened`` is set: in the real
    transport's ``call`` (``place="call"``), or in the read of its state that choosing a
    replica makes (``place="state"``: the state read before the wait is returned)."""

    def __init__(self, place: str) -> None:
        self.place = place
        self.armed: list[None] = [None]
        self.arrived = threading.Event()
        self.opened = threading.Event()

    def pass_through(self) -> None:
        try:
            self.armed.pop()
        except IndexError:
            return
        self.arrived.set()
        assert self.opened.wait(30)


class Doorway(Transport):
    """A real transport whose calls (in every form) first go through ``door``."""

    def __init__(self, inner: Transport, door: Door) -> None:
        self.inner = inner
        self.door = door
        self.metadata: PluginMetadata = inner.metadata

    @property
    def state(self) -> LifecycleState:
        state = self.inner.state
        if self.door.place == "state":
            self.door.pass_through()
        return state

    def process_usage(self) -> ProcessUsage | None:
        return self.inner.process_usage()

    def call(self, type_tag: str, request: Any, timeout: float | None, release: Release) -> Any:
        if self.door.place == "call":
            self.door.pass_through()
        return self.inner.call(type_tag, request, timeout, release)

    def call_json(
        self, type_tag: str, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        if self.door.place == "call":
            self.door.pass_through()
        return self.inner.call_json(type_tag, payload, timeout, release)

    async def acall(
        self, type_tag: str, request: Any, timeout: float | None, release: Release
    ) -> Any:
        if self.door.place == "call":
            await asyncio.to_thread(self.door.pass_through)
        return await self.inner.acall(type_tag, request, timeout, release)

    def call_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        if self.door.place == "call":
            self.door.pass_through()
        return self.inner.call_raw(message_id, payload, timeout, release)

    async def acall_raw(
        self, message_id: int, payload: bytes, timeout: float | None, release: Release
    ) -> bytes:
        if self.door.place == "call":
            await asyncio.to_thread(self.door.pass_through)
        return await self.inner.acall_raw(message_id, payload, timeout, release)

    def set_log_level(self, level: LogLevel) -> None:
        self.inner.set_log_level(level)

    def shutdown(self, timeout: float) -> None:
        self.inner.shutdown(timeout)


class Events:
    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[tuple[str, str]]:
        if not self.path.exists():
            return []
        return [tuple(line.split()) for line in self.path.read_text().splitlines()]  # type: ignore[misc]

    def tokens(self, what: str) -> list[str]:
        return [token for kind, token in self.all() if kind == what]


def whoami_in(form: str, handle: PluginHandle, request: str | None) -> str:
    """``whoami`` (the answering instance's token) through the call form ``form``."""
    if form == "call":
        return str(handle.call("whoami", request))
    if form == "call_json":
        return str(json.loads(handle.call_json("whoami", json.dumps(request))))
    if form == "acall":
        return str(asyncio.run(handle.acall("whoami", request)))
    if form == "call_raw":
        return handle.call_raw(7, (request or "").encode()).decode()
    return asyncio.run(handle.acall_raw(7, (request or "").encode())).decode()


CALL_FORMS = ["call", "call_json", "acall", "call_raw", "acall_raw"]


def held_call_during_reload(
    tmp_path: Path,
    shutdown_timeout: float,
    open_when: Callable[[Events], bool],
    *,
    place: str = "call",
    request: str | None = None,
    once_open: Callable[[PluginHandle, Events], object] = lambda handle, events: None,
    form: str = "call",
    max_concurrent_ops: int = 1000,
) -> tuple[str, Events]:
    """Two in-process replicas behind doorways; the first call (made through ``form``) is
    held at the door (it picked replica 1), a reload runs, the door opens once
    ``open_when`` holds, then ``once_open`` runs. The held call's answer (the token of the
    instance that ran it) and the events."""
    source = tmp_path / "tokened.py"
    source.write_text(TOKENED)
    events = Events(tmp_path / "events")
    config = PluginConfig.coerce(
        {
            "data": {"events": str(events.path)},
            "shutdown_timeout": shutdown_timeout,
            "max_concurrent_ops": max_concurrent_ops,
        }
    )
    sink = LogSink(None, config.log_level)
    single = transport_factory(source, config, sink, "inprocess")
    door = Door(place)

    def replicas(deadline: float | None) -> Transport:
        return ReplicaTransport.start(lambda d: Doorway(single(d), door), 2, sink, deadline)

    handle = PluginHandle(replicas, config, sink, str(source))
    answers: list[str] = []
    try:
        caller = threading.Thread(target=lambda: answers.append(whoami_in(form, handle, request)))
        caller.start()
        assert door.arrived.wait(30)
        reload = threading.Thread(target=handle.reload)
        reload.start()
        try:
            assert wait_until(lambda: open_when(events), timeout=30)
        finally:
            door.opened.set()
        try:
            once_open(handle, events)
        finally:
            caller.join(30)
            reload.join(30)
    finally:
        handle.shutdown()
    assert len(answers) == 1, "the held call failed"
    return answers[0], events


def test_a_reload_lets_the_call_that_just_picked_the_old_replica_finish_there(
    tmp_path: Path,
) -> None:
    # The door opens once the fresh instance for the held call's slot has started: the
    # reload has put it in the slot (or is about to) and waits for the held call before
    # stopping the old one, so the held call runs on the old one, first to be stopped.
    answer, events = held_call_during_reload(
        tmp_path, 5.0, lambda events: len(events.tokens("start")) >= 3
    )
    assert events.tokens("stop")[0] == answer
    assert events.all().index(("call", answer)) < events.all().index(("stop", answer))


def test_a_call_that_reaches_a_replaced_replica_after_it_stopped_runs_on_another(
    tmp_path: Path,
) -> None:
    # The reload waits for the held call only so long (DRAIN_SHARE of the 0.3 s it may
    # take to stop the old instance), then stops it; the door opens after that: the held
    # call finds its replica stopped (InvalidState, it never ran) and goes to another.
    answer, events = held_call_during_reload(
        tmp_path, 0.3, lambda events: len(events.tokens("stop")) >= 1
    )
    first_stopped = events.tokens("stop")[0]
    assert answer != first_stopped
    assert ("call", first_stopped) not in events.all()


def test_a_call_that_picked_a_replica_being_replaced_keeps_its_concurrency_slot(
    tmp_path: Path,
) -> None:
    # Held after choosing the old replica but before counting itself on it, the call
    # misses the reload's wait and the old replica is stopped. Counting itself, it finds
    # the slot holds another replica and picks again, before the old one could refuse it
    # (a refusal gives the concurrency slot back, and the retried call would run without
    # one): while it runs on the fresh replica, it holds its slot.
    release = tmp_path / "release"
    in_flight: list[int] = []

    def while_it_runs(handle: PluginHandle, events: Events) -> None:
        try:
            assert wait_until(lambda: len(events.tokens("call")) == 1, timeout=30)
            in_flight.append(handle.in_flight)
        finally:
            release.touch()

    answer, events = held_call_during_reload(
        tmp_path,
        5.0,
        lambda events: len(events.tokens("stop")) >= 1,
        place="state",
        request=str(release),
        once_open=while_it_runs,
    )
    assert in_flight == [1]
    assert answer != events.tokens("stop")[0]


@pytest.mark.parametrize("form", CALL_FORMS)
def test_a_call_retried_after_a_replaced_replica_refused_it_holds_a_fresh_slot(
    tmp_path: Path, form: str
) -> None:
    # The held call reaches its replica after the reload stopped it: the stopped instance
    # refuses (InvalidState) and gives the call's concurrency slot back, as every refusal
    # does. The call then runs on a fresh replica, and must hold a slot of its own there:
    # with a limit of one, a second call is refused while it runs. (Retried with the slot
    # already given back, it ran on none, and the second call ran too: two at once.)
    release = tmp_path / "release"
    seen: list[object] = []

    def while_it_runs(handle: PluginHandle, events: Events) -> None:
        try:
            assert wait_until(lambda: len(events.tokens("call")) == 1, timeout=30)
            seen.append(handle.in_flight)
            try:
                handle.call("whoami")
            except PluginError as exc:
                seen.append(type(exc))
            else:
                seen.append("a second call ran")
        finally:
            release.touch()

    answer, events = held_call_during_reload(
        tmp_path,
        0.3,
        lambda events: len(events.tokens("stop")) >= 1,
        request=str(release),
        once_open=while_it_runs,
        form=form,
        max_concurrent_ops=1,
    )
    assert seen == [1, plugbridge.TooManyRequests]
    first_stopped = events.tokens("stop")[0]
    assert answer != first_stopped
    assert ("call", first_stopped) not in events.all()
