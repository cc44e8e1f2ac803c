"""PluginHost reloads: every start goes through the host (replicas too), only start failures
are recorded, a failed reload keeps the old source shown, and a watched reload re-tracks a
moved entry point as ``host.reload`` does.

Real plugin files and packages in tmp dirs, real worker processes, real file-system events.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from plugbridge import ConfigError, InitializationFailed, InvalidState, LogLevel, PluginHost

from ..conftest import wait_until
from .conftest import SitePackages

DEADLINE = 20.0
"""Seconds a positive wait may take (generous: the suite runs under load)."""

VERSIONED = """
from plugbridge import Plugin, handler

class Versioned(Plugin):
    name = "versioned"

    @handler("version")
    def version(self, ctx, req):
        return {value}
"""


def versioned(value: object) -> str:
    return VERSIONED.format(value=value)


def error_of(host: PluginHost, name: str) -> str | None:
    (status,) = [status for status in host.status() if status.name == name]
    return status.error


def source_of(host: PluginHost, name: str) -> str:
    (status,) = [status for status in host.status() if status.name == name]
    return status.source


def test_a_replicas_handle_reload_goes_through_the_host_and_is_recorded(
    tmp_path: Path, host_file: Callable[..., Path]
) -> None:
    plugin = tmp_path / "versioned.py"
    plugin.write_text(versioned(1))
    path = host_file("""
        [plugins.r]
        source = "versioned.py"
        isolation = "process"
        replicas = 2
    """)
    with PluginHost.from_file(path) as host:
        handle = host["r"]
        assert handle.call("version") == 1
        plugin.write_text(versioned("1 +"))  # a syntax error
        with pytest.raises(InitializationFailed):
            handle.reload()  # the handle's own rolling reload, not host.reload
        error = error_of(host, "r")
        assert error is not None and "SyntaxError" in error, error
        assert handle.call("version") == 1
        plugin.write_text(versioned(2))
        handle.reload()
        assert error_of(host, "r") is None
        assert {handle.call("version") for _ in range(4)} == {2}


def test_caller_mistakes_in_host_reload_are_not_recorded_as_load_errors(tmp_path: Path) -> None:
    plugin = tmp_path / "versioned.py"
    plugin.write_text(versioned(1))
    with PluginHost() as host:
        host.add("v", plugin)
        with pytest.raises(ConfigError):
            host.reload("v", timeout="soon")  # type: ignore[arg-type]
        assert error_of(host, "v") is None
        with pytest.raises(ConfigError):
            host.reload("v", timeout=-1)
        assert error_of(host, "v") is None
        with pytest.raises(InitializationFailed):
            host.reload("v", timeout=0)
        assert error_of(host, "v") is None
        plugin.write_text(versioned("1 +"))
        with pytest.raises(InitializationFailed):
            host.reload("v")  # a real start failure is recorded
        assert error_of(host, "v") is not None
        plugin.write_text(versioned(2))
        host.reload("v")
        assert error_of(host, "v") is None
        host["v"].shutdown()
        with pytest.raises(InvalidState):
            host.reload("v")  # a handle shut down: the caller's doing, not a load error
        assert error_of(host, "v") is None


def _install_movers(site: SitePackages) -> None:
    """Packages ``mova`` (version 1) and ``movb`` (version 2), and the distribution
    ``movers`` whose entry point ``mover`` names ``mova.plugin:Versioned``."""
    site.install("movers", "mova", {"plugin.py": versioned(1)}, {"mover": "mova.plugin:Versioned"})
    site.install("movb-dist", "movb", {"plugin.py": versioned(2)}, {})


def _move_entry_point(site: SitePackages, value: str) -> None:
    info = site.root / "movers-1.0.dist-info"
    (info / "entry_points.txt").write_text(f"[plugbridge.plugins]\nmover = {value}\n")
    importlib.invalidate_caches()


def test_a_failed_reload_leaves_the_source_shown_as_it_was(site_packages: SitePackages) -> None:
    _install_movers(site_packages)
    (site_packages.root / "movb" / "plugin.py").write_text(versioned("2 +"))  # broken
    with PluginHost() as host:
        host.add("m", entry_point="mover")
        assert source_of(host, "m") == "mova.plugin:Versioned"
        _move_entry_point(site_packages, "movb.plugin:Versioned")
        with pytest.raises(InitializationFailed):
            host.reload("m")
        assert source_of(host, "m") == "mova.plugin:Versioned"  # what still serves
        assert host["m"].call("version") == 1
        (site_packages.root / "movb" / "plugin.py").write_text(versioned(2))
        host.reload("m")
        assert source_of(host, "m") == "movb.plugin:Versioned"
        assert host["m"].call("version") == 2


@contextlib.contextmanager
def _watched_move(site: SitePackages) -> Iterator[PluginHost]:
    """A watching host serving the entry point ``mover`` (``mova``, version 1), the entry
    point then moved to ``movb`` and ``mova`` edited: a watched reload is under way."""
    with PluginHost() as host:
        host.add("m", entry_point="mover")
        host.watch(debounce_s=0.05)
        assert host["m"].call("version") == 1
        _move_entry_point(site, "movb.plugin:Versioned")
        (site.root / "mova" / "plugin.py").write_text(versioned(10))  # a change: reload
        yield host


def test_a_watched_reload_watches_the_module_an_entry_point_moved_to(
    site_packages: SitePackages,
) -> None:
    _install_movers(site_packages)
    with _watched_move(site_packages) as host:
        assert wait_until(lambda: host["m"].call("version") == 2, DEADLINE)
        assert source_of(host, "m") == "movb.plugin:Versioned"
        # The new module is watched before the new instance starts from it, so one edit
        # made once it serves reloads it.
        (site_packages.root / "movb" / "plugin.py").write_text(versioned(3))
        assert wait_until(lambda: host["m"].call("version") == 3, DEADLINE)


SELF_EDITING = (
    """
