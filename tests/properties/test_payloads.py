"""Request payloads of every shape: JSON of any kind, odd strings, deep nesting, non-JSON."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import Failed, Subject, bounded, check_example, invoke
from .strategies import ANY_CHAR, HUGE_INT, json_values, nested, non_json_values, odd_text, shapes

OBJECT_APIS = ("call", "acall")
VALUE_TAGS = ("mirror", "amirror", "echo")
"""``mirror``/``amirror`` return the request (the C plugin has no such tag); ``echo`` wants
``{"message": str}`` in every kind."""

requests = st.one_of(json_values(), st.fixed_dictionaries({"message": odd_text}))


@bounded(max_examples=60)
@given(
    tag=st.sampled_from(VALUE_TAGS),
    request=requests,
    api=st.sampled_from(OBJECT_APIS),
    timeout=st.sampled_from([None, 30.0]),
)
def test_any_json_request(
    subject: Subject, tag: str, request: Any, api: str, timeout: float | None
) -> None:
    handle = subject.ready()
    check_example(subject, lambda: invoke(handle, api, tag, request, timeout))


@bounded(max_examples=30)
@given(
    tag=st.sampled_from(VALUE_TAGS),
    request=non_json_values,
    api=st.sampled_from(OBJECT_APIS),
    timeout=st.sampled_from([None, 30.0]),
)
def test_request_with_no_json_form(
    subject: Subject, tag: str, request: Any, api: str, timeout: float | None
) -> None:
    handle = subject.ready()
    check_example(subject, lambda: invoke(handle, api, tag, request, timeout))


@pytest.mark.parametrize("api", ["call", "acall"])
@pytest.mark.parametrize("tag", VALUE_TAGS)
def test_request_with_a_huge_int(subject: Subject, tag: str, api: str) -> None:
    handle = subject.ready()
    request = {"message": HUGE_INT} if tag == "echo" else [HUGE_INT]
    check_example(subject, lambda: invoke(handle, api, tag, request))


def is_unicode(text: str) -> bool:
    return not any("\ud800" <= char <= "\udfff" for char in text)


@bounded(max_examples=40)
@given(
    message=st.one_of(st.text(ANY_CHAR, max_size=30), odd_text).filter(is_unicode),
    api=st.sampled_from(("call", "call_json", "acall")),
)
def test_echo_answers_any_valid_text(subject: Subject, message: str, api: str) -> None:
    """Good input gets the right answer, the same in every kind (NUL, U+2028, emoji...)."""
    handle = subject.ready()
    request: Any = {"message": message}
    if api == "call_json":
        request = msgspec.json.encode(request)
    outcome = check_example(subject, lambda: invoke(handle, api, "echo", request))
    expected = {"message": message, "length": len(message.encode())}
    if api == "call_json":
        assert not isinstance(outcome, Failed), outcome
        outcome = msgspec.json.decode(outcome)
    assert outcome == expected


def depth_of(value: Any) -> int:
    """Nesting depth of a value made by ``nested`` (without recursion)."""
    depth = 0
    while isinstance(value, list | dict):
        value = value[0] if isinstance(value, list) else next(iter(value.values()))
        depth += 1
    return depth


def check_deep(subject: Subject, depth: int, shape: str, tag: str, api: str) -> None:
    handle = subject.ready()
    value = nested(depth, shape)
    request = {"message": value} if tag == "echo" else value
    outcome = check_example(subject, lambda: invoke(handle, api, tag, request))
    if tag == "echo":
        assert isinstance(outcome, Failed), "a nested message is not a str"
    elif not isinstance(outcome, Failed):
        assert depth_of(outcome) == depth, "the mirror changed the value"


DEEP = [
    pytest.param(100_000, shape, tag, api, id=f"100k-{shape}-{tag}-{api}")
    for shape, tag, api in [
        ("list", "mirror", "call"),
        ("dict", "amirror", "acall"),
        ("mixed", "echo", "call"),
        ("list", "echo", "acall"),
    ]
]


@pytest.mark.parametrize(("depth", "shape", "tag", "api"), DEEP)
def test_request_nested_100000_deep(
    subject: Subject, depth: int, shape: str, tag: str, api: str
) -> None:
    check_deep(subject, depth, shape, tag, api)


@bounded(max_examples=25)
@given(
    depth=st.integers(min_value=1, max_value=3000),
    shape=shapes,
    tag=st.sampled_from(VALUE_TAGS),
    api=st.sampled_from(OBJECT_APIS),
)
def test_request_nested_deep(subject: Subject, depth: int, shape: str, tag: str, api: str) -> None:
    check_deep(subject, depth, shape, tag, api)
