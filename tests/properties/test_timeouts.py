"""Any ``timeout=``: zero, tiny, negative, NaN, infinite, huge, bool, str, not a number."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import plugbridge

from .conftest import APIS, GOOD_ANSWER, Failed, Subject, bounded, check_example, invoke
from .strategies import timeouts

MAX_SECONDS = 1e9
"""docs/DECISIONS.md, "Durations are finite": the longest duration accepted anywhere."""


def is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_timeout(subject: Subject, timeout: Any, api: str, sleep_ms: int | None) -> None:
    handle = subject.ready()
    tag, request = ("echo", {"message": "ok"}) if sleep_ms is None else (
        "test.sleep", {"duration_ms": sleep_ms}
    )  # fmt: skip
    payload: Any = msgspec.json.encode(request) if api == "call_json" else request
    outcome = check_example(subject, lambda: invoke(handle, api, tag, payload, timeout))
    error = outcome.error if isinstance(outcome, Failed) else None
    if timeout is None or (is_real(timeout) and 1 <= timeout <= MAX_SECONDS):
        assert error is None, f"a quick call failed with a timeout of {timeout!r}: {error!r}"
        assert not isinstance(outcome, Failed)
        answer = msgspec.json.decode(outcome) if api == "call_json" else outcome
        assert answer == (GOOD_ANSWER if sleep_ms is None else {"slept_ms": sleep_ms})
    elif (
        not is_real(timeout) or (isinstance(timeout, float) and math.isnan(timeout)) or timeout < 0
    ):
        assert isinstance(error, plugbridge.ConfigError), f"timeout={timeout!r}: {outcome!r}"
    elif timeout > MAX_SECONDS:  # infinite or huge: refused (DECISIONS) or no limit at all
        assert error is None or isinstance(error, plugbridge.ConfigError), outcome
    elif timeout == 0:  # DECISIONS: "a zero timeout never runs the call"
        assert isinstance(error, plugbridge.Timeout), f"timeout={timeout!r}: {outcome!r}"
    else:  # tiny: the answer, or Timeout
        assert error is None or isinstance(error, plugbridge.Timeout), outcome


ODD_TIMEOUTS = [
    0,
    -0.0,
    5e-324,
    1e-9,
    1e-6,
    -1,
    math.nan,
    math.inf,
    -math.inf,
    1e300,
    10**400,
    True,
    "1",
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("timeout", ODD_TIMEOUTS, ids=lambda t: repr(t)[:12])
def test_odd_timeout(subject: Subject, timeout: Any, api: str) -> None:
    check_timeout(subject, timeout, api, None)


@bounded(max_examples=50)
@given(
    timeout=timeouts,
    api=st.sampled_from(APIS),
    sleep_ms=st.one_of(st.none(), st.integers(min_value=0, max_value=30)),
)
def test_any_timeout(subject: Subject, timeout: Any, api: str, sleep_ms: int | None) -> None:
    check_timeout(subject, timeout, api, sleep_ms)


@pytest.mark.parametrize("api", APIS)
def test_tiny_timeouts_in_a_row(subject: Subject, api: str) -> None:
    """A tiny timeout races the answer: try it several times, each one judged on its own."""
    for _ in range(10):
        check_timeout(subject, 1e-6, api, None)
