"""CallGate: entering, leaving, reservations claimed by exactly one side, draining."""

from __future__ import annotations

import threading
import time

from plugbridge._calls.gate import CallGate


def test_enter_and_leave_only_while_open() -> None:
    gate = CallGate()
    assert not gate.enter()  # closed until opened
    gate.open()
    assert gate.enter()
    assert gate.inside == 1
    gate.close()
    assert not gate.enter()
    assert gate.inside == 1  # those inside stay until they leave
    gate.leave()
    assert gate.inside == 0


def test_arrive_and_depart_are_builtins() -> None:
    # One builtin call each: an interrupt lands before or after, never half-way.
    gate = CallGate()
    assert type(gate.arrive).__name__ == "builtin_function_or_method"
    assert type(gate.depart).__name__ == "builtin_function_or_method"
    assert type(gate.unreserve).__name__ == "builtin_function_or_method"


def test_a_reservation_is_ended_by_exactly_one_side() -> None:
    gate = CallGate()
    gate.open()
    taken_back, claimed = object(), object()
    gate.reserve(taken_back)
    gate.reserve(claimed)
    assert gate.inside == 2
    gate.unreserve(taken_back)  # the caller gave up before the work began
    assert not gate.claim(taken_back)  # ... so the work does not run
    assert gate.claim(claimed)  # the work began: now it is inside
    try:
        gate.unreserve(claimed)
    except KeyError:
        pass  # the caller finds it claimed: the work ends the call
    else:
        raise AssertionError("a claimed reservation was taken back")
    assert gate.inside == 1
    gate.leave()
    assert gate.inside == 0


def test_claims_and_withdrawals_race_without_losing_count() -> None:
    gate = CallGate()
    gate.open()
    tokens = [object() for _ in range(20_000)]
    for token in tokens:
        gate.reserve(token)
    outcomes: dict[str, int] = {"claimed": 0, "withdrawn": 0}
    lock = threading.Lock()

    def worker() -> None:
        for token in tokens:
            if gate.claim(token):
                with lock:
                    outcomes["claimed"] += 1
                gate.leave()

    def caller() -> None:
        for token in reversed(tokens):
            try:
                gate.unreserve(token)
            except KeyError:
                continue
            with lock:
                outcomes["withdrawn"] += 1

    threads = [threading.Thread(target=worker), threading.Thread(target=caller)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes["claimed"] + outcomes["withdrawn"] == len(tokens)
    assert gate.inside == 0


def test_wait_idle_counts_reservations() -> None:
    gate = CallGate()
    gate.open()
    token = object()
    gate.reserve(token)
    gate.close()
    assert not gate.wait_idle(time.monotonic() + 0.05)
    threading.Timer(0.05, gate.unreserve, (token,)).start()
    assert gate.wait_idle(time.monotonic() + 10)


def test_when_idle_runs_once_the_last_one_is_out() -> None:
    gate = CallGate()
    gate.open()
    ran: list[str] = []
    token = object()
    assert gate.enter()
    gate.reserve(token)
    gate.when_idle(lambda: ran.append("idle"))
    assert ran == []
    gate.leave()
    assert ran == []  # a reservation is still out
    gate.unreserve(token)
    gate.after_depart()
    assert ran == ["idle"]
    gate.after_depart()
    assert ran == ["idle"]  # exactly once
