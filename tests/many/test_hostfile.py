"""The host file: strict validation (file, table and key in every error), defaults, paths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import ConfigError, LogLevel, PluginHost
from plugbridge._hostfile import read_host_file

from .conftest import echo_plugin


@pytest.fixture
def plugin_file(tmp_path: Path) -> Path:
    path = tmp_path / "hello_plugin.py"
    path.write_text(echo_plugin("hello"))
    return path


@pytest.mark.parametrize(
    ("table", "plugin", "key", "detail"),
    [
        ('[plugins.hello]\nsorce = "hello_plugin.py"', "hello", "sorce", "did you mean 'source'"),
        (
            '[plugins.hello]\nsource = "hello_plugin.py"\nmax_concurrent_ops = "many"',
            "hello",
            "max_concurrent_ops",
            "must be an int, not str",
        ),
        (
            '[plugins.hello]\nsource = "hello_plugin.py"\nreplicas = "two"',
            "hello",
            "replicas",
            "must be an integer, not a string",
        ),
        ("[plugins.hello]\nsource = 3", "hello", "source", "must be a string, not an integer"),
        (
            '[plugins.hello]\nsource = "hello_plugin.py"\nrequired = "yes"',
            "hello",
            "required",
            "must be a boolean",
        ),
        (
            '[plugins.hello]\nsource = "hello_plugin.py"\nentry_point = "hello"',
            "hello",
            "entry_point",
            "give exactly one",
        ),
        ('[plugins.hello]\nlog_level = "debug"', "hello", "source", "is missing"),
        ('[plugins.hello]\nsource = "no_such_plugin.py"', "hello", "source", "not found"),
        (
            '[plugins.hello]\nsource = "hello_plugin.py"\nlog_level = "loud"',
            "hello",
            "log_level",
            "unknown log level 'loud'",
        ),
        (
            '[plugins.hello]\nsource = "hello_plugin.py"\nshutdown_timeout = -1',
            "hello",
            "shutdown_timeout",
            "non-negative",
        ),
        (
            '[plugins.hello]\nsource = "hello_plugin.py"\nreplicas = 2',
            "hello",
            "replicas",
            "isolation='process'",
        ),
        (
            '[plugins.hello]\nsource = "hello_plugin.py"\nisolation = "thread"',
            "hello",
            "isolation",
            "must be one of inprocess, process",
        ),
        (
            '[plugins.hello]\nsource = "hello_plugin.py"\ntrusted_keys = ["keys/none.pub"]',
            "hello",
            "trusted_keys",
            "none.pub",
        ),
        (
            '[plugins.hello]\nentry_point = "no-such-entry-point"',
            "hello",
            "entry_point",
            "no installed distribution advertises",
        ),
        (
            '[defaults]\nmax_concurent_ops = 3\n[plugins.hello]\nsource = "hello_plugin.py"',
            "defaults",
            "max_concurent_ops",
            "did you mean 'max_concurrent_ops'",
        ),
        ("[plugins]\nhello = 3", "hello", "", "must be a table, not an integer"),
    ],
)
def test_every_error_names_the_file_the_plugin_and_the_key(  # noqa: PLR0917
    host_file: Callable[..., Path],
    plugin_file: Path,
    table: str,
    plugin: str,
    key: str,
    detail: str,
) -> None:
    path = host_file(table)
    with pytest.raises(ConfigError) as raised:
        PluginHost.from_file(path)
    message = raised.value.message
    assert message.startswith(f"{path}: ")
    assert (f"[plugins.{plugin}]" if plugin != "defaults" else "[defaults]") in message
    assert f"'{key}'" in message or not key
    assert detail in message
    assert "\n" not in message


def test_toml_syntax_error_names_the_file_and_the_line(host_file: Callable[..., Path]) -> None:
    path = host_file('[plugins.hello]\nsource = "a.py"\nlog_level = \n')
    with pytest.raises(ConfigError) as raised:
        PluginHost.from_file(path)
    assert raised.value.message.startswith(f"{path}: not valid TOML")
    assert "line 3" in raised.value.message


def test_a_missing_host_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read the host file"):
        PluginHost.from_file(tmp_path / "nope.toml")


def test_unknown_top_level_table(host_file: Callable[..., Path]) -> None:
    path = host_file('[plugin.hello]\nsource = "a.py"\n')
    with pytest.raises(ConfigError, match="unknown top-level key 'plugin'"):
        read_host_file(path)


def test_defaults_apply_under_every_plugin_and_a_plugin_overrides_them(
    host_file: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "a.py").write_text(echo_plugin("a"))
    (tmp_path / "b.py").write_text(echo_plugin("b"))
    path = host_file(
        """
        [defaults]
        log_level = "debug"
        max_concurrent_ops = 7
        data = { greeting = "Hello" }

        [plugins.a]
        source = "a.py"

        [plugins.b]
        source = "b.py"
        log_level = "warn"
        data = { greeting = "Hi", extra = 1 }
        """
    )
    with PluginHost.from_file(path) as host:
        assert host["a"].log_level is LogLevel.DEBUG
        assert host["b"].log_level is LogLevel.WARN
        assert host["a"].config.max_concurrent_ops == 7
        assert host["b"].config.max_concurrent_ops == 7
        assert host["a"].call("data") == {"greeting": "Hello"}
        assert host["b"].call("data") == {"greeting": "Hi", "extra": 1}  # replaced, not merged


def test_a_plugins_entry_point_replaces_a_default_source(
    host_file: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "a.py").write_text(echo_plugin("a"))
    (tmp_path / "b.py").write_text(echo_plugin("b"))
    path = host_file('[defaults]\nsource = "a.py"\n[plugins.a]\n[plugins.b]\nsource = "b.py"\n')
    specs = {spec.name: spec for spec in read_host_file(path).plugins}
    assert specs["a"].source == str(tmp_path / "a.py")
    assert specs["b"].source == str(tmp_path / "b.py")


def test_relative_paths_are_relative_to_the_host_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_file: Callable[..., Path]
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "filed.py").write_text(echo_plugin("filed"))
    package = plugins / "packaged"
    package.mkdir()
    (package / "__init__.py").write_text(echo_plugin("packaged"))
    conf = tmp_path / "conf" / "deep"  # not as deep as the working directory below
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the file, never to the working directory
    path = host_file(
        """
        [plugins.filed]
        source = "../../plugins/filed.py"

        [plugins.packaged]
        source = "../../plugins/packaged"
        """,
        where=conf,
    )
    with PluginHost.from_file(path) as host:
        assert host["filed"].call("whoami")["name"] == "filed"
        assert host["packaged"].call("whoami")["name"] == "packaged"
        sources = {status.name: status.source for status in host.status()}
    assert sources == {"filed": str(plugins / "filed.py"), "packaged": str(plugins / "packaged")}


def test_an_importable_name_is_not_taken_for_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_file: Callable[..., Path]
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "dotted_echo.py").write_text(echo_plugin("dotted"))
    monkeypatch.syspath_prepend(str(lib))
    path = host_file('[plugins.dotted]\nsource = "dotted_echo:EchoPlugin"\n', where=tmp_path / "c")
    assert read_host_file(path).plugins[0].source == "dotted_echo:EchoPlugin"
    with PluginHost.from_file(path) as host:
        assert host["dotted"].call("echo", 5) == 5


def test_relative_trusted_key_paths_are_relative_to_the_host_file(
    tmp_path: Path, host_file: Callable[..., Path], plugin_file: Path
) -> None:
    from plugbridge._bundle.minisign import generate

    keys = tmp_path / "keys"
    keys.mkdir()
    generate()[1].dump(keys / "release.pub")
    path = host_file(
        '[defaults]\ntrusted_keys = "keys/release.pub"\n'
        f'[plugins.hello]\nsource = "{plugin_file.name}"\n'
    )
    spec = read_host_file(path).plugins[0]
    assert spec.trusted_keys == (str(keys / "release.pub"),)


def test_an_optional_plugins_missing_source_is_not_a_file_error(
    host_file: Callable[..., Path],
) -> None:
    path = host_file('[plugins.later]\nsource = "later.py"\nrequired = false\n')
    spec = read_host_file(path).plugins[0]
    assert spec.required is False
    assert spec.source is not None
    assert spec.source.endswith("later.py")


def test_add_takes_the_keys_of_a_table_and_checks_them_the_same_way(plugin_file: Path) -> None:
    with PluginHost(defaults={"log_level": "debug"}) as host:
        with pytest.raises(ConfigError, match=r"PluginHost.add: \[plugins.x\] key 'replicas'"):
            host.add("x", plugin_file, replicas=2)
        with pytest.raises(ConfigError, match="config takes PluginConfig keys only"):
            host.add("x", plugin_file, config={"isolation": "process"})
        with pytest.raises(ConfigError, match=r"\[plugins.x\] key 'max_concurrent_ops'"):
            host.add("x", plugin_file, config={"max_concurrent_ops": -1})
        handle = host.add("x", plugin_file, config={"max_concurrent_ops": 3})
        assert handle.log_level is LogLevel.DEBUG  # the host's defaults
        assert handle.config.max_concurrent_ops == 3
        config = plugbridge.PluginConfig(log_level=LogLevel.WARN)
        assert host.add("y", plugin_file, config=config).log_level is LogLevel.WARN
    with pytest.raises(ConfigError, match=r"PluginHost: defaults unknown key 'sorce'"):
        PluginHost(defaults={"sorce": "x"})


def test_a_plugins_ray_options_need_ray_isolation(
    host_file: Callable[..., Path], plugin_file: Path
) -> None:
    path = host_file(
        '[plugins.hello]\nsource = "hello_plugin.py"\nisolation = "process"\n'
        "ray = { num_cpus = 1 }\n"
    )
    with pytest.raises(ConfigError) as raised:
        read_host_file(path)
    message = raised.value.message
    assert message.startswith(f"{path}: [plugins.hello] key 'ray'"), message
    assert "isolation='ray'" in message, message
    with PluginHost() as host:
        with pytest.raises(ConfigError, match="key 'ray'"):
            host.add("hello", plugin_file, isolation="process", ray={"num_cpus": 1})
        assert "hello" not in host
    # A [defaults] ray table is for the plugins that run on Ray only.
    shared = host_file(
        '[defaults]\nray = { num_cpus = 1 }\n[plugins.hello]\nsource = "hello_plugin.py"\n'
        '[plugins.far]\nsource = "hello_plugin.py"\nisolation = "ray"\n'
    )
    hello, far = read_host_file(shared).plugins
    assert hello.ray is None
    assert far.ray == {"num_cpus": 1}


def test_a_ray_table_reaches_the_ray_actor(
    host_file: Callable[..., Path], plugin_file: Path
) -> None:
    # Options plugbridge keeps for itself are refused where the actor is made, before any
    # Ray starts: seeing that refusal proves the table got there.
    path = host_file(
        '[plugins.far]\nsource = "hello_plugin.py"\nisolation = "ray"\nray = { max_restarts = 3 }\n'
    )
    with pytest.raises(ConfigError, match=r"ray_options\['max_restarts'\]"):
        PluginHost.from_file(path)
