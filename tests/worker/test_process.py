"""``WorkerProcess``: a worker's process group ends with it, on every way it ends.

The processes here are small scripts, not workers: each starts a helper (which stays in its
process group) and says its pid. Whatever ends the worker, the helper must end with it, and
the group must be ended while its id could not have been handed to another process yet:
before the worker is reaped.
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from plugbridge._worker import process as process_module
from plugbridge._worker.process import WorkerProcess

from ..conftest import wait_until
from .test_channel_frames import Outcome
from .test_channel_interrupts import InterruptAt
from .test_faults import alive

STARTS_A_HELPER = """
import os, subprocess, sys
helper = subprocess.Popen(["sleep", "30"])
os.write(1, b"%d\\n" % helper.pid)
if sys.argv[1] == "exit":
    os._exit(5)
if sys.argv[1] == "ignore-term":
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(1, b"ready\\n")
import time
time.sleep(60)  # until ended
"""


def spawn(then: str) -> tuple[WorkerProcess, int]:
    process = WorkerProcess.spawn([sys.executable, "-c", STARTS_A_HELPER, then], [], os.environ)
    with os.fdopen(os.dup(process.stdout_fd), "rb") as out:
        helper = int(out.readline())
        if then == "ignore-term":
            assert out.readline() == b"ready\n"
    return process, helper


@pytest.fixture
def ended() -> Iterator[list[WorkerProcess]]:
    """Processes the test started, released at its end whatever happened."""
    processes: list[WorkerProcess] = []
    yield processes
    for process in processes:
        process.kill()
        process.close_pidfd()
        process.close_pipes()


def without_pidfd(process: WorkerProcess) -> WorkerProcess:
    process.close_pidfd()  # as on a kernel without pidfd_open: exit statuses are polled
    return process


@pytest.mark.parametrize("pidfd", [True, False])
def test_a_worker_that_exits_takes_its_helper_along(
    ended: list[WorkerProcess], pidfd: bool
) -> None:
    process, helper = spawn("exit")
    ended.append(process if pidfd else without_pidfd(process))
    assert process.wait(10) == 5
    assert process.describe() == "exited with code 5"
    assert wait_until(lambda: not alive(helper))


def test_a_worker_seen_ended_by_poll_takes_its_helper_along(ended: list[WorkerProcess]) -> None:
    process, helper = spawn("exit")
    ended.append(process)
    assert wait_until(lambda: process.poll() is not None)
    assert process.poll() == 5
    assert wait_until(lambda: not alive(helper))


def test_a_killed_worker_takes_its_helper_along(ended: list[WorkerProcess]) -> None:
    process, helper = spawn("wait")
    ended.append(process)
    assert process.kill() == -signal.SIGKILL
    assert process.describe() == "was killed by signal SIGKILL (9)"
    assert wait_until(lambda: not alive(helper))


@pytest.mark.parametrize("then", ["wait", "ignore-term"])
def test_an_ended_worker_takes_its_helper_along(ended: list[WorkerProcess], then: str) -> None:
    process, helper = spawn(then)
    ended.append(process)
    code = process.end(0.0)  # terminate, then kill
    assert code == (-signal.SIGTERM if then == "wait" else -signal.SIGKILL)
    assert wait_until(lambda: not alive(helper))


def test_a_reaped_worker_is_never_signalled_again(ended: list[WorkerProcess]) -> None:
    process, _ = spawn("exit")
    ended.append(process)
    assert process.wait(10) == 5
    process.signal(signal.SIGTERM)  # its pid may belong to anyone by now: nothing is sent
    assert process.kill() == 5
    assert process.end(0.0) == 5


def test_a_spawn_its_caller_stopped_waiting_for_is_ended(ended: list[WorkerProcess]) -> None:
    # Ctrl-C while the spawner thread starts a worker: nobody will use that worker, so it
    # is killed and reaped as soon as it exists (with the helpers it started).
    started = threading.Event()
    go_on = threading.Event()
    spawned: queue.SimpleQueue[tuple[WorkerProcess, int]] = queue.SimpleQueue()

    def job() -> WorkerProcess:
        started.set()
        go_on.wait(120)  # set right after the interrupt; long, so a loaded machine cannot
        # let the job end first (the caller would then not be interrupted while waiting)
        process, helper = spawn_here()
        spawned.put((process, helper))
        return process

    def interrupt_when_started() -> None:
        started.wait(120)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    live = process_module._SPAWNER._live
    interrupter = threading.Thread(target=interrupt_when_started)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        process_module._SPAWNER.run(job)
    interrupter.join()
    go_on.set()
    process, helper = spawned.get(timeout=10)
    assert wait_until(lambda: process.poll() is not None and not alive(helper)), (
        f"worker {process.pid}: {process.describe()}; helper {helper}: {_proc_state(helper)}"
    )
    assert process.pidfd is None
    assert wait_until(lambda: process_module._SPAWNER._live == live)


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as status:
            return " ".join(line.strip() for line in status if line.startswith(("State", "PPid")))
    except FileNotFoundError:
        return "gone"


def spawn_here() -> tuple[WorkerProcess, int]:
    """``spawn``'s process, started on this thread (the spawner's, in the test above)."""
    popen: subprocess.Popen[Any] = subprocess.Popen(
        [sys.executable, "-c", STARTS_A_HELPER, "wait"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    process = WorkerProcess(popen)
    assert popen.stdout is not None
    helper = int(popen.stdout.readline())
    return process, helper


def _in_spawner(frame: FrameType | None) -> bool:
    """The host thread's part of spawning: ``_Spawner.run`` and the threading code it runs."""
    while frame is not None:
        code = frame.f_code
        if code in _SPAWNING:
            return True
        if code.co_filename != threading.__file__:
            return False
        frame = frame.f_back
    return False


