"""Watching plugin sources: ``watched_paths``, ``SourceWatcher`` and ``PluginHost.watch()``.

Real files in tmp_path, real inotify events, real threads. No timing assertions: a positive
waits (polls) with a generous deadline; a negative ("this did not fire") is proved with a
*barrier*: after the writes that must not count, a probe file watched under another name
is written and its callback awaited, twice. One notifier reports events in the order they
happened and a batch due earlier fires earlier, so by the second probe callback every
callback those writes could cause has run.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plugbridge import ConfigError, InvalidState, LogLevel, PluginHost
from plugbridge._watch import SourceWatcher, watched_paths

from ..conftest import wait_until as polled_until

DEADLINE = 20.0
"""Seconds a positive wait may take (generous: the suite runs under load)."""
FAST = 0.05
"""The debounce of most watcher tests (the debounce itself has its own test)."""


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    """The suite's ``wait_until`` with this file's longer default deadline."""
    return polled_until(predicate, timeout)


class Calls:
    """An ``on_change`` that records names, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.names: list[str] = []
        self.threads: set[str] = set()

    def __call__(self, name: str) -> None:
        with self._lock:
            self.names.append(name)
            self.threads.add(threading.current_thread().name)

    def count(self, name: str) -> int:
        with self._lock:
            return self.names.count(name)

    def wait(self, name: str, at_least: int) -> None:
        assert wait_until(lambda: self.count(name) >= at_least), (
            f"on_change({name!r}) ran {self.count(name)} times, not {at_least}: {self.names}"
        )


class Rig:
    """A watcher recording its calls, with a probe for barriers."""

    def __init__(self, root: Path, debounce_s: float = FAST) -> None:
        self.calls = Calls()
        self.watcher = SourceWatcher(self.calls, debounce_s=debounce_s)
        self._probe = root / "probe_dir" / "probe.txt"
        self._probe.parent.mkdir()
        self._probe.write_text("0")
        self.watcher.watch("probe", [self._probe])

    def barrier(self) -> None:
        """Return once every callback that writes made before this call could cause has run."""
        for _ in range(2):
            seen = self.calls.count("probe")
            self._probe.write_text(str(seen))
            self.calls.wait("probe", seen + 1)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.watcher.close()


def write_package(root: Path, name: str = "pkgplug") -> Path:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text("from . import helpers\n")
    (package / "helpers.py").write_text("VALUE = 1\n")
    return package


def save_by_rename(path: Path, text: str) -> None:
    """Save as vim and many IDEs do: write a temporary file, rename it over the file."""
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


# --- watched_paths -----------------------------------------------------------------------


def test_watched_paths_of_files_packages_libraries_and_bundles(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("")
    package = write_package(tmp_path)
    library = tmp_path / "libhello.so"
    library.write_bytes(b"\x7fELF")
    versioned = tmp_path / "libhello.so.1"
    versioned.write_bytes(b"\x7fELF")
    bundle = tmp_path / "hello-1.0.0.rbp"
    bundle.write_bytes(b"PK")
    (tmp_path / "not_a_package").mkdir()

    assert watched_paths(str(plugin)) == (plugin,)
    assert watched_paths(str(package)) == (package,)
    assert watched_paths(str(library)) == (library,)
    assert watched_paths(str(versioned)) == (versioned,)
    assert watched_paths(str(bundle)) == (bundle,)
    relative = os.path.relpath(plugin)  # resolved, whatever the working directory
    assert watched_paths(relative) == (plugin.resolve(),)
    for missing in ("missing.py", "gone.rbp", "libgone.so", "not_a_package", ""):
        assert watched_paths(str(tmp_path / missing)) == (), missing
    assert watched_paths("") == ()


def test_watched_paths_of_importable_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))  # restored after the test
    package = write_package(tmp_path, "wp_pkg_dotted")
    (tmp_path / "wp_plain_module.py").write_text("")

    # A package's whole directory: each instance loads the package fresh, helpers included.
    assert watched_paths("wp_pkg_dotted.plugin") == (package,)
    assert watched_paths("wp_pkg_dotted.plugin:Plugin") == (package,)
    assert watched_paths("wp_pkg_dotted") == (package,)
    assert watched_paths("wp_plain_module:Plugin") == (tmp_path / "wp_plain_module.py",)
    assert watched_paths("wp_no_such_module.plugin:Plugin") == ()
    assert watched_paths("sys") == ()  # built in: no file
    assert watched_paths("not a name!") == ()
    import sys

    assert "wp_pkg_dotted" not in sys.modules  # found, never imported


