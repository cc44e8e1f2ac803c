"""``plugbridge check`` and ``plugbridge list``, run as real subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import plugbridge

from .conftest import SitePackages, echo_plugin

EXE = shutil.which("plugbridge")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [EXE] if EXE else [sys.executable, "-m", "plugbridge"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    (tmp_path / "good.py").write_text(echo_plugin("good", version="1.2.3"))
    (tmp_path / "boom.py").write_text("raise RuntimeError('cannot import me')\n")
    return tmp_path


def rows(stdout: str) -> dict[str, str]:
    """The table's rows by plugin name (the header and the summary left out)."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "ISOLATION", "RESULT"]
    return {line.split()[0]: line for line in lines[1:-1]}


def test_check_a_good_file(plugins_dir: Path, host_file: Callable[..., Path]) -> None:
    path = host_file(
        """
        [plugins.local]
        source = "good.py"

        [plugins.isolated]
        source = "good.py"
        isolation = "process"
        """
    )
    result = run("check", str(path))
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert set(table) == {"local", "isolated"}
    assert "good.py" in table["local"]
    assert "inprocess" in table["local"]
    assert "ok: good 1.2.3" in table["local"]
    assert "process" in table["isolated"]
    assert "ok: good 1.2.3" in table["isolated"]
    assert result.stdout.splitlines()[-1].startswith("2 plugin(s): 2 loaded, 0 failed")


def test_check_shows_an_optional_failure_and_still_succeeds(
    plugins_dir: Path, host_file: Callable[..., Path]
) -> None:
    path = host_file(
        """
        [plugins.good]
        source = "good.py"

        [plugins.boom]
        source = "boom.py"
        required = false
        """
    )
    result = run("check", str(path))
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert "ok: good" in table["good"]
    assert "FAILED (optional)" in table["boom"]
    assert "cannot import me" in table["boom"]


def test_check_fails_when_a_required_plugin_fails(
    plugins_dir: Path, host_file: Callable[..., Path]
) -> None:
    path = host_file(
        """
        [plugins.good]
        source = "good.py"

        [plugins.boom]
        source = "boom.py"
        """
    )
    result = run("check", str(path))
    assert result.returncode == 1
    table = rows(result.stdout)
    assert "ok: good" in table["good"]  # the others are still tried and shown
    assert "FAILED: " in table["boom"]
    assert "cannot import me" in table["boom"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[plugins.good]\nsorce = "good.py"\n', "[plugins.good] unknown key 'sorce'"),
        ('[plugins.good]\nsource = "good.py"\nlog_level = \n', "not valid TOML"),
        ('[plugins.good]\nsource = "missing.py"\n', "[plugins.good] key 'source'"),
    ],
)
def test_check_a_bad_file_gives_one_line_and_no_traceback(
    plugins_dir: Path, host_file: Callable[..., Path], text: str, expected: str
) -> None:
    path = host_file(text)
    result = run("check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert str(path) in result.stderr


def test_check_a_missing_file(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "absent.toml: cannot read the host file" in result.stderr


def test_list_shows_installed_plugins(site_packages: SitePackages) -> None:
    site_packages.install(
        "listed-dist",
        "listed_pkg",
        {"plugin.py": echo_plugin("listed")},
        {"listed": "listed_pkg.plugin:EchoPlugin"},
    )
    result = run("list", env={"PYTHONPATH": str(site_packages.root)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE"]
    assert ["listed", "listed_pkg.plugin:EchoPlugin"] in [line.split() for line in lines[1:]]


def test_list_without_plugins_says_so() -> None:
    result = run("list")
    assert result.returncode == 0, result.stderr
    installed = plugbridge.entry_points()  # this environment's, the same as the subprocess's
    if installed:
        assert all(name in result.stdout for name in installed)
    else:
        assert result.stdout == "no plugins installed\n"


@pytest.mark.parametrize("command", ["check", "list"])
def test_every_command_answers_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert f"usage: plugbridge {command}" in result.stdout
