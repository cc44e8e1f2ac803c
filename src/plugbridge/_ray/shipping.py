"""A plugin's code, packed on the host and rebuilt where its actor runs.

An actor may run on a node that does not share the host's filesystem, so the host reads
the plugin's files at every start (``load`` and each ``reload``: the code as it is on disk
then) and sends their bytes with the start. A bundle's library travels as the verified
``BundledLibrary`` the host made (the checks are the host's; the actor loads those bytes
and never sees the bundle). In the actor the files are written to a private temporary
directory (``UnpackedCode``), removed when the instance stops: the namespace loader
imports from a directory, and a native library is loaded from a file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import msgspec

from .._errors import InitializationFailed
from .._sources import BundledLibrary, NativeSource, PythonSource, Source

_SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


class ShippedCode(msgspec.Struct, frozen=True):
    """What an actor needs to rebuild a source: files by path relative to the directory
    it is rebuilt in, and what to start from there."""

    kind: str
    """``"python"`` or ``"native"``."""
    files: dict[str, bytes]
    module: str = ""
    """Python: the module to import (as ``PythonSource.module``)."""
    class_name: str | None = None
    library: str = ""
    """Native: the library's file name among ``files`` (empty for a bundle's library)."""
    bundle_path: str = ""
    """A bundle's path on the host (error messages name it); ``bundle`` holds its library."""
    bundle: BundledLibrary | None = None


def pack(source: Source) -> ShippedCode:
    """Read ``source``'s code from disk now; ``InitializationFailed`` if it is unreadable."""
    try:
        if isinstance(source, NativeSource):
            if source.bundle is not None:
                return ShippedCode("native", {}, bundle_path=str(source.path), bundle=source.bundle)
            name = source.path.name
            return ShippedCode("native", {name: source.path.read_bytes()}, library=name)
        return ShippedCode(
            "python", _python_files(source), module=source.module, class_name=source.class_name
        )
    except OSError as exc:
        raise InitializationFailed(f"cannot read the plugin's code to ship it: {exc}") from None


def _python_files(source: PythonSource) -> dict[str, bytes]:
    """The plugin's own files (its ``.py`` file, or its top package's tree, data files
    included and caches left out), and the Python next to it: the namespace loader lets a
    plugin import its directory's other modules and packages (``from .helper import f``),
    so they are its code too. Next to a plugin found on the host's ``sys.path`` (an
    installed package) they are the environment's, not shipped; so are siblings beyond
    ``MAX_SIBLINGS`` bytes (the actor's own environment must provide those)."""
    dotted = source.dotted_file
    if dotted is not None:
        own = {dotted.name: dotted.read_bytes()}
    else:
        top = source.top_package
        package = source.search_dir / top
        file = source.search_dir / f"{top}.py"
        if (package / "__init__.py").is_file():
            own = _tree(package, source.search_dir)
        elif file.is_file():
            own = {file.name: file.read_bytes()}
        else:
            raise InitializationFailed(
                f"plugin source not found: no {top}.py or {top}/ in {source.search_dir}"
            )
    if _on_sys_path(source.search_dir):
        return own
    siblings = _siblings(source.search_dir, {path.partition("/")[0] for path in own})
    return own if siblings is None else {**siblings, **own}


MAX_SIBLINGS = 64 * 1024 * 1024
"""Bytes of modules next to a plugin shipped with it, at most."""


def _siblings(directory: Path, own: set[str]) -> dict[str, bytes] | None:
    """The directory's other modules and packages; None if they are too large to ship."""
    files: dict[str, bytes] = {}
    size = 0
    for entry in sorted(directory.iterdir()):
        if entry.name in _SKIPPED_DIRS or entry.name in own:
            continue
        if entry.is_file() and entry.suffix == ".py":
            found = {entry.name: entry.read_bytes()}
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            found = _tree(entry, directory)
        else:
            continue
        size += sum(len(data) for data in found.values())
        if size > MAX_SIBLINGS:
            return None
        files.update(found)
    return files


def _on_sys_path(directory: Path) -> bool:
    import sys

    return any(entry and Path(entry).resolve() == directory for entry in sys.path)


def _tree(root: Path, base: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(names):
            if name.endswith(_SKIPPED_SUFFIXES):
                continue
            path = Path(folder, name)
            files[path.relative_to(base).as_posix()] = path.read_bytes()
    return files


class UnpackedCode:
    """Shipped code written to a private temporary directory, as a ``Source`` again."""

    def __init__(self, shipped: ShippedCode) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="plugbridge-ray-"))
        try:
            for relative, data in shipped.files.items():
                target = self._inside(relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        except BaseException:
            self.remove()
            raise
        self.source = self._source(shipped)

    def _inside(self, relative: str) -> Path:
        """``relative`` under the directory; anything reaching out of it is refused."""
        target = (self.directory / relative).resolve()
        if not target.is_relative_to(self.directory.resolve()) or os.path.isabs(relative):
            raise InitializationFailed(f"shipped file {relative!r} is not inside its directory")
        return target

    def _source(self, shipped: ShippedCode) -> Source:
        if shipped.kind == "native":
            if shipped.bundle is not None:
                return NativeSource(Path(shipped.bundle_path), shipped.bundle)
            return NativeSource(self.directory / shipped.library)
        return PythonSource(self.directory, shipped.module, shipped.class_name)

    def remove(self) -> None:
        """Delete the files (idempotent)."""
        shutil.rmtree(self.directory, ignore_errors=True)
