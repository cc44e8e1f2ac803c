"""``call_json`` with any bytes-like or text: invalid UTF-8, invalid JSON, deep nesting."""

from __future__ import annotations

import array
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import Failed, Subject, bounded, check_example
from .strategies import INVALID_UTF8, Opaque, nested_json, raw_json, shapes

JSON_TAGS = ("mirror", "amirror", "echo")
FORMS = ("bytes", "bytearray", "memoryview", "strided-memoryview", "str")


def as_form(payload: bytes, form: str) -> Any:
    """``payload`` as one of the types ``call_json`` takes."""
    if form == "bytes":
        return payload
    if form == "bytearray":
        return bytearray(payload)
    if form == "memoryview":
        return memoryview(payload)
    if form == "strided-memoryview":  # every other byte of a doubled buffer: not contiguous
        return memoryview(bytes(b for byte in payload for b in (byte, 0)))[::2]
    assert form == "str", form
    return payload.decode("utf-8", "surrogateescape")  # invalid bytes become lone surrogates


def check_call_json(subject: Subject, tag: str, request: Any) -> None:
    handle = subject.ready()
    outcome = check_example(subject, lambda: handle.call_json(tag, request))
    if not isinstance(outcome, Failed):
        assert isinstance(outcome, str), type(outcome)
        msgspec.json.decode(outcome)  # an answer is valid JSON


@bounded(max_examples=60)
@given(payload=raw_json(), form=st.sampled_from(FORMS), tag=st.sampled_from(JSON_TAGS))
def test_any_raw_json(subject: Subject, payload: bytes, form: str, tag: str) -> None:
    check_call_json(subject, tag, as_form(payload, form))


def released_view() -> memoryview:
    view = memoryview(b'{"message":"ok"}')
    view.release()
    return view


ODD_REQUESTS = [
    pytest.param(lambda: b'{"message":"\xff"}', id="invalid-utf8-in-message"),
    pytest.param(lambda: '{"message":"\ud800"}', id="str-with-lone-surrogate"),
    pytest.param(lambda: b'{"message":"\xed\xa0\x80"}', id="cesu-surrogate"),
    pytest.param(lambda: b'{"message":"\\ud800"}', id="escaped-lone-surrogate"),
    pytest.param(released_view, id="released-memoryview"),
    pytest.param(lambda: memoryview(array.array("H", [0x7B7D])), id="uint16-memoryview"),
    pytest.param(lambda: memoryview(b"{}{}").cast("B", (2, 2)), id="2d-memoryview"),
    pytest.param(lambda: None, id="None"),
    pytest.param(lambda: 1, id="int"),
    pytest.param(lambda: {"message": "ok"}, id="dict"),
    pytest.param(Opaque, id="object"),
    pytest.param(lambda: b"x" * 10_000_000, id="10MB-garbage"),
    pytest.param(lambda: b'{"message":"' + b"\xff" * 1_000_000 + b'"}', id="1MB-invalid-utf8"),
]


@pytest.mark.parametrize("tag", JSON_TAGS)
@pytest.mark.parametrize("make", ODD_REQUESTS)
def test_odd_raw_request(subject: Subject, make: Any, tag: str) -> None:
    check_call_json(subject, tag, make())


@pytest.mark.parametrize("junk", INVALID_UTF8, ids=lambda b: b.hex())
def test_invalid_utf8_echoed_back(subject: Subject, junk: bytes) -> None:
    """The C echo hands the bytes back as they came: the answer must still be clean."""
    check_call_json(subject, "echo", b'{"message":"' + junk + b'"}')


def check_deep_json(subject: Subject, depth: int, shape: str, tag: str) -> None:
    text = nested_json(depth, shape)
    check_call_json(subject, tag, b'{"message":' + text + b"}" if tag == "echo" else text)


@pytest.mark.parametrize("tag", JSON_TAGS)
@pytest.mark.parametrize("shape", ["list", "dict", "mixed"])
def test_raw_json_nested_100000_deep(subject: Subject, shape: str, tag: str) -> None:
    check_deep_json(subject, 100_000, shape, tag)


@bounded(max_examples=25)
@given(
    depth=st.integers(min_value=1, max_value=3000),
    shape=shapes,
    tag=st.sampled_from(JSON_TAGS),
)
def test_raw_json_nested_deep(subject: Subject, depth: int, shape: str, tag: str) -> None:
    check_deep_json(subject, depth, shape, tag)
