"""Watching plugin sources for changes: the file watcher behind ``PluginHost.watch()``.

``watched_paths(source)`` says what to watch for a ``load()`` source; a ``SourceWatcher``
watches named sets of paths on one daemon thread and calls ``on_change(name)`` once per
debounced batch of changes to a name's files.

Why it is built this way:

- **watchfiles' ``RustNotify``, used directly.** Its constructor registers every watch
  before it returns (Rust ``notify`` adds inotify watches synchronously) and records events
  from then on, whether or not a ``watch()`` call is waiting. So a notifier built on the
  caller's thread makes "every change made after ``watch()`` returns is seen" true.
  ``watchfiles.watch()`` cannot promise that: its generator builds the notifier on the
  first ``next()``.
- **Every watch is one directory, non-recursive.** A file is watched through its directory:
  editors that save by write-then-rename or delete-then-create replace the file's inode,
  which would end a watch on the file itself; events are filtered to the file's exact path,
  so a sibling, a temporary file or a ``.pyc`` never counts, and a rename onto the file
  does. A package is watched through its parent (so it can be deleted and re-created) and
  through each of its directories, listed by us: ``__pycache__`` and hidden directories are
  never watched, and one notifier serves files and packages alike. A directory created,
  deleted or renamed on a watched path makes the watcher rebuild its notifier; a missing
  directory is watched through its nearest existing ancestor until it appears.
- **A new notifier is watching before the old one is drained and closed**, so replacing it
  (``watch``, ``forget``, a rebuild) loses no change; a change both saw is merged by the
  debounce.
- **The debounce is ours, per name, trailing:** ``on_change(name)`` runs ``debounce_s``
  after the last change seen for that name, and at the latest ``5 * debounce_s`` after the
  first, so a file rewritten without pause still reloads. watchfiles' own grouping waits
  for a step with no new *distinct* ``(change, path)`` pair, so ten writes to one file look
  quiet to it: it cannot be the debounce.
- **Steps of 20 ms, batches handed over within two steps** (``step_ms=20``,
  ``debounce_ms=20``): a change reaches us 20-40 ms after it is made, a batch is a step
  old when it arrives (the notifier waited a quiet step; the debounce counts from the
  change, so that step is part of it) and a due callback is at most one step late: saving
  to ``on_change`` takes about ``debounce_s`` + 20-40 ms. Fifty wake-ups a second, each a
  few microseconds, cost nothing noticeable.
- **The waiting call is woken through its ``stop_event``**, whose ``is_set()`` runs on every
  step: it raises ``_Wake`` when a callback is due or a new notifier waits. An exception
  leaves the changes gathered so far in the notifier, where returning ``"stop"`` or a
  ``"timeout"`` would clear them; "stop" is used only by ``close()``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change
from watchfiles._rust_notify import RustNotify, WatchfilesRustInternalError

from ._config import checked_seconds
from ._errors import InitializationFailed, InvalidState
from ._sources import BUNDLE_SUFFIX, NATIVE_SUFFIXES

_log = logging.getLogger("plugbridge")

STEP_MS = 20
"""How often a waiting notifier wakes: detection latency is one to two steps."""
_GROUP_MS = STEP_MS
"""watchfiles' ``debounce_ms``: a batch is handed over within two steps even while distinct
changes keep coming (the grouping that matters is ours)."""
_MAX_WAIT_FACTOR = 5
"""A name's batch fires at the latest this many debounce periods after its first change."""
_BUILD_ATTEMPTS = 3
"""Notifier builds retried when a listed directory vanishes before it is watched."""
_RETRY_S = 1.0
"""Pause before trying again after the notifier itself failed (no busy loop)."""
_CLOSE_JOIN_S = 5.0
"""How long ``close()`` waits for the thread (longer only if ``on_change`` is running)."""
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")
"""A ``"pkg.module[:Class]"`` source (the shape ``resolve_source`` accepts)."""
_IGNORED_SUFFIXES = (
    ".pyc",
    ".pyo",
    ".swp",
    ".swo",
    ".swx",
    ".tmp",
    "___jb_tmp___",
    "___jb_old___",
)
"""Bytecode, vim swap files, temporary files of atomic saves (JetBrains' included)."""


