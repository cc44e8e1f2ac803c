"""The facade's value types against rustbridge's own (PyPI ``rustbridge``, the oracle):
``LogLevel``, ``LifecycleState``, ``PluginException``, ``ResponseEnvelope`` and
``FfiBuffer`` give the same values, strings and errors for the same inputs."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import pytest
import rustbridge

from plugbridge import ErrorCode
from plugbridge._native import abi
from plugbridge.rustbridge import (
    FfiBuffer,
    LifecycleState,
    LogLevel,
    PluginException,
    ResponseEnvelope,
)


def outcome(action: Callable[[], Any]) -> tuple[str, str]:
    """What ``action`` gives, comparable across the two packages: its repr, or the type
    name and text of what it raised."""
    try:
        return ("value", repr(action()))
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(LogLevel, rustbridge.LogLevel), (LifecycleState, rustbridge.LifecycleState)],
)
def test_enums_have_rustbridges_members_and_codes(ours: Any, theirs: Any) -> None:
    assert [(m.name, int(m)) for m in ours] == [(m.name, int(m)) for m in theirs]
    for code in (-1, 0, 3, 5, 6, 255):
        assert outcome(lambda c=code: int(ours.from_code(c))) == outcome(
            lambda c=code: int(theirs.from_code(c))
        )


def test_enums_are_int_enums_of_the_abi_numbers() -> None:
    assert LogLevel.WARN == 3 and isinstance(LogLevel.WARN, int)
    assert LifecycleState.STOPPED == 4 and isinstance(LifecycleState.STOPPED, int)
    assert LogLevel.from_code(1) is LogLevel.DEBUG
    assert LifecycleState.from_code(2) is LifecycleState.ACTIVE


@pytest.mark.parametrize("name", ["debug", "WARN", "Error", "off", "warning", "verbose", ""])
def test_log_level_from_string_as_rustbridge(name: str) -> None:
    ours = outcome(lambda: LogLevel.from_string(name).name)
    assert ours == outcome(lambda: rustbridge.LogLevel.from_string(name).name)
    if ours[0] == "ValueError":
        assert "Valid values: trace, debug, info, warn, error, off" in ours[1]


def test_log_level_to_string() -> None:
    assert [m.to_string() for m in LogLevel] == [m.to_string() for m in rustbridge.LogLevel]
    assert LogLevel.WARN.to_string() == "warn"


def test_lifecycle_state_predicates() -> None:
    for ours, theirs in zip(LifecycleState, rustbridge.LifecycleState, strict=True):
        assert ours.can_handle_requests() == theirs.can_handle_requests()
        assert ours.is_terminal() == theirs.is_terminal()
    assert [s.name for s in LifecycleState if s.is_terminal()] == ["STOPPED", "FAILED"]
    assert [s.name for s in LifecycleState if s.can_handle_requests()] == ["ACTIVE"]


@pytest.mark.parametrize("args", [("boom",), ("boom", 7), ("", 0), ('it\'s "quoted"', 13)])
def test_plugin_exception_reads_as_rustbridges(args: tuple[Any, ...]) -> None:
    ours, theirs = PluginException(*args), rustbridge.PluginException(*args)
    assert (str(ours), repr(ours), ours.message, ours.error_code, ours.args) == (
        str(theirs),
        repr(theirs),
        theirs.message,
        theirs.error_code,
        theirs.args,
    )
    assert isinstance(ours, Exception)


def test_plugin_exception_keywords_and_default_code() -> None:
    exc = PluginException(message="no", error_code=int(ErrorCode.TIMEOUT))
    assert str(exc) == "[10] no"
    assert PluginException("x").error_code == 1


ENVELOPES = [
    '{"status":"success","payload":{"b":1,"a":[1,2,null]}}',
    '{"status":"success","payload":null}',
    '{"status":"success"}',
    '{"status":"error","error_code":7,"error_message":"handler failed"}',
    '{"status":"error","error_code":0}',
    '{"status":"error"}',
    '{"payload":3}',
    '{"status":"success","payload":"text","request_id":42}',
    "not json",
    "",
]


@pytest.mark.parametrize("text", ENVELOPES)
def test_response_envelope_as_rustbridge(text: str) -> None:
    def read(cls: Any) -> Any:
        envelope = cls.from_json(text)
        exc = envelope.to_exception()
        return (
            envelope.status,
            envelope.payload,
            envelope.error_code,
            envelope.error_message,
            envelope.request_id,
            envelope.is_success,
            envelope.get_payload_json(),
            (str(exc), exc.error_code),
            outcome(envelope.unwrap),
        )

    ours, theirs = (
        outcome(lambda: read(ResponseEnvelope)),
        outcome(lambda: read(rustbridge.ResponseEnvelope)),
    )
    assert ours == theirs
    if text in ("not json", ""):
        assert ours[0] == "PluginException"
        assert ours[1].startswith("[1] Failed to parse response JSON: ")


def test_response_envelope_from_bytes_and_fields() -> None:
    envelope = ResponseEnvelope.from_bytes('{"status":"success","payload":{"é":1}}'.encode())
    assert envelope == ResponseEnvelope(status="success", payload={"é": 1})
    assert envelope.unwrap() == {"é": 1}
    with pytest.raises(PluginException) as caught:
        ResponseEnvelope("error", error_code=6, error_message="nope").unwrap()
    assert (caught.value.error_code, caught.value.message) == (6, "nope")


def test_ffi_buffer_has_the_abi_layout() -> None:
    assert ctypes.sizeof(FfiBuffer) == ctypes.sizeof(abi.FfiBuffer)
    for name, _ in FfiBuffer._fields_:
        assert getattr(FfiBuffer, name).offset == getattr(abi.FfiBuffer, name).offset
        assert getattr(FfiBuffer, name).offset == getattr(rustbridge.FfiBuffer, name).offset


def test_ffi_buffer_methods() -> None:
    data = (ctypes.c_uint8 * 5)(*b"hi\xc3\xa9!")
    full = FfiBuffer(ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8)), 5, 5, 0)
    theirs = rustbridge.FfiBuffer(ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8)), 5, 5, 0)
    assert (full.get_bytes(), full.get_string(), full.is_empty(), full.is_error()) == (
        b"hi\xc3\xa9!",
        "hié!",
        False,
        False,
    )
    assert full.get_bytes() == theirs.get_bytes()
    assert full.get_string("latin-1") == theirs.get_string("latin-1")
    assert full.data[2] == 0xC3  # rustbridge's data field is an indexable uint8 pointer
    empty = FfiBuffer(None, 3, 0, 5)
    assert (empty.is_empty(), empty.is_error(), empty.get_bytes(), empty.get_string()) == (
        True,
        True,
        b"",
        "",
    )
    assert FfiBuffer(ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8)), 0, 5, 0).is_empty()


def test_the_public_names_are_rustbridges() -> None:
    """Every name rustbridge exports is exported here (``from rustbridge import X`` becomes
    ``from plugbridge.rustbridge import X``), and nothing else."""
    import plugbridge.rustbridge as facade

    assert sorted(facade.__all__) == sorted(rustbridge.__all__)
    assert all(hasattr(facade, name) for name in facade.__all__)


def test_every_public_method_of_rustbridge_is_here() -> None:
    """Same public methods and properties on each class, with the same parameters first
    (plugbridge's extras come after them, keyword-only)."""
    import inspect

    import plugbridge.rustbridge as facade

    for name in ("NativePlugin", "NativePluginLoader", "PluginConfig", "ResponseEnvelope"):
        ours, theirs = getattr(facade, name), getattr(rustbridge, name)
        public = [m for m in vars(theirs) if not m.startswith("_")]
        for member in public:
            assert hasattr(ours, member), f"{name}.{member}"
            theirs_member = inspect.getattr_static(theirs, member)
            if isinstance(theirs_member, staticmethod | classmethod) or inspect.isfunction(
                theirs_member
            ):
                ours_params = inspect.signature(getattr(ours, member)).parameters
                theirs_params = inspect.signature(getattr(theirs, member)).parameters
                positional = [p for p in ours_params.values() if p.kind != p.KEYWORD_ONLY]
                assert [p.name for p in positional] == list(theirs_params), f"{name}.{member}"
