"""Per-instance logging: own level and callback, attribution, default sink, containment."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LogLevel

from ..conftest import HELLO, LogCapture, wait_until

CHATTY = """
    import asyncio, logging, threading, time
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)
    third_party = logging.getLogger("thirdparty.lib")

    class Chatty(Plugin):
        name = "chatty"

        async def on_start(self, ctx):
            third_party.warning("third party during on_start")

        async def on_stop(self, ctx):
            third_party.warning("third party during on_stop")

        @handler("log")
        def log_all(self, ctx, req):
            tag = req or ""
            log.log(5, "trace %s", tag)
            log.debug("debug %s", tag)
            log.info("info %s", tag)
            log.warning("warn %s", tag)
            log.error("error %s", tag)
            return None

        @handler("ctx")
        def ctx_log(self, ctx, req):
            ctx.logger.info("via ctx %s", req)

        @handler("third")
        def third(self, ctx, req):
            third_party.warning("third party %s", req)

        @handler("athird")
        async def athird(self, ctx, req):
            third_party.warning("async third party %s", req)
            await asyncio.sleep(0.02)
            async def child():
                third_party.warning("task third party %s", req)
            await asyncio.get_running_loop().create_task(child())
            await asyncio.to_thread(third_party.warning, "to_thread third party %s", req)

        @handler("raise_in_log")
        def raise_in_log(self, ctx, req):
            log.warning("before")
            return "ok"

        @handler("exc")
        def exc(self, ctx, req):
            try:
                1 / 0
            except ZeroDivisionError:
                log.exception("it failed")

        @handler("spawn_logger_thread")
        def spawn(self, ctx, req):
            def loop():
                while not self.stop_flag:
                    log.warning("background")
                    time.sleep(0.001)
            self.stop_flag = False
            threading.Thread(target=loop, daemon=True).start()

        @handler("stop_thread")
        def stop_thread(self, ctx, req):
            self.stop_flag = True
