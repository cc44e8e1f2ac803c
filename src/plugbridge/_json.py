"""JSON at the boundaries: one encoder, one decoder, one error for each way it can fail."""

from __future__ import annotations

from typing import Any

import msgspec

from ._errors import SerializationError

_JSON_ENCODER = msgspec.json.Encoder()
_JSON_DECODER = msgspec.json.Decoder()
encode_unchecked = _JSON_ENCODER.encode
"""The encoder itself, for hot paths that map its ``TypeError``/``EncodeError`` themselves."""


def to_builtins(value: Any) -> Any:
    """A value as JSON builtins; ``SerializationError`` if it has no JSON form."""
    try:
        return msgspec.to_builtins(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise SerializationError(f"value is not JSON-serializable: {exc}") from None


def encode_json(value: Any) -> bytes:
    try:
        return _JSON_ENCODER.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise SerializationError(f"value is not JSON-serializable: {exc}") from None


def decode_json(payload: bytes | str) -> Any:
    try:
        return _JSON_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise SerializationError(f"not valid JSON: {exc}") from None