# --- SourceWatcher: what fires ------------------------------------------------------------


def test_a_change_made_right_after_watch_returns_is_seen(tmp_path: Path, rig: Rig) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("1")
    rig.watcher.watch("p", [plugin])
    plugin.write_text("2")  # no pause: watching is set up before watch() returns
    rig.calls.wait("p", 1)
    assert rig.calls.threads == {"plugbridge-watch"}


def test_in_place_edit_fires(tmp_path: Path, rig: Rig) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("1")
    rig.watcher.watch("p", [plugin])
    with plugin.open("r+") as file:  # the same inode, rewritten
        file.write("2")
    rig.calls.wait("p", 1)
    rig.barrier()
    assert rig.calls.count("p") == 1


def test_write_rename_save_fires_but_its_temporary_file_alone_does_not(
    tmp_path: Path, rig: Rig
) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("1")
    rig.watcher.watch("p", [plugin])
    temporary = tmp_path / "plugin.py.swap-in"
    temporary.write_text("2")
    rig.barrier()
    assert rig.calls.count("p") == 0
    os.replace(temporary, plugin)  # the rename INTO the watched name
    rig.calls.wait("p", 1)
    save_by_rename(plugin, "3")  # a fresh inode each time: still watched
    rig.calls.wait("p", 2)


def test_delete_then_create_fires_and_the_file_stays_watched(tmp_path: Path, rig: Rig) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("1")
    rig.watcher.watch("p", [plugin])
    plugin.unlink()
    plugin.write_text("2")
    rig.calls.wait("p", 1)
    plugin.write_text("3")
    rig.calls.wait("p", 2)


def test_package_helper_edit_new_file_and_new_directory_fire(tmp_path: Path, rig: Rig) -> None:
    package = write_package(tmp_path)
    rig.watcher.watch("pkg", [package])
    (package / "helpers.py").write_text("VALUE = 2\n")
    rig.calls.wait("pkg", 1)
    (package / "extra.py").write_text("")
    rig.calls.wait("pkg", 2)
    (package / "sub").mkdir()
    rig.calls.wait("pkg", 3)
    (package / "sub" / "deep.py").write_text("")  # in a directory made after watch()
    rig.calls.wait("pkg", 4)


def test_sibling_files_bytecode_and_editor_files_do_not_fire(tmp_path: Path, rig: Rig) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("")
    package = write_package(tmp_path)
    rig.watcher.watch("file", [plugin])
    rig.watcher.watch("pkg", [package])

    (tmp_path / "sibling.py").write_text("")
    (tmp_path / "plugin.cpython-311.pyc").write_bytes(b"")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "plugin.cpython-311.pyc").write_bytes(b"")
    (tmp_path / ".plugin.py.swp").write_bytes(b"")
    (tmp_path / "plugin.py~").write_text("")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "helpers.cpython-311.pyc").write_bytes(b"")
    (package / "helpers.pyc").write_bytes(b"")
    (package / ".helpers.py.swp").write_bytes(b"")
    (package / ".#helpers.py").write_text("")
    (package / "helpers.py~").write_text("")
    (package / "4913").write_text("")
    (package / "helpers.py___jb_tmp___").write_text("")
    rig.barrier()
    assert rig.calls.count("file") == 0
    assert rig.calls.count("pkg") == 0
    (package / "__pycache__" / "helpers.cpython-311.pyc").write_bytes(b"again")
    rig.barrier()  # __pycache__ made after watch() is not watched either
    assert rig.calls.count("pkg") == 0


def test_quick_writes_are_one_callback(tmp_path: Path) -> None:
    rig = Rig(tmp_path, debounce_s=0.6)
    try:
        plugin = tmp_path / "plugin.py"
        plugin.write_text("0")
        rig.watcher.watch("p", [plugin])
        for n in range(10):  # spread over several of the notifier's steps, within debounce_s
            plugin.write_text(str(n))
            time.sleep(0.025)
        rig.calls.wait("p", 1)
        rig.barrier()
        assert rig.calls.count("p") == 1
    finally:
        rig.watcher.close()


def test_only_the_changed_name_fires(tmp_path: Path, rig: Rig) -> None:
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("")
    second.write_text("")
    rig.watcher.watch("first", [first])
    rig.watcher.watch("second", [second])
    second.write_text("edited")
    rig.calls.wait("second", 1)
    rig.barrier()
    assert rig.calls.count("first") == 0


