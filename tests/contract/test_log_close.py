"""Closing an instance's logging while the host's callback is busy costs shutdown ~1 s at most."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import plugbridge

BUSY = 5.0
"""How long the callback blocks: far longer than shutdown may take."""


def test_a_busy_callback_holds_shutdown_up_once_not_per_gate(
    write_plugin: Callable[..., Path],
) -> None:
    source = write_plugin(
        """
        import logging
        from plugbridge import Plugin, handler

        log = logging.getLogger(__name__)

        class Chatty(Plugin):
            name = "chatty"

            @handler("log")
            def say(self, ctx, req):
                log.warning("hello from the handler")
                return 1
        """,
        "chatty_plugin.py",
    )
    inside = threading.Event()
    let_go = threading.Event()
    calls_after_shutdown: list[str] = []
    returned = threading.Event()

    def callback(level: object, target: str, message: str) -> None:
        if returned.is_set():
            calls_after_shutdown.append(message)
        if "hello" in message and not inside.is_set():
            inside.set()
            let_go.wait(BUSY)

    plugin = plugbridge.load(source, log_callback=callback)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(plugin.call("log"))
        except plugbridge.PluginError as exc:  # the call may be cancelled by the shutdown
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        assert inside.wait(10)
        started = time.monotonic()
        plugin.shutdown(timeout=0.2)
        took = time.monotonic() - started
        returned.set()
        # One shared wait of ~1 s for the busy callback (it was three: one per gate closed).
        assert took < 2.5, f"shutdown(0.2) took {took:.2f}s with a busy callback"
    finally:
        let_go.set()
        caller.join(10)
    assert calls_after_shutdown == []
    assert len(outcome) == 1  # the caller got an answer (its result, or Cancelled)
