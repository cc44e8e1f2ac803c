"""Hypothesis strategies for the public inputs of a handle: odd text, JSON, bytes, numbers."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import msgspec
from hypothesis import strategies as st

KNOWN_TAGS = ("echo", "mirror", "amirror", "test.sleep")

ANY_CHAR = st.one_of(st.characters(), st.characters(categories=["Cs"]))
"""Any code point, lone surrogates included (``st.characters()`` leaves them out)."""

ODD_STRINGS = (
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "a\udc80b",
    "\ud83d\ude00",  # a surrogate pair as two code points: not a character
    "\U0001f600",
    "\U0010ffff",
    "\ufeff",
    "\u2028\u2029",
    '"',
    "\\",
    "\\u0000",
    "\x7f\x1b",
    "é",
    "echo\x00",
    " echo",
)

odd_text = st.one_of(st.text(ANY_CHAR, max_size=12), st.sampled_from(ODD_STRINGS))

BIG_INTS = (
    2**31,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    -(2**64),
    10**30,
    -(10**30),
    10**400,
)
HUGE_INT = 10**5000
"""More digits than ``int -> str`` allows by default; Hypothesis cannot print it, so it is an
explicit case (``test_request_with_a_huge_int``)."""
ODD_FLOATS = (math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308)

json_ints = st.one_of(st.integers(), st.sampled_from(BIG_INTS))
json_floats = st.one_of(st.floats(), st.sampled_from(ODD_FLOATS))
json_scalars = st.one_of(st.none(), st.booleans(), json_ints, json_floats, odd_text)


def json_values(max_leaves: int = 16) -> st.SearchStrategy[Any]:
    """Values of every JSON shape, with odd scalars and odd (surrogate, NUL) keys."""
    return st.recursive(
        json_scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(odd_text, children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def nested(depth: int, shape: str, leaf: Any = 0) -> Any:
    """``leaf`` wrapped ``depth`` times: in lists, in dicts, or alternating (built without
    recursion, so a test can name a 100,000-deep value by its depth and shape)."""
    value = leaf
    for level in range(depth):
        in_list = shape == "list" or (shape == "mixed" and level % 2 == 1)
        value = [value] if in_list else {"k": value}
    return value


def nested_json(depth: int, shape: str) -> bytes:
    """The JSON text of ``nested(depth, shape)``, built without recursion."""
    if shape == "list":
        return b"[" * depth + b"0" + b"]" * depth
    if shape == "dict":
        return b'{"k":' * depth + b"0" + b"}" * depth
    opens, closes = [], []
    for level in range(depth):
        if level % 2:
            opens.append(b"[")
            closes.append(b"]")
        else:
            opens.append(b'{"k":')
            closes.append(b"}")
    return b"".join(reversed(opens)) + b"0" + b"".join(closes)


shapes = st.sampled_from(("list", "dict", "mixed"))


class Opaque:
    """An object with no JSON form."""

    def __repr__(self) -> str:
        return "Opaque()"


def self_containing_list() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


non_json_values = st.one_of(
    st.binary(max_size=8),
    st.builds(bytearray, st.binary(max_size=8)),
    st.frozensets(st.integers(), max_size=3),
    st.sets(st.integers(), max_size=3),
    st.tuples(json_scalars, json_scalars),
    st.complex_numbers(),
    st.builds(Opaque),
    st.builds(Decimal, st.sampled_from(["1.5", "NaN", "-Infinity", "1e999999"])),
    st.builds(Fraction, st.integers(), st.integers(min_value=1)),
    st.dictionaries(
        st.one_of(st.integers(), st.none(), st.tuples(st.integers())),
        json_scalars,
        min_size=1,
        max_size=2,
    ),
    st.builds(self_containing_list),
    st.just(type),
    st.just(print),
)
"""Python requests that have no JSON form (``call`` takes any object)."""


# -- raw JSON for call_json ------------------------------------------------------------------

INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc0\xaf",  # overlong '/'
    b"\xe0\x80\x80",  # overlong NUL
    b"\xed\xa0\x80",  # a UTF-8-encoded lone surrogate (CESU)
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\x80",
    b"\xe2\x82",  # truncated
)


def json_bytes_with_junk() -> st.SearchStrategy[bytes]:
    """Well-formed JSON but for bytes that are not UTF-8, inside a string or a key."""
    junk = st.one_of(st.sampled_from(INVALID_UTF8), st.binary(min_size=1, max_size=6))
    return st.one_of(
        st.builds(lambda j: b'{"message":"' + j + b'"}', junk),
        st.builds(lambda j: b'{"' + j + b'":"x","message":"m"}', junk),
        st.builds(lambda j: b'"' + j + b'"', junk),
        st.builds(lambda j: b'["a","' + j + b'"]', junk),
    )


MALFORMED_JSON = (
    b"",
    b" ",
    b"{",
    b"}",
    b"[1,]",
    b'{"message":}',
    b"NaN",
    b"Infinity",
    b"-",
    b"01",
    b"1e99999",
    b'{"message":"a"} trailing',
    b'{"message":"\\ud800"}',  # an escaped lone surrogate: valid JSON, not valid Unicode
    b'{"message":"\\udc00\\ud800"}',
    b'{"message":"\\u0000"}',
    b'{"message":"a\x00b"}',  # a raw NUL inside a string
    b'{"message":"x"}\x00',
    b"\xef\xbb\xbf{}",  # a byte-order mark
    b'{"message":"x","message":"y"}',
    b"1" * 5000,
    b'{"a":' + b"9" * 5000 + b"}",
)


def raw_json() -> st.SearchStrategy[bytes]:
    """Bytes for ``call_json``: valid JSON, JSON with junk bytes, malformed JSON, noise."""

    def encoded(value: Any) -> bytes | None:
        try:
            return msgspec.json.encode(value)
        except (TypeError, ValueError, OverflowError, RecursionError):
            return None

    valid = json_values(max_leaves=8).map(encoded).filter(lambda b: b is not None)
    return st.one_of(
        valid,
        json_bytes_with_junk(),
        st.sampled_from(MALFORMED_JSON),
        st.binary(max_size=24),
    )


timeouts = st.one_of(
    st.sampled_from(
        [
            None,
            0,
            0.0,
            -0.0,
            1e-9,
            5e-324,
            1e-3,
            -1,
            -1e-9,
            math.nan,
            math.inf,
            -math.inf,
            1e9,
            1e300,
            1.7976931348623157e308,
            2**63,
            10**400,
            True,
            False,
            "1",
            "",
            b"1",
            [1],
            Decimal("1"),
            Fraction(1, 2),
            complex(1, 0),
        ]
    ),
    st.floats(),
    st.integers(),
)
"""Timeouts: zero, tiny, negative, nan, inf, huge, and not numbers at all."""


odd_values = st.one_of(
    st.none(),
    st.booleans(),
    json_ints,
    json_floats,
    odd_text,
    st.binary(max_size=4),
    st.lists(json_scalars, max_size=2),
    st.dictionaries(odd_text, json_scalars, max_size=2),
    st.builds(Opaque),
    st.sampled_from([Decimal("1"), Fraction(1, 3), complex(0, 1), object, ..., "debug", "INFO"]),
)
"""Values for config fields and other settings."""
