"""A storm of KeyboardInterrupts at the calling thread never costs a concurrency slot.

The storm runs in a real child interpreter (a KeyboardInterrupt escaping into pytest would
end the session): a timer raises ``KeyboardInterrupt`` in the main thread every few dozen
microseconds, exactly as Ctrl-C does, while the main thread calls a handle in a loop. Then
the child reports what it sees once the storm is over.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from ..native.build import build_hello_c

PLUGIN = """
    import asyncio
    from plugbridge import Plugin, handler

    class Echo(Plugin):
        name = "echo"

        @handler("echo")
        def echo(self, ctx, req):
            return req

        @handler("aecho")
        async def aecho(self, ctx, req):
            return req
"""

STORM = """
    import asyncio, faulthandler, json, signal, sys, time
    import plugbridge

    faulthandler.dump_traceback_later(75, exit=True)  # a hang shows where every thread is

    source, isolation, tags = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    SLOTS = 4
    plugin = plugbridge.load(source, isolation=isolation,
                             config={"max_concurrent_ops": SLOTS, "shutdown_timeout": 10})
    calls = 0
    other = []
    storm = {"on": True, "hits": 0}

    def interrupt(signum, frame):
        # Like Ctrl-C, but only while plugbridge (or plugin) code runs: this loop's own
        # bookkeeping is not what is under test and must not be hit.
        if storm["on"] and frame is not None and frame.f_code not in (LOOP_CODE, OWN_CODE, SCRIPT):
            storm["hits"] += 1
            raise KeyboardInterrupt

    def loop():
        nonlocal_calls = 0
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for tag in tags:
                nonlocal_calls += 1
                try:
                    plugin.call(tag, {"message": "x"})
                except KeyboardInterrupt:
                    pass
                except plugbridge.PluginError as exc:
                    other.append(f"{type(exc).__name__}: {exc.message}")
                try:
                    plugin.call_json(tag, b'{"message": "x"}')
                except KeyboardInterrupt:
                    pass
                except plugbridge.PluginError as exc:
                    other.append(f"{type(exc).__name__}: {exc.message}")
                try:
                    plugin.call(tag, {"message": "x"}, timeout=5)
                except KeyboardInterrupt:
                    pass
                except plugbridge.PluginError as exc:
                    other.append(f"{type(exc).__name__}: {exc.message}")
        return nonlocal_calls

    LOOP_CODE, OWN_CODE = loop.__code__, interrupt.__code__
    SCRIPT = sys._getframe().f_code  # this script's own lines, between loop() and the stop
    signal.signal(signal.SIGALRM, interrupt)
    interval = 0.00003
    signal.setitimer(signal.ITIMER_REAL, interval, interval)
    calls = loop()
    storm["on"] = False
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    interrupted = storm["hits"]
    deadline = time.monotonic() + 10
    while plugin.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    in_flight = plugin.in_flight
    served = [plugin.call(tags[0], {"message": "after"}) for _ in range(SLOTS)]
    started = time.monotonic()
    plugin.shutdown()
    print(json.dumps({
        "calls": calls, "interrupted": interrupted, "other": other[:5],
        "in_flight": in_flight, "served": len(served),
        "shutdown_s": time.monotonic() - started, "state": plugin.state.name,
    }))
"""


def _storm(tmp_path: Path, source: Path, isolation: str, tags: str) -> dict[str, object]:
    script = tmp_path / "storm.py"
    script.write_text(textwrap.dedent(STORM))
    done = subprocess.run(
        [sys.executable, str(script), str(source), isolation, tags],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_interrupt_storm_python_plugin(
    tmp_path: Path, write_plugin: Callable[..., Path], isolation: str
) -> None:
    source = write_plugin(PLUGIN, "storm_plugin.py")
    report = _storm(tmp_path, source, isolation, "echo,aecho")
    assert report["interrupted"], report  # the storm really hit the calls
    assert report["in_flight"] == 0, report
    assert report["served"] == 4, report
    assert report["state"] == "STOPPED", report
    assert report["other"] == [], report
    assert float(report["shutdown_s"]) < 8, report  # no gate left entered (drain would wait)  # type: ignore[arg-type]


def test_interrupt_storm_native_plugin(tmp_path: Path) -> None:
    library = build_hello_c(tmp_path)
    report = _storm(tmp_path, library, "inprocess", "echo")
    assert report["interrupted"], report
    assert report["in_flight"] == 0, report
    assert report["served"] == 4, report
    assert report["state"] == "STOPPED", report
    assert float(report["shutdown_s"]) < 8, report  # type: ignore[arg-type]
