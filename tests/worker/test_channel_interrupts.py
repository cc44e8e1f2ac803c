"""isolation="process": Ctrl-C (SIGINT) landing anywhere in a call on the main thread.

The main thread may hold the reading turn, so a ``KeyboardInterrupt`` can strike between
any two steps of reading and dispatching frames, or of sending one. Whatever it
interrupts, no frame may be lost, no lock or turn left taken, no slot kept.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import plugbridge
from plugbridge._worker import session as worker_session

from ..conftest import wait_until
from .test_channel_frames import FRAMES, Outcome

STORM_SECONDS = 2.0
OURS = str(Path(plugbridge.__file__).resolve().parent)
"""Frames whose code lives here are plugbridge's: the only ones the storm interrupts."""


def test_a_sigint_storm_on_the_calling_main_thread_loses_nothing(
    write_plugin: Callable[..., Path],
) -> None:
    assert threading.current_thread() is threading.main_thread()
    plugin = plugbridge.load(write_plugin(FRAMES, name="frames.py"), isolation="process")
    session = plugin._transport._current  # type: ignore[attr-defined]
    armed = threading.Event()  # interrupts only while a call runs, never the test itself

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        # Only where plugbridge's own code runs: an interrupt landing in this test's loop
        # or in threading (``armed.clear()`` in the ``finally``) would end the session.
        if armed.is_set() and frame is not None and frame.f_code.co_filename.startswith(OURS):
            raise KeyboardInterrupt

    stop = threading.Event()

    def storm() -> None:
        while not stop.wait(0.0002):
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, on_sigint)
    stormer = threading.Thread(target=storm)
    interrupted = completed = 0
    try:
        stormer.start()
        end = time.monotonic() + STORM_SECONDS
        while time.monotonic() < end:
            try:
                armed.set()
                plugin.call("echo", "x" * 100, timeout=5)
                completed += 1
            except KeyboardInterrupt:
                interrupted += 1
            finally:
                armed.clear()
    finally:
        stop.set()
        stormer.join()
        signal.signal(signal.SIGINT, previous)
    try:
        assert interrupted > 10 and completed > 10
        # Every call that reached the worker is answered and leaves the table.
        assert wait_until(lambda: plugin.in_flight == 0 and not session._pending)
        # The reader thread may be reading, and a finisher thread ending a frame an
        # interrupt cut: what must not be is the main thread keeping the turn or the lock.
        assert session._turn.reading is not threading.main_thread()
        assert wait_until(lambda: session.channel._rest is None)  # no frame left half sent
        assert _free_elsewhere(session.channel._send_lock)
        assert plugin.call("echo", "after the storm", timeout=5) == "after the storm"
    finally:
        plugin.shutdown(timeout=5)


# -- an interrupt at each step, one step at a time ----------------------------------------

_PLUGBRIDGE = str(Path(plugbridge.__file__).parent)
_THREADING = threading.__file__


def _in_scope(frame: FrameType | None) -> bool:
    """plugbridge's own code, or ``threading``'s Python code it calls (``Condition``...)."""
    if frame is None:
        return False
    name = frame.f_code.co_filename
    return name.startswith(_PLUGBRIDGE) or name == _THREADING


class InterruptAt:
    """A profile hook raising ``KeyboardInterrupt`` at the ``at``-th point where CPython can
    raise one on its own: a function's entry (``call``) and the end of a call, Python
    (``return``) or C (``c_return``). Only points in frames ``in_scope`` count (by default
    plugbridge's)."""

    def __init__(self, at: int, in_scope: Callable[[FrameType | None], bool] = _in_scope) -> None:
        self.at = at
        self.seen = 0
        self.struck: str | None = None
        self._in_scope = in_scope

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if self.struck is not None or event not in ("call", "return", "c_return"):
            return
        in_scope = self._in_scope
        if not (in_scope(frame) or (event != "c_return" and in_scope(frame.f_back))):
            return
        self.seen += 1
        if self.seen == self.at:
            what = getattr(arg, "__qualname__", "") if event == "c_return" else ""
            code = frame.f_code
            self.struck = f"{event} {what} in {code.co_name} ({code.co_filename}:{frame.f_lineno})"
            raise KeyboardInterrupt


