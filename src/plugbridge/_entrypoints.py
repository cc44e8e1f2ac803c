"""Plugins that installed distributions advertise: the ``plugbridge.plugins`` entry points.

A plugin project declares ``[project.entry-points."plugbridge.plugins"] hello =
"hello_pkg.plugin:HelloPlugin"``; once it is installed, ``entry_points()`` maps ``hello``
to the source string ``load`` takes. Nothing is imported here: the entry point's value is
only read, so listing plugins never runs plugin code.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from ._errors import InitializationFailed

if TYPE_CHECKING:
    import importlib.metadata

ENTRY_POINT_GROUP = "plugbridge.plugins"


def entry_points() -> Mapping[str, str]:
    """The installed plugins: entry-point name -> source string for ``load``
    (``"module:attr"``, or ``"module"``), sorted by name.

    Read afresh at each call (a distribution installed meanwhile is seen, once
    ``importlib.invalidate_caches()`` has run where the import system needs it). When two
    distributions advertise the same name, the one first on ``sys.path`` wins, as the
    import system would pick its module.
    """
    import importlib.metadata  # ~20 ms: paid by the commands that read entry points only

    found: dict[str, str] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, _source_of(entry))
    return MappingProxyType(dict(sorted(found.items())))


def entry_point_source(name: str) -> str:
    """The source string of the installed entry point ``name``; ``InitializationFailed``
    (naming the ones that are installed) when no distribution advertises it."""
    installed = entry_points()
    try:
        return installed[name]
    except KeyError:
        known = ", ".join(installed) or "none"
        raise InitializationFailed(
            f"no installed distribution advertises the plugin entry point {name!r} in group "
            f"{ENTRY_POINT_GROUP!r} (installed: {known})"
        ) from None


def _source_of(entry: importlib.metadata.EntryPoint) -> str:
    """``module:attr`` without the extras an entry point may name (``mod:Cls [extra]``)."""
    module, attr = entry.module, entry.attr
    return f"{module}:{attr}" if attr else module