def test_watch_a_new_name_and_forget_one_while_running(tmp_path: Path, rig: Rig) -> None:
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("")
    second.write_text("")
    rig.watcher.watch("first", [first])
    first.write_text("1")
    rig.calls.wait("first", 1)
    rig.watcher.watch("second", [second])
    second.write_text("1")
    rig.calls.wait("second", 1)
    rig.watcher.forget("first")
    rig.watcher.forget("never watched")
    assert set(rig.watcher.names) == {"probe", "second"}
    first.write_text("2")
    rig.barrier()
    assert rig.calls.count("first") == 1


def test_no_change_is_lost_while_the_notifier_is_replaced(tmp_path: Path, rig: Rig) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("0")
    rig.watcher.watch("p", [plugin])
    others = tmp_path / "others"
    others.mkdir()
    for n in range(1, 9):
        plugin.write_text(str(n))
        other = others / f"other{n}.py"
        other.write_text("")
        rig.watcher.watch(f"other{n}", [other])  # at once: a new notifier replaces the old
        rig.calls.wait("p", n)


def test_a_missing_directory_is_watched_until_it_appears(tmp_path: Path, rig: Rig) -> None:
    plugin = tmp_path / "later" / "deeper" / "plugin.py"
    rig.watcher.watch("p", [plugin])
    plugin.parent.mkdir(parents=True)
    plugin.write_text("1")
    rig.calls.wait("p", 1)
    rig.barrier()
    seen = rig.calls.count("p")
    plugin.write_text("2")  # now watched through its own directory
    rig.calls.wait("p", seen + 1)


def test_a_package_deleted_and_recreated_stays_watched(tmp_path: Path, rig: Rig) -> None:
    package = write_package(tmp_path)
    rig.watcher.watch("pkg", [package])
    shutil.rmtree(package)
    rig.calls.wait("pkg", 1)
    write_package(tmp_path)
    rig.calls.wait("pkg", 2)
    rig.barrier()
    seen = rig.calls.count("pkg")
    (package / "helpers.py").write_text("VALUE = 3\n")
    rig.calls.wait("pkg", seen + 1)


