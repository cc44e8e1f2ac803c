"""HostWatch: what ``PluginHost.watch()`` runs — a plugin reloaded when its source changes.

The host owns one ``HostWatch`` and tells it about its plugins: ``track`` when one is added
or its source moved, ``watch_also`` before an instance starts from a source it moved to (so
an edit made while it starts is seen), ``forget`` when one is removed. The
``SourceWatcher`` (``_watch``) exists only between ``start`` and ``stop``. A change reloads
the plugin on the watcher's thread through the host's own reload path (the one
``host.reload`` takes: it records the outcome and re-tracks a source that moved); a reload
that fails leaves the old instance serving and also sends an ERROR record to the plugin's
callback. Once ``stop`` has begun (an ``unwatch``, or the host closing) no further reload
starts.

``_lock`` orders the updates of the watch set (``start``, ``track``, ``watch_also``,
``forget``, and ``stop`` taking the watcher away); it is held only while a notifier is
built, never while a reload runs or the watcher's thread is joined (``stop`` lets go before
it closes the watcher). So the watcher's thread may take it too — watching a plugin whose
reload moves its source — without ``stop`` ever waiting on it. ``_watch`` (and watchfiles)
is imported only when watching starts: a host that never watches does not load it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from ._errors import PluginError
from ._handle import PluginHandle

if TYPE_CHECKING:
    from ._watch import SourceWatcher

_internal_log = logging.getLogger("plugbridge")


class WatchedPlugin(Protocol):
    """What the watch needs of one of the host's plugins."""

    source: str | None
    """The source it was last started from (None: nothing to watch)."""

    @property
    def name(self) -> str: ...

    @property
    def started(self) -> PluginHandle: ...

    def log_error(self, message: str) -> None:
        """An ERROR record about this plugin, from the host, to the plugin's callback."""


_P = TypeVar("_P", bound=WatchedPlugin)


class HostWatch(Generic[_P]):
    """Reloads the host's plugins when their sources change, while started.

    ``listed()``: every plugin of the host now (``InvalidState`` once it is closed);
    ``current(name)``: the plugin listed as ``name`` now (None if none, or the host is
    closed); ``reload(plugin)``: the host's reload of a plugin (it records the outcome).
    A plugin no longer current is not watched, not reloaded, and its failures not logged.
    """

    def __init__(
        self,
        listed: Callable[[], Sequence[_P]],
        current: Callable[[str], _P | None],
        reload: Callable[[_P], None],
    ) -> None:
        self._listed = listed
        self._current = current
        self._reload = reload
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
                watcher.watch_many({plugin.name: _paths_of(plugin.source) for plugin in plugins})
            except BaseException:  # no watcher left running half set up
                watcher.close()
                raise
            self._watcher = watcher

    def stop(self, within: float | None = None) -> None:
        """Stop watching (nothing when not watching): no reload starts from now on; waits
        ``within`` seconds at most (None: the watcher's own bound) for a reload running on
        the watcher's thread to end."""
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            if within is None:
                watcher.close()
            else:
                watcher.close(within)

    def track(self, plugin: _P) -> None:
        """While watching, watch ``plugin``'s current source (just added, or it started from
        a source it moved to). Never raises: a watch the system refuses is an ERROR record
        of that plugin, which keeps serving, unwatched."""
        self._watch(plugin)

    def watch_also(self, plugin: _P, source: str) -> None:
        """While watching, watch ``source`` for ``plugin`` as well as its current source:
        called before an instance starts from a source the plugin moved to, so an edit made
        while it starts is seen; ``track`` narrows the watch once an instance has started
        from it. Until then (a start that failed) both stay watched, and an edit to either
        retries the reload. Never raises, as ``track``."""
        self._watch(plugin, also=source)

    def _watch(self, plugin: _P, also: str | None = None) -> None:
        problem = None
        with self._lock:
            if self._watcher is None:
                return
            if self._current(plugin.name) is not plugin:  # removed meanwhile (then forgotten)
                return
            try:
                paths = (*_paths_of(plugin.source), *_paths_of(also))
                self._watcher.watch(plugin.name, paths)
            except PluginError as exc:
                problem = exc.message
            except Exception as exc:  # a bug: never let it fail the start that watches
                _internal_log.exception("plugbridge: watching %r failed", plugin.name)
                problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:  # the callback may call the host: not under our lock
            plugin.log_error(f"plugin {plugin.name!r} is not watched for changes: {problem}")

    def forget(self, name: str) -> None:
        """Stop watching the plugin ``name`` (removed from the host)."""
        with self._lock:
            if self._watcher is not None:
                self._watcher.forget(name)

    def _source_changed(self, name: str) -> None:
        """On the watcher's thread: reload ``name`` (unless watching is stopping or the
        host closed); a failure is logged to the plugin's callback (the host's reload has
        recorded it)."""
        plugin = self._current(name)
        if plugin is None or self._watcher is None:
            return
        try:
            self._reload(plugin)
        except PluginError as exc:
            if self._current(name) is plugin:
                plugin.log_error(
                    f"reload of {name!r} after a change on disk failed; the previous instance "
                    f"keeps serving: {exc.message}"
                )
        except Exception:  # a bug: never let it end the watcher's thread
            _internal_log.exception("plugbridge: reloading %r after a change failed", name)


def _paths_of(source: str | None) -> tuple[Path, ...]:
    """What to watch for a plugin's ``source``: what ``watched_paths`` finds, or for a source
    that is a path not there yet (an optional plugin listed FAILED), that path, so the file
    appearing reloads the plugin; nothing for no source."""
    from ._watch import watched_paths

    if source is None:
        return ()
    return watched_paths(source) or ((Path(source),) if os.path.isabs(source) else ())