def _free_elsewhere(lock: Any) -> bool:
    """Whether another thread can take ``lock`` (within a few seconds)."""
    taken: list[bool] = []

    def take() -> None:
        if lock.acquire(timeout=3):
            lock.release()
            taken.append(True)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(5)
    return bool(taken)


CALLS: dict[str, Callable[[plugbridge.PluginHandle], Any]] = {
    "call": lambda plugin: plugin.call("echo", "x"),
    "call with a timeout": lambda plugin: plugin.call("echo", "x", timeout=5),
    "call_json": lambda plugin: plugin.call_json("echo", b'"x"'),
}
"""Sync calls only: under ``asyncio.run`` Ctrl-C cancels the main task (asyncio's own SIGINT
handler) instead of raising ``KeyboardInterrupt`` wherever the loop happens to be."""


@pytest.mark.parametrize("how", sorted(CALLS))
def test_an_interrupt_at_any_step_of_a_call_strands_nothing(
    write_plugin: Callable[..., Path], how: str
) -> None:
    # Deterministic where a storm is not: the n-th call is interrupted at its n-th step,
    # until a call has fewer steps than that. After each, nothing may stay taken (a lock
    # held by nobody's ``with`` deadlocks the next call), and every call must leave.
    assert threading.current_thread() is threading.main_thread()
    call = CALLS[how]
    plugin = plugbridge.load(write_plugin(FRAMES, name="frames.py"), isolation="process")
    session = plugin._transport._current  # type: ignore[attr-defined]
    turn = session._turn
    locks = {
        "session lock": session._lock,
        "reading turn lock": getattr(turn, "_mutex", None) or turn._lock,
        "send lock": session.channel._send_lock,
    }
    stranded: list[str] = []
    try:
        for at in itertools.count(1):
            hook = InterruptAt(at)
            sys.setprofile(hook)
            try:
                call(plugin)
            except KeyboardInterrupt:
                pass
            finally:
                sys.setprofile(None)
            if hook.struck is None:
                break  # the call had fewer steps: all were interrupted once
            where = f"interrupted at step {at}: {hook.struck}"
            stranded = [name for name, lock in locks.items() if not _free_elsewhere(lock)]
            assert not stranded, f"{where}: {stranded} left held"
            assert turn.reading is not threading.main_thread(), f"{where}: turn left taken"
            assert wait_until(lambda: plugin.in_flight == 0 and not session._pending), (
                f"{where}: {plugin.in_flight} in flight, {len(session._pending)} pending"
            )
            assert plugin.call("echo", "next", timeout=5) == "next", where
        assert at > 20  # the hook did see the call's steps
    finally:
        if stranded:  # shutdown would wait for the stranded lock: end the worker
            os.kill(session.process.pid, signal.SIGKILL)
        else:
            plugin.shutdown(timeout=5)


# -- an interrupt while a call waits for a busy channel -----------------------------------

_SESSION = str(Path(worker_session.__file__))


def _in_send(frame: FrameType | None) -> bool:
    """``submit`` and ``_send_later``: where a call meets a busy channel, and an async one
    is handed to a sender thread (``InterruptAt`` also strikes as the functions they call
    begin and end, ``Thread.start`` included)."""
    return (
        frame is not None
        and frame.f_code.co_filename == _SESSION
        and frame.f_code.co_name in ("submit", "_send_later")
    )


@contextlib.contextmanager
def _busy_channel(write_plugin: Callable[..., Path]) -> Iterator[plugbridge.PluginHandle]:
    """A handle whose worker is stopped (SIGSTOP) while a big call holds its channel; the
    worker goes on (SIGCONT) when the block ends."""
    from .test_channel_send import BIG, _sending

    plugin = plugbridge.load(write_plugin(FRAMES, name="frames.py"), isolation="process")
    pid = plugin.call("pid")
    os.kill(pid, signal.SIGSTOP)
    try:
        Outcome(lambda: plugin.call("echo", BIG, timeout=120))
        assert wait_until(lambda: _sending(plugin))
        yield plugin
    finally:
        os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(plugbridge.PluginError):
            plugin.shutdown(timeout=30)


