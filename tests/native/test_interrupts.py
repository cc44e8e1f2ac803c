"""Ctrl-C landing anywhere in a native call costs nothing (issue 7, defect 7).

The storm runs in a real child interpreter (a KeyboardInterrupt escaping into pytest would
end the session): a timer raises ``KeyboardInterrupt`` every 30 microseconds while the
main thread calls the plugin in a loop, so interrupts land between every two steps of the
call paths. Afterwards nothing may be left behind: no gate entry, no slot, no response
buffer, and ``shutdown`` must find the library idle and unmap it at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LifecycleState
from plugbridge._native.library import mapped_count, wait_for_unmapping

from ..conftest import LogCapture, wait_until
from .build import build_hello_c


@pytest.fixture(scope="session")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_interrupts"))


STORM = """
    import json, signal, sys, time
    import plugbridge
    from plugbridge._native.library import mapped_count

    SLOTS = 2
    plugin = plugbridge.load(sys.argv[1], config={"max_concurrent_ops": SLOTS,
                                                  "shutdown_timeout": 20})
    transport = plugin._transport
    FORMS = [
        lambda: plugin.call("echo", {"message": "x"}),
        lambda: plugin.call_json("echo", b'{"message": "x"}'),
        lambda: plugin.call("no.such.tag", {}),
        lambda: plugin.call("ec\\ud800ho", {}),
        lambda: plugin.call("echo", {"message": "x"}, timeout=5),
    ]
    calls = interrupted = 0
    other = []
    armed = False  # interrupts land inside the calls (and as they return), not in this loop

    def interrupt(signum, frame):
        if armed:
            raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, interrupt)
    end = time.monotonic() + float(sys.argv[2])
    signal.setitimer(signal.ITIMER_REAL, 0.00003, 0.00003)
    while time.monotonic() < end:
        for form in FORMS:
            calls += 1
            try:
                armed = True
                form()
            except KeyboardInterrupt:
                interrupted += 1
            except plugbridge.UnknownMessageType:
                pass
            except plugbridge.PluginError as exc:
                other.append(f"{type(exc).__name__}: {exc.message}")
            finally:
                armed = False
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    drained = transport._gate.wait_idle(time.monotonic() + 10)  # timed calls still running
    inside = transport._gate.inside
    in_flight = plugin.in_flight
    outstanding = plugin.call("test.outstanding", {})["outstanding"]
    served = [plugin.call("echo", {"message": "after"}) for _ in range(SLOTS)]
    started = time.monotonic()
    plugin.shutdown()
    print(json.dumps({
        "calls": calls, "interrupted": interrupted, "other": other[:5], "drained": drained,
        "inside": inside, "in_flight": in_flight, "outstanding": outstanding,
        "served": len(served), "drained_at_once": time.monotonic() - started < 10,
        "state": plugin.state.name, "mapped_after_shutdown": mapped_count(),
    }))
"""


def test_interrupt_storm_on_the_native_fast_path(hello_c: Path, tmp_path: Path) -> None:
    # A real child interpreter: a KeyboardInterrupt escaping into pytest would end the session.
    script = tmp_path / "storm.py"
    script.write_text(textwrap.dedent(STORM))
    done = subprocess.run(
        [sys.executable, str(script), str(hello_c), "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["interrupted"] > 100, report  # the storm really hit the calls
    assert report["other"] == [], report
    assert report["drained"], report
    assert report["inside"] == 0, report  # the gate was left every time
    assert report["in_flight"] == 0, report
    assert report["served"] == 2, report
    assert report["drained_at_once"], report  # shutdown found nobody inside
    assert report["state"] == "STOPPED", report
    assert report["mapped_after_shutdown"] == 0, report
    assert report["outstanding"] == 0, report  # every response buffer was freed


class Interrupted(BaseException):
    """Stands for the KeyboardInterrupt a Ctrl-C would raise (pytest's own is left alone)."""


def test_an_interrupted_shutdown_still_tears_the_instance_down(hello_c: Path) -> None:
    threads, mapped = threading.active_count(), mapped_count()
    capture = LogCapture()
    config = {"shutdown_timeout": 20, "data": {"shutdown_sleep_ms": 600}}
    plugin = plugbridge.load(hello_c, config=config, log_callback=capture)
    plugin.call("echo", {"message": "x"}, timeout=5)  # a thread in the call pool
    transport = plugin._transport

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)  # lands while plugin_shutdown sleeps
        with pytest.raises(Interrupted):
            transport.shutdown(20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert transport.state is LifecycleState.FAILED  # not left STOPPING
    transport.shutdown(20)  # done once: nothing runs again
    # The copy is unmapped once plugin_shutdown returns; its late record is dropped.
    assert wait_for_unmapping(mapped, 10)
    assert "HelloPlugin (C) stopped" not in capture.messages()
    # The call pool was stopped all the same.
    assert wait_until(lambda: threading.active_count() <= threads)
