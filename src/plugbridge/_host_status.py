"""PluginStatus: one plugin of a ``PluginHost`` as ``host.status()`` reports it."""

from __future__ import annotations

from dataclasses import dataclass

from ._levels import LogLevel
from ._lifecycle import LifecycleState
from ._stats import PluginStats
from ._transport import PluginMetadata


@dataclass(frozen=True, slots=True)
class PluginStatus:
    """A snapshot of one plugin of a host."""

    name: str
    """The plugin's name in the host (its ``[plugins.NAME]`` table, or ``add``'s name)."""
    source: str
    """What it was last started from (an entry point's value once looked up)."""
    isolation: str
    state: LifecycleState
    log_level: LogLevel
    metadata: PluginMetadata
    stats: PluginStats
    """The handle's statistics (they survive reloads; a plugin listed FAILED has none yet)."""
    error: str | None
    """The message of the last failed load or reload; None once a later one succeeded."""
    required: bool
