"""Native plugins: each instance its own log callback and level, even though the library
keeps ONE process-global callback and level (as rustbridge libraries do)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LogLevel

from ..conftest import LogCapture
from .build import build_hello_c


@pytest.fixture(scope="session")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_logging"))


def echo_records(capture: LogCapture) -> list[str]:
    return [m for m in capture.messages() if m.startswith("Handling echo request")]


@pytest.mark.ray_too
def test_two_instances_keep_their_own_callback_and_level(hello_c: Path, isolation: str) -> None:
    a_log, b_log = LogCapture(), LogCapture()
    a = plugbridge.load(
        hello_c, config={"log_level": "debug"}, log_callback=a_log, isolation=isolation
    )
    b = plugbridge.load(
        hello_c, config={"log_level": "info"}, log_callback=b_log, isolation=isolation
    )
    try:
        # If both shared one mapping, B's init would have taken over the global callback
        # and level: A's debug record would be dropped or land in B's callback.
        a.call("echo", {"message": "from-a"})
        b.call("echo", {"message": "from-b"})
        assert echo_records(a_log) == ["Handling echo request: from-a"]
        assert echo_records(b_log) == []
        b.set_log_level("debug")
        a.set_log_level("warn")
        a.call("echo", {"message": "from-a-2"})
        b.call("echo", {"message": "from-b-2"})
        assert echo_records(a_log) == ["Handling echo request: from-a"]
        assert echo_records(b_log) == ["Handling echo request: from-b-2"]
        assert all(target == "hello_c" for target in a_log.targets() + b_log.targets())
    finally:
        a.shutdown()
        b.shutdown()


@pytest.mark.ray_too
def test_concurrent_instances_never_cross_talk(hello_c: Path, isolation: str) -> None:
    logs = [LogCapture() for _ in range(3)]
    handles = [
        plugbridge.load(
            hello_c, config={"log_level": "debug"}, log_callback=log, isolation=isolation
        )
        for log in logs
    ]
    try:

        def hammer(index: int) -> None:
            for i in range(100):
                handles[index].call("echo", {"message": f"inst{index}-{i}"})

        threads = [threading.Thread(target=hammer, args=(i % 3,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for index, log in enumerate(logs):
            records = echo_records(log)
            assert len(records) == 200
            assert all(f"inst{index}-" in record for record in records)
    finally:
        for handle in handles:
            handle.shutdown()


def test_level_change_applies_to_the_next_record(hello_c: Path, isolation: str) -> None:
    capture = LogCapture()
    with plugbridge.load(hello_c, log_callback=capture, isolation=isolation) as plugin:
        assert plugin.log_level is LogLevel.INFO
        plugin.call("echo", {"message": "one"})
        assert echo_records(capture) == []
        plugin.set_log_level(LogLevel.DEBUG)
        plugin.call("echo", {"message": "two"})
        assert echo_records(capture) == ["Handling echo request: two"]
        plugin.set_log_level("WARN")
        plugin.call("user.create", {"username": "u", "email": "e"})  # logs at INFO
        plugin.call("echo", {"message": "three"})
        assert echo_records(capture) == ["Handling echo request: two"]
        assert not any(m.startswith("Creating user") for m in capture.messages())
        plugin.set_log_level("info")
        plugin.call("user.create", {"username": "u", "email": "e"})
        assert capture.messages()[-1] == "Creating user: u (e)"


@pytest.mark.ray_too
def test_level_survives_reload(hello_c: Path, isolation: str) -> None:
    capture = LogCapture()
    with plugbridge.load(hello_c, log_callback=capture, isolation=isolation) as plugin:
        plugin.set_log_level("debug")
        plugin.reload()
        plugin.call("echo", {"message": "after reload"})
        assert echo_records(capture) == ["Handling echo request: after reload"]


@pytest.mark.ray_too
def test_no_callback_after_shutdown_and_the_other_instance_goes_on(
    hello_c: Path, isolation: str
) -> None:
    a_log, b_log = LogCapture(), LogCapture()
    config = {"log_level": "debug"}
    a = plugbridge.load(hello_c, config=config, log_callback=a_log, isolation=isolation)
    b = plugbridge.load(hello_c, config=config, log_callback=b_log, isolation=isolation)
    try:
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                try:
                    a.call("echo", {"message": "racing shutdown"})
                except plugbridge.InvalidState:
                    return

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        a.shutdown()
        seen = len(a_log.records)
        stop.set()
        for thread in threads:
            thread.join()
        assert "HelloPlugin (C) stopping" in a_log.messages()
        for i in range(50):
            b.call("echo", {"message": f"b-{i}"})
        b.set_log_level("trace")
        b.call("user.create", {"username": "u", "email": "e"})
        assert len(a_log.records) == seen
        assert len(echo_records(b_log)) == 50
        assert not any("racing" in m for m in b_log.messages())
    finally:
        a.shutdown()
        b.shutdown()


def test_raising_callback_breaks_nothing(hello_c: Path, isolation: str) -> None:
    calls: list[str] = []

    def broken(level: LogLevel, target: str, message: str) -> None:
        calls.append(message)
        raise RuntimeError("callback is broken")

    with plugbridge.load(
        hello_c, config={"log_level": "debug"}, log_callback=broken, isolation=isolation
    ) as plugin:
        for i in range(5):
            assert plugin.call("echo", {"message": str(i)}) == {"message": str(i), "length": 1}
        assert plugin.state is plugbridge.LifecycleState.ACTIVE
    assert "Handling echo request: 4" in calls


def test_without_callback_records_go_to_stdlib_logging(
    hello_c: Path, isolation: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="plugbridge.plugin"):
        with plugbridge.load(hello_c, config={"log_level": "debug"}, isolation=isolation) as p:
            p.call("echo", {"message": "to stdlib"})
        records = [
            r for r in caplog.records if r.getMessage() == "Handling echo request: to stdlib"
        ]
    assert len(records) == 1
    assert records[0].name == "plugbridge.plugin.hello_c"
    assert records[0].levelno == logging.DEBUG


def test_ctrl_c_during_a_log_callback_interrupts_the_call(hello_c: Path) -> None:
    """A Ctrl-C that lands while the main thread delivers a native plugin's record (the
    callback runs inside the library's call, under C) cannot unwind through C: it is
    raised again as soon as the call returns, instead of being lost."""
    import signal

    heard: list[str] = []

    def callback(level: LogLevel, target: str, message: str) -> None:
        on_main = threading.current_thread() is threading.main_thread()
        if on_main and message.startswith("Adding"):
            heard.append(message)
            if len(heard) == 1:
                assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
                signal.raise_signal(signal.SIGINT)

    with plugbridge.load(hello_c, log_callback=callback) as plugin:
        plugin.set_log_level(LogLevel.DEBUG)
        with pytest.raises(KeyboardInterrupt):
            plugin.call("math.add", {"a": 2, "b": 3})
        assert heard == ["Adding 2 + 3"]
        assert plugin.call("math.add", {"a": 2, "b": 3}) == {"result": 5}
        assert plugin.in_flight == 0
