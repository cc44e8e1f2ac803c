"""``plugbridge new``: the project it writes is lint- and type-clean, installs with pip into a
fresh virtual environment, passes its own tests there, is shown by ``plugbridge list`` and
is loaded by a host file through its entry point, as its README says.

Everything runs for real and offline: the CLI in a subprocess, a venv made with ``venv``
(no pip download: the running interpreter's site-packages, with pip, hatchling, pytest and
plugbridge, are made visible to it by a ``.pth`` file), ``pip install --no-index
--no-build-isolation``. One project and one venv serve the whole module.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

import plugbridge
from plugbridge._newproject import ProjectError, ProjectNames

NAME = "hello-world"
PACKAGE = "hello_world"
SOURCE = "hello_world.plugin:HelloWorldPlugin"
FILES = {
    "pyproject.toml",
    "README.md",
    "src/hello_world/__init__.py",
    "src/hello_world/plugin.py",
    "src/hello_world/py.typed",
    "tests/test_plugin.py",
}
RUN_TIMEOUT = 120.0


def _env() -> dict[str, str]:
    """The environment of every subprocess: nothing on PYTHONPATH, pip quiet and offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_NO_INDEX="1")
    return env


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def plugbridge_cli(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-m", "plugbridge", *argv, cwd=cwd)


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{done.args} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("plugbridge: ")
    for word in words:
        assert word in lines[0]


@dataclass(frozen=True)
class NewProject:
    root: Path
    output: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> NewProject:
    root = tmp_path_factory.mktemp("new") / NAME
    return NewProject(root, _ok(plugbridge_cli("new", NAME, "-o", root)))


# ---------------------------------------------------------------------------------------
# What `plugbridge new` writes


def test_new_writes_the_project_and_prints_files_and_next_steps(project: NewProject) -> None:
    written = {p.relative_to(project.root).as_posix() for p in project.root.rglob("*")}
    assert {p for p in written if (project.root / p).is_file()} == FILES
    listed = {line.strip() for line in project.output.stdout.splitlines()}
    assert listed >= FILES
    assert "pip install -e" in project.output.stdout
    assert f"plugbridge call {SOURCE} greet" in project.output.stdout
    assert project.output.stderr == ""
    for path in FILES:
        text = (project.root / path).read_text()
        assert "{{" not in text, f"{path} has an unfilled placeholder"
        assert "__package__" not in text


def test_pyproject_builds_with_hatchling_and_advertises_the_entry_point(
    project: NewProject,
) -> None:
    pyproject = tomllib.loads((project.root / "pyproject.toml").read_text())
    assert pyproject["build-system"]["build-backend"] == "hatchling.build"
    meta = pyproject["project"]
    assert meta["name"] == NAME
    assert meta["requires-python"] == ">=3.11"
    major, minor = plugbridge.__version__.split(".")[:2]
    assert f"plugbridge>={major}.{minor}" in meta["dependencies"]
    assert meta["entry-points"]["plugbridge.plugins"] == {NAME: SOURCE}
    assert any(req.startswith("pytest") for req in meta["optional-dependencies"]["test"])


def test_readme_says_how_to_install_test_call_and_host_it(project: NewProject) -> None:
    readme = (project.root / "README.md").read_text()
    assert "pip install -e" in readme
    assert "pytest" in readme
    assert f"plugbridge call {SOURCE} greet '" in readme
    host_file = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    assert tomllib.loads(host_file)["plugins"][NAME]["entry_point"] == NAME


def test_plugin_has_one_sync_and_one_async_handler_with_struct_types(
    project: NewProject,
) -> None:
    tree = ast.parse((project.root / "src" / PACKAGE / "plugin.py").read_text())
    structs = {
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(ast.unparse(base) == "msgspec.Struct" for base in node.bases)
    }
    (plugin,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name not in structs]
    handlers = [
        node
        for node in plugin.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(ast.unparse(d).startswith("handler(") for d in node.decorator_list)
    ]
    assert sorted(type(h).__name__ for h in handlers) == ["AsyncFunctionDef", "FunctionDef"]
    for node in handlers:
        request = node.args.args[2].annotation
        assert request is not None and node.returns is not None
        assert {ast.unparse(request), ast.unparse(node.returns)} <= structs


@pytest.mark.parametrize("name", [NAME, "x" * 30])
def test_generated_code_is_ruff_clean(name: str, tmp_path: Path) -> None:
    """Under the generated pyproject's own ruff rules (isort, bugbear, pyupgrade, ...), with
    the longest name allowed."""
    root = tmp_path / name
    _ok(plugbridge_cli("new", name, "-o", root))
    _ok(_run(sys.executable, "-m", "ruff", "check", "--no-cache", ".", cwd=root))
    _ok(_run(sys.executable, "-m", "ruff", "format", "--no-cache", "--check", ".", cwd=root))


def test_generated_code_is_mypy_strict_clean(project: NewProject, tmp_path: Path) -> None:
    """The plugin and its test, checked against plugbridge's own annotations."""
    mypy = _run(sys.executable, "-m", "mypy", "--cache-dir", tmp_path, cwd=project.root)
    _ok(mypy)
    assert "no issues found in 3 source files" in mypy.stdout


# ---------------------------------------------------------------------------------------
# Names and targets


@pytest.mark.parametrize(
    ("typed", "name", "package", "class_name"),
    [
        ("hello-world", "hello-world", "hello_world", "HelloWorldPlugin"),
        ("Weather_Station", "weather-station", "weather_station", "WeatherStationPlugin"),
        ("weather2", "weather2", "weather2", "Weather2Plugin"),
        ("my-plugin", "my-plugin", "my_plugin", "MyPlugin"),
        ("plugin", "plugin", "plugin", "PluginPlugin"),
    ],
)
def test_names_are_derived_from_the_name_typed(
    typed: str, name: str, package: str, class_name: str
) -> None:
    assert ProjectNames.from_name(typed) == ProjectNames(name, package, class_name)


def test_default_directory_is_the_name_and_an_empty_one_is_used(tmp_path: Path) -> None:
    _ok(plugbridge_cli("new", "Weather_Station", cwd=tmp_path))
    pyproject = tomllib.loads((tmp_path / "Weather_Station" / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["plugbridge.plugins"] == {
        "weather-station": "weather_station.plugin:WeatherStationPlugin"
    }
    (tmp_path / "empty").mkdir()
    _ok(plugbridge_cli("new", "weather", "-o", "empty", cwd=tmp_path))
    assert (tmp_path / "empty" / "src" / "weather" / "plugin.py").is_file()


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("1abc", "starting with a letter"),
        ("hello world", "letters, digits"),
        ("hello.world", "letters, digits"),
        ("héllo", "letters, digits"),
        ("class", "keyword"),
        ("json", "shadow"),
        ("plugbridge", "shadow"),
        ("x" * 31, "at most 30"),
    ],
)
def test_an_invalid_name_is_one_line_and_writes_nothing(
    typed: str, why: str, tmp_path: Path
) -> None:
    _one_line_error(plugbridge_cli("new", typed, "-o", tmp_path / "out"), why)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ProjectError):
        ProjectNames.from_name(typed)


