"""Config parity with rustbridge: ``data`` as any JSON value (``null`` when there is none),
``init_params`` (sent only when set), and ``plugin_create_with_config`` preferred when the
library exports it, with the same config JSON as ``plugin_init``. The C hello plugin answers
``config.seen`` with the config JSON it was created and started with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import plugbridge

from .build import build_hello_c, private_copies_mapped, private_copies_on_disk

WIRE_BASE = {
    "log_level": "info",
    "max_concurrent_ops": 1000,
    "shutdown_timeout_ms": 5000,
    "worker_threads": None,
}


@pytest.fixture(scope="session")
def hello_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello_c(tmp_path_factory.mktemp("hello_c_config"))


@pytest.fixture(scope="session")
def hello_c_create_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library without plugin_create_with_config (only plugin_create)."""
    return build_hello_c(
        tmp_path_factory.mktemp("hello_c_no_cwc"), "-DHELLO_C_NO_CREATE_WITH_CONFIG"
    )


def seen(library: Path, isolation: str, config: dict[str, Any]) -> dict[str, Any]:
    with plugbridge.load(library, config=config, isolation=isolation) as plugin:  # type: ignore[arg-type]
        answer: dict[str, Any] = plugin.call("config.seen", {})
    return answer


@pytest.mark.ray_too
def test_create_with_config_sees_data_and_init_params(hello_c: Path, isolation: str) -> None:
    """A plugin that builds itself from its config sees ``data`` at creation, with exactly
    the JSON plugin_init gets next."""
    config = {"data": {"greeting": "hi", "n": [1, 2]}, "init_params": {"pool": 4}}
    expected = {**WIRE_BASE, "data": config["data"], "init_params": {"pool": 4}}
    answer = seen(hello_c, isolation, config)
    assert answer == {
        "created_with_config": True,
        "create_config": expected,
        "init_config": expected,
    }


def test_no_data_is_null_and_init_params_absent(hello_c: Path, isolation: str) -> None:
    """rustbridge's "no data" is ``null``: a PluginFactory builds itself with
    ``create_configured`` for anything else (and an empty object would fail it)."""
    for config in ({}, {"data": {}}, {"data": None}):
        answer = seen(hello_c, isolation, config)
        expected = {**WIRE_BASE, "data": None}  # no "init_params" key at all
        assert answer["create_config"] == expected, config
        assert answer["init_config"] == expected, config


@pytest.mark.parametrize("data", [[1, "two"], "text", 42, 2.5, True, {"nested": {"a": None}}])
def test_data_is_any_json_value(hello_c: Path, isolation: str, data: object) -> None:
    answer = seen(hello_c, isolation, {"data": data})
    assert answer["create_config"]["data"] == data
    assert answer["init_config"]["data"] == data


def test_empty_init_params_are_sent_once_set(hello_c: Path, isolation: str) -> None:
    answer = seen(hello_c, isolation, {"init_params": {}})
    assert answer["init_config"]["init_params"] == {}


def test_library_without_create_with_config_gets_the_config_at_init(
    hello_c_create_only: Path, isolation: str
) -> None:
    config = {"data": {"k": "v"}, "init_params": {"p": 1}, "log_level": "debug"}
    answer = seen(hello_c_create_only, isolation, config)
    assert answer == {
        "created_with_config": False,
        "create_config": None,
        "init_config": {**WIRE_BASE, "log_level": "debug", **config},
    }


@pytest.mark.ray_too
def test_reload_creates_with_the_config_again(hello_c: Path, isolation: str) -> None:
    config = {"data": {"v": 1}, "init_params": {"p": True}}
    with plugbridge.load(hello_c, config=config, isolation=isolation) as plugin:  # type: ignore[arg-type]
        plugin.set_log_level("warn")
        plugin.reload()
        answer = plugin.call("config.seen", {})
    expected = {**WIRE_BASE, "log_level": "warn", "data": {"v": 1}, "init_params": {"p": True}}
    assert answer["created_with_config"] is True
    assert answer["create_config"] == answer["init_config"] == expected


def test_create_with_config_returning_null_leaves_nothing_behind(
    hello_c: Path, isolation: str
) -> None:
    mapped = private_copies_mapped()
    with pytest.raises(plugbridge.InitializationFailed) as failed:
        plugbridge.load(hello_c, config={"data": {"fail_create": True}}, isolation=isolation)  # type: ignore[arg-type]
    assert failed.value.message == (
        "native plugin 'hello_c': plugin_init failed (plugin_create_with_config returned NULL)"
    )
    assert private_copies_mapped() == mapped
    assert private_copies_on_disk() == []


@pytest.mark.parametrize(
    "bad",
    [
        {"init_params": [1, 2]},
        {"init_params": "x"},
        {"init_params": {"no JSON form": object()}},
        {"data": {"no JSON form": object()}},
    ],
)
def test_bad_init_params_or_data_are_config_errors(hello_c: Path, bad: dict[str, object]) -> None:
    with pytest.raises(plugbridge.ConfigError):
        plugbridge.load(hello_c, config=bad)
    with pytest.raises(plugbridge.ConfigError):
        plugbridge.PluginConfig(**bad)  # type: ignore[arg-type]


PYTHON_PLUGIN = """
    from plugbridge import Plugin, handler

    class ConfigReader(Plugin):
        name = "config_reader"

        @handler("seen")
        def seen(self, ctx, req):
            return {"data": ctx.data, "init_params": ctx.config.init_params}
"""


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, {"data": {}, "init_params": None}),
        ({"data": [1, 2], "init_params": {"a": 1}}, {"data": [1, 2], "init_params": {"a": 1}}),
        ({"data": None}, {"data": None, "init_params": None}),
    ],
)
def test_python_plugins_see_data_and_init_params(
    write_plugin: Callable[..., Path],
    isolation: str,
    config: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    source = write_plugin(PYTHON_PLUGIN, name="config_reader.py")
    with plugbridge.load(source, config=config, isolation=isolation) as plugin:  # type: ignore[arg-type]
        assert plugin.call("seen") == expected


@pytest.mark.parametrize(("seconds", "ms"), [(1.001, 1001), (0.29, 290), (2.5, 2500)])
def test_shutdown_timeout_reaches_the_plugin_in_whole_milliseconds(
    hello_c: Path, seconds: float, ms: int
) -> None:
    """The nearest millisecond: 1.001 s is 1000.999… ms in floating point, and a truncation
    once sent 1000."""
    answer = seen(hello_c, "inprocess", {"shutdown_timeout": seconds})
    assert answer["init_config"]["shutdown_timeout_ms"] == ms
