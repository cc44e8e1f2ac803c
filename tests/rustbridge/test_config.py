"""The facade's ``PluginConfig``: its builder writes exactly rustbridge's JSON, and a loaded
plugin receives the settings it stands for (the C example answers ``config.seen`` with the
config JSON it was started with), as rustbridge's own loader hands them over."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rustbridge

import plugbridge
from plugbridge.rustbridge import LogLevel, NativePluginLoader, PluginConfig, PluginException

Build = Callable[[Any], Any]

CHAINS: dict[str, Build] = {
    "defaults": lambda cls: cls.defaults(),
    "new": lambda cls: cls(),
    "everything": lambda cls: (
        cls.defaults()
        .log_level("WARN")
        .worker_threads(4)
        .max_concurrent_ops(500)
        .shutdown_timeout_ms(2500)
        .set("greeting", "héllo")
        .set("nested", {"a": [1, 2.5, None, True]})
        .init_param("pool", 4)
        .init_param("seed", "x")
    ),
    "init_params replace": lambda cls: (
        cls.defaults().init_param("gone", 1).init_params({"kept": [1]})
    ),
    "empty init_params": lambda cls: cls.defaults().init_params({}),
    "unknown level kept": lambda cls: cls.defaults().log_level("Verbose"),
    "set overwrites": lambda cls: cls.defaults().set("k", 1).set("k", 2),
    "zeros": lambda cls: cls.defaults().worker_threads(0).max_concurrent_ops(0),
}


@pytest.mark.parametrize("chain", CHAINS.values(), ids=CHAINS.keys())
def test_builder_writes_rustbridges_json(chain: Build) -> None:
    ours, theirs = chain(PluginConfig), chain(rustbridge.PluginConfig)
    assert ours.to_json_bytes() == theirs.to_json_bytes()
    assert ours.to_dict() == theirs.to_dict()
    assert json.loads(ours.to_json_bytes()) == ours.to_dict()


def test_log_level_from_either_enum() -> None:
    """Each ``LogLevel``'s level is written by name: the facade's (as rustbridge writes
    its own), and plugbridge's or rustbridge's own members, read by their number."""
    for level in LogLevel:
        expected = rustbridge.PluginConfig().log_level(rustbridge.LogLevel(level)).to_dict()
        assert PluginConfig().log_level(level).to_dict() == expected
        assert PluginConfig().log_level(rustbridge.LogLevel(level)).to_dict() == expected
        assert PluginConfig().log_level(plugbridge.LogLevel(level)).to_dict() == expected


def test_builder_methods_chain_on_the_same_object() -> None:
    config = PluginConfig.defaults()
    chained = [
        config.worker_threads(2),
        config.log_level(LogLevel.DEBUG),
        config.max_concurrent_ops(3),
        config.shutdown_timeout_ms(4),
        config.set("a", 1),
        config.init_param("b", 2),
        config.init_params({"c": 3}),
    ]
    assert all(step is config for step in chained)
    assert PluginConfig.defaults() is not PluginConfig.defaults()


def test_init_params_are_copied() -> None:
    params = {"a": 1}
    config = PluginConfig().init_params(params)
    params["b"] = 2
    assert config.to_dict()["init_params"] == {"a": 1}


def test_load_settings_are_plugbridges_config() -> None:
    config = CHAINS["everything"](PluginConfig)
    core = plugbridge.PluginConfig(**config.load_settings())
    assert core.log_level is plugbridge.LogLevel.WARN
    assert (core.max_concurrent_ops, core.shutdown_timeout, core.worker_threads) == (500, 2.5, 4)
    assert core.data == {"greeting": "héllo", "nested": {"a": [1, 2.5, None, True]}}
    assert core.init_params == {"pool": 4, "seed": "x"}
    defaults = plugbridge.PluginConfig(**PluginConfig.defaults().load_settings())
    assert defaults == plugbridge.PluginConfig()


@pytest.mark.parametrize(
    ("name", "level"),
    [("trace", "TRACE"), ("error", "ERROR"), ("warning", "WARN"), ("verbose", "INFO")],
)
def test_load_settings_level_as_the_runtime_reads_it(name: str, level: str) -> None:
    """A level name rustbridge's runtime does not know runs at ``info``."""
    settings = PluginConfig().log_level(name).load_settings()
    assert settings["log_level"] is plugbridge.LogLevel[level]


def init_config(plugin: Any) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(plugin.call("config.seen", "{}"))["init_config"]
    return answer


def test_plugin_receives_what_rustbridge_hands_it(
    hello_c: Path, oracle_copy: Path, isolation: str
) -> None:
    """Every setting reaches the plugin as rustbridge's loader sends it."""
    config = CHAINS["everything"](PluginConfig)
    with NativePluginLoader.load_with_config(hello_c, config, isolation=isolation) as ours:
        got = init_config(ours)
    with rustbridge.NativePluginLoader.load_with_config(
        oracle_copy, CHAINS["everything"](rustbridge.PluginConfig)
    ) as theirs:
        expected = init_config(theirs)
    assert got == expected == json.loads(config.to_json_bytes()) | {"log_level": "warn"}


def test_plugin_receives_defaults(hello_c: Path, oracle_copy: Path) -> None:
    """The defaults as rustbridge sends them, but for two deliberate differences: no data
    is ``null`` (not ``{}``: a rustbridge PluginFactory would build itself from an empty
    object), and ``worker_threads`` is sent as ``null`` when unset."""
    with NativePluginLoader.load(hello_c) as ours:
        got = init_config(ours)
    with rustbridge.NativePluginLoader.load(oracle_copy) as theirs:
        expected = init_config(theirs)
    assert expected == {
        "data": {},
        "log_level": "info",
        "max_concurrent_ops": 1000,
        "shutdown_timeout_ms": 5000,
    }
    assert got == expected | {"data": None, "worker_threads": None}


def test_unknown_level_starts_at_info(hello_c: Path) -> None:
    """rustbridge's runtime reads a level it does not know as ``info``; so does the facade
    (the C example itself would refuse the name)."""
    config = PluginConfig.defaults().log_level("verbose")
    with NativePluginLoader.load_with_config(hello_c, config) as plugin:
        assert init_config(plugin)["log_level"] == "info"


@pytest.mark.parametrize(
    ("chain", "key"),
    [
        (lambda c: c.max_concurrent_ops(-1), "max_concurrent_ops"),
        (lambda c: c.worker_threads(0), "worker_threads"),
        (lambda c: c.shutdown_timeout_ms(-5), "shutdown_timeout"),
        (lambda c: c.set("bad", object()), "data"),
    ],
)
def test_values_plugbridge_refuses_fail_the_load(hello_c: Path, chain: Build, key: str) -> None:
    """The builder checks nothing (as rustbridge's); the load refuses with ``ConfigError``'s
    code and message, and leaves nothing behind."""
    with pytest.raises(PluginException) as caught:
        NativePluginLoader.load_with_config(hello_c, chain(PluginConfig.defaults()))
    assert caught.value.error_code == int(plugbridge.ErrorCode.CONFIG_ERROR)
    assert key in caught.value.message