def watched_paths(source: str) -> tuple[Path, ...]:
    """What to watch for the ``load()`` source ``source``; ``()`` when it resolves to nothing.

    A ``.py`` file, a shared library or a ``.rbp`` bundle: that file. A package directory:
    the directory (everything under it). ``"pkg.module[:Class]"`` (what an entry point
    gives): found with ``importlib.util.find_spec`` on its top-level name, which imports
    nothing; a package gives its directory — its whole top-level package, which is what
    each instance loads fresh, so an edit to ``pkg/helpers.py`` reloads ``pkg.plugin`` —
    and a plain module its file. Never raises.
    """
    try:
        return _watched_paths(os.fspath(source))
    except Exception:  # a broken finder or a strange path: nothing to watch
        return ()


def _watched_paths(text: str) -> tuple[Path, ...]:
    if not text:
        return ()
    path = Path(text)
    if (
        path.suffix in (".py", BUNDLE_SUFFIX)
        or path.suffix in NATIVE_SUFFIXES
        or ".so." in path.name
    ):
        return (path.resolve(),) if path.is_file() else ()
    if path.is_dir():
        return (path.resolve(),) if (path / "__init__.py").is_file() else ()
    if _DOTTED.match(text):
        return _importable_paths(text)
    return ()


def _importable_paths(text: str) -> tuple[Path, ...]:
    top = text.partition(":")[0].partition(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        return ()
    origin = Path(spec.origin)
    if spec.submodule_search_locations is not None:  # a package (not a namespace one)
        return (origin.parent.resolve(),) if origin.name == "__init__.py" else ()
    return (origin.resolve(),) if origin.suffix == ".py" and origin.is_file() else ()


class SourceWatcher:
    """Calls ``on_change(name)`` when the files watched for ``name`` change.

    One daemon thread waits on one notifier. ``on_change`` runs on that thread, once per
    debounced batch per name; an exception from it is logged to the ``plugbridge`` logger
    and watching goes on. ``watch``/``forget`` take effect before they return; ``close``
    stops and joins the thread (bounded) and is idempotent.
    """

    def __init__(self, on_change: Callable[[str], None], *, debounce_s: float = 0.2) -> None:
        if not callable(on_change):
            raise TypeError(f"on_change must be callable, not {type(on_change).__name__}")
        self._on_change = on_change
        self._debounce = checked_seconds("debounce_s", debounce_s)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._paths: dict[str, tuple[Path, ...]] = {}
        """What is watched for each name (resolved); changed under ``_lock`` only."""
        self._plan = _Plan.of(self._paths)
        """Which names an event concerns (the newest plan: names watched now)."""
        self._incoming: list[RustNotify] = []
        """Notifiers built and watching, not yet taken over by the thread (under ``_lock``)."""
        self._next_due: float | None = None
        """When the earliest open batch fires (the thread's own)."""
        first = _notifier(self._plan)
        self._thread = threading.Thread(
            target=self._run, args=(first,), name="plugbridge-watch", daemon=True
        )
        try:
            self._thread.start()
        except BaseException:
            first.close()
            raise

    def watch(self, name: str, paths: Iterable[Path]) -> None:
        """Watch ``paths`` for ``name`` (replacing what was watched for it), from now on.

        A directory counts with everything under it; a file through its directory (see the
        module docstring). A missing path is watched through its nearest existing ancestor
        until it appears. ``InitializationFailed`` if the system refuses a watch
        (permissions, the inotify watch limit); what was watched before stays.
        """
        self.watch_many({name: paths})

    def watch_many(self, paths_by_name: Mapping[str, Iterable[Path]]) -> None:
        """``watch`` for several names at once, with one notifier built for them all (a
        host starting to watch N plugins builds one, not N); all or nothing. An empty
        mapping changes nothing."""
        if not paths_by_name:
            return
        shown = ", ".join(map(repr, paths_by_name))
        try:
            targets = {
                name: tuple(dict.fromkeys(Path(path).resolve() for path in paths))
                for name, paths in paths_by_name.items()
            }
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            raise InitializationFailed(f"cannot watch the sources of {shown}: {exc}") from None
        with self._lock:
            if not self._closed.is_set() and all(
                self._paths.get(name) == paths for name, paths in targets.items()
            ):
                return  # already watched as asked: no new notifier
            self._install({**self._paths, **targets}, shown)

    def forget(self, name: str) -> None:
        """Stop watching for ``name``; an open batch of its changes is dropped."""
        with self._lock:
            if name in self._paths:
                paths = dict(self._paths)
                del paths[name]
                self._install(paths, repr(name))

    def close(self, timeout: float = _CLOSE_JOIN_S) -> None:
        """Stop watching and join the thread (at most ``timeout`` seconds while an
        ``on_change`` runs; from ``on_change`` itself, the thread ends when it returns).
        No ``on_change`` starts once this is called."""
        self._closed.set()
        if threading.current_thread() is self._thread:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            _log.warning(
                "plugbridge: the source watcher's on_change is still running after %.3g s;"
                " its thread ends when it returns",
                timeout,
            )

    @property
    def names(self) -> tuple[str, ...]:
        """The names watched now."""
        return tuple(self._paths)

    def __enter__(self) -> SourceWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _install(self, paths: dict[str, tuple[Path, ...]], shown: str) -> None:
        """Build a notifier for ``paths`` and hand it to the thread (``_lock`` held);
        ``shown``: the names the change is for, as an error names them."""
        if self._closed.is_set():
            raise InvalidState("the source watcher is closed")
        try:
            plan, notifier = _build(paths)
        except (OSError, WatchfilesRustInternalError) as exc:  # e.g. no inotify instance left
            raise InitializationFailed(f"cannot watch the sources of {shown}: {exc}") from None
        self._paths = paths
        self._plan = plan
        self._incoming.append(notifier)

    # --- the watcher's thread ---------------------------------------------------------

    def _run(self, notifier: RustNotify) -> None:
        current = notifier
        batches = _Batches(self._debounce, self._debounce * _MAX_WAIT_FACTOR)
        hook = _StepHook(self._on_step)
        try:
            while not self._closed.is_set():
                try:
                    current = self._turn(current, batches, hook)
                except Exception:  # a bug of ours: say so, keep watching
                    _log.exception("plugbridge: the source watcher failed; it goes on")
                    self._closed.wait(_RETRY_S)
        finally:
            with self._lock:
                leftover, self._incoming = self._incoming, []
            for each in (current, *leftover):
                each.close()

    def _turn(self, current: RustNotify, batches: _Batches, hook: _StepHook) -> RustNotify:
        """Wait for changes (or a due batch, a new notifier, close), then act on them."""
        try:
            result = current.watch(_GROUP_MS, STEP_MS, 0, hook)
        except _Wake:
            result = None
        except WatchfilesRustInternalError as exc:
            # The notifier keeps its error for good: replace it, and since changes may
            # have been missed, count every watched name as changed.
            _log.warning("plugbridge: file watching failed (%s); watching again", exc)
            for name in self._paths:
                batches.touch(name, time.monotonic())
            if not self._rebuild():
                self._closed.wait(_RETRY_S)
            result = None
        if isinstance(result, set):
            # The notifier hands a batch over once a step passed with no new distinct
            # change: its last change is a step old already, and the quiet period counts
            # from the change, not from its delivery.
            self._note(result, batches, age=STEP_MS / 1000)
        current = self._take_over(current, batches)
        self._fire_due(batches)
        return current

    def _on_step(self) -> bool:
        """The waiting notifier's ``stop_event.is_set()``, asked on every step."""
        if self._closed.is_set():
            return True
        due = self._next_due
        if self._incoming or (due is not None and time.monotonic() >= due):
            raise _Wake
        return False

    def _note(self, changes: set[tuple[int, str]], batches: _Batches, age: float = 0.0) -> None:
        """Open or extend the batches of the names ``changes`` concern, made ``age`` ago."""
        names, rebuild = self._plan.changed(changes)
        when = time.monotonic() - age
        for name in names:
            batches.touch(name, when)
        if rebuild:
            self._rebuild()

    def _rebuild(self) -> bool:
        """Hand the thread a notifier for the directories there are now."""
        with self._lock:
            if self._closed.is_set():
                return False
            try:
                plan, notifier = _build(self._paths)
            except OSError as exc:
                _log.warning("plugbridge: cannot watch the plugin sources again: %s", exc)
                return False
            self._plan = plan
            self._incoming.append(notifier)
            return True

    def _take_over(self, current: RustNotify, batches: _Batches) -> RustNotify:
        """Switch to the newest notifier; drain and close the ones it replaces."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
        if not incoming:
            return current
        for old in (current, *incoming[:-1]):
            leftovers = _drain(old)
            old.close()
            if leftovers:
                self._note(leftovers, batches)
        return incoming[-1]

    def _fire_due(self, batches: _Batches) -> None:
        for name in batches.pop_due(time.monotonic()):
            if self._closed.is_set():
                break
            if name not in self._paths:  # forgotten meanwhile
                continue
            try:
                self._on_change(name)
            except BaseException:
                _log.exception(
                    "plugbridge: the source watcher's on_change(%r) raised; watching goes on",
                    name,
                )
        self._next_due = batches.next_due()


class _Wake(Exception):
    """Raised by the step hook to make a waiting notifier return, its changes kept."""


class _StepHook:
    """A notifier's ``stop_event``: ``is_set()`` is asked on every step of ``watch()``."""

    __slots__ = ("_check",)

    def __init__(self, check: Callable[[], bool]) -> None:
        self._check = check

    def is_set(self) -> bool:
        return self._check()


class _WakeOnThirdStep:
    """Makes ``watch(0, 0, 0, ...)`` return at once: what is pending, or nothing (raises)."""

    __slots__ = ("_steps",)

    def __init__(self) -> None:
        self._steps = 0

    def is_set(self) -> bool:
        self._steps += 1
        if self._steps >= 3:
            raise _Wake
        return False


def _drain(notifier: RustNotify) -> set[tuple[int, str]]:
    """The changes ``notifier`` holds now, without waiting and without losing any.

    With no step and no debounce, a pending batch is returned on the second step; an empty
    notifier reaches the third, where the hook raises.
    """
    try:
        result = notifier.watch(0, 0, 0, _WakeOnThirdStep())
    except _Wake:
        return set()
    except WatchfilesRustInternalError:  # a failed one, being replaced: already reported
        return set()
    return result if isinstance(result, set) else set()


class _Batches:
    """Open batches of changes, per name: when each began and when it last grew."""

    def __init__(self, quiet: float, longest: float) -> None:
        self._quiet = quiet
        self._longest = longest
        self._open: dict[str, tuple[float, float]] = {}

    def touch(self, name: str, now: float) -> None:
        first = self._open[name][0] if name in self._open else now
        self._open[name] = (first, now)

    def _due(self, name: str) -> float:
        first, last = self._open[name]
        return min(last + self._quiet, first + self._longest)

    def pop_due(self, now: float) -> list[str]:
        """The names whose batch is due, earliest first; their batches are closed."""
        due = sorted((self._due(name), name) for name in self._open)
        names = [name for at, name in due if at <= now]
        for name in names:
            del self._open[name]
        return names

    def next_due(self) -> float | None:
        return min((self._due(name) for name in self._open), default=None)


@dataclass(frozen=True, slots=True)
class _Target:
    path: str
    tree: bool
    """A directory: every file under it counts (ignored names aside)."""
    names: frozenset[str]

    def concerns(self, path: str) -> bool:
        """Whether a change at ``path`` may change this target: the target itself, one of
        its ancestors (created, deleted, renamed), or a file under it that is not ignored."""
        if path == self.path or self.path.startswith(path + os.sep):
            return True
        inside = self.tree and path.startswith(self.path + os.sep)
        return inside and not _ignored(path[len(self.path) + 1 :])


@dataclass(frozen=True, slots=True)
class _Plan:
    """The directories one notifier watches, and which names an event path concerns."""

    targets: tuple[_Target, ...]
    dirs: frozenset[str]

    @classmethod
    def of(cls, paths: Mapping[str, tuple[Path, ...]]) -> _Plan:
        """The plan for ``paths`` as the file system is now."""
        by_path: dict[str, set[str]] = {}
        for name, watched in paths.items():
            for each in watched:
                by_path.setdefault(str(each), set()).add(name)
        targets: list[_Target] = []
        dirs: set[str] = set()
        for path, names in by_path.items():
            tree = os.path.isdir(path)
            targets.append(_Target(path, tree, frozenset(names)))
            dirs.add(_nearest_dir(os.path.dirname(path)))
            if tree:
                dirs.update(_tree_dirs(path))
        return cls(tuple(targets), frozenset(dirs))

    def changed(self, changes: Iterable[tuple[int, str]]) -> tuple[set[str], bool]:
        """The names ``changes`` concern, and whether the notifier must be rebuilt (a
        directory on a watched path appeared, or a watched directory went)."""
        names: set[str] = set()
        rebuild = False
        for change, path in changes:
            hit = self._names_for(path)
            if hit:
                names |= hit
                if path in self.dirs or (change == Change.added and os.path.isdir(path)):
                    rebuild = True
        return names, rebuild

    def _names_for(self, path: str) -> set[str]:
        hit: set[str] = set()
        for target in self.targets:
            if target.concerns(path):
                hit |= target.names
        return hit


def _build(paths: Mapping[str, tuple[Path, ...]]) -> tuple[_Plan, RustNotify]:
    """A plan for ``paths`` and a notifier already watching it."""
    for attempt in range(_BUILD_ATTEMPTS):
        plan = _Plan.of(paths)
        try:
            return plan, _notifier(plan)
        except FileNotFoundError:  # a listed directory went meanwhile: list them again
            if attempt == _BUILD_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _notifier(plan: _Plan) -> RustNotify:
    return RustNotify(
        sorted(plan.dirs),
        False,  # debug
        False,  # force_polling
        50,  # poll_delay_ms (polling only)
        False,  # recursive: we list a package's directories ourselves
        False,  # ignore_permission_denied: a refused watch is reported, not skipped
    )


def _nearest_dir(path: str) -> str:
    """``path`` if it is a directory, else its nearest ancestor that is."""
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _tree_dirs(root: str) -> Iterator[str]:
    """``root`` and every directory under it that is not ignored (symlinks not followed)."""
    for directory, subdirs, _files in os.walk(root):
        subdirs[:] = [name for name in subdirs if not _ignored_name(name)]
        yield directory


def _ignored(relative: str) -> bool:
    """Whether a path inside a watched package is never a change (any part ignored)."""
    return any(_ignored_name(part) for part in relative.split(os.sep))


def _ignored_name(name: str) -> bool:
    """Bytecode, hidden files and directories (vim swap, emacs locks, many editors'
    temporary files, tool caches), backups (``name~``), vim's ``4913`` write probe."""
    return (
        name == "__pycache__"
        or name.startswith(".")
        or name.endswith("~")
        or name.endswith(_IGNORED_SUFFIXES)
        or name == "4913"
    )