"""


@pytest.fixture
def chatty_source(write_plugin: Callable[..., Path]) -> Path:
    return write_plugin(CHATTY, name="chatty_plugin.py")


def test_target_is_the_authors_logger_name(chatty_source: Path, isolation: str) -> None:
    capture = LogCapture()
    with plugbridge.load(chatty_source, log_callback=capture, isolation=isolation) as plugin:
        plugin.call("log", "x")
        plugin.call("ctx", "y")
    own = [(lvl, tgt, msg) for lvl, tgt, msg in capture.records if msg.endswith(("x", "y"))]
    assert own == [
        (LogLevel.INFO, "chatty_plugin", "info x"),
        (LogLevel.WARN, "chatty_plugin", "warn x"),
        (LogLevel.ERROR, "chatty_plugin", "error x"),
        (LogLevel.INFO, "chatty", "via ctx y"),
    ]
    assert all(isinstance(level, LogLevel) for level, _, _ in capture.records)


def test_level_changes_apply_to_the_next_record(chatty_source: Path, isolation: str) -> None:
    capture = LogCapture()
    with plugbridge.load(chatty_source, log_callback=capture, isolation=isolation) as plugin:
        for level in ("trace", "DEBUG", LogLevel.WARN, "off", 4):
            plugin.set_log_level(level)
            assert plugin.log_level is plugbridge._levels.parse_level(level)
            plugin.call("log", level if isinstance(level, str) else int(level))
    by_tag: dict[str, list[str]] = {}
    for _, _, message in capture.records:
        kind, _, tag = message.partition(" ")
        by_tag.setdefault(tag, []).append(kind)
    assert by_tag["trace"] == ["trace", "debug", "info", "warn", "error"]
    assert by_tag["DEBUG"] == ["debug", "info", "warn", "error"]
    assert by_tag["3"] == ["warn", "error"]
    assert "off" not in by_tag
    assert by_tag["4"] == ["error"]
    with pytest.raises(plugbridge.ConfigError):
        plugbridge.load(chatty_source, config={"log_level": "loud"}, isolation=isolation)


def test_exception_records_carry_the_traceback(chatty_source: Path, isolation: str) -> None:
    capture = LogCapture()
    with plugbridge.load(chatty_source, log_callback=capture, isolation=isolation) as plugin:
        plugin.call("exc")
    (message,) = [m for m in capture.messages() if m.startswith("it failed")]
    assert "ZeroDivisionError" in message


def test_two_instances_have_their_own_level_and_callback(
    chatty_source: Path, isolation: str
) -> None:
    first, second = LogCapture(), LogCapture()
    a = plugbridge.load(chatty_source, log_callback=first, isolation=isolation)
    b = plugbridge.load(
        chatty_source, log_callback=second, config={"log_level": "debug"}, isolation=isolation
    )
    try:
        a.call("log", "from-a")
        b.call("log", "from-b")
        a.set_log_level("error")
        a.call("log", "a-again")
        b.call("log", "b-again")
        assert first.messages()[-4:] == [
            "info from-a",
            "warn from-a",
            "error from-a",
            "error a-again",
        ]
        assert not any("from-b" in m or "b-again" in m for m in first.messages())
        assert not any("from-a" in m or "a-again" in m for m in second.messages())
        assert [m for m in second.messages() if m.endswith("b-again")] == [
            "debug b-again",
            "info b-again",
            "warn b-again",
            "error b-again",
        ]
        a.shutdown()
        before = len(second.records)
        b.call("log", "after-a-stopped")
        assert len(second.records) == before + 4  # b's logging untouched by a's shutdown
    finally:
        a.shutdown()
        b.shutdown()


def test_third_party_records_are_attributed_to_the_running_instance(
    chatty_source: Path, isolation: str
) -> None:
    first, second = LogCapture(), LogCapture()
    a = plugbridge.load(chatty_source, log_callback=first, isolation=isolation)
    b = plugbridge.load(chatty_source, log_callback=second, isolation=isolation)
    try:
        with ThreadPoolExecutor(8) as pool:
            jobs = [
                pool.submit(h.call, "third", f"{n}-{i}")
                for i in range(50)
                for n, h in (("a", a), ("b", b))
            ]
            jobs += [pool.submit(h.call, "athird", f"{n}-async") for n, h in (("a", a), ("b", b))]
            for job in jobs:
                job.result()
        logging.getLogger("thirdparty.lib").warning("host's own record")
    finally:
        a.shutdown()
        b.shutdown()
    for capture, mine, theirs in ((first, "a-", "b-"), (second, "b-", "a-")):
        third = [(t, m) for _, t, m in capture.records if t == "thirdparty.lib"]
        messages = [m for _, m in third]
        assert sum(m.startswith("third party " + mine) for m in messages) == 50
        assert not any(theirs in m for m in messages)
        assert not any("host's own" in m for m in messages)
        assert "third party during on_start" in messages
        assert "third party during on_stop" in messages
        for kind in ("async third party", "task third party", "to_thread third party"):
            assert f"{kind} {mine}async" in messages


def test_third_party_records_obey_the_instance_level(chatty_source: Path) -> None:
    capture = LogCapture()
    with plugbridge.load(chatty_source, log_callback=capture, config={"log_level": "error"}) as p:
        p.call("third", "hidden")
    assert not any("hidden" in m for m in capture.messages())


def test_default_sink_is_stdlib_logger(chatty_source: Path, isolation: str) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    sink_logger = logging.getLogger("plugbridge.plugin.chatty")
    sink_logger.addHandler(handler)
    sink_logger.setLevel(1)
    try:
        with plugbridge.load(
            chatty_source, config={"log_level": "debug"}, isolation=isolation
        ) as p:
            p.call("log", "default")
    finally:
        sink_logger.removeHandler(handler)
        sink_logger.setLevel(logging.NOTSET)
    mine = [(r.levelno, r.getMessage()) for r in records if r.getMessage().endswith("default")]
    assert mine == [
        (logging.DEBUG, "debug default"),
        (logging.INFO, "info default"),
        (logging.WARNING, "warn default"),
        (logging.ERROR, "error default"),
    ]


def test_a_raising_callback_breaks_nothing(chatty_source: Path, isolation: str) -> None:
    calls = []

    def bad(level: LogLevel, target: str, message: str) -> None:
        calls.append(message)
        raise RuntimeError("callback exploded")

    with plugbridge.load(chatty_source, log_callback=bad, isolation=isolation) as plugin:
        assert plugin.call("raise_in_log") == "ok"
        assert plugin.call("raise_in_log") == "ok"
    assert calls.count("before") == 2


def test_no_callback_after_shutdown_even_from_plugin_threads(
    chatty_source: Path, isolation: str
) -> None:
    capture = LogCapture()
    plugin = plugbridge.load(chatty_source, log_callback=capture, isolation=isolation)
    plugin.call("spawn_logger_thread")
    assert wait_until(lambda: capture.messages().count("background") >= 5)
    plugin.shutdown()
    after = len(capture.records)
    time.sleep(0.3)  # the plugin's thread keeps logging; none of it may arrive
    assert len(capture.records) == after


def test_host_records_are_not_attributed(chatty_source: Path) -> None:
    capture = LogCapture()
    seen_from_callback = []

    def callback(level: LogLevel, target: str, message: str) -> None:
        capture(level, target, message)
        if message == "info inside":
            # host code running inside the callback, while plugin code is on the stack
            logging.getLogger("host.app").warning("host logs from its callback")
            seen_from_callback.append(True)

    with plugbridge.load(chatty_source, log_callback=callback) as plugin:
        logging.getLogger("host.app").warning("host before")
        plugin.call("log", "inside")
        logging.getLogger("host.app").warning("host after")
    assert seen_from_callback == [True]
    assert not any(t == "host.app" for t in capture.targets())


def test_host_without_logging_config_still_gets_last_resort(tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(
        f"""
