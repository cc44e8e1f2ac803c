"""``NativePluginLoader`` and ``open_native``: rustbridge's four ways to load a library, its
search order and errors, the log callback in the facade's terms, plugbridge's keyword-only
extras, and ``has_binary_transport`` as the library (bare or bundled) has it, in both
isolation modes."""

from __future__ import annotations

import json
import os
import platform
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import rustbridge

import plugbridge
from plugbridge._bundle.minisign import generate
from plugbridge._bundle.platform import current_platform
from plugbridge._bundle.writer import LibraryInput, write_bundle
from plugbridge.rustbridge import (
    LifecycleState,
    LogLevel,
    NativePlugin,
    NativePluginLoader,
    PluginConfig,
    PluginException,
)
from plugbridge.rustbridge._loader import open_native

INIT_FAILED = int(plugbridge.ErrorCode.INITIALIZATION_FAILED)


class Records:
    """A log callback keeping (level, target, message), thread-safely."""

    def __init__(self) -> None:
        self.records: list[tuple[Any, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, level: Any, target: str, message: str) -> None:
        with self._lock:
            self.records.append((level, target, message))

    def messages(self) -> list[str]:
        with self._lock:
            return [message for _, _, message in self.records]


def echo(plugin: Any, message: str) -> Any:
    return json.loads(plugin.call("echo", json.dumps({"message": message})))


def test_load_gives_an_active_plugin(hello_c: Path, isolation: str) -> None:
    plugin = NativePluginLoader.load(hello_c, isolation=isolation)
    try:
        assert isinstance(plugin, NativePlugin)
        assert plugin.state is LifecycleState.ACTIVE
        assert echo(plugin, "hi") == {"message": "hi", "length": 2}
    finally:
        assert plugin.shutdown() is True


def test_load_accepts_str_paths(hello_c: Path) -> None:
    with NativePluginLoader.load(str(hello_c)) as plugin:
        assert echo(plugin, "str") == {"message": "str", "length": 3}


def test_log_callback_gets_the_facades_levels_as_rustbridge_does(
    hello_c: Path, oracle_copy: Path, isolation: str
) -> None:
    """Same records as rustbridge's loader delivers for the same calls, and the level is the
    facade's ``LogLevel`` (not plugbridge's)."""
    config = PluginConfig.defaults().log_level(LogLevel.DEBUG)
    ours = Records()
    with NativePluginLoader.load_with_config(hello_c, config, ours, isolation=isolation) as p:
        echo(p, "logged")
    theirs = Records()
    oracle = rustbridge.PluginConfig.defaults().log_level(rustbridge.LogLevel.DEBUG)
    with rustbridge.NativePluginLoader.load_with_config(oracle_copy, oracle, theirs) as p:
        echo(p, "logged")
    assert [(int(level), t, m) for level, t, m in ours.records] == [
        (int(level), t, m) for level, t, m in theirs.records
    ]
    assert ours.records[1] == (LogLevel.DEBUG, "hello_c", "Handling echo request: logged")
    assert all(type(level) is LogLevel for level, _, _ in ours.records)


def test_two_plugins_of_one_path_keep_their_own_logging(hello_c: Path, isolation: str) -> None:
    """rustbridge's loader maps a path once: the second plugin's callback and level would
    take over the first's. Here each plugin has its own copy of the library."""
    a_log, b_log = Records(), Records()
    debug = PluginConfig.defaults().log_level("debug")
    a = NativePluginLoader.load_with_config(hello_c, debug, a_log, isolation=isolation)
    b = NativePluginLoader.load_with_config(
        hello_c, PluginConfig.defaults().log_level("error"), b_log, isolation=isolation
    )
    try:
        echo(a, "to-a")
        echo(b, "to-b")
        assert "Handling echo request: to-a" in a_log.messages()
        assert not any("to-b" in m for m in a_log.messages() + b_log.messages())
        b.set_log_level(LogLevel.DEBUG)
        echo(b, "to-b-2")
        assert "Handling echo request: to-b-2" in b_log.messages()
        assert not any("to-b" in m for m in a_log.messages())
    finally:
        a.close()
        b.close()


def test_a_raising_callback_breaks_nothing(
    hello_c: Path, isolation: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As rustbridge: the failure is printed to stderr, the plugin goes on."""
    seen: list[str] = []

    def broken(level: LogLevel, target: str, message: str) -> None:
        seen.append(message)
        raise RuntimeError("callback is broken")

    config = PluginConfig.defaults().log_level(LogLevel.DEBUG)
    with NativePluginLoader.load_with_config(hello_c, config, broken, isolation=isolation) as p:
        for i in range(3):
            assert echo(p, str(i)) == {"message": str(i), "length": 1}
        assert p.state is LifecycleState.ACTIVE
    assert "Handling echo request: 2" in seen
    assert "Error in log callback: callback is broken" in capsys.readouterr().err


def test_a_missing_library_is_a_plugin_exception(tmp_path: Path, isolation: str) -> None:
    missing = tmp_path / "libmissing.so"
    with pytest.raises(PluginException) as caught:
        NativePluginLoader.load(missing, isolation=isolation)
    assert caught.value.error_code == INIT_FAILED
    assert str(missing) in caught.value.message
    with pytest.raises(rustbridge.PluginException):  # rustbridge's loader: the same type
        rustbridge.NativePluginLoader.load(missing)


def test_a_library_without_the_abi_is_a_plugin_exception(
    not_a_plugin: Path, isolation: str
) -> None:
    """rustbridge's loader lets an ``AttributeError`` out here; the facade says what is
    wrong in a ``PluginException``."""
    with pytest.raises(PluginException) as caught:
        NativePluginLoader.load(not_a_plugin, isolation=isolation)
    assert caught.value.error_code == INIT_FAILED
    assert "does not export plugin_create" in caught.value.message


def test_a_file_that_is_not_a_library_is_refused(tmp_path: Path) -> None:
    """Not even a valid Python plugin is loaded through the native loader."""
    python_plugin = tmp_path / "plugin.py"
    python_plugin.write_text(
        "from plugbridge import Plugin, handler\n"
        "class P(Plugin):\n"
        "    @handler('echo')\n"
        "    def echo(self, ctx, req): return req\n"
    )
    for path in (python_plugin, tmp_path / "plugin.bin"):
        with pytest.raises(PluginException) as caught:
            NativePluginLoader.load(path)
        assert caught.value.error_code == INIT_FAILED
        assert caught.value.message.startswith(f"Failed to load library {path}: not a shared")


def test_a_failing_init_is_a_plugin_exception(
    hello_c: Path, oracle_copy: Path, isolation: str
) -> None:
    config = PluginConfig.defaults().set("fail_init", True)
    with pytest.raises(PluginException) as caught:
        NativePluginLoader.load_with_config(hello_c, config, isolation=isolation)
    assert caught.value.error_code == INIT_FAILED
    assert "plugin_init failed" in caught.value.message
    oracle = rustbridge.PluginConfig.defaults().set("fail_init", True)
    with pytest.raises(rustbridge.PluginException, match="plugin_init returned null handle"):
        rustbridge.NativePluginLoader.load_with_config(oracle_copy, oracle)


# -- load_by_name ----------------------------------------------------------------------


@pytest.fixture
def search_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory for load_by_name, and an empty PATH."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("PATH", "")
    return work


def place(library: Path, directory: Path, name: str = "rbprobe") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"lib{name}.so"
    shutil.copyfile(library, target)
    return target


def loaded_from(plugin: NativePlugin) -> str:
    return repr(plugin.handle)


@pytest.mark.skipif(platform.system() != "Linux", reason="file names of Linux libraries")
def test_load_by_name_search_order(
    hello_c: Path,
    hello_c_without_raw: Path,
    search_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``.``, then ``./target/release``, then ``./target/debug``, then each PATH directory
    (empty entries skipped). Neighbours in that order are different builds, told apart by
    their binary transport; the handle names the path each came from."""
    on_path = place(hello_c_without_raw, tmp_path / "bin")
    monkeypatch.setenv("PATH", os.pathsep.join(["", str(tmp_path / "empty"), str(on_path.parent)]))
    places = [
        (place(hello_c, search_dir), "librbprobe.so", True),
        (place(hello_c_without_raw, search_dir / "target/release"), "target/release/", False),
        (place(hello_c, search_dir / "target/debug"), "target/debug/", True),
        (on_path, str(on_path), False),
    ]
    for found, named, binary in places:
        with NativePluginLoader.load_by_name("rbprobe") as plugin:
            assert f"from '{named}" in loaded_from(plugin)
            assert plugin.has_binary_transport is binary
            assert echo(plugin, "found") == {"message": "found", "length": 5}
        found.unlink()


@pytest.mark.skipif(platform.system() != "Linux", reason="file names of Linux libraries")
def test_load_by_name_with_config_and_extras(
    hello_c: Path, search_dir: Path, isolation: str
) -> None:
    place(hello_c, search_dir / "target" / "release")
    config = PluginConfig.defaults().log_level("debug").set("from", "by-name")
    with NativePluginLoader.load_by_name_with_config(
        "rbprobe", config, isolation=isolation
    ) as plugin:
        seen = json.loads(plugin.call("config.seen", "{}"))["init_config"]
        assert (seen["log_level"], seen["data"]) == ("debug", {"from": "by-name"})


def test_load_by_name_not_found_as_rustbridge(search_dir: Path) -> None:
    with pytest.raises(PluginException) as ours:
        NativePluginLoader.load_by_name("rbnowhere")
    with pytest.raises(rustbridge.PluginException) as theirs:
        rustbridge.NativePluginLoader.load_by_name("rbnowhere")
    assert (str(ours.value), ours.value.error_code) == (str(theirs.value), 1)
    assert "Could not find library: librbnowhere" in ours.value.message


@pytest.mark.parametrize("system", ["Linux", "Darwin", "Windows", "Plan9"])
def test_library_file_names_per_system(system: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "system", lambda: system)

    def name(loader: Any) -> str:
        try:
            return str(loader._get_library_filename("demo"))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    ours, theirs = name(NativePluginLoader), name(rustbridge.NativePluginLoader)
    assert ours == theirs
    if system == "Plan9":
        assert ours == "PluginException: [1] Unsupported operating system: Plan9"


# -- plugbridge's extras ---------------------------------------------------------------


def test_call_timeout(hello_c: Path, isolation: str) -> None:
    with NativePluginLoader.load(hello_c, isolation=isolation, call_timeout=0.05) as plugin:
        with pytest.raises(PluginException) as caught:
            plugin.call("test.sleep", '{"duration_ms": 300}')
        assert caught.value.error_code == int(plugbridge.ErrorCode.TIMEOUT)
        assert echo(plugin, "after") == {"message": "after", "length": 5}


def test_start_timeout(hello_c: Path) -> None:
    config = PluginConfig.defaults().set("init_sleep_ms", 400)
    with pytest.raises(PluginException) as caught:
        NativePluginLoader.load_with_config(hello_c, config, start_timeout=0.05)
    assert caught.value.error_code == INIT_FAILED
    assert "in time" in caught.value.message


def test_an_unknown_isolation_is_a_config_error(hello_c: Path) -> None:
    with pytest.raises(PluginException) as caught:
        NativePluginLoader.load(hello_c, isolation="elsewhere")  # type: ignore[arg-type]
    assert caught.value.error_code == int(plugbridge.ErrorCode.CONFIG_ERROR)


def test_process_isolation_runs_the_library_elsewhere(hello_c: Path) -> None:
    with NativePluginLoader.load(hello_c, isolation="process") as plugin:
        assert plugin.handle.stats().pid not in (None, os.getpid())
        assert echo(plugin, "away") == {"message": "away", "length": 4}


# -- has_binary_transport --------------------------------------------------------------


def test_binary_transport_is_the_librarys(
    hello_c: Path, hello_c_without_raw: Path, isolation: str
) -> None:
    for library, expected in ((hello_c, True), (hello_c_without_raw, False)):
        with NativePluginLoader.load(library, isolation=isolation) as plugin:
            assert plugin.has_binary_transport is expected
            assert plugin.handle.metadata.binary_transport is expected


@pytest.fixture
def bundle(hello_c: Path, hello_c_without_raw: Path, tmp_path: Path) -> Path:
    """A bundle whose release library has the binary transport and whose debug one not."""
    here = current_platform()
    assert here is not None
    out = tmp_path / "probe.rbp"
    write_bundle(
        out,
        name="probe",
        version="1.2.3",
        libraries=[
            LibraryInput(here, "release", hello_c),
            LibraryInput(here, "debug", hello_c_without_raw),
        ],
    )
    return out


def test_open_native_loads_a_bundle_and_its_variant(bundle: Path, isolation: str) -> None:
    """The entry point of the bundle loader: ``variant`` picks the library, and the binary
    transport is the chosen library's."""
    with open_native(bundle, None, isolation=isolation) as plugin:
        assert plugin.has_binary_transport is True
        assert plugin.handle.metadata.name == "probe"
        assert echo(plugin, "bundled") == {"message": "bundled", "length": 7}
    with open_native(bundle, PluginConfig(), variant="debug", isolation=isolation) as plugin:
        assert plugin.has_binary_transport is False
    with pytest.raises(PluginException) as caught:
        open_native(bundle, None, variant="nightly")
    assert caught.value.error_code == INIT_FAILED
    assert "nightly" in caught.value.message


def test_open_native_passes_trusted_keys(bundle: Path) -> None:
    _, public = generate(None)
    with pytest.raises(PluginException) as caught:
        open_native(bundle, None, trusted_keys=public.to_base64())
    assert caught.value.error_code == INIT_FAILED
    assert "sign" in caught.value.message


def test_open_native_log_callback_and_timeouts(hello_c: Path) -> None:
    records = Records()
    config = PluginConfig.defaults().log_level(LogLevel.DEBUG)
    with open_native(hello_c, config, records, call_timeout=0.05, start_timeout=5.0) as plugin:
        echo(plugin, "native")
        with pytest.raises(PluginException) as caught:
            plugin.call("test.sleep", '{"duration_ms": 300}')
        assert caught.value.error_code == int(plugbridge.ErrorCode.TIMEOUT)
    assert (LogLevel.DEBUG, "hello_c", "Handling echo request: native") in records.records
