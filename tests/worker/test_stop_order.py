"""A call the worker session accepted before a stop began reaches the worker before ``Stop``
(a call read after ``Stop`` is refused, never run): a real worker process, a real stop, and
the call held by a profile hook on its own thread between being accepted and being sent."""

from __future__ import annotations

import sys
import threading
import time
from types import FrameType
from typing import Any

import plugbridge
from plugbridge import LifecycleState

from ..conftest import HELLO, wait_until

HOLD_S = 1.0
"""How long the accepted call is held once the stop has begun: time enough for a worker that
was sent ``Stop`` at once to stop and exit (it takes ~50 ms)."""


def test_a_call_accepted_before_a_stop_runs_though_stop_is_sent_meanwhile() -> None:
    plugin = plugbridge.load(HELLO, isolation="process")
    assert plugin.call("echo", {"message": "warm"})["message"] == "warm"
    held, outcome = threading.Event(), []

    def hold_before_sending(frame: FrameType, event: str, arg: Any) -> None:
        # The call has been accepted (it is pending): hold it until the stop has begun and
        # the worker would have had time to read Stop and end.
        if event == "call" and frame.f_code.co_name == "send_frame" and not held.is_set():
            held.set()
            assert wait_until(lambda: plugin.state is not LifecycleState.ACTIVE, 10)
            time.sleep(HOLD_S)

    def call() -> None:
        sys.setprofile(hold_before_sending)
        try:
            outcome.append(plugin.call("echo", {"message": "accepted before the stop"}))
        except plugbridge.PluginError as exc:
            outcome.append(exc)
        finally:
            sys.setprofile(None)

    caller = threading.Thread(target=call)
    caller.start()
    assert held.wait(10)
    plugin.shutdown(timeout=5.0)
    caller.join(10)
    assert outcome == [{"message": "accepted before the stop", "length": 24}]
    assert plugin.state is LifecycleState.STOPPED