import logging, plugbridge
with plugbridge.load({str(HELLO)!r}) as p:
    p.call("echo", {{"message": "x"}})
    logging.getLogger("host").warning("host warning reaches stderr")
"""
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "host warning reaches stderr" in result.stderr


def test_host_logging_setup_is_untouched(tmp_path: Path) -> None:
    # basicConfig after a plugin is loaded must still configure the root logger, and the
    # root logger must carry only the host's handlers.
    script = tmp_path / "host.py"
    script.write_text(
        f"""
import logging, sys, plugbridge
with plugbridge.load({str(HELLO)!r}) as p:
    assert logging.getLogger().handlers == [], logging.getLogger().handlers
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="HOST %(message)s")
    p.call("echo", {{"message": "x"}})
    logging.getLogger("host").info("configured after load")
"""
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "HOST configured after load" in result.stdout


def test_log_callback_calling_its_plugin_never_deadlocks(
    chatty_source: Path, isolation: str
) -> None:
    outcomes: list[object] = []
    handles: list[plugbridge.PluginHandle] = []

    def callback(level: LogLevel, target: str, message: str) -> None:
        if message == "info reentrant":
            try:
                outcomes.append(handles[0].call("ctx", "nested", timeout=5))
            except plugbridge.PluginError as exc:
                outcomes.append(exc)

    with plugbridge.load(chatty_source, log_callback=callback, isolation=isolation) as plugin:
        handles.append(plugin)
        plugin.call("log", "reentrant")
        assert wait_until(lambda: len(outcomes) == 1)
        assert plugin.call("ctx", "still serving") is None
    if isolation in ("inprocess", "ray"):  # ray: answers do not come through the record pump
        assert outcomes == [None]  # the nested call runs inline, like any other
    else:  # only the reader thread could read the answer: refused instead of a deadlock
        assert isinstance(outcomes[0], plugbridge.InvalidState)
        assert "log callback" in outcomes[0].message


def test_callback_is_called_from_many_threads_serially(chatty_source: Path) -> None:
    inside = 0
    overlaps = 0
    lock = threading.Lock()

    def callback(level: LogLevel, target: str, message: str) -> None:
        nonlocal inside, overlaps
        with lock:
            inside += 1
            overlaps += inside > 1
        time.sleep(0.0001)
        with lock:
            inside -= 1

    with (
        plugbridge.load(chatty_source, log_callback=callback) as plugin,
        ThreadPoolExecutor(8) as pool,
    ):
        list(pool.map(lambda i: plugin.call("log", str(i)), range(200)))
    assert overlaps == 0


def test_acall_attribution(chatty_source: Path) -> None:
    capture = LogCapture()

    async def main() -> None:
        await asyncio.gather(*(plugin.acall("athird", f"t{i}") for i in range(5)))

    with plugbridge.load(chatty_source, log_callback=capture) as plugin:
        asyncio.run(main())
    messages = capture.messages()
    for i in range(5):
        assert f"to_thread third party t{i}" in messages
