"""Shared fixtures of the many-plugins tests: host files, echo plugins, installed distributions.

Everything is real: TOML files and plugin modules written to tmp dirs, and distributions
"installed" as a ``*.dist-info`` directory next to their package on a tmp dir put on
``sys.path`` (exactly what pip leaves in site-packages, minus RECORD's use).
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def echo_plugin(name: str, version: str = "1.0.0", body: str = "") -> str:
    """The source of a plugin module named ``name``: ``echo`` returns its request,
    ``whoami`` its name and version, ``data`` its ``ctx.data``; ``body`` adds class lines
    (dedented, indented by 4 spaces here)."""
    extra = textwrap.indent(textwrap.dedent(body), "    ")
    return (
        "import logging\n"
        "from plugbridge import Plugin, handler\n"
        "log = logging.getLogger(__name__)\n\n"
        "class EchoPlugin(Plugin):\n"
        f"    name = {name!r}\n"
        f"    version = {version!r}\n\n"
        '    @handler("echo")\n'
        "    def echo(self, ctx, req):\n"
        '        log.info("echo %r", req)\n'
        "        return req\n\n"
        '    @handler("whoami")\n'
        "    def whoami(self, ctx, req):\n"
        "        return {'name': self.name, 'version': self.version}\n\n"
        '    @handler("data")\n'
        "    def data(self, ctx, req):\n"
        "        return ctx.data\n" + extra
    )


@pytest.fixture
def host_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a host file (dedented TOML) into tmp_path (or ``where``); return its path."""

    def write(text: str, name: str = "plugbridge.toml", where: Path | None = None) -> Path:
        path = (where or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write


class SitePackages:
    """A tmp dir on ``sys.path`` where tests "install" distributions (dist-info + package)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.packages: list[str] = []

    def install(
        self, dist: str, package: str, modules: dict[str, str], entry_points: dict[str, str]
    ) -> Path:
        """Write package ``package`` (``modules``: file name -> source) and the dist-info
        of ``dist`` 1.0 advertising ``entry_points`` (name -> value) in plugbridge.plugins."""
        pkg = self.root / package
        pkg.mkdir(parents=True, exist_ok=True)
        for file_name, source in {"__init__.py": "", **modules}.items():
            (pkg / file_name).write_text(textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[plugbridge.plugins]\n{lines}")
        self.packages.append(package)
        importlib.invalidate_caches()  # the metadata finder caches directory listings
        return info


@pytest.fixture
def site_packages(tmp_path: Path) -> Iterator[SitePackages]:
    """A ``SitePackages`` on ``sys.path`` for the test; sys.path, sys.modules and the
    import caches are as before afterwards."""
    site = SitePackages(tmp_path / "site")
    sys.path.insert(0, str(site.root))
    importlib.invalidate_caches()
    try:
        yield site
    finally:
        sys.path.remove(str(site.root))
        for package in site.packages:
            for module in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
                del sys.modules[module]
        importlib.invalidate_caches()
