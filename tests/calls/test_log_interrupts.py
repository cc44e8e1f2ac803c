"""A storm of KeyboardInterrupts at a thread delivering log records never leaves the sink locked.

The storm runs in a real child interpreter (a KeyboardInterrupt escaping into pytest would
end the session). A timer raises ``KeyboardInterrupt`` in the main thread every few dozen
microseconds, exactly as Ctrl-C does, but only while the log sink's own code runs (the
calls around it have storms of their own), while the main thread calls a handler that logs
a record, which goes to the host's stdlib logging (no callback). The storm comes in short
bursts; after each one a second thread checks that it can take the sink's lock at once.
A lock left held by the main thread (a reentrant lock: the main thread itself would not
notice) makes every record of every other thread wait the sink's busy wait, then sit in the
backlog: the check stops the storm as soon as it sees that, and the child reports.
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

    class Chatty(Plugin):
        name = "chatty"

        @handler("log")
        def log(self, ctx, req):
            ctx.logger.warning("record %d", req)
            return req
"""

STORM = """
    import faulthandler, json, logging, signal, sys, threading, time
    import plugbridge
    from plugbridge import _logsink

    faulthandler.dump_traceback_later(60, exit=True)  # a hang shows where every thread is

    class Count(logging.Handler):
        \"\"\"The host's handler: where the plugin's records end.\"\"\"

        def __init__(self):
            super().__init__()
            self.count = 0

        def emit(self, record):
            self.count += 1

    received = Count()
    logging.getLogger().addHandler(received)
    plugin = plugbridge.load(sys.argv[1], config={"shutdown_timeout": 10})
    sink = plugin._sink
    SINK_CODE = _logsink.__file__
    storm = {"armed": False, "hits": 0}

    def interrupt(signum, frame):
        # Ctrl-C, but only while the sink's code runs: that is what is under test.
        if storm["armed"] and frame is not None and frame.f_code.co_filename == SINK_CODE:
            storm["hits"] += 1
            raise KeyboardInterrupt

    def on_other_thread(fn):
        out = []
        thread = threading.Thread(target=lambda: out.append(fn()))
        thread.start()
        thread.join()
        return out[0]

    def lock_free():
        if not sink.lock.acquire(blocking=False):
            return False
        sink.lock.release()
        return True

    def delivered_at_once():
        # Without the lock, a record waits the busy wait, then is left in the backlog.
        before = received.count
        plugin.call("log", 2)
        return received.count > before

    signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.00003, 0.00003)
    bursts, calls, stuck_after = 0, 0, None
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        end = time.monotonic() + 0.1
        storm["armed"] = True
        while time.monotonic() < end:
            calls += 1
            try:
                plugin.call("log", 1)
            except KeyboardInterrupt:
                pass
        storm["armed"] = False
        bursts += 1
        if not on_other_thread(lock_free):
            stuck_after = bursts
            break
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    report = {
        "bursts": bursts, "calls": calls, "hits": storm["hits"], "stuck_after": stuck_after,
        "lock_free": on_other_thread(lock_free),
        "delivered_at_once": on_other_thread(delivered_at_once),
    }
    plugin.shutdown()
    report["state"] = plugin.state.name
    print(json.dumps(report))
"""

STORM_SECONDS = 4.0
"""How long the storm goes on when the lock is never seen held (about 40 bursts)."""


def test_interrupts_while_delivering_records_never_leave_the_sink_locked(
    tmp_path: Path, write_plugin: Callable[..., Path]
) -> None:
    source = write_plugin(PLUGIN, "chatty_plugin.py")
    script = tmp_path / "storm.py"
    script.write_text(textwrap.dedent(STORM))
    done = subprocess.run(
        [sys.executable, str(script), str(source), str(STORM_SECONDS)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["stuck_after"] is None, report  # no burst left the lock held
    assert report["hits"] > 100, report  # the storm really hit the sink's code
    assert report["lock_free"], report
    assert report["delivered_at_once"], report  # no busy wait, no record left in the backlog
    assert report["state"] == "STOPPED", report
