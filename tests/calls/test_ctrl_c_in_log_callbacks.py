"""Ctrl-C that lands while a log callback or listener runs on the main thread reaches the
code the main thread was running; a callback that raises ``KeyboardInterrupt`` itself, on
any thread, has failed like any other, and is contained ("a callback that raises never
breaks the plugin or the host").

Python raises Ctrl-C in the main thread wherever it is. The sink contains what a callback
raises (``BaseException`` included: a broken callback must not break the plugin), and it
once contained this too: a Ctrl-C that arrived while the main thread delivered a record (to
the callback, or to stdlib logging) was reported as "log callback raised" and lost, so the
shutdown or call it interrupted went on as if nothing had happened.
"""

from __future__ import annotations

import signal
import threading

import pytest

from plugbridge import LogLevel
from plugbridge._logsink import LogSink


def ctrl_c() -> None:
    """Ctrl-C, as the terminal sends it: the signal, handled by Python's own handler."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.raise_signal(signal.SIGINT)


def test_ctrl_c_during_a_callback_on_the_main_thread_reaches_the_caller() -> None:
    seen: list[str] = []

    def callback(level: LogLevel, target: str, message: str) -> None:
        seen.append(message)
        if message == "first":
            ctrl_c()

    log = LogSink(callback, LogLevel.INFO).instance_log()
    with pytest.raises(KeyboardInterrupt):
        log.emit(LogLevel.INFO, "t", "first")
    log.emit(LogLevel.INFO, "t", "second")  # the sink is not left locked
    assert seen == ["first", "second"]


def test_ctrl_c_during_a_listener_on_the_main_thread_reaches_the_caller() -> None:
    told: list[str] = []

    def listener(level: LogLevel, target: str, message: str) -> None:
        told.append(message)
        if message == "first":
            ctrl_c()

    sink = LogSink(lambda level, target, message: None, LogLevel.INFO)
    sink.add_listener(listener)
    log = sink.instance_log()
    with pytest.raises(KeyboardInterrupt):
        log.emit(LogLevel.INFO, "t", "first")
    log.emit(LogLevel.INFO, "t", "second")
    assert told == ["first", "second"]


def test_a_keyboard_interrupt_a_callback_raises_itself_is_contained_on_the_main_thread() -> None:
    seen: list[str] = []

    def callback(level: LogLevel, target: str, message: str) -> None:
        seen.append(message)
        raise KeyboardInterrupt("the callback gives up")  # its own failure, not a Ctrl-C

    log = LogSink(callback, LogLevel.INFO).instance_log()
    log.emit(LogLevel.INFO, "t", "first")
    log.emit(LogLevel.INFO, "t", "second")
    assert seen == ["first", "second"]


def test_a_ctrl_c_the_callback_caught_and_raised_again_reaches_the_caller() -> None:
    def callback(level: LogLevel, target: str, message: str) -> None:
        try:
            ctrl_c()
        except KeyboardInterrupt:
            print("cleaning up")  # then lets the interrupt go on, as it should
            raise

    log = LogSink(callback, LogLevel.INFO).instance_log()
    with pytest.raises(KeyboardInterrupt):
        log.emit(LogLevel.INFO, "t", "first")


def test_a_keyboard_interrupt_raised_by_a_callback_on_another_thread_is_contained() -> None:
    seen: list[str] = []

    def callback(level: LogLevel, target: str, message: str) -> None:
        seen.append(message)
        raise KeyboardInterrupt  # not a Ctrl-C (that only reaches the main thread)

    log = LogSink(callback, LogLevel.INFO).instance_log()
    outcome: list[BaseException | None] = []

    def emit_both() -> None:
        try:
            log.emit(LogLevel.INFO, "t", "first")
            log.emit(LogLevel.INFO, "t", "second")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=emit_both)
    thread.start()
    thread.join(10)
    assert outcome == [None]
    assert seen == ["first", "second"]


def test_ctrl_c_through_a_python_sigint_handler_reaches_the_caller() -> None:
    """A SIGINT handler written in Python that raises ``KeyboardInterrupt`` (as
    ``asyncio.run`` does at the second Ctrl-C) is a Ctrl-C too, though it raises it with a
    ``raise`` statement."""

    def on_sigint(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def callback(level: LogLevel, target: str, message: str) -> None:
        signal.raise_signal(signal.SIGINT)

    log = LogSink(callback, LogLevel.INFO).instance_log()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            log.emit(LogLevel.INFO, "t", "first")
    finally:
        signal.signal(signal.SIGINT, previous)
