"""PluginHandle.add_log_listener: a tap on the records next to the callback (the gateway's
log stream subscribes through it), in both isolation modes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import LogLevel

from ..conftest import LogCapture, wait_until

LOGGING_PLUGIN = """
    import logging
    from plugbridge import Plugin, handler

    log = logging.getLogger(__name__)

    class Talker(Plugin):
        name = "talker"
        version = "1.0.0"

        @handler("say")
        def say(self, ctx, req: dict) -> dict:
            log.log(logging.getLevelName(req["level"]), req["message"])
            return {}
"""


class Heard:
    """A listener that records what it is told, thread-safely."""

    def __init__(self) -> None:
        self.records: list[tuple[LogLevel, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, level: LogLevel, target: str, message: str) -> None:
        with self._lock:
            self.records.append((level, target, message))

    def messages(self) -> list[str]:
        with self._lock:
            return [message for _, _, message in self.records]


@pytest.mark.ray_too
def test_listener_sees_what_the_level_lets_through(
    write_plugin: Callable[..., Path], isolation: str, capture: LogCapture
) -> None:
    path = write_plugin(LOGGING_PLUGIN, name="talker_mod.py")
    with plugbridge.load(
        path, config={"log_level": "info"}, isolation=isolation, log_callback=capture
    ) as plugin:
        heard = Heard()
        plugin.add_log_listener(heard)
        plugin.call("say", {"level": "DEBUG", "message": "too low"})
        plugin.call("say", {"level": "WARNING", "message": "loud"})
        assert wait_until(lambda: "loud" in heard.messages())
        assert wait_until(lambda: "loud" in capture.messages())  # the callback still gets it
        assert (LogLevel.WARN, "talker_mod", "loud") in heard.records
        assert "too low" not in heard.messages()


@pytest.mark.ray_too
def test_listener_survives_a_reload_and_stops_when_removed(
    write_plugin: Callable[..., Path], isolation: str
) -> None:
    path = write_plugin(LOGGING_PLUGIN, name="talker_mod.py")
    with plugbridge.load(path, isolation=isolation, log_callback=lambda *_: None) as plugin:
        heard, witness = Heard(), Heard()
        remove = plugin.add_log_listener(heard)
        plugin.add_log_listener(witness)
        plugin.reload()
        plugin.call("say", {"level": "ERROR", "message": "after reload"})
        assert wait_until(lambda: "after reload" in heard.messages())
        remove()
        remove()  # idempotent
        plugin.call("say", {"level": "ERROR", "message": "after removal"})
        plugin.call("say", {"level": "ERROR", "message": "barrier"})
        assert wait_until(lambda: "barrier" in witness.messages())  # records come in order
        assert "after removal" in witness.messages()
        assert "after removal" not in heard.messages()


def test_a_raising_listener_is_contained(
    write_plugin: Callable[..., Path], capture: LogCapture
) -> None:
    path = write_plugin(LOGGING_PLUGIN, name="talker_mod.py")
    with plugbridge.load(path, log_callback=capture) as plugin:

        def broken(level: LogLevel, target: str, message: str) -> None:
            raise RuntimeError("listener bug")

        heard = Heard()
        plugin.add_log_listener(broken)
        plugin.add_log_listener(heard)
        assert plugin.call("say", {"level": "ERROR", "message": "still here"}) == {}
        assert "still here" in heard.messages()
        assert "still here" in capture.messages()


def test_the_same_function_added_twice_is_two_listeners(
    write_plugin: Callable[..., Path],
) -> None:
    path = write_plugin(LOGGING_PLUGIN, name="talker_mod.py")
    with plugbridge.load(path, log_callback=lambda *_: None) as plugin:
        heard = Heard()
        remove_first = plugin.add_log_listener(heard)
        plugin.add_log_listener(heard)
        remove_first()
        plugin.call("say", {"level": "ERROR", "message": "once"})
        assert heard.messages() == ["once"]