def test_an_interrupt_while_a_call_times_out_waiting_to_send_frees_its_slot(
    write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    # Each call waits for the busy channel until its timeout, and is never sent. The n-th
    # is interrupted at the n-th step of that: it must give its slot back all the same, and
    # leave nothing in the session's table. (A guard: the code before 0.8.2 passed it too.)
    with _busy_channel(write_plugin) as plugin:
        session = plugin._transport._current  # type: ignore[attr-defined]
        filler = set(session._pending)
        for at in itertools.count(1):
            marker = tmp_path / f"step-{at}"
            hook = InterruptAt(at, _in_send)
            sys.setprofile(hook)
            try:
                plugin.call("mark", str(marker), timeout=0.02)
            except (KeyboardInterrupt, plugbridge.Timeout):
                pass
            finally:
                sys.setprofile(None)
            where = f"interrupted at step {at}: {hook.struck}"
            assert plugin.in_flight == 1, where  # the big call only
            assert set(session._pending) == filler, where
            if hook.struck is None:
                break
        assert at > 10  # the hook did see the steps
        os.kill(session.process.pid, signal.SIGCONT)
        assert plugin.call("echo", "after", timeout=60) == "after"
        assert not [path for path in tmp_path.iterdir() if path.name.startswith("step-")]


# A strike can land in a weakref callback that runs meanwhile; Python prints and ignores it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_while_handing_a_call_to_its_sender_thread_runs_it_only_if_kept(
    write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    # Each ``acall`` waits for the busy channel briefly, then hands its call to a thread of
    # its own. The n-th call is interrupted at the n-th step of that. Its slot goes back at
    # once (docs/DECISIONS.md); the call is either forgotten and never runs, or kept (its
    # sender thread had it) and runs: never forgotten yet run, never kept yet never sent.
    import asyncio

    loop = asyncio.new_event_loop()
    kept: dict[Path, bool] = {}  # each call: whether the session kept it
    struck: dict[Path, str] = {}
    waiting: list[asyncio.Task[Any]] = []  # calls not interrupted, waiting for their answer
    try:
        with _busy_channel(write_plugin) as plugin:
            session = plugin._transport._current  # type: ignore[attr-defined]
            for at in itertools.count(1):
                marker = tmp_path / f"step-{at}"
                before = len(session._pending)
                hook = InterruptAt(at, _in_send)
                task = loop.create_task(plugin.acall("mark", str(marker), timeout=120))
                sys.setprofile(hook)
                try:
                    loop.run_until_complete(asyncio.sleep(0))  # the task runs up to its wait
                except KeyboardInterrupt:
                    pass
                finally:
                    sys.setprofile(None)
                where = f"interrupted at step {at}: {hook.struck}"
                assert len(session._pending) - before in (0, 1), where
                kept[marker] = len(session._pending) - before == 1
                if hook.struck is None or not task.done():
                    # Not struck, or struck in a weakref callback that ran meanwhile (its
                    # exceptions are ignored): an ordinary call, handed off and waiting.
                    assert not task.done() and kept[marker], f"{where}: not handed off"
                    waiting.append(task)
                    assert plugin.in_flight == 1 + len(waiting), f"{where}: slot not counted"
                    if hook.struck is None:
                        break
                    continue
                struck[marker] = hook.struck
                assert isinstance(task.exception(), KeyboardInterrupt), where
                assert plugin.in_flight == 1 + len(waiting), f"{where}: slot not given back"
            assert len(struck) > 10  # the hook did see the steps
            assert not all(kept[marker] for marker in struck), "none struck before the hand-off"
            os.kill(session.process.pid, signal.SIGCONT)
            answers = loop.run_until_complete(asyncio.wait_for(asyncio.gather(*waiting), 60))
            assert len(answers) == len(waiting)
            assert wait_until(lambda: plugin.in_flight == 0 and not session._pending, 30)
            assert not session._unsent
            for marker, was_kept in kept.items():
                where = f"{marker.name}, {struck.get(marker, 'not interrupted')}"
                assert marker.exists() == was_kept, f"{where}: ran {marker.exists()}"
            assert plugin.call("echo", "after", timeout=5) == "after"
    finally:
        loop.close()
