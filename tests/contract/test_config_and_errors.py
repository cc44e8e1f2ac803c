"""PluginConfig validation, level names, and the stable error model."""

from __future__ import annotations

import pickle

import pytest

import plugbridge
from plugbridge import ErrorCode, LogLevel, PluginConfig

from ..conftest import HELLO

EXPECTED_CODES = {
    "InvalidState": 1,
    "InitializationFailed": 2,
    "ShutdownFailed": 3,
    "ConfigError": 4,
    "SerializationError": 5,
    "UnknownMessageType": 6,
    "HandlerError": 7,
    "PluginRuntimeError": 8,
    "Cancelled": 9,
    "Timeout": 10,
    "InternalError": 11,
    "FfiError": 12,
    "TooManyRequests": 13,
    "PluginCrashed": 14,
}


def upper_snake(name: str) -> str:
    return "".join("_" + c if c.isupper() and i else c for i, c in enumerate(name)).upper()


@pytest.mark.parametrize(("name", "code"), EXPECTED_CODES.items())
def test_error_classes_and_codes(name: str, code: int) -> None:
    cls = getattr(plugbridge, name)
    assert issubclass(cls, plugbridge.PluginError)
    assert cls.code == code
    assert ErrorCode[upper_snake(name)] == code
    error = cls("something happened")
    assert error.message == "something happened"
    assert str(code) in str(error)
    assert pickle.loads(pickle.dumps(error)).message == "something happened"


def test_enums() -> None:
    assert [m.name for m in LogLevel] == ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"]
    assert list(LogLevel) == list(range(6))
    assert [m.name for m in plugbridge.LifecycleState] == [
        "INSTALLED", "STARTING", "ACTIVE", "STOPPING", "STOPPED", "FAILED",
    ]  # fmt: skip
    assert list(plugbridge.LifecycleState) == list(range(6))


def test_config_defaults_and_dict_form() -> None:
    config = PluginConfig()
    assert (config.log_level, config.max_concurrent_ops, config.shutdown_timeout) == (
        LogLevel.INFO,
        1000,
        5.0,
    )
    assert config.call_timeout is None and config.worker_threads is None and config.data == {}
    from_dict = PluginConfig.coerce({"log_level": "Debug", "data": {"k": 1}, "worker_threads": 2})
    assert from_dict.log_level is LogLevel.DEBUG and from_dict.data == {"k": 1}


@pytest.mark.parametrize(
    "bad",
    [
        {"bogus": 1},
        {"max_concurrent_ops": -1},
        {"shutdown_timeout": -0.5},
        {"call_timeout": -1},
        {"worker_threads": -2},
        {"log_level": "verbose"},
        {"log_level": 9},
        {"max_concurrent_ops": "many"},
        {"data": {"no JSON form": object()}},
        {"init_params": [1, 2]},
    ],
)
def test_bad_config_is_config_error(bad: dict[str, object]) -> None:
    with pytest.raises(plugbridge.ConfigError) as info:
        plugbridge.load(HELLO, config=bad)
    assert info.value.code == 4


def test_bad_load_arguments() -> None:
    with pytest.raises(plugbridge.ConfigError, match="isolation"):
        plugbridge.load(HELLO, isolation="thread")  # type: ignore[arg-type]
    with pytest.raises(plugbridge.ConfigError, match="callable"):
        plugbridge.load(HELLO, log_callback="print")  # type: ignore[arg-type]
    with pytest.raises(plugbridge.ConfigError):
        plugbridge.load(HELLO, config=42)  # type: ignore[arg-type]


def test_level_names_are_case_insensitive_everywhere() -> None:
    with plugbridge.load(HELLO, config={"log_level": "WaRn"}) as plugin:
        assert plugin.log_level is LogLevel.WARN
        plugin.set_log_level("Trace")
        assert plugin.log_level is LogLevel.TRACE
        with pytest.raises(plugbridge.ConfigError):
            plugin.set_log_level("chatty")
        assert plugin.log_level is LogLevel.TRACE


def test_public_api_is_exported() -> None:
    for name in (
        "load",
        "Plugin",
        "PluginContext",
        "handler",
        "PluginConfig",
        "PluginHandle",
        "LogLevel",
        "LifecycleState",
        "ErrorCode",
        "PluginError",
        *EXPECTED_CODES,
    ):
        assert name in plugbridge.__all__
        assert hasattr(plugbridge, name)
