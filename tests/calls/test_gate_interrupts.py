"""A storm of SIGINTs at the calling thread never strands a call inside an instance's gate.

The storm runs in a real child interpreter (a KeyboardInterrupt escaping into pytest would
end the session). A helper thread sends SIGINT to the process again and again; its handler
raises ``KeyboardInterrupt`` in the main thread, exactly as Ctrl-C does, while the main
thread calls an in-process handle in a loop on every path (inline sync, ``call_json``, a
timeout, an async handler, ``acall``). Afterwards the child reports what the gate holds,
whether every path still serves, and how long shutdown took: a call left inside the gate
would make the drain wait for the whole drain share of the shutdown timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

PLUGIN = """
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
    import asyncio, json, os, signal, sys, threading, time
    import plugbridge

    plugin = plugbridge.load(
        sys.argv[1], config={"max_concurrent_ops": 0, "shutdown_timeout": 20}
    )
    gate = plugin._transport._gate
    storm = {"on": True, "armed": False, "hits": 0}
    failures = []

    def interrupt(signum, frame):
        # Ctrl-C, but only while plugbridge or plugin code runs: the loop below is not
        # under test, and an interrupt in its own bookkeeping would end the child.
        if storm["armed"] and frame is not None and frame.f_code not in OWN_CODE:
            storm["hits"] += 1
            raise KeyboardInterrupt

    def sender():
        me = os.getpid()
        while storm["on"]:
            os.kill(me, signal.SIGINT)
            time.sleep(0.0001)

    def attempt(fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except KeyboardInterrupt:
            pass
        except plugbridge.PluginError as exc:
            failures.append(f"{type(exc).__name__}: {exc.message}")

    def run_acall(tag):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(plugin.acall(tag, 1))
        finally:
            try:
                loop.close()
            except Exception:
                pass  # asyncio's own state, broken half-way by an interrupt: not under test

    def loop():
        calls = 0
        end = time.monotonic() + 3.0
        storm["armed"] = True
        while time.monotonic() < end:
            calls += 1
            attempt(plugin.call, "echo", 1)
            attempt(plugin.call_json, "echo", b"1")
            attempt(plugin.call, "echo", 1, timeout=30)
            attempt(plugin.call, "aecho", 1)
            attempt(plugin.call_json, "aecho", b"1", timeout=30)
            if calls % 10 == 0:
                attempt(run_acall, "echo")
                attempt(run_acall, "aecho")
        storm["armed"] = False
        return calls

    OWN_CODE = {loop.__code__, attempt.__code__, interrupt.__code__, run_acall.__code__}
    OWN_CODE.add(sys._getframe().f_code)  # this script's own lines, between loop() and the stop
    signal.signal(signal.SIGINT, interrupt)
    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    calls = loop()
    storm["on"] = False
    thread.join()
    time.sleep(0.05)  # a signal still pending is handled (and ignored) here
    signal.signal(signal.SIGINT, signal.default_int_handler)

    deadline = time.monotonic() + 10  # calls handed to other threads finish by themselves
    while gate.inside and time.monotonic() < deadline:
        time.sleep(0.01)
    inside = gate.inside
    served = [
        plugin.call("echo", 1),
        json.loads(plugin.call_json("echo", "2")),
        plugin.call("echo", 3, timeout=30),
        plugin.call("aecho", 4),
        asyncio.run(plugin.acall("aecho", 5)),
        asyncio.run(plugin.acall("echo", 6)),
    ]
    started = time.monotonic()
    plugin.shutdown()
    print(json.dumps({
        "calls": calls, "hits": storm["hits"], "failures": failures[:5], "inside": inside,
        "served": served, "shutdown_s": time.monotonic() - started,
        "state": plugin.state.name,
    }))
"""


def test_sigint_storm_leaves_nothing_inside_the_gate(
    tmp_path: Path, write_plugin: Callable[..., Path]
) -> None:
    source = write_plugin(PLUGIN, "storm_plugin.py")
    script = tmp_path / "storm.py"
    script.write_text(textwrap.dedent(STORM))
    done = subprocess.run(
        [sys.executable, str(script), str(source)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["hits"] > 100, report  # the storm really hit plugbridge's code
    assert report["inside"] == 0, report  # no call stranded inside the gate
    assert report["served"] == [1, 2, 3, 4, 5, 6], report  # every path still serves
    assert report["failures"] == [], report  # interrupts only, no other error
    assert report["state"] == "STOPPED", report
    assert report["shutdown_s"] < 10, report  # no drain waiting for a stranded call