def test_an_on_change_that_raises_keeps_the_watcher_alive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls()

    def on_change(name: str) -> None:
        calls(name)
        raise RuntimeError("reload exploded")

    plugin = tmp_path / "plugin.py"
    plugin.write_text("0")
    with (
        caplog.at_level(logging.ERROR, logger="plugbridge"),
        SourceWatcher(on_change, debounce_s=FAST) as watcher,
    ):
        watcher.watch("p", [plugin])
        plugin.write_text("1")
        calls.wait("p", 1)
        assert wait_until(lambda: "reload exploded" in caplog.text)
        plugin.write_text("2")
        calls.wait("p", 2)
    records = [r for r in caplog.records if r.name == "plugbridge"]
    assert records and records[0].levelno == logging.ERROR
    assert "on_change('p')" in records[0].getMessage()


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_close_ends_the_thread_and_the_notifiers(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("")
    before = _os_threads()
    calls = Calls()
    watcher = SourceWatcher(calls, debounce_s=FAST)
    watcher.watch("p", [plugin])
    watcher.watch("p", [plugin])  # a replaced notifier, too
    plugin.write_text("1")
    calls.wait("p", 1)
    assert any(t.name == "plugbridge-watch" for t in threading.enumerate())
    watcher.close()
    watcher.close()  # idempotent
    assert not any(t.name == "plugbridge-watch" for t in threading.enumerate())
    # The notifiers' own (Rust) threads end too; other tests' threads may end meanwhile.
    assert wait_until(lambda: _os_threads() <= before)
    with pytest.raises(InvalidState):
        watcher.watch("p", [plugin])


def test_a_bad_debounce_is_a_config_error() -> None:
    for bad in (-1, float("nan"), "0.2", True):
        with pytest.raises(ConfigError, match="debounce_s"):
            SourceWatcher(Calls(), debounce_s=bad)  # type: ignore[arg-type]


# --- PluginHost.watch() -----------------------------------------------------------------

PLUGIN = """
from plugbridge import Plugin, handler
{imports}

class Versioned(Plugin):
    name = "versioned"

    @handler("version")
    def version(self, ctx, req):
        return {value}
"""


def plugin_source(value: str, imports: str = "") -> str:
    return PLUGIN.format(value=value, imports=imports)


class Records:
    """A host log callback keeping (level, message) pairs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[tuple[LogLevel, str]] = []

    def __call__(self, level: LogLevel, target: str, message: str) -> None:
        with self._lock:
            self.records.append((level, message))

    def errors(self) -> list[str]:
        with self._lock:
            return [m for level, m in self.records if level == LogLevel.ERROR]


def serves(host: PluginHost, name: str, value: object) -> Callable[[], bool]:
    return lambda: host[name].call("version") == value


def test_host_watch_reloads_an_edited_plugin_file(tmp_path: Path) -> None:
    plugin = tmp_path / "versioned.py"
    plugin.write_text(plugin_source("1"))
    with PluginHost() as host:
        host.add("v", str(plugin))
        host.watch(debounce_s=FAST)
        assert host["v"].call("version") == 1
        plugin.write_text(plugin_source("2"))
        assert wait_until(serves(host, "v", 2))
        save_by_rename(plugin, plugin_source("3"))
        assert wait_until(serves(host, "v", 3))


def test_host_watch_reloads_on_a_package_helper_edit(tmp_path: Path) -> None:
    package = tmp_path / "verpkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .impl import Versioned\n")
    (package / "impl.py").write_text(
        plugin_source("helpers.VALUE", imports="from . import helpers")
    )
    (package / "helpers.py").write_text("VALUE = 1\n")
    with PluginHost() as host:
        host.add("pkg", str(package))
        host.watch(debounce_s=FAST)
        assert host["pkg"].call("version") == 1
        save_by_rename(package / "helpers.py", "VALUE = 2\n")
        assert wait_until(serves(host, "pkg", 2))


def test_host_watch_keeps_the_old_code_after_a_broken_edit_then_takes_the_fix(
    tmp_path: Path,
) -> None:
    plugin = tmp_path / "versioned.py"
    plugin.write_text(plugin_source("1"))
    records = Records()
    with PluginHost(log_callback=records) as host:
        host.add("v", str(plugin))
        host.watch(debounce_s=FAST)

        def error() -> str | None:
            (status,) = host.status()
            return status.error

        plugin.write_text(plugin_source("1 +"))  # a syntax error
        assert wait_until(lambda: error() is not None)
        assert host["v"].call("version") == 1  # the old instance serves
        assert wait_until(lambda: any("'v'" in m for m in records.errors())), records.records
        plugin.write_text(plugin_source("2"))
        assert wait_until(serves(host, "v", 2))
        assert wait_until(lambda: error() is None)


def _watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "plugbridge-watch"]


def test_host_unwatch_and_close_stop_the_watcher(tmp_path: Path) -> None:
    plugin = tmp_path / "versioned.py"
    plugin.write_text(plugin_source("1"))
    assert _watcher_threads() == []
    host = PluginHost()
    try:
        host.add("v", str(plugin))
        host.watch(debounce_s=FAST)
        assert len(_watcher_threads()) == 1
        host.unwatch()
        assert _watcher_threads() == []  # nothing left that could reload
        plugin.write_text(plugin_source("2"))
        assert host["v"].call("version") == 1
        host.reload("v")  # the edit itself was good
        assert host["v"].call("version") == 2
        host.watch(debounce_s=FAST)
        plugin.write_text(plugin_source("3"))
        assert wait_until(serves(host, "v", 3))
    finally:
        host.close()
    assert _watcher_threads() == []


def test_watch_many_watches_every_name_at_once_all_or_nothing(tmp_path: Path, rig: Rig) -> None:
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("")
    second.write_text("")
    rig.watcher.watch_many({"first": [first], "second": [second]})
    assert set(rig.watcher.names) == {"probe", "first", "second"}
    second.write_text("edited")
    rig.calls.wait("second", 1)
    first.write_text("edited")
    rig.calls.wait("first", 1)
    rig.watcher.watch_many({})  # nothing to add: nothing changes
    assert set(rig.watcher.names) == {"probe", "first", "second"}
    rig.watcher.close()
    with pytest.raises(InvalidState):
        rig.watcher.watch_many({"third": [first]})


def test_a_host_that_never_watches_does_not_load_the_watcher(tmp_path: Path) -> None:
    plugin = tmp_path / "versioned.py"
    plugin.write_text(plugin_source("1"))
    program = (
        "import sys, plugbridge\n"
        "with plugbridge.PluginHost() as host:\n"
        f"    host.add('v', {str(plugin)!r})\n"
        "    assert host['v'].call('version') == 1\n"
        "    host.reload('v')\n"
        "    host.remove('v')\n"
        "print([m for m in ('watchfiles', 'plugbridge._watch') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
