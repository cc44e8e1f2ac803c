"""Plugins that installed distributions advertise: the ``plugbridge.plugins`` entry points.

A plugin project declares ``[project.entry-points."plugbridge.plugins"] hello =
"hello_pkg.plugin:HelloPlugin"``; once it is installed, ``entry_points()`` maps ``hello``
to the source string ``load`` takes. Nothing is imported here: the entry point's value is
only read, so listing plugins never runs plugin code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from ._errors import InitializationFailed

if TYPE_CHECKING:
    import importlib.metadata

ENTRY_POINT_GROUP = "plugbridge.plugins"
_log = logging.getLogger("plugbridge")


def entry_points() -> Mapping[str, str]:
    """The installed plugins: entry-point name -> source string for ``load``
    (``"module:attr"``, or ``"module"``), sorted by name.

    Read afresh at each call (a distribution installed meanwhile is seen, once
    ``importlib.invalidate_caches()`` has run where the import system needs it). When two
    distributions advertise the same name, the one first on ``sys.path`` wins, as the
    import system would pick its module.

    One distribution's mistake must not hide every other plugin (nor break ``plugbridge
    list``): an entry whose value is not ``module[:attr]`` of Python names, or an
    ``entry_points.txt`` that cannot be read, is skipped with a warning on the
    ``plugbridge`` logger naming the distribution and what it says.
    """
    import importlib.metadata  # ~20 ms: paid by the commands that read entry points only

    found: dict[str, str] = {}
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        key = _key_of(dist)
        if key in seen:  # the same distribution again, later on sys.path: not seen
            continue
        seen.add(key)
        try:
            text = dist.read_text("entry_points.txt")
        except Exception as exc:  # an unreadable file is that distribution's problem
            _skip(_name_of(dist), f"its entry_points.txt, which cannot be read ({exc!r})")
            continue
        entries = _group_entries(text) if text else []
        for line in entries:
            entry_name, equals, value = (part.strip() for part in line.partition("="))
            source = _source_of(entry_name, value) if equals else None
            if source is None:
                _skip(
                    _name_of(dist),
                    f"the entry {line!r}: not 'module' or 'module:attr' of Python names",
                )
            else:
                found.setdefault(entry_name, source)
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


def _group_entries(text: str) -> list[str]:
    """The lines of ``entry_points.txt`` in our group, read the way ``importlib.metadata``
    reads them (stripped, ``#`` comments and blank lines left out, ``[section]`` headers),
    but without its parsing of each line: a line it cannot parse raises for every group
    of every distribution."""
    lines: list[str] = []
    section: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]").strip()
        elif section == ENTRY_POINT_GROUP:
            lines.append(line)
    return lines


def _source_of(name: str, value: str) -> str | None:
    """``module:attr`` (or ``module``) without the extras an entry point may name
    (``mod:Cls [extra]``); None unless the name is set and the module and attribute are
    dotted Python names."""
    import importlib.metadata

    if not name:
        return None
    try:
        entry = importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)
        module, attr = entry.module, entry.attr
    except Exception:  # its pattern does not match: AttributeError on 3.11
        return None
    if not _dotted(module) or (attr and not _dotted(attr)):
        return None
    return f"{module}:{attr}" if attr else module


def _dotted(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def _name_of(dist: importlib.metadata.Distribution) -> str:
    """The distribution's name, or where it lies when its metadata has none."""
    try:
        name = dist.metadata["Name"]
    except Exception:  # a broken METADATA: say where instead
        name = None
    if name:
        return str(name)
    where = getattr(dist, "_path", None)  # PathDistribution's directory, when there is one
    return f"the distribution at {where}" if where is not None else "an unnamed distribution"


def _key_of(dist: importlib.metadata.Distribution) -> str:
    """What tells two copies of one distribution apart from two distributions, as
    ``importlib.metadata.entry_points`` tells them: the normalized name a dist-info
    directory's name gives (no file read), else the one its metadata gives, spelt alike
    (PEP 503, with ``_``)."""
    known = getattr(dist, "_normalized_name", None)
    if isinstance(known, str) and known:
        return known
    return re.sub(r"[-_.]+", "_", _name_of(dist)).lower()


def _skip(dist: str, what: str) -> None:
    _log.warning("plugbridge.plugins entry points of %s: skipped %s", dist, what)
