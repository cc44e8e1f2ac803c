"""What a ``source`` argument names: a Python file, package, module path, shared library or
rustbridge bundle."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ._errors import BundleError, InitializationFailed

if TYPE_CHECKING:
    from ._bundle.minisign import PublicKey

NATIVE_SUFFIXES = (".so", ".dylib", ".dll")
BUNDLE_SUFFIX = ".rbp"
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


class BundledLibrary(msgspec.Struct, frozen=True, array_like=True):
    """A bundle's library for this machine, verified: its bytes and what the manifest says.

    It crosses to a worker process as it is (the worker loads these bytes, never the
    bundle): the checks are the host's, and nothing is extracted to disk on either side.
    """

    name: str
    """The manifest's ``plugin.name``."""
    version: str
    """The manifest's ``plugin.version``."""
    trust: str
    """``"trusted"``, ``"self-signed"`` or ``"unsigned"`` (see ``PluginMetadata.trust``)."""
    library: str
    """Its path inside the bundle (``lib/linux-x86_64/release/libhello.so``)."""
    data: bytes

    @property
    def file_name(self) -> str:
        return self.library.rpartition("/")[2]


@dataclass(frozen=True, slots=True)
class NativeSource:
    """A shared library exporting the rustbridge C ABI (the file at ``path``), or the
    verified library of the bundle at ``path`` (``bundle``)."""

    path: Path
    bundle: BundledLibrary | None = field(default=None, repr=False)


Source = PythonSource | NativeSource
"""What an instance starts from (a bundle becomes a ``NativeSource`` at each start)."""


@dataclass(frozen=True, slots=True)
class BundleSource:
    """A rustbridge ``.rbp`` bundle: opened and verified afresh at every (re)start."""

    path: Path
    variant: str | None
    trusted_keys: tuple[PublicKey, ...] | None
    """The keys a signature must be made by; None: check against the bundle's own key."""


def source_trust(source: Source) -> str:
    """``PluginMetadata.trust`` of an instance started from ``source``."""
    if isinstance(source, NativeSource) and source.bundle is not None:
        return source.bundle.trust
    return "unsigned"


def resolve_source(
    source: str | os.PathLike[str],
    *,
    variant: str | None = None,
    trusted_keys: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
) -> Source | BundleSource:
    """Classify ``source`` and check it exists; ``InitializationFailed`` otherwise.

    ``variant`` and ``trusted_keys`` apply to a bundle (and are ignored for any other
    source, so one set of defaults serves every plugin of a host file). The trusted keys
    are read now (from ``PLUGBRIDGE_TRUSTED_KEYS`` when the argument is None): a reload
    checks against the same keys.
    """
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
    if path.suffix == BUNDLE_SUFFIX:
        if not path.is_file():
            raise BundleError(f"bundle not found: {text}")
        from ._bundle.keys import trusted_keys_for_load
        from ._bundle.manifest import checked_variant

        return BundleSource(
            path.resolve(), checked_variant(variant), trusted_keys_for_load(trusted_keys)
        )
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
        " shared library, .rbp bundle, nor a 'package.module[:Class]' name"
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
