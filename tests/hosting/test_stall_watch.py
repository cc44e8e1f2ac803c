"""The debug-loop tests' judge of slow steps (``loop_report``): a step that blocks its loop
is reported even though the process around it runs; a step that was only held up because
the whole process stood still (another thread holding the GIL in one long C call) is not.
"""

from __future__ import annotations

import os
import threading
import time

from .test_event_loops import SLOW_STEP, loop_report, run_debug

HERE = os.path.dirname(__file__)


def _gil_hog_size(seconds: float) -> int:
    """How many numbers ``sum(range(n))`` (one C call that never lets go of the GIL) adds
    up in about ``seconds`` on this machine."""
    n = 1_000_000
    while True:
        began = time.perf_counter()
        sum(range(n))
        took = time.perf_counter() - began
        if took > 0.02:
            return int(n * seconds / took)
        n *= 4


def test_a_step_that_blocks_its_loop_is_reported() -> None:
    async def blocks() -> None:
        time.sleep(SLOW_STEP * 2)  # waits without the GIL: the rest of the process runs

    with loop_report(package_dir=HERE) as report:
        run_debug(blocks())
    problems = report.problems()
    assert len(problems) == 1, problems
    assert "blocks()" in problems[0]


def test_a_step_held_up_by_a_stalled_process_is_not_reported() -> None:
    size = _gil_hog_size(SLOW_STEP * 4)
    hog = threading.Thread(target=sum, args=(range(size),), daemon=True)

    async def held_up() -> None:
        hog.start()
        end = time.perf_counter() + 0.02  # Python code: the hog takes the GIL within 5 ms
        while time.perf_counter() < end:
            pass

    with loop_report(package_dir=HERE) as report:
        run_debug(held_up())
    hog.join(10)
    slow = [r.getMessage() for r in report.records if r.getMessage().startswith("Executing ")]
    assert len(slow) == 1 and "held_up()" in slow[0], slow  # asyncio saw it slow
    assert report.problems() == []  # but the whole process stood still, not the loop
