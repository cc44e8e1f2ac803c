"""Response envelopes of the rustbridge C ABI: every form a library may answer."""

from __future__ import annotations

import pytest

import plugbridge
from plugbridge._native.envelope import decode_json, decode_value, error_from_response


def test_success_envelope() -> None:
    data = b'{"status":"success","payload":{"a":[1,2.5,null,"x"]}}'
    assert decode_value(0, data) == {"a": [1, 2.5, None, "x"]}
    assert decode_json(0, data) == b'{"a":[1,2.5,null,"x"]}'


def test_success_without_payload_is_null() -> None:
    assert decode_value(0, b'{"status":"success"}') is None
    assert decode_json(0, b'{"status":"success"}') == b"null"


@pytest.mark.parametrize(
    ("code", "data", "error", "message"),
    [
        (
            6,
            b'{"status":"error","error_code":6,"error_message":"no handler for x"}',
            plugbridge.UnknownMessageType,
            "no handler for x",
        ),
        (7, b"handler exploded", plugbridge.HandlerError, "handler exploded"),
        (12, b"", plugbridge.FfiError, "native call failed (code 12)"),
        (13, b'{"status":"error","error_message":"busy"}', plugbridge.TooManyRequests, "busy"),
        (99, b"from the future", plugbridge.InternalError, "unknown error code 99"),
        (5, b"{not json", plugbridge.SerializationError, "{not json"),
    ],
)
def test_error_responses(
    code: int, data: bytes, error: type[plugbridge.PluginError], message: str
) -> None:
    raised = error_from_response(code, data)
    assert type(raised) is error
    assert message in raised.message
    with pytest.raises(error):
        decode_value(code, data)
    with pytest.raises(error):
        decode_json(code, data)


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b'{"payload": 1}', b'{"status":"pending","payload":1}', b"[1]"],
)
def test_code_zero_without_a_success_envelope_breaks_the_abi(data: bytes) -> None:
    with pytest.raises(plugbridge.FfiError):
        decode_value(0, data)
    with pytest.raises(plugbridge.FfiError):
        decode_json(0, data)


def test_code_zero_with_an_error_envelope_raises_its_error() -> None:
    data = b'{"status":"error","error_code":7,"error_message":"boom"}'
    with pytest.raises(plugbridge.HandlerError, match="boom"):
        decode_value(0, data)


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "payload",
    [b'{"text":"bad \xff\xfe here"}', b'"\xed\xa0\x80"', DEEP],
    ids=["invalid-utf8", "encoded-surrogate", "nested-100000-deep"],
)
def test_a_payload_json_cannot_carry_is_a_serialization_error(payload: bytes) -> None:
    data = b'{"status":"success","payload":' + payload + b"}"
    with pytest.raises(plugbridge.SerializationError, match="response"):
        decode_value(0, data)
    if payload is DEEP:  # raw JSON is passed on unread, except for its nesting
        with pytest.raises(plugbridge.SerializationError, match="nested too deeply"):
            decode_json(0, data)
    else:
        assert decode_json(0, data) == payload  # the handle checks the text it hands out


@pytest.mark.parametrize(
    ("code", "data", "error", "message"),
    [
        (
            7,
            b'{"status":"error","error_code":7,"error_message":"bad \xff here"}',
            plugbridge.HandlerError,
            "bad \ufffd here",
        ),
        (12, b"bare \xc3\x28 message", plugbridge.FfiError, "bare \ufffd( message"),
        (7, b'{"status":"error","error_message":' + DEEP + b"}", plugbridge.HandlerError, "[[["),
    ],
)
def test_error_messages_are_read_whatever_their_bytes(
    code: int, data: bytes, error: type[plugbridge.PluginError], message: str
) -> None:
    raised = error_from_response(code, data)
    assert type(raised) is error
    assert message in raised.message
