"""The debug-loop tests' judge of slow steps (``loop_report``): a step that blocks its loop
is reported though the process around it runs, and so is one that computes for long while
other threads compute too; a step held up only because the whole process stood still
(another thread holding the GIL in one long C call) is not.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

from .test_event_loops import SLOW_STEP, LoopReport, loop_report, run_debug

HERE = os.path.dirname(__file__)


def _spin(seconds: float) -> None:
    """Run Python code for ``seconds``: the interpreter hands the GIL over every 5 ms."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _hold_the_gil(seconds: float) -> None:
    """One C call that keeps the GIL for ``seconds`` (``ctypes.pythonapi`` functions run
    with the GIL held; libc's ``usleep`` is one of them here)."""
    ctypes.pythonapi.usleep(ctypes.c_uint(int(seconds * 1_000_000)))


def _slow_steps(report: LoopReport) -> list[str]:
    """Every slow step asyncio reported, whether the judge counts it or not."""
    return [r.getMessage() for r in report.records if r.getMessage().startswith("Executing ")]


def test_a_step_that_blocks_its_loop_is_reported() -> None:
    async def blocks() -> None:
        time.sleep(SLOW_STEP * 2)  # waits without the GIL: the rest of the process runs

    with loop_report(package_dir=HERE) as report:
        run_debug(blocks())
    problems = report.problems()
    assert len(problems) == 1 and "blocks()" in problems[0], problems


def test_a_step_that_computes_long_beside_busy_threads_is_reported() -> None:
    # Waiting for the GIL behind other busy threads is not a stall of the process: the step
    # below runs its own code (sharing the GIL) for 0.5 s, and that is what is reported.
    done = threading.Event()

    def busy() -> None:
        while not done.is_set():
            pass

    others = [threading.Thread(target=busy, daemon=True) for _ in range(2)]

    async def computes() -> None:
        _spin(SLOW_STEP * 5)

    for thread in others:
        thread.start()
    try:
        with loop_report(package_dir=HERE) as report:
            run_debug(computes())
    finally:
        done.set()
        for thread in others:
            thread.join(10)
    problems = report.problems()
    assert len(problems) == 1 and "computes()" in problems[0], problems


def test_a_step_held_up_by_a_stalled_process_is_not_reported() -> None:
    go = threading.Event()

    def hog() -> None:
        go.wait(30)
        _hold_the_gil(SLOW_STEP * 4)

    thread = threading.Thread(target=hog, daemon=True)
    thread.start()

    async def held_up() -> None:
        go.set()
        _spin(0.02)  # the hog takes the GIL within 5 ms and keeps it 0.4 s

    with loop_report(package_dir=HERE) as report:
        run_debug(held_up())
    thread.join(10)
    slow = _slow_steps(report)
    assert len(slow) == 1 and "held_up()" in slow[0], slow  # asyncio saw it slow
    assert report.problems() == []  # but the whole process stood still, not the loop
