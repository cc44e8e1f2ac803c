"""Fork after load (gunicorn ``--preload``, Celery's prefork pool, multiprocessing's "fork"
start method).

In the child, a handle loaded before the fork fails at once with ``InvalidState`` ("handles
do not survive fork: load plugins in each worker process"), from ``call``, ``call_json``,
``acall`` (a fresh event loop) and ``reload``; its ``shutdown`` returns at once and releases
nothing; it touches nothing of the parent's. The parent's handle, worker process, threads,
descriptors and library copies are as they were; the child can load plugins of its own and
exits promptly, by ``os._exit`` or by a normal interpreter exit.

Every scenario runs for each transport: a Python plugin in-process and in a worker process,
and the compiled C plugin in-process and in a worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import multiprocessing
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

import plugbridge
from plugbridge import LifecycleState
from plugbridge._native.library import mapped_count, wait_for_unmapping
from plugbridge._worker.channel import Channel
from plugbridge._worker.protocol import WorkerMessage

from ..native.build import build_hello_c, private_copies_mapped

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
"""Python 3.12+ warns about forking a process with threads: forking one is the point."""

FORKED = "handles do not survive fork: load plugins in each worker process"
AT_ONCE = 0.1
"""Seconds within which a forked handle must refuse (the issue's bound): it tells "at once"
from "waited for an answer that never comes"."""
CHILD_LIMIT = 30.0
"""Seconds a child gets to report before it counts as hung and is killed."""
PROMPT_EXIT = 0.9
"""Seconds a child may take from its last statement to being reaped. A normal interpreter
exit takes a few hundredths; this tells it from a child that waits at exit for a lock held
at the fork by a thread it does not have (the log sink's close waits 1 s for one)."""

FORK_PLUGIN = """
    import logging
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)

    class ForkPlugin(Plugin):
        name = "forky"
        version = "1.0.0"
        served = 0

        @handler("echo")
        def echo(self, ctx, req):
            self.served += 1
            return {"message": req["message"]}

        @handler("served")
        def count(self, ctx, req):
            return {"served": self.served}

        @handler("user.create")  # logs a record, as the C plugin's does
        def create(self, ctx, req):
            log.info("Creating user: %s", req["username"])
            return {"user_id": "user-1"}
"""

BUSY_PLUGIN = """
    import os, socket
    from plugbridge import Plugin, handler

    GATE = {gate!r}

    def wait_at_gate(label):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(GATE)
            sock.sendall(label.encode() + b"\\n")
            sock.recv(1)

    class Busy(Plugin):
        name = "busy"

        def on_start(self, ctx):
            if os.path.exists(GATE + ".hold-start"):
                wait_at_gate("start")

        @handler("hold")
        def hold(self, ctx, req):
            wait_at_gate("call")
            return {{"held": True}}

        @handler("echo")
        def echo(self, ctx, req):
            return {{"message": req["message"]}}
"""


@dataclasses.dataclass(frozen=True)
class Flavour:
    language: str
    """``python`` or ``native`` (the compiled C plugin)."""
    isolation: str

    @property
    def id(self) -> str:
        return f"{self.language}-{self.isolation}"


FLAVOURS = [Flavour(lang, iso) for lang in ("python", "native") for iso in ("inprocess", "process")]


@pytest.fixture(scope="session")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_fork"))


@pytest.fixture(params=FLAVOURS, ids=[f.id for f in FLAVOURS])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    param: Flavour = request.param
    return param


@pytest.fixture
def source(flavour: Flavour, hello_c: Path, write_plugin: Callable[..., Path]) -> Path:
    if flavour.language == "native":
        return hello_c
    return write_plugin(FORK_PLUGIN, name="fork_plugin.py")


@dataclasses.dataclass(frozen=True)
class Earlier:
    """Threads and descriptors of this process before the test loads anything: not the
    handle's (an earlier test's may still be ending, so they are left out of comparisons)."""

    threads: frozenset[int | None]
    fds: frozenset[tuple[int, str]]


@pytest.fixture
def earlier() -> Earlier:
    threads = frozenset(thread.native_id for thread in threading.enumerate())
    return Earlier(threads, frozenset(open_fds().items()))


@pytest.fixture
def loaded(source: Path, flavour: Flavour, earlier: Earlier) -> Iterator[plugbridge.PluginHandle]:
    copies_before = mapped_count()
    handle = plugbridge.load(source, isolation=flavour.isolation)  # type: ignore[arg-type]
    try:
        yield handle
    finally:
        handle.shutdown()
        assert wait_for_unmapping(copies_before, 10.0), "a private library copy stayed mapped"


# -- what the child does, and what it reports ----------------------------------------------


def timed(action: Callable[[], object]) -> dict[str, Any]:
    """Run ``action``: its outcome (error class and message, or result) and its duration."""
    began = time.monotonic()
    try:
        result = action()
    except BaseException as exc:
        return {
            "error": type(exc).__name__,
            "message": str(getattr(exc, "message", exc)),
            "seconds": time.monotonic() - began,
        }
    return {"result": repr(result), "seconds": time.monotonic() - began}


def timed_async(make: Callable[[], Coroutine[Any, Any, object]]) -> dict[str, Any]:
    """``timed`` for a coroutine, run on a fresh event loop; only the await is timed."""

    async def run() -> dict[str, Any]:
        began = time.monotonic()
        try:
            result = await make()
        except BaseException as exc:
            return {
                "error": type(exc).__name__,
                "message": str(getattr(exc, "message", exc)),
                "seconds": time.monotonic() - began,
            }
        return {"result": repr(result), "seconds": time.monotonic() - began}

    return asyncio.run(run())


def use_forked_handle(handle: plugbridge.PluginHandle) -> dict[str, Any]:
    """In the child: everything a host might do with a handle loaded before the fork."""
    return {
        "call": timed(lambda: handle.call("echo", {"message": "child"})),
        "call_json": timed(lambda: handle.call_json("echo", '{"message": "child"}')),
        "acall": timed_async(lambda: handle.acall("echo", {"message": "child"})),
        "state": handle.state.name,
        "reload": timed(handle.reload),
        "shutdown": timed(handle.shutdown),
        "shutdown_again": timed(handle.shutdown),
        "call_after_shutdown": timed(lambda: handle.call("echo", {"message": "child"})),
    }


def assert_refused_at_once(outcome: dict[str, Any]) -> None:
    assert outcome.get("error") == "InvalidState", outcome
    assert FORKED in outcome["message"], outcome
    assert outcome["seconds"] < AT_ONCE, outcome


def assert_forked_handle_report(report: dict[str, Any]) -> None:
    for form in ("call", "call_json", "acall", "reload", "call_after_shutdown"):
        assert_refused_at_once(report[form])
    for shutdown in ("shutdown", "shutdown_again"):
        assert report[shutdown] == {"result": "None", "seconds": report[shutdown]["seconds"]}
        assert report[shutdown]["seconds"] < AT_ONCE, report
    assert report["state"] == "STOPPED"


def in_forked_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; the child runs ``body`` and sends its report back as JSON, then ``os._exit``s
    (it never returns into pytest). The parent gets the report, or fails if the child does
    not send one within ``CHILD_LIMIT`` (it is killed then)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            try:
                report = body()
            except BaseException as exc:
                report = {"child crashed": repr(exc)}
            with open(write_end, "wb") as pipe:
                pipe.write(json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = read_until_closed(read_end, time.monotonic() + CHILD_LIMIT)
    finally:
        os.close(read_end)
        status = reap(pid, time.monotonic() + CHILD_LIMIT)
    assert data is not None, f"the child sent no report within {CHILD_LIMIT}s"
    assert status == 0, f"the child ended with status {status}"
    report: dict[str, Any] = json.loads(data)
    assert "child crashed" not in report, report
    return report


def read_until_closed(fd: int, deadline: float) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def reap(pid: int, deadline: float) -> int:
    """The child's wait status; a child still running at ``deadline`` is killed first."""
    pidfd = os.pidfd_open(pid)
    try:
        if not select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(pidfd)
    return os.waitpid(pid, 0)[1]


# -- what the parent must find as it was -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParentSnapshot:
    threads: list[tuple[str, int | None]]
    """The threads started since the test began (plugbridge's are all Python threads)."""
    fds: dict[int, str]
    """Descriptors opened since the test began, and what each points at (a socket's inode,
    a pipe's, a file)."""
    worker: int | None
    copies: int
    """Private copies of native libraries mapped into this process."""


def snapshot(handle: plugbridge.PluginHandle, earlier: Earlier) -> ParentSnapshot:
    for thread in threading.enumerate():
        if thread.name.endswith("-init"):  # a native plugin_init's, ending as load returns
            thread.join(CHILD_LIMIT)
    threads = sorted(
        (thread.name, thread.native_id)
        for thread in threading.enumerate()
        if thread.native_id not in earlier.threads
    )
    fds = dict(set(open_fds().items()) - earlier.fds)
    return ParentSnapshot(threads, fds, worker_pid(handle), mapped_count())


def open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            target = os.readlink(f"/proc/self/fd/{name}")
            if not target.startswith("/proc/"):
                fds[int(name)] = target
    return fds


def worker_pid(handle: plugbridge.PluginHandle) -> int | None:
    session = getattr(handle._transport, "_current", None)
    return None if session is None else int(session.process.pid)


def channel_fd(handle: plugbridge.PluginHandle) -> int | None:
    session = getattr(handle._transport, "_current", None)
    return None if session is None else int(session.channel.sock.fileno())


def served(handle: plugbridge.PluginHandle, flavour: Flavour) -> int | None:
    """Calls of ``echo`` the Python plugin's instance has served (the C plugin keeps none)."""
    if flavour.language != "python":
        return None
    return int(handle.call("served")["served"])


def assert_parent_untouched(
    handle: plugbridge.PluginHandle,
    flavour: Flavour,
    before: ParentSnapshot,
    served_before: int | None,
    earlier: Earlier,
) -> None:
    """Nothing of the parent's changed; then its handle calls, reloads and stops cleanly."""
    assert snapshot(handle, earlier) == before
    assert served(handle, flavour) == served_before  # no call of the child reached it
    assert handle.state is LifecycleState.ACTIVE
    if before.worker is not None:
        os.kill(before.worker, 0)  # the same worker, alive
    assert handle.call("echo", {"message": "parent"})["message"] == "parent"
    assert json.loads(handle.call_json("echo", '{"message": "parent"}'))["message"] == "parent"
    assert asyncio.run(handle.acall("echo", {"message": "parent"}))["message"] == "parent"
    handle.reload()
    assert handle.call("echo", {"message": "reloaded"})["message"] == "reloaded"
    handle.shutdown()
    assert handle.state is LifecycleState.STOPPED


# -- the scenarios -------------------------------------------------------------------------


def test_a_handle_fails_at_once_in_a_forked_child_and_the_parent_is_untouched(
    loaded: plugbridge.PluginHandle, flavour: Flavour, earlier: Earlier
) -> None:
    handle = loaded
    assert handle.call("echo", {"message": "before"})["message"] == "before"
    served_before = served(handle, flavour)
    fd = channel_fd(handle)
    copies = private_copies_mapped()
    before = snapshot(handle, earlier)

    def child() -> dict[str, Any]:
        report = use_forked_handle(handle)
        if fd is not None:  # the parent's channel: not reachable from the child at all
            report["channel"] = os.readlink(f"/proc/self/fd/{fd}")
        return report

    report = in_forked_child(child)

    assert_forked_handle_report(report)
    if fd is not None:
        assert report["channel"] == os.devnull
    assert private_copies_mapped() == copies
    assert_parent_untouched(handle, flavour, before, served_before, earlier)


def mp_child(handle: plugbridge.PluginHandle, source: str, isolation: str, out: Connection) -> None:
    """A multiprocessing child ("fork" context): the inherited handle, then one of its own."""
    report = use_forked_handle(handle)
    began = time.monotonic()
    with plugbridge.load(source, isolation=isolation) as own:  # type: ignore[arg-type]
        report["own"] = own.call("echo", {"message": "own"})["message"]
        report["own_worker"] = worker_pid(own)
    report["own_seconds"] = time.monotonic() - began
    out.send(report)


def test_multiprocessing_fork_children_load_their_own_plugins(
    loaded: plugbridge.PluginHandle, flavour: Flavour, source: Path, earlier: Earlier
) -> None:
    handle = loaded
    assert handle.call("echo", {"message": "before"})["message"] == "before"
    served_before = served(handle, flavour)
    before = snapshot(handle, earlier)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(
        target=mp_child, args=(handle, str(source), flavour.isolation, send), daemon=True
    )
    process.start()
    send.close()
    try:
        assert receive.poll(CHILD_LIMIT), f"the child sent no report within {CHILD_LIMIT}s"
        report = receive.recv()
        process.join(CHILD_LIMIT)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
        receive.close()
        process.close()  # its sentinel descriptor: the parent's fds are compared below

    assert_forked_handle_report(report)
    assert report["own"] == "own"
    if before.worker is not None:
        assert report["own_worker"] not in (None, before.worker)
    assert_parent_untouched(handle, flavour, before, served_before, earlier)


EXIT_SCRIPT = """
    import asyncio, json, os, select, sys, threading, time
    import plugbridge

    source, isolation = sys.argv[1], sys.argv[2]
    busy, free = threading.Event(), threading.Event()

    def callback(level, target, message):
        if "blocker" in message:  # a callback running while the host forks
            busy.set()
            free.wait(60)

    handle = plugbridge.load(source, isolation=isolation, log_callback=callback)
    handle.call("echo", {"message": "before"})
    caller = threading.Thread(
        target=handle.call, args=("user.create", {"username": "blocker", "email": "b@x"})
    )
    caller.start()
    busy.wait(60)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        began = time.monotonic()
        try:
            handle.call("echo", {"message": "child"})
            outcome = "answered"
        except plugbridge.PluginError as exc:
            outcome = f"{type(exc).__name__}: {exc.message}"
        refused_in = time.monotonic() - began
        handle.shutdown()
        report = {"outcome": outcome, "refused_in": refused_in, "leaving": time.monotonic()}
        os.write(write_end, json.dumps(report).encode())
        os.close(write_end)
        sys.exit(0)  # a normal exit: atexit hooks, logging.shutdown, thread joins, teardown
    os.close(write_end)
    child = {}
    if select.select([read_end], [], [], 30)[0]:
        child = json.loads(os.read(read_end, 65536) or b"{}")
    pidfd = os.pidfd_open(pid)
    if not select.select([pidfd], [], [], 30)[0]:
        os.kill(pid, 9)
    status = os.waitpid(pid, 0)[1]
    child["status"] = status
    child["exited_after"] = time.monotonic() - child.get("leaving", 0.0)
    free.set()
    caller.join()
    child["parent_call"] = handle.call("echo", {"message": "parent"})["message"]
    handle.shutdown()
    child["parent_state"] = handle.state.name
    print(json.dumps(child))
"""


def test_a_forked_child_exits_promptly_by_a_normal_exit(
    source: Path, flavour: Flavour, tmp_path: Path
) -> None:
    """A plain interpreter exit in the child (atexit hooks, ``logging.shutdown``, which
    closes every handler logging knows of, thread joins, module teardown), forked while a
    parent thread was inside the handle's log callback (holding the log sink's lock)."""
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), str(source), flavour.isolation],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["outcome"] == f"InvalidState: plugin {plugin_name(flavour)!r}: {FORKED}"
    assert report["refused_in"] < AT_ONCE, report
    assert report["status"] == 0, report
    assert report["exited_after"] < PROMPT_EXIT, report
    assert report["parent_call"] == "parent"
    assert report["parent_state"] == "STOPPED"


def plugin_name(flavour: Flavour) -> str:
    return "forky" if flavour.language == "python" else "hello_c"


class Gate:
    """A Unix socket the busy plugin's code waits at until the test lets it go: the test
    knows when the plugin is inside (it connected), without sleeping."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="pbfork")  # short: AF_UNIX paths are
        self.path = os.path.join(self.directory, "gate")
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(self.path)
        self._server.listen()
        self._server.settimeout(CHILD_LIMIT)
        self._waiting: list[socket.socket] = []

    def arrived(self, label: str) -> None:
        """Wait until plugin code is at the gate with ``label``."""
        connection, _ = self._server.accept()
        self._waiting.append(connection)
        connection.settimeout(CHILD_LIMIT)
        assert connection.recv(64).decode().strip() == label

    def open(self) -> None:
        for connection in self._waiting:
            with contextlib.suppress(OSError):
                connection.sendall(b"x")
            connection.close()
        self._waiting.clear()

    def close(self) -> None:
        self.open()
        self._server.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_a_busy_parent_forks_calls_reload_and_limit_included(
    isolation: str, write_plugin: Callable[..., Path]
) -> None:
    """At the fork a parent thread is inside a call holding the only concurrency slot, and
    another is inside ``reload`` (holding the handle's swap lock, waiting for the new
    instance's ``on_start``). In the child, every call is told why it cannot run (not
    ``TooManyRequests``), reload is refused, and shutdown returns at once: none of it waits
    for what those threads, which the child does not have, held at the fork."""
    gate = Gate()
    source = write_plugin(BUSY_PLUGIN.format(gate=gate.path), name="busy_plugin.py")
    handle = plugbridge.load(source, isolation=isolation, config={"max_concurrent_ops": 1})  # type: ignore[arg-type]
    outcomes: dict[str, Any] = {}

    def hold() -> None:
        outcomes["hold"] = handle.call("hold")

    def reload() -> None:
        handle.reload()
        outcomes["reload"] = "done"

    threads = [threading.Thread(target=hold), threading.Thread(target=reload)]
    try:
        threads[0].start()
        gate.arrived("call")
        Path(gate.path + ".hold-start").touch()
        threads[1].start()
        gate.arrived("start")

        report = in_forked_child(lambda: use_forked_handle(handle))

        assert_forked_handle_report(report)
        gate.open()
        for thread in threads:
            thread.join(CHILD_LIMIT)
        assert outcomes == {"hold": {"held": True}, "reload": "done"}
        assert handle.call("echo", {"message": "parent"}) == {"message": "parent"}
        handle.shutdown()
        assert handle.state is LifecycleState.STOPPED
    finally:
        gate.close()
        for thread in threads:
            thread.join(CHILD_LIMIT)
        handle.shutdown()


def spawner_lock() -> Any:
    from plugbridge._worker import process

    return process._SPAWNER._lock


def library_lock() -> Any:
    from plugbridge._native import library

    return library._mapped_lock


def attribution_lock() -> Any:
    from plugbridge._inprocess import logrouting

    return logrouting._ATTRIBUTION._lock


def finder_lock() -> Any:
    from plugbridge._inprocess import namespace

    return namespace._FINDER.lock


@pytest.mark.parametrize(
    ("language", "isolation", "lock"),
    [
        ("native", "inprocess", library_lock),
        ("python", "process", spawner_lock),
        ("python", "inprocess", attribution_lock),
        ("python", "inprocess", finder_lock),
    ],
    ids=["library-copies", "spawner", "log-attribution", "namespace-finder"],
)
def test_a_lock_held_at_the_fork_does_not_stop_the_child_loading_its_own(
    language: str,
    isolation: str,
    lock: Callable[[], Any],
    hello_c: Path,
    write_plugin: Callable[..., Path],
) -> None:
    """A parent thread in the middle of mapping a library copy, or of spawning a worker,
    holds a module lock at the fork; it stays held in the child, which has no such thread.
    The child's own loads must not wait for it."""
    source = hello_c if language == "native" else write_plugin(FORK_PLUGIN, name="fork_plugin.py")
    parent = plugbridge.load(source, isolation=isolation)  # type: ignore[arg-type]
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock():
            holding.set()
            done.wait(CHILD_LIMIT)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(CHILD_LIMIT)

        def child() -> dict[str, Any]:
            with plugbridge.load(source, isolation=isolation) as own:  # type: ignore[arg-type]
                return {"own": own.call("echo", {"message": "own"})["message"]}

        assert in_forked_child(child) == {"own": "own"}
    finally:
        done.set()
        holder.join()
    assert parent.call("echo", {"message": "parent"})["message"] == "parent"
    parent.shutdown()


# -- the worker channel's part -------------------------------------------------------------


def make_channel() -> tuple[Channel[WorkerMessage], socket.socket]:
    ours, peer = socket.socketpair()
    return Channel(ours, WorkerMessage), peer


def test_a_channel_closed_before_a_fork_leaves_its_number_alone_in_the_child(
    tmp_path: Path,
) -> None:
    """The descriptor number of a channel closed before the fork may belong to another file
    by then: the child must find that file there, not ``/dev/null``."""
    channel, peer = make_channel()
    channel.close_in_forked_children()
    number = channel.sock.fileno()
    channel.close()
    peer.close()
    data = tmp_path / "data.txt"
    data.write_text("the host's own file")
    opened = os.open(data, os.O_RDONLY)
    try:
        if opened != number:  # whatever number the system gave, put the file at the old one
            os.dup2(opened, number)
            os.close(opened)
        report = in_forked_child(
            lambda: {
                "read": os.pread(number, 100, 0).decode(),
                "at": os.readlink(f"/proc/self/fd/{number}"),
            }
        )
        assert report == {"read": "the host's own file", "at": str(data)}
    finally:
        os.close(number)


def test_a_channel_open_at_a_fork_is_lost_in_the_child_only() -> None:
    """In the child the descriptor points at ``/dev/null``; in the parent the channel still
    carries frames both ways, and its peer saw nothing of the child."""
    channel, peer = make_channel()
    channel.close_in_forked_children()
    number = channel.sock.fileno()
    try:
        report = in_forked_child(lambda: {"at": os.readlink(f"/proc/self/fd/{number}")})
        assert report == {"at": os.devnull}
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(1)  # nothing was written by the child
        peer.sendall(b"\x00\x00\x00\x01\x90")  # a frame of one msgpack byte (empty array)
        assert select.select([channel.sock], [], [], CHILD_LIMIT)[0]
        assert channel.sock.recv(16) == b"\x00\x00\x00\x01\x90"
        channel.sock.sendall(b"back")
        assert select.select([peer], [], [], CHILD_LIMIT)[0]
        assert peer.recv(16) == b"back"
    finally:
        channel.close()
        peer.close()


def test_a_channel_is_not_kept_alive_by_its_fork_hook() -> None:
    """Each worker start makes a channel: none may stay referenced once it is gone."""
    channel, peer = make_channel()
    channel.close_in_forked_children()
    channel.close()
    peer.close()
    gone = weakref.ref(channel)
    del channel
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("shut", [False, True], ids=["alive", "shut-down"])
def test_a_handle_made_in_a_child_works_there_and_is_forked_in_its_own_children(
    write_plugin: Callable[..., Path], shut: bool
) -> None:
    """Load after fork, the recommended pattern, forks on: a grandchild sees the child's
    handle (alive or shut down) as forked too."""
    source = write_plugin(FORK_PLUGIN, name="fork_plugin.py")
    parent = plugbridge.load(source)

    def child() -> dict[str, Any]:
        own = plugbridge.load(source)
        answer = own.call("echo", {"message": "own"})["message"]
        if shut:
            own.shutdown()
        grandchild = in_forked_child(lambda: use_forked_handle(own))
        own.shutdown()
        return {"own": answer, "grandchild": grandchild}

    try:
        report = in_forked_child(child)
        assert report["own"] == "own"
        assert_forked_handle_report(report["grandchild"])
        assert parent.call("echo", {"message": "parent"}) == {"message": "parent"}
    finally:
        parent.shutdown()
