"""Shared fixtures: real plugin files written to tmp dirs, and the isolation modes to run."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

ISOLATIONS = ["inprocess"]
"""Every promise test runs once per isolation mode listed here."""


@pytest.fixture(params=ISOLATIONS)
def isolation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def write_plugin(tmp_path: Path) -> Callable[..., Path]:
    """Write a plugin module (dedented source) into tmp_path; return its path."""

    def write(source: str, name: str = "plugin_mod.py", where: Path | None = None) -> Path:
        path = (where or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    return write
