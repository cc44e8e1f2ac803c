"""Entry points: plugins advertised by installed distributions (group ``plugbridge.plugins``)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge
from plugbridge import ConfigError, LifecycleState, PluginHost

from .conftest import SitePackages, echo_plugin


def install_hello(site: SitePackages, version: str = "1.0.0") -> None:
    site.install(
        "hello-ep-dist",
        "hello_ep_pkg",
        {"plugin.py": echo_plugin("hello_ep", version=version)},
        {"hello_ep": "hello_ep_pkg.plugin:EchoPlugin", "bare_ep": "hello_ep_pkg.plugin"},
    )


def test_entry_points_lists_the_installed_plugins(site_packages: SitePackages) -> None:
    assert "hello_ep" not in plugbridge.entry_points()
    install_hello(site_packages)
    found = plugbridge.entry_points()
    assert found["hello_ep"] == "hello_ep_pkg.plugin:EchoPlugin"
    assert found["bare_ep"] == "hello_ep_pkg.plugin"
    with plugbridge.load(found["hello_ep"]) as plugin:
        assert plugin.call("whoami") == {"name": "hello_ep", "version": "1.0.0"}


def test_entry_points_are_not_imported_by_listing(site_packages: SitePackages) -> None:
    site_packages.install(
        "explosive-dist",
        "explosive_pkg",
        {"plugin.py": "raise RuntimeError('imported!')\n"},
        {"explosive": "explosive_pkg.plugin:P"},
    )
    assert plugbridge.entry_points()["explosive"] == "explosive_pkg.plugin:P"


def test_a_host_file_names_a_plugin_by_its_entry_point(
    site_packages: SitePackages, host_file: Callable[..., Path]
) -> None:
    install_hello(site_packages)
    path = host_file('[plugins.hello]\nentry_point = "hello_ep"\nisolation = "process"\n')
    with PluginHost.from_file(path) as host:
        assert host["hello"].call("whoami") == {"name": "hello_ep", "version": "1.0.0"}
        (status,) = host.status()
        assert status.source == "hello_ep_pkg.plugin:EchoPlugin"


def test_an_unknown_entry_point_is_a_config_error_naming_the_installed_ones(
    site_packages: SitePackages, host_file: Callable[..., Path]
) -> None:
    install_hello(site_packages)
    path = host_file('[plugins.hello]\nentry_point = "helo_ep"\n')
    with pytest.raises(ConfigError) as raised:
        PluginHost.from_file(path)
    message = raised.value.message
    assert f"{path}: [plugins.hello] key 'entry_point'" in message
    assert "'helo_ep'" in message
    assert "hello_ep" in message.partition("installed:")[2]


def test_an_optional_entry_point_installed_later_is_picked_up_by_a_reload(
    site_packages: SitePackages, host_file: Callable[..., Path]
) -> None:
    path = host_file('[plugins.hello]\nentry_point = "hello_ep"\nrequired = false\n')
    with PluginHost.from_file(path) as host:
        handle = host["hello"]
        assert handle.state is LifecycleState.FAILED
        (status,) = host.status()
        assert status.error is not None
        assert "'hello_ep'" in status.error
        install_hello(site_packages)
        host.reload("hello")
        assert handle.call("whoami")["name"] == "hello_ep"
        (status,) = host.status()
        assert status.error is None
        assert status.source == "hello_ep_pkg.plugin:EchoPlugin"


BROKEN_ENTRY_POINTS = """\
[console_scripts]
a line importlib.metadata cannot parse, in another group
[plugbridge.plugins]
bad_value = not a valid::value
a line without an equals sign
good_too = broken_ep_pkg.plugin:EchoPlugin
"""


def install_broken(site: SitePackages) -> None:
    """A distribution whose entry_points.txt holds two malformed plugbridge.plugins
    entries (one even breaks ``importlib.metadata.entry_points()`` for every group) and
    a good one."""
    info = site.install(
        "broken-ep-dist", "broken_ep_pkg", {"plugin.py": echo_plugin("good_too")}, {}
    )
    (info / "entry_points.txt").write_text(BROKEN_ENTRY_POINTS)


def test_a_malformed_entry_point_is_skipped_with_a_warning_naming_it(
    site_packages: SitePackages, caplog: pytest.LogCaptureFixture
) -> None:
    install_hello(site_packages)
    install_broken(site_packages)
    with caplog.at_level(logging.WARNING, logger="plugbridge"):
        found = plugbridge.entry_points()
    assert found["hello_ep"] == "hello_ep_pkg.plugin:EchoPlugin"
    assert found["good_too"] == "broken_ep_pkg.plugin:EchoPlugin"
    assert "bad_value" not in found
    warnings = [r.getMessage() for r in caplog.records if r.name == "plugbridge"]
    assert len(warnings) == 2, warnings
    assert all("broken-ep-dist" in warning for warning in warnings)
    assert "not a valid::value" in warnings[0]
    assert "a line without an equals sign" in warnings[1]
    with plugbridge.load(found["good_too"]) as plugin:  # what is left still loads
        assert plugin.call("whoami")["name"] == "good_too"


def run_cli(*args: str, site: SitePackages, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("plugbridge")
    return subprocess.run(
        [*([exe] if exe else [sys.executable, "-m", "plugbridge"]), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(site.root)},
    )


def test_list_and_check_skip_a_malformed_entry_point_with_a_warning(
    site_packages: SitePackages, host_file: Callable[..., Path], tmp_path: Path
) -> None:
    install_hello(site_packages)
    install_broken(site_packages)
    listed = run_cli("list", site=site_packages, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert ["hello_ep", "hello_ep_pkg.plugin:EchoPlugin"] in rows
    assert ["good_too", "broken_ep_pkg.plugin:EchoPlugin"] in rows
    assert "bad_value" not in listed.stdout
    assert "broken-ep-dist" in listed.stderr
    assert "not a valid::value" in listed.stderr
    path = host_file('[plugins.hello]\nentry_point = "hello_ep"\n')
    checked = run_cli("check", str(path), site=site_packages, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "Traceback" not in checked.stderr
    assert "ok: hello_ep 1.0.0" in checked.stdout
    assert "broken-ep-dist" in checked.stderr
