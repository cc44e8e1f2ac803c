"""HostWatch: what ``PluginHost.watch()`` runs — a plugin reloaded when its source changes.

The host owns one ``HostWatch`` and tells it about its plugins (``track`` when one is added
or its source moved, ``forget`` when one is removed); the ``SourceWatcher`` (``_watch``)
exists only between ``start`` and ``stop``. A change reloads the plugin on the watcher's
thread; a reload that fails leaves the old instance serving and is recorded like any
failed reload (``status().error``, an ERROR record to the plugin's callback).

``_lock`` orders the watcher's updates. It is never taken on the watcher's own thread, so
``stop`` may wait for that thread while holding it. ``_watch`` (and watchfiles) is imported
only when watching starts: a host that never watches does not load it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ._errors import PluginError
from ._handle import PluginHandle

if TYPE_CHECKING:
    from ._watch import SourceWatcher

_internal_log = logging.getLogger("plugbridge")


class WatchedPlugin(Protocol):
    """What the watch needs of one of the host's plugins."""

    source: str | None
    """The source it was last started from (None: nothing to watch)."""
    error: str | None

    @property
    def name(self) -> str: ...

    @property
    def started(self) -> PluginHandle: ...

    def log_error(self, message: str) -> None:
        """An ERROR record about this plugin, from the host, to the plugin's callback."""


class HostWatch:
    """Reloads the host's plugins when their sources change, while started.

    ``listed()``: every plugin of the host now (``InvalidState`` once it is closed);
    ``current(name)``: the plugin listed as ``name`` now (None if none, or the host is
    closed). A plugin no longer current is not watched and its failures not recorded.
    """

    def __init__(
        self,
        listed: Callable[[], Sequence[WatchedPlugin]],
        current: Callable[[str], WatchedPlugin | None],
    ) -> None:
        self._listed = listed
        self._current = current
        self._lock = threading.Lock()
        self._watcher: SourceWatcher | None = None

    def start(self, debounce_s: float) -> None:
        """Watch every listed plugin; all or nothing. Nothing if already watching."""
        from ._watch import SourceWatcher

        with self._lock:
            plugins = self._listed()
            if self._watcher is not None:
                return
            watcher = SourceWatcher(self._source_changed, debounce_s=debounce_s)
            try:
                for plugin in plugins:
                    _watch_paths(watcher, plugin)
            except BaseException:  # no watcher left running half set up
                watcher.close()
                raise
            self._watcher = watcher

    def stop(self) -> None:
        """Stop watching (nothing when not watching)."""
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()

    def track(self, plugin: WatchedPlugin) -> None:
        """While watching, watch ``plugin``'s current source (just added, or its source
        moved). A watch the system refuses is an ERROR record of that plugin: it keeps
        serving, unwatched."""
        with self._lock:
            if self._watcher is None:
                return
            if self._current(plugin.name) is not plugin:  # removed meanwhile (then forgotten)
                return
            try:
                _watch_paths(self._watcher, plugin)
            except PluginError as exc:
                plugin.log_error(
                    f"plugin {plugin.name!r} is not watched for changes: {exc.message}"
                )

    def forget(self, name: str) -> None:
        """Stop watching the plugin ``name`` (removed from the host)."""
        with self._lock:
            if self._watcher is not None:
                self._watcher.forget(name)

    def _source_changed(self, name: str) -> None:
        """On the watcher's thread: reload ``name``; a failure is recorded and logged."""
        plugin = self._current(name)
        if plugin is None:
            return
        try:
            plugin.started.reload()
        except PluginError as exc:
            if self._current(name) is plugin:
                plugin.error = exc.message
                plugin.log_error(
                    f"reload of {name!r} after a change on disk failed; the previous instance "
                    f"keeps serving: {exc.message}"
                )
        except Exception:  # a bug: never let it end the watcher's thread
            _internal_log.exception("plugbridge: reloading %r after a change failed", name)
        else:
            plugin.error = None


def _watch_paths(watcher: SourceWatcher, plugin: WatchedPlugin) -> None:
    """Watch ``plugin``'s source: what ``watched_paths`` finds, or for a source that is a
    path not there yet (an optional plugin listed FAILED), that path, so the file
    appearing reloads the plugin."""
    from ._watch import watched_paths

    source = plugin.source
    if source is None:
        return
    paths = watched_paths(source) or ((Path(source),) if os.path.isabs(source) else ())
    watcher.watch(plugin.name, paths)