import pathlib

pathlib.Path(__file__).write_text({next_source!r})  # an edit made while this instance starts
"""
    + VERSIONED
)


def test_an_edit_made_while_a_moved_entry_point_starts_is_seen(
    site_packages: SitePackages,
) -> None:
    # The moved-to module edits itself while it is imported, before the reload that imports
    # it has ended: watched only after that reload, the edit would be missed for good.
    _install_movers(site_packages)
    moved = site_packages.root / "movb" / "plugin.py"
    moved.write_text(SELF_EDITING.format(next_source=versioned(3), value=2))
    with _watched_move(site_packages) as host:
        assert wait_until(lambda: host["m"].call("version") == 3, DEADLINE)
        assert moved.read_text() == versioned(3)
        assert source_of(host, "m") == "movb.plugin:Versioned"


def test_a_watch_refused_while_a_moved_entry_point_starts_does_not_fail_the_start(
    site_packages: SitePackages, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system refusing a watch (here: no inotify instance left, as watchfiles reports it)
    # costs the watch, never the start: the plugin serves from the new module, and its
    # callback is told it is not watched.
    from watchfiles._rust_notify import WatchfilesRustInternalError

    import plugbridge._watch

    _install_movers(site_packages)
    records: list[tuple[LogLevel, str]] = []
    with PluginHost(log_callback=lambda level, _, text: records.append((level, text))) as host:
        host.add("m", entry_point="mover")
        host.watch(debounce_s=0.05)
        assert host["m"].call("version") == 1

        def refused(paths: object) -> NoReturn:
            raise WatchfilesRustInternalError(
                "Error creating recommended watcher: Too many open files"
            )

        monkeypatch.setattr(plugbridge._watch, "_build", refused)
        _move_entry_point(site_packages, "movb.plugin:Versioned")
        host.reload("m")  # watches movb before it starts from it: refused
        assert host["m"].call("version") == 2
        assert source_of(host, "m") == "movb.plugin:Versioned"
        assert error_of(host, "m") is None
        refusals = [m for level, m in records if "is not watched for changes" in m]
        assert refusals and all("Too many open files" in m for m in refusals), records
        assert {level for level, m in records if m in refusals} == {LogLevel.ERROR}


def test_after_a_move_only_the_module_served_from_is_watched(site_packages: SitePackages) -> None:
    # The handle's own reload follows the move too (it starts through the host), and the
    # watch narrows to the new module: an edit to the old one reloads nothing.
    _install_movers(site_packages)
    with PluginHost() as host:
        host.add("m", entry_point="mover")
        host.watch(debounce_s=0.05)
        handle = host["m"]
        _move_entry_point(site_packages, "movb.plugin:Versioned")
        handle.reload()
        assert handle.call("version") == 2
        reloads = handle.stats().reloads
        (site_packages.root / "mova" / "plugin.py").write_text(versioned(10))  # not watched now
        time.sleep(0.5)  # ten debounces: a watched edit would have reloaded by now
        (site_packages.root / "movb" / "plugin.py").write_text(versioned(3))
        assert wait_until(lambda: handle.call("version") == 3, DEADLINE)
        assert handle.stats().reloads == reloads + 1