_SPAWNING = {process_module._Spawner.run.__code__, process_module._Spawner.discard.__code__}


def test_an_interrupt_at_any_step_of_a_spawn_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The n-th spawn is interrupted at its n-th step (a fresh spawner each time, so that
    # starting its thread is part of it), until one has fewer steps. After each, whatever
    # was spawned is killed and reaped, and the next spawn works (nothing left waiting
    # for a spawner thread that never started).
    spawner_threads = _spawner_threads()
    for at in itertools.count(1):
        spawner = process_module._Spawner()
        monkeypatch.setattr(process_module, "_SPAWNER", spawner)
        spawned: list[WorkerProcess] = []
        hook = InterruptAt(at, _in_spawner)
        sys.setprofile(hook)
        try:
            WorkerProcess.spawn(SLEEPS, [], os.environ, spawned)
        except KeyboardInterrupt:
            pass
        finally:
            sys.setprofile(None)
        where = f"interrupted at step {at}: {hook.struck}"
        for process in spawned:  # the caller ends what it finds there (as launch does)
            process.kill()
        assert wait_until(functools.partial(_all_reaped, spawned)), where
        assert wait_until(functools.partial(_none_live, spawner)), f"{where}: still counted"
        after = Outcome(functools.partial(WorkerProcess.spawn, SLEEPS, [], os.environ))
        assert after.finished_within(10), f"{where}: the next spawn hangs"
        assert isinstance(after.value, WorkerProcess), f"{where}: {after.error!r}"
        after.value.kill()
        for process in (*spawned, after.value):
            process.close_pidfd()
            process.close_pipes()
        # At most as many as before: the global spawner's thread (an earlier test's worker
        # not reaped yet) may end meanwhile; none of this test's spawners may be left.
        assert wait_until(lambda: _spawner_threads() <= spawner_threads), f"{where}: a thread"
        _forget_unstarted_spawners()
        if hook.struck is None:
            break
    assert at > 5  # the hook did see the spawn's steps


SLEEPS = [sys.executable, "-c", "import time; time.sleep(60)"]


def _all_reaped(processes: list[WorkerProcess]) -> bool:
    return all(process.poll() is not None for process in processes)


def _spawner_threads() -> int:
    # Running ones: a Thread.start interrupted before the thread exists leaves the object
    # in threading's own "limbo" list (CPython's doing), though no thread ever ran.
    return sum(t.name == "plugbridge-spawner" and t.is_alive() for t in threading.enumerate())


def _forget_unstarted_spawners() -> None:
    """Take out of ``threading``'s limbo a spawner thread whose start was interrupted before
    it ran (CPython leaves it there, counted by ``active_count``): later tests count threads."""
    limbo: dict[threading.Thread, threading.Thread] = threading._limbo  # type: ignore[attr-defined]
    for thread in list(limbo):
        if thread.name == "plugbridge-spawner" and not thread.is_alive():
            limbo.pop(thread, None)


def _none_live(spawner: Any) -> bool:
    return bool(spawner._live == 0)