def test_a_non_empty_directory_a_file_or_an_unwritable_place_is_refused(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    _one_line_error(plugbridge_cli("new", NAME, "-o", taken), "not empty")
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("mine")
    _one_line_error(plugbridge_cli("new", NAME, "-o", tmp_path / "file"), "not a directory")
    assert (tmp_path / "file").read_text() == "mine"
    below_a_file = tmp_path / "file" / NAME
    _one_line_error(plugbridge_cli("new", NAME, "-o", below_a_file), "cannot write")


def test_help() -> None:
    done = _ok(plugbridge_cli("new", "--help"))
    assert "NAME" in done.stdout
    assert "-o DIR" in done.stdout


# ---------------------------------------------------------------------------------------
# Installed into a temporary venv: its own tests, discovery, the README's call


def _make_venv(where: Path) -> Path:
    """A venv without pip that sees the running interpreter's site-packages (pip, hatchling,
    pytest, plugbridge) after its own; returns its python."""
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(where)
    own = Path(sysconfig.get_path("purelib", "venv", {"base": str(where), "platbase": str(where)}))
    assert own.is_dir(), own
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in ours)
    (own / "_plugbridge_test_parent.pth").write_text(lines)
    bindir = "Scripts" if os.name == "nt" else "bin"
    return where / bindir / ("python.exe" if os.name == "nt" else "python")


@pytest.fixture(scope="module")
def installed(project: NewProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project pip-installed into a temporary venv; that venv's python."""
    python = _make_venv(tmp_path_factory.mktemp("venv"))
    pip = ("-m", "pip", "install", "-q", "--no-index", "--no-build-isolation", "--no-deps")
    _ok(_run(python, *pip, project.root))
    return python


def test_installed_project_passes_its_own_tests(installed: Path, project: NewProject) -> None:
    tests = project.root / "tests"
    done = _ok(_run(installed, "-m", "pytest", tests, "-q", "-p", "no:cacheprovider"))
    assert "6 passed" in done.stdout, done.stdout


def test_plugbridge_list_shows_the_installed_plugin(installed: Path) -> None:
    listed = _ok(_run(installed, "-m", "plugbridge", "list")).stdout.splitlines()
    assert [NAME, SOURCE] in [line.split() for line in listed]
    # the install went to the temporary venv only: the parent does not advertise it
    assert NAME not in _ok(plugbridge_cli("list")).stdout


def test_a_host_file_finds_it_by_the_readme_entry_point(
    installed: Path, project: NewProject, tmp_path: Path
) -> None:
    """The README's TOML snippet, as written, loads the plugin through its entry point."""
    readme = (project.root / "README.md").read_text()
    host_file = tmp_path / "plugbridge.toml"
    host_file.write_text(readme.split("```toml\n", 1)[1].split("```", 1)[0])
    checked = _ok(_run(installed, "-m", "plugbridge", "check", host_file)).stdout
    assert f"ok: {NAME} 0.1.0, 2 handler(s)" in checked


def test_installed_plugin_answers_the_readme_call(installed: Path, tmp_path: Path) -> None:
    """From a directory without the project's sources: the installed package is loaded."""
    done = _run(
        installed, "-m", "plugbridge", "call", SOURCE, "greet", '{"name": "Ada"}', cwd=tmp_path
    )
    assert _ok(done).stdout.strip() == '{"greeting":"Hello, Ada!"}'
