"""Any type tag, of any type: a ``PluginError`` at worst, the slot back, the handle intact."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import APIS, GOOD_ANSWER, GOOD_REQUEST, Subject, bounded, check_example, invoke
from .strategies import ANY_CHAR, KNOWN_TAGS, Opaque, odd_text


class TagStr(str):
    """A str subclass: still a str."""


NON_STR_TAGS = (
    None,
    0,
    1.5,
    b"echo",
    bytearray(b"echo"),
    ["echo"],
    ("echo",),
    {"echo": 1},
    Opaque(),
)
"""(A str subclass is an explicit case below: Hypothesis trips over it in ``sampled_from``.)"""
GOOD_JSON = b'{"message":"ok"}'
GOOD_JSON_ANSWER = '{"message":"ok","length":2}'


def check_type_tag(subject: Subject, tag: Any, api: str) -> None:
    handle = subject.ready()
    request = GOOD_JSON if api == "call_json" else GOOD_REQUEST
    outcome = check_example(subject, lambda: invoke(handle, api, tag, request))
    if isinstance(tag, str) and tag == "echo":
        assert outcome == (GOOD_JSON_ANSWER if api == "call_json" else GOOD_ANSWER)


ODD_TAGS = [pytest.param("ec\ud800ho", api, id=f"lone-surrogate-{api}") for api in APIS] + [
    pytest.param("", "call", id="empty"),
    pytest.param("echo\x00", "call", id="nul-after-echo"),
    pytest.param("\x00", "call_json", id="nul"),
    pytest.param("x" * 1_000_000, "call", id="1MB-ascii"),
    pytest.param("\ud800" * 100_000, "call_json", id="100k-surrogates"),
    pytest.param(b"echo", "call", id="bytes"),
    pytest.param(None, "acall", id="None"),
    pytest.param(TagStr("echo"), "call", id="str-subclass"),
]


@pytest.mark.parametrize(("tag", "api"), ODD_TAGS)
def test_odd_type_tag(subject: Subject, tag: Any, api: str) -> None:
    check_type_tag(subject, tag, api)


@bounded(max_examples=40)
@given(
    tag=st.one_of(
        st.sampled_from(KNOWN_TAGS),
        odd_text,
        st.text(ANY_CHAR, min_size=1, max_size=40),
        st.sampled_from(NON_STR_TAGS),
    ),
    api=st.sampled_from(APIS),
)
def test_any_type_tag(subject: Subject, tag: Any, api: str) -> None:
    check_type_tag(subject, tag, api)
