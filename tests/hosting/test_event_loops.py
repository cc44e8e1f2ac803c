"""``acall`` from the event loops hosts really run: uvloop, asyncio in debug mode, loops on
other threads (one, and two at once on the same handle), for a Python plugin in both
isolation modes and for the compiled C plugin in both.

Every scenario makes many concurrent calls, lets one time out, cancels a task awaiting a
call, and calls a handler that logs; it checks that the caller's loop was never blocked,
that the plugin's work stopped when its caller gave up, and that every slot came back.
Debug-mode loops are also checked for what asyncio reports there: slow callbacks caused by
plugbridge's own code, non-thread-safe loop use, never-awaited coroutines, unretrieved
exceptions, destroyed pending tasks, ResourceWarnings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import itertools
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

import plugbridge

from ..conftest import LogCapture, wait_until
from ..native.build import build_hello_c
from .stall_watch import StallWatch

PACKAGE_DIR = os.path.dirname(plugbridge.__file__)
SCENARIO_BOUND = 60.0
"""Seconds a whole scenario may take before it counts as hung (it takes about one)."""
SLOW_STEP = 0.1
"""Seconds a step of a task may block its loop: asyncio's debug mode reports slower ones."""
DRAIN_UNDER_LOAD = 1.0
"""Seconds the development-mode program lets one inbox drain (``LoopInbox._drain``: a burst
of calls handed to a loop) take; every other step keeps asyncio's 0.1 s. That program is
a subprocess: a step's wall time there cannot be netted of whole-process stalls (see
``StallWatch``), and a drain also waits for the GIL behind the program's own submitting
thread. A 200-call burst's drain on a plugin's own loop takes 25-40 ms on a quiet machine
and was once reported at 0.212 s on a loaded one."""
LATE = 1.0
"""The timeout of the call whose timeout must stop its work. The call must have started by
then: it takes milliseconds, but on a loaded machine one tenth of a second was once not
enough, and a call its caller gave up on before the plugin had it never runs at all."""

LOOPS_PLUGIN = """
    import asyncio, logging, time
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)

    class LoopsPlugin(Plugin):
        name = "loops"

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @handler("aecho")
        async def aecho(self, ctx, req):
            return req

        @handler("block")
        def block(self, ctx, req):
            time.sleep(req)
            return req

        @handler("hold")
        async def hold(self, ctx, req):
            log.info("holding %s", req)
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                log.info("released %s", req)
                raise
            return req

        @handler("note")
        async def note(self, ctx, req):
            log.info("note %s", req)
            return req

        @handler("gate")
        def gate(self, ctx, req):
            log.info("at the gate %s", req)
            with open(req) as fifo:  # a named pipe: returns once the test writes to it
                return fifo.read()
"""

_tokens = itertools.count(1)
"""Tell apart the records of calls made at the same time (two loops, one handle)."""


