"""Records cross from the actor in order, with their targets, and stop with shutdown;
the actor's stdout and stderr become records and never reach the host's terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import plugbridge
from plugbridge import LogLevel

from ..conftest import LogCapture, wait_until

CHATTY = """
    import logging, os, sys, threading, time
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)

    class Chatty(Plugin):
        name = "chatty"

        def on_start(self, ctx):
            self.running = True

        @handler("many")
        def many(self, ctx, count):
            for i in range(count):
                log.info("record %d", i)
            return count

        @handler("debug")
        def debug(self, ctx, _):
            log.debug("a debug record")

        @handler("print")
        def print_(self, ctx, _):
            print("printed line")
            print("to stderr", file=sys.stderr)
            os.write(1, b"raw fd line\\n")

        @handler("background")
        def background(self, ctx, _):
            def loop():
                while self.running:
                    log.warning("tick")
                    time.sleep(0.001)
            threading.Thread(target=loop, daemon=True).start()

        def on_stop(self, ctx):
            for i in range(500):
                log.info("stopping %d", i)
"""


def test_records_arrive_in_order_with_their_target_before_the_answer(
    write_plugin: Callable[..., Path], capture: LogCapture
) -> None:
    source = write_plugin(CHATTY, name="chatty_plugin.py")
    with plugbridge.load(source, isolation="ray", log_callback=capture) as plugin:
        assert plugin.call("many", 300) == 300
        mine = [r for r in capture.records if r[2].startswith("record ")]
        # all there when the call returns, in the order they were logged
        assert [m for _, _, m in mine] == [f"record {i}" for i in range(300)]
        assert {t for _, t, _ in mine} == {"chatty_plugin"}
        plugin.call("debug")
        assert "a debug record" not in capture.messages()
        plugin.set_log_level("debug")  # applied inside the actor before this returns
        plugin.call("debug")
        assert capture.messages()[-1] == "a debug record"
    # on_stop's records, all delivered before shutdown returned
    assert capture.messages()[-500:] == [f"stopping {i}" for i in range(500)]


def test_no_record_after_shutdown_returns(
    write_plugin: Callable[..., Path], capture: LogCapture
) -> None:
    plugin = plugbridge.load(
        write_plugin(CHATTY, name="chatty_plugin.py"), isolation="ray", log_callback=capture
    )
    plugin.call("background")
    assert wait_until(lambda: "tick" in capture.messages())
    plugin.shutdown()
    count = len(capture.records)
    time.sleep(0.3)  # a record still travelling would arrive meanwhile
    assert len(capture.records) == count


def test_stdout_and_stderr_become_records(
    write_plugin: Callable[..., Path], capture: LogCapture
) -> None:
    source = write_plugin(CHATTY, name="chatty_plugin.py")
    with plugbridge.load(source, isolation="ray", log_callback=capture) as plugin:
        plugin.call("print")
        expected = {
            (LogLevel.INFO, "stdout", "printed line"),
            (LogLevel.WARN, "stderr", "to stderr"),
            (LogLevel.INFO, "stdout", "raw fd line"),
        }
        assert wait_until(lambda: expected <= set(capture.records)), capture.records


HOST = """
    import sys, ray, plugbridge
    ray.init(address="auto" if len(sys.argv) < 3 else sys.argv[2], log_to_driver=True)
    records = []
    with plugbridge.load(sys.argv[1], isolation="ray",
                         log_callback=lambda l, t, m: records.append(m)) as plugin:
        plugin.call("print")
        plugin.call("many", 3)
    import time; time.sleep(1.5)  # Ray's log monitor forwards worker output about once a second
    print("RECORDS", sorted(r for r in records if "line" in r or "stderr" in r))
"""


def test_actor_output_does_not_leak_through_rays_log_forwarding(
    write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    """A host whose Ray forwards workers' output to it (``log_to_driver=True``, Ray's
    default) still never sees the plugin's output on its terminal: only as records."""
    source = write_plugin(CHATTY, name="chatty_plugin.py")
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(HOST))
    done = subprocess.run(
        [sys.executable, str(script), str(source), os.environ["RAY_ADDRESS"]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shown = "RECORDS ['printed line', 'raw fd line', 'to stderr']"
    assert shown in done.stdout  # as records
    terminal = done.stdout.replace(shown, "") + done.stderr
    for line in ("printed line", "to stderr", "raw fd line"):
        assert line not in terminal  # and nowhere else
