"""A new plugin project: the names derived from what the user typed, and the template files
rendered with them.

The template lives as real files under ``_templates/new_plugin`` (shipped as package
data), so it reads like the project it becomes. A file's name ends in ``.tmpl`` there, which
keeps ruff, mypy and pytest from taking the template for plugbridge's own code; a directory
named ``__package__`` becomes the import package. ``{{placeholder}}`` marks every value the
names fill in; a placeholder the template uses but the names do not define is a bug, raised
as ``KeyError`` at once rather than written into someone's project.
"""

from __future__ import annotations

import keyword
import re
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

TEMPLATE = "_templates/new_plugin"
TEMPLATE_SUFFIX = ".tmpl"
PACKAGE_DIR = "__package__"
PLUGIN_VERSION = "0.1.0"
MAX_NAME_LENGTH = 30
"""Longer names would push the template's lines past ruff's 100 columns."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_TAKEN_PACKAGES = frozenset({"plugbridge", "msgspec", "pytest", "tests", "hatchling"})
"""Import names a new package must not shadow, besides the standard library's."""


class ProjectError(Exception):
    """A new project cannot be made as asked; the message is one line for the user."""


@dataclass(frozen=True)
class ProjectNames:
    """Every name of one plugin project, derived from the name the user typed."""

    name: str
    """Distribution, entry-point and plugin name: lower case, words joined by ``-``."""
    package: str
    """The import package: ``name`` in snake_case."""
    class_name: str
    """The plugin class: ``name`` in CamelCase, ending in ``Plugin``."""

    @property
    def source(self) -> str:
        """The plugin's source string for ``plugbridge.load`` and the entry point."""
        return f"{self.package}.plugin:{self.class_name}"

    @classmethod
    def from_name(cls, typed: str) -> ProjectNames:
        """Derive the names from ``typed`` ("hello-world", "Weather_Station"), or refuse it."""
        if not _NAME.fullmatch(typed):
            raise ProjectError(
                f"invalid plugin name {typed!r}: use letters, digits, '-' and '_', "
                "starting with a letter"
            )
        if len(typed) > MAX_NAME_LENGTH:
            raise ProjectError(
                f"invalid plugin name {typed!r}: at most {MAX_NAME_LENGTH} characters"
            )
        words = re.split(r"[-_]", typed.lower())
        package = "_".join(words)
        if keyword.iskeyword(package):
            raise ProjectError(f"invalid plugin name {typed!r}: {package!r} is a Python keyword")
        if package in sys.stdlib_module_names or package in _TAKEN_PACKAGES:
            raise ProjectError(
                f"invalid plugin name {typed!r}: the package {package!r} would shadow the "
                f"module {package!r}; choose another name"
            )
        camel = "".join(word.capitalize() for word in words)
        if not camel.endswith("Plugin") or camel == "Plugin":
            camel += "Plugin"  # "Plugin" alone would hide plugbridge.Plugin in plugin.py
        return cls(name="-".join(words), package=package, class_name=camel)


def plugbridge_requirement(version: str) -> str:
    """``>=MAJOR.MINOR`` of the running plugbridge: the API the template was written for."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"plugbridge version {version!r} has no MAJOR.MINOR")
    return f">={match[1]}.{match[2]}"


def render(names: ProjectNames, plugbridge_version: str) -> dict[PurePosixPath, str]:
    """The project's files (relative path → text) for ``names``."""
    values = {
        "name": names.name,
        "package": names.package,
        "class_name": names.class_name,
        "source": names.source,
        "plugin_version": PLUGIN_VERSION,
        "plugbridge_requirement": plugbridge_requirement(plugbridge_version),
    }
    files: dict[PurePosixPath, str] = {}
    root = resources.files("plugbridge").joinpath(TEMPLATE)
    for relative, entry in _walk(root, PurePosixPath()):
        parts = [names.package if part == PACKAGE_DIR else part for part in relative.parts]
        path = PurePosixPath(*parts)
        path = path.with_name(path.name.removesuffix(TEMPLATE_SUFFIX))
        text = entry.read_text(encoding="utf-8")
        files[path] = _PLACEHOLDER.sub(lambda m: values[m[1]], text)
    return files


def _walk(folder: Traversable, at: PurePosixPath) -> list[tuple[PurePosixPath, Traversable]]:
    found: list[tuple[PurePosixPath, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        if entry.is_dir():
            found.extend(_walk(entry, at / entry.name))
        else:
            found.append((at / entry.name, entry))
    return found


def check_target(target: Path) -> None:
    """Refuse a target that is a file or a directory with anything in it."""
    if target.is_dir():
        if any(target.iterdir()):
            raise ProjectError(f"{target} already exists and is not empty")
    elif target.exists() or target.is_symlink():
        raise ProjectError(f"{target} already exists and is not a directory")


def write_project(target: Path, files: dict[PurePosixPath, str]) -> None:
    """Write ``files`` under ``target`` (absent or empty); on failure remove what was written,
    so a failed ``new`` can simply be run again."""
    check_target(target)
    created = not target.exists()
    try:
        target.mkdir(parents=True, exist_ok=True)
        for relative, text in files.items():
            path = target.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