class AwaitableLog(LogCapture):
    """A log callback whose records a coroutine can wait for, on any loop."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: list[tuple[str, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __call__(self, level: object, target: str, message: str) -> None:
        super().__call__(level, target, message)
        with self._lock:
            woken = [(loop, f) for text, loop, f in self._waiters if text in message]
        for loop, future in woken:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)

    async def seen(self, text: str) -> None:
        """Return once a record containing ``text`` has arrived (bounded)."""
        loop = asyncio.get_running_loop()
        waiter = (text, loop, loop.create_future())
        with self._lock:
            self._waiters.append(waiter)
            arrived = any(text in m for _, _, m in self.records)
        try:
            if not arrived:
                async with asyncio.timeout(30):
                    await waiter[2]
        finally:
            with self._lock:
                self._waiters.remove(waiter)

    def count(self, text: str) -> int:
        return sum(text in m for m in self.messages())


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclasses.dataclass
class Target:
    """A loaded plugin and how to exercise it: its requests differ between Python and C."""

    handle: plugbridge.PluginHandle
    log: AwaitableLog
    native: bool

    def echo(self, i: int) -> tuple[str, object, object]:
        if self.native:
            text = f"m{i}"
            return "echo", {"message": text}, {"message": text, "length": len(text)}
        return ("aecho" if i % 2 else "echo"), i, i

    def block(self) -> tuple[str, object]:
        """A call whose work takes half a second."""
        return ("test.sleep", {"duration_ms": 500}) if self.native else ("block", 0.5)

    def hold(self, token: int) -> tuple[str, object, str, str | None]:
        """A call that lasts (tag, request), the record telling it started, and the one
        telling its work was stopped (None: C code cannot be stopped, it runs out)."""
        if self.native:  # the sleep's length names the call: it is in its record
            ms = int(LATE * 1000) + 600 + token  # longer than the timeout scenario's
            return "test.sleep", {"duration_ms": ms}, f"Sleeping for {ms} ms", None
        return "hold", f"t{token}", f"holding t{token}", f"released t{token}"

    def note(self, token: int) -> tuple[str, object, object, str]:
        """A call whose handler logs: (tag, request, reply, the record's text)."""
        if self.native:
            name = f"u{token}"
            request = {"username": name, "email": f"{name}@example.com"}
            return "user.create", request, None, f"Creating user: {name} ({name}@example.com)"
        return "note", f"n{token}", f"n{token}", f"note n{token}"


TARGETS = ["inprocess", "process", "native-inprocess", "native-process"]


@pytest.fixture(scope="module")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_loops"))


@pytest.fixture(params=TARGETS)
def target(
    request: pytest.FixtureRequest, hello_c: Path, write_plugin: Callable[..., Path]
) -> Iterator[Target]:
    kind = str(request.param)
    native = kind.startswith("native-")
    source = hello_c if native else write_plugin(LOOPS_PLUGIN, "loops_plugin.py")
    log = AwaitableLog()
    config = {"log_level": "debug", "max_concurrent_ops": 20_000}
    handle = plugbridge.load(
        source, config=config, log_callback=log, isolation=kind.removeprefix("native-")
    )
    try:
        yield Target(handle, log, native)
        # Every slot comes back: a C call that timed out or was abandoned holds its slot
        # until it really returns (under two seconds here).
        assert wait_until(lambda: handle.in_flight == 0, timeout=30)
        assert handle.rejected_request_count == 0
    finally:
        handle.shutdown()


# -- the scenario ------------------------------------------------------------------------


async def exercise(target: Target) -> None:
    """Everything one caller's loop does with the handle; bounded as a whole."""
    async with asyncio.timeout(SCENARIO_BOUND):
        await _many_at_once(target)
        await _never_blocks_the_loop(target)
        await _a_timeout_stops_the_work(target)
        await _a_cancelled_task_stops_the_work(target)
        await _a_handler_that_logs(target)
    assert target.handle.call(*target.echo(0)[:2]) == target.echo(0)[2]


async def _many_at_once(target: Target) -> None:
    calls = [target.echo(i) for i in range(300)]
    replies = await asyncio.gather(*(target.handle.acall(tag, req) for tag, req, _ in calls))
    assert replies == [reply for _, _, reply in calls]


async def _never_blocks_the_loop(target: Target) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        tag, request = target.block()
        await target.handle.acall(tag, request)
        during = ticks  # read before this task yields again: ticks made while it waited
    finally:
        ticker.cancel()
    assert during >= 2, "the caller's loop stood still while the call ran"


async def _a_timeout_stops_the_work(target: Target) -> None:
    tag, request, started, stopped = target.hold(next(_tokens))
    begun = time.monotonic()
    with pytest.raises(plugbridge.Timeout):
        await target.handle.acall(tag, request, timeout=LATE)
    assert time.monotonic() - begun < LATE + 9, "the call waited for its work, not its timeout"
    await target.log.seen(started)
    if stopped is not None:
        await target.log.seen(stopped)  # the handler's task was cancelled


async def _a_cancelled_task_stops_the_work(target: Target) -> None:
    tag, request, started, stopped = target.hold(next(_tokens))
    task = asyncio.create_task(target.handle.acall(tag, request))
    await target.log.seen(started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if stopped is not None:
        await target.log.seen(stopped)


async def _a_handler_that_logs(target: Target) -> None:
    tag, request, reply, text = target.note(next(_tokens))
    answer = await target.handle.acall(tag, request)
    if reply is not None:
        assert answer == reply
    await target.log.seen(text)
    assert target.log.count(text) == 1


# -- how each loop is run ----------------------------------------------------------------


class LoopReport:
    """What asyncio and the warnings machinery reported while loops ran, and when the whole
    process stood still meanwhile (``stalls``)."""

    def __init__(self, stalls: StallWatch, package_dir: str = PACKAGE_DIR) -> None:
        self.records: list[logging.LogRecord] = []
        self.warnings: list[warnings.WarningMessage] = []
        self.stalls = stalls
        self.package_dir = package_dir

    def problems(self) -> list[str]:
        found = [str(w.message) for w in self.warnings]
        for record in self.records:
            text = record.getMessage()
            if text.startswith("Executing "):
                # A slow callback counts when it is plugbridge's own code (a task running
                # inside the package, or a callback it scheduled: not a test task that
                # merely waits on one of its futures), and when it was slow by itself: time
                # the whole process stood still (see StallWatch) is not the step's. That
                # also excuses a step holding the GIL in one long C call of its own; the
                # step's end is when asyncio logged it (a stall in between is excused too).
                head, took = text.rsplit(" took ", 1)
                if self.package_dir not in head.split(" wait_for=")[0]:
                    continue
                seconds = float(took.split()[0])
                stalled = self.stalls.stalled(record.created - seconds, record.created)
                if seconds - stalled >= SLOW_STEP:
                    found.append(f"{text} (the process stood still {stalled:.3f} s of it)")
            elif record.levelno >= logging.WARNING:
                found.append(text)
        return found


class _Keep(logging.Handler):
    def __init__(self, report: LoopReport) -> None:
        super().__init__(logging.DEBUG)
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        self.report.records.append(record)


@contextlib.contextmanager
def loop_report(package_dir: str = PACKAGE_DIR) -> Iterator[LoopReport]:
    """Collect asyncio's log records and every warning (garbage collected at the end, so
    a coroutine never awaited or a resource never closed is reported here); slow steps
    count when their code is in ``package_dir``.

    The cyclic garbage collector is paused meanwhile: a full collection of the test
    process takes over 0.1 s, and whichever callback it lands in would be reported slow.
    A collection another thread asks for, or any other long C call holding the GIL, is
    not paused: the stall watch sees it, and what it cannot tell apart is in its module.
    Garbage left by earlier tests is collected first: its warnings are not this run's.
    """
    gc.collect()
    logger = logging.getLogger("asyncio")
    level = logger.level
    collecting = gc.isenabled()
    with StallWatch() as stalls:
        report = LoopReport(stalls, package_dir)
        keep = _Keep(report)
        logger.addHandler(keep)
        logger.setLevel(logging.WARNING)
        gc.disable()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield report
                gc.collect()
            report.warnings.extend(caught)
        finally:
            if collecting:
                gc.enable()
            logger.removeHandler(keep)
            logger.setLevel(level)


def run_debug(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro, debug=True)


def run_uvloop(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def in_threads(*runs: Callable[[], None]) -> None:
    """Run each function on a thread of its own, all starting together; re-raise the
    first failure. Bounded: a thread still running after the bound fails the test."""
    start = threading.Barrier(len(runs))
    failures: list[BaseException] = []

    def body(run: Callable[[], None]) -> None:
        try:
            start.wait(10)
            run()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=body, args=(run,), daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SCENARIO_BOUND + 30)
    assert not any(t.is_alive() for t in threads), "a loop's thread did not finish"
    if failures:
        raise failures[0]


def test_acall_from_uvloop(target: Target) -> None:
    loop = uvloop.new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
        loop.run_until_complete(exercise(target))
    finally:
        loop.close()
    run_uvloop(exercise(target))  # and through uvloop.run: a second loop, same handle


def test_acall_from_a_debug_mode_loop(target: Target) -> None:
    with loop_report() as report:
        run_debug(exercise(target))
    assert report.problems() == []


def test_acall_from_a_loop_on_another_thread(target: Target) -> None:
    with loop_report() as report:
        in_threads(lambda: run_debug(exercise(target)))
    assert report.problems() == []


def test_two_loops_on_two_threads_share_one_handle(target: Target) -> None:
    with loop_report() as report:
        in_threads(
            lambda: run_debug(exercise(target)),
            lambda: run_uvloop(exercise(target)),
        )
    assert report.problems() == []


def test_a_burst_of_answers_never_makes_a_slow_callback(target: Target) -> None:
    # Thousands of answers reach a caller's loop while it is busy (held here on purpose):
    # waking their waiters must not be one long callback. In debug mode asyncio reports any
    # callback over 0.1 s; waking 10000 futures in one go takes three times that.
    count = 10_000

    async def burst() -> None:
        calls = [target.echo(i) for i in range(count)]
        tasks = [asyncio.ensure_future(target.handle.acall(tag, req)) for tag, req, _ in calls]
        await asyncio.sleep(0)  # every task has made its call
        # Hold this loop (on purpose) until every call has been answered.
        assert wait_until(lambda: target.handle.in_flight == 0, timeout=SCENARIO_BOUND)
        replies = await asyncio.gather(*tasks)
        assert replies == [reply for _, _, reply in calls]

    with loop_report() as report:
        run_debug(burst())
    assert report.problems() == []


DEV_MODE_HOST = """
    import asyncio, sys
    import plugbridge

    records = []

    async def main(handle, tag, request):
        # Submitting 200 calls in one step takes ~10 ms, but over asyncio's 0.1 s slow-
        # callback bound on a machine loaded by other work; a call that blocked the loop
        # would block it far longer (the hold below: 0.2 s and more, many times).
        asyncio.get_running_loop().slow_callback_duration = 1.0
        replies = await asyncio.gather(*(handle.acall(tag, request) for _ in range(200)))
        assert replies and all(r == replies[0] for r in replies), replies[:3]
        task = asyncio.create_task(handle.acall(*sys.argv[3:5]))
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    for source, isolation, tag, request in (
        (sys.argv[1], "inprocess", "aecho", 1),
        (sys.argv[1], "process", "aecho", 1),
        (sys.argv[2], "inprocess", "echo", {"message": "x"}),
        (sys.argv[2], "process", "echo", {"message": "x"}),
    ):
        handle = plugbridge.load(
            source, isolation=isolation, log_callback=lambda *r: records.append(r)
        )
        try:
            hold = ("hold", "t") if source == sys.argv[1] else ("test.sleep", {"duration_ms": 300})
            sys.argv[3:5] = hold
            asyncio.run(main(handle, tag, request), debug=True)
        finally:
            handle.shutdown()
    for record in records:
        print("record:", record[2])
"""


def test_dev_mode_host_and_workers_report_nothing(
    tmp_path: Path, write_plugin: Callable[..., Path], hello_c: Path
) -> None:
    # The whole program in development mode (asyncio debug, ResourceWarning on, warnings
    # are errors), the workers too (they inherit the environment): plugbridge's own loops
    # on both sides are checked, not only the caller's.
    plugin = write_plugin(LOOPS_PLUGIN, "loops_plugin.py")
    script = tmp_path / "dev_host.py"
    script.write_text(textwrap.dedent(DEV_MODE_HOST))
    env = dict(os.environ, PYTHONDEVMODE="1", PYTHONWARNINGS="error", PYTHONASYNCIODEBUG="1")
    done = subprocess.run(
        [sys.executable, str(script), str(plugin), str(hello_c)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=SCENARIO_BOUND * 2,
    )
    assert done.returncode == 0, done.stderr
    # The host's own loops report to stderr (logging's last resort), the workers' as
    # records the program prints.
    assert [line for line in done.stderr.splitlines() if not _a_drain_under_load(line)] == []
    reported = [
        line
        for line in done.stdout.splitlines()
        if any(w in line for w in ("Warning", "Executing", "never", "Exception", "Traceback"))
        and not _a_drain_under_load(line)
    ]
    assert reported == []


def _a_drain_under_load(line: str) -> bool:
    """Whether ``line`` is asyncio's slow-step report of an inbox drain under
    ``DRAIN_UNDER_LOAD``."""
    head, _, took = line.rpartition(" took ")
    if "Executing <Handle LoopInbox._drain()" not in head or not took.endswith(" seconds"):
        return False
    return float(took.removesuffix(" seconds")) < DRAIN_UNDER_LOAD


# -- loops that end while their calls are in flight --------------------------------------


@pytest.fixture
def gated(
    isolation: str, write_plugin: Callable[..., Path], tmp_path: Path
) -> Iterator[tuple[plugbridge.PluginHandle, AwaitableLog, Path]]:
    log = AwaitableLog()
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    source = write_plugin(LOOPS_PLUGIN, "loops_plugin.py")
    with plugbridge.load(source, log_callback=log, isolation=isolation) as handle:
        yield handle, log, fifo
        assert wait_until(lambda: handle.in_flight == 0)


def _collected(ref: weakref.ref[Any]) -> bool:
    gc.collect()
    return ref() is None


def _closed_with_a_call_at_the_gate(
    handle: plugbridge.PluginHandle, log: AwaitableLog, fifo: Path
) -> asyncio.AbstractEventLoop:
    """A loop whose task awaits a call that has reached the plugin; the loop then stops,
    its task left waiting (as a loop stopped from outside leaves it)."""
    loop = asyncio.new_event_loop()
    waiting = loop.create_task(handle.acall("gate", str(fifo)))
    assert not waiting.done()
    loop.run_until_complete(log.seen(f"at the gate {fifo}"))
    return loop


@pytest.mark.ray_too
def test_a_loop_closed_before_its_answer_comes_is_not_kept_alive(
    gated: tuple[plugbridge.PluginHandle, AwaitableLog, Path],
) -> None:
    handle, log, fifo = gated
    loop = _closed_with_a_call_at_the_gate(handle, log, fifo)
    loop.close()
    ref = weakref.ref(loop)
    del loop
    fifo.write_text("go")  # the answer now comes, for a closed loop
    assert wait_until(lambda: handle.in_flight == 0)
    assert wait_until(lambda: _collected(ref)), "the closed loop is kept alive"
    assert asyncio.run(handle.acall("echo", 1)) == 1


@pytest.mark.ray_too
def test_a_loop_closed_with_its_answer_queued_is_not_kept_alive(
    gated: tuple[plugbridge.PluginHandle, AwaitableLog, Path],
) -> None:
    handle, log, fifo = gated
    loop = _closed_with_a_call_at_the_gate(handle, log, fifo)
    fifo.write_text("go")
    # The answer is queued on the stopped loop (asyncio's ready queue: its one sign)...
    ready = loop._ready  # type: ignore[attr-defined]
    assert wait_until(lambda: bool(ready))  # (close empties it: it holds nothing after)
    loop.close()  # ...and dropped by close
    ref = weakref.ref(loop)
    del loop
    assert asyncio.run(handle.acall("echo", 1)) == 1  # a new loop comes
    assert wait_until(lambda: _collected(ref)), "the closed loop is kept alive"
