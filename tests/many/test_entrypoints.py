"""Entry points: plugins advertised by installed distributions (group ``plugbridge.plugins``)."""

from __future__ import annotations

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
