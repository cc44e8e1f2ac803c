"""What a ``source`` argument names: a Python file, package, module path, or shared library."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ._errors import InitializationFailed

NATIVE_SUFFIXES = (".so", ".dylib", ".dll")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")


@dataclass(frozen=True, slots=True)
class PythonSource:
    """A Python plugin: import ``module`` (dotted, relative to ``search_dir``), or the file
    ``search_dir/<module>.py`` when that exists (see ``dotted_file``)."""

    search_dir: Path
    module: str
    class_name: str | None = None

    @property
    def top_package(self) -> str:
        return self.module.partition(".")[0]

    @property
    def dotted_file(self) -> Path | None:
        """The plugin's file when its name has dots before ``.py`` (``hello.v2.py``), else None.

        Such a ``module`` ("hello.v2") names a file in ``search_dir``, not a submodule.
        """
        if "." not in self.module:
            return None
        file = self.search_dir / f"{self.module}.py"
        return file if file.is_file() else None


@dataclass(frozen=True, slots=True)
class NativeSource:
    """A shared library exporting the rustbridge C ABI."""

    path: Path


Source = PythonSource | NativeSource


def resolve_source(source: str | os.PathLike[str]) -> Source:
    """Classify ``source`` and check it exists; ``InitializationFailed`` otherwise."""
    if not isinstance(source, str | os.PathLike):
        raise InitializationFailed(
            f"source must be a path or a module name, not {type(source).__name__}"
        )
    text = os.fspath(source)
    if not text:
        raise InitializationFailed("source is empty")
    path = Path(text)
    if path.suffix == ".py":  # Python whatever dots precede: hello.v2.py, weird.so.py
        if not path.is_file():
            raise InitializationFailed(f"plugin file not found: {text}")
        resolved = path.resolve()
        return PythonSource(resolved.parent, resolved.stem)
    if path.suffix in NATIVE_SUFFIXES or ".so." in path.name:
        if not path.is_file():
            raise InitializationFailed(f"native plugin library not found: {text}")
        return NativeSource(path.resolve())
    if path.is_dir():
        resolved = path.resolve()
        if not (resolved / "__init__.py").is_file():
            raise InitializationFailed(f"plugin directory {text} is not a package (no __init__.py)")
        return PythonSource(resolved.parent, resolved.name)
    if _DOTTED.match(text):
        return _importable_source(text)
    raise InitializationFailed(
        f"plugin source not found: {text!r} is neither an existing .py file, package directory,"
        " shared library, nor a 'package.module[:Class]' name"
    )


def _importable_source(text: str) -> PythonSource:
    module, _, class_name = text.partition(":")
    top = module.partition(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError) as exc:
        raise InitializationFailed(f"cannot find module {top!r}: {exc}") from None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        raise InitializationFailed(f"cannot find an importable Python module named {top!r}")
    origin = Path(spec.origin)
    if spec.submodule_search_locations is not None:
        if origin.name != "__init__.py":
            raise InitializationFailed(f"{top!r} is a namespace package; plugins need __init__.py")
        search_dir = origin.parent.parent
    else:
        if origin.suffix != ".py":
            raise InitializationFailed(f"module {top!r} is not Python source ({origin.name})")
        search_dir = origin.parent
    return PythonSource(search_dir, module, class_name or None)
