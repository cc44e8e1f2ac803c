"""PluginHost: many plugins by name, started together, reloaded and stopped one by one.

Each plugin is an ordinary ``PluginHandle``; the host only decides how its instances are
started. Its factory looks the source up again at every start of every instance (a file
fixed on disk, an entry point installed meanwhile are picked up by a reload; a plugin with
replicas is a ``ReplicaTransport`` over that same per-instance start, so its rolling reload
goes through it too) and records the outcome, so ``status().error`` follows every load and
reload, whoever asked for it — and only those: a reload refused before anything started (a
bad timeout, a handle shut down) is the caller's mistake, not the plugin's. The source shown
changes only when an instance did start from it. An optional plugin whose first start fails
gets a ``FailedTransport`` instead of an instance: it is listed, FAILED, and the same handle
serves once a reload succeeds.

Locks: ``_lock`` guards the table of plugins and is only ever held for a moment (never
while a plugin starts or stops). Watching (``watch()``) is the host's ``HostWatch``
(``_host_watch``), told about every plugin added, moved or removed; ``host.reload`` and a
reload the watcher makes take one path (``_reload_entry``).

``close`` is bounded: every plugin is stopped on a thread of its own and waited for until
the budget (the longest shutdown timeout, or ``close``'s own) plus ``CLOSE_GRACE_S``. A
plugin that cannot stop by then — its handle is busy with a reload still starting, which
a shutdown must wait for — is reported in ``ShutdownFailed`` and stops in the background as
soon as that reload ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from ._config import PluginConfig, checked_seconds
from ._errors import ConfigError, InvalidState, PluginError, ShutdownFailed, seconds
from ._handle import PluginHandle
from ._host_failed import FailedTransport
from ._host_status import PluginStatus
from ._host_watch import HostWatch
from ._hostfile import CONFIG_KEYS, PluginSpec, checked_table, plugin_spec, read_host_file
from ._levels import LogLevel
from ._load import transport_factory
from ._logsink import InstanceLog, LogCallback, LogSink
from ._transport import Transport, TransportFactory

CLOSE_GRACE_S = 0.5
"""Seconds ``close`` waits past its budget: a worker's shutdown may overrun its timeout by
a few reaping steps."""

LogCallbackFor = Callable[[str], LogCallback | None]
"""``log_callback_for(plugin_name)``: the callback for that plugin's records (None: the
host's ``log_callback``)."""


class _Entry:
    """One plugin of the host: how to start it, its handle, and what the host knows of it."""

    __slots__ = ("config", "error", "handle", "host_log", "sink", "source", "spec")

    def __init__(self, spec: PluginSpec, callback: LogCallback | None) -> None:
        self.spec = spec
        self.config = PluginConfig.coerce(spec.config)  # the handle's own, as load() makes
        self.sink = LogSink(callback, self.config.log_level)
        self.sink.name_plugin(spec.name)  # until an instance names it after its metadata
        self.host_log: InstanceLog = self.sink.instance_log()
        """The host's own records about this plugin (failed loads) go through its sink."""
        self.error: str | None = None
        self.source: str | None = spec.source
        """The source it was last started from (None: an entry point never found)."""
        self.handle: PluginHandle | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def started(self) -> PluginHandle:
        assert self.handle is not None
        return self.handle

    @property
    def shown_source(self) -> str:
        return self.source if self.source is not None else self.spec.shown_source

    def log_error(self, message: str) -> None:
        """An ERROR record from the host about this plugin (a failed load, reload, watch)."""
        self.host_log.emit(LogLevel.ERROR, "plugbridge", message)

    def status(self) -> PluginStatus:
        handle = self.started
        return PluginStatus(
            name=self.spec.name,
            source=self.shown_source,
            isolation=self.spec.isolation,
            state=handle.state,
            log_level=handle.log_level,
            metadata=handle.metadata,
            stats=handle.stats(),
            error=self.error,
            required=self.spec.required,
        )


class PluginHost:
    """Many plugins by name. ``start()`` loads the planned ones concurrently (``from_file``
    and ``with`` call it); ``close()`` stops them all, each within its shutdown timeout.

    Every plugin's records go to ``log_callback`` (the contract's ``(level, target,
    message)``: ``target`` stays the plugin's logger name), unless ``log_callback_for``
    (called with the plugin's name) or ``add(..., log_callback=)`` gives that plugin its own
    callback. ``defaults``: keys of a plugin table applied under every plugin ``add`` gets.
    Safe to use from many threads.
    """

    def __init__(
        self,
        *,
        log_callback: LogCallback | None = None,
        defaults: Mapping[str, Any] | None = None,
        log_callback_for: LogCallbackFor | None = None,
    ) -> None:
        for label, given in (
            ("log_callback", log_callback),
            ("log_callback_for", log_callback_for),
        ):
            if given is not None and not callable(given):
                raise ConfigError(f"{label} must be callable, not {type(given).__name__}")
        self._log_callback = log_callback
        self._log_callback_for = log_callback_for
        self._defaults = checked_table(
            {} if defaults is None else defaults, "PluginHost", "defaults", Path.cwd()
        )
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._reserved: set[str] = set()
        """Names being started by ``add``/``start``: taken, not yet listed."""
        self._planned: tuple[PluginSpec, ...] = ()
        self._started = False
        self._closed = False
        self._watching = HostWatch(self._watchable, self._current, self._reload_entry)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        log_callback: LogCallback | None = None,
        log_callback_for: LogCallbackFor | None = None,
    ) -> PluginHost:
        """Read and validate the TOML host file at ``path``, then start its plugins."""
        host = cls._planned_from_file(
            path, log_callback=log_callback, log_callback_for=log_callback_for
        )
        host.start()
        return host

    @classmethod
    def _planned_from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        log_callback: LogCallback | None = None,
        log_callback_for: LogCallbackFor | None = None,
    ) -> PluginHost:
        """A host with the plugins of the file at ``path`` planned, not started yet."""
        host_file = read_host_file(path)
        host = cls(log_callback=log_callback, log_callback_for=log_callback_for)
        host._defaults = host_file.defaults
        host._planned = host_file.plugins
        return host

    # -- starting ----------------------------------------------------------------------

    def start(self) -> None:
        """Load the planned plugins concurrently; idempotent.

        A required plugin that fails makes this raise its error (naming the plugin) after
        the whole host is closed: nothing is left running. An optional one is listed,
        FAILED, with its error.
        """
        try:
            failures = self._start_planned(strict=True)
        except BaseException:
            with contextlib.suppress(PluginError):
                self.close()
            raise
        if failures:
            with contextlib.suppress(PluginError):
                self.close()
            first_name, first = failures[0]
            others = "".join(f"; {name!r} too: {exc.message}" for name, exc in failures[1:])
            raise type(first)(
                f"required plugin {first_name!r} failed to load, so the host was stopped: "
                f"{first.message}{others}"
            ) from first

    def _start_planned(self, *, strict: bool) -> list[tuple[str, PluginError]]:
        """Start the planned plugins (once); the required ones that failed, by name. With
        ``strict=False`` (``plugbridge check``) a required plugin that fails is listed
        FAILED like an optional one, and still reported here."""
        with self._start_lock:
            with self._lock:
                if self._closed:
                    raise InvalidState("this plugin host was closed")
                if self._started:
                    return []
                self._started = True
                planned, self._planned = self._planned, ()
                self._reserved.update(spec.name for spec in planned)
            entries = [_Entry(spec, self._callback_for(spec.name, None)) for spec in planned]
            failures = self._start_entries(entries, strict=strict)
            if not strict:
                failures = [
                    (entry.spec.name, PluginError(entry.error))
                    for entry in entries
                    if entry.spec.required and entry.error is not None
                ]
            return failures

    def _start_entries(
        self, entries: list[_Entry], *, strict: bool
    ) -> list[tuple[str, PluginError]]:
        """Start ``entries`` at once (``_at_once``) and list the ones that started; the
        required ones that failed are returned, their names freed. Returns only once every
        start has ended, whatever interrupts it."""
        failed: dict[str, PluginError] = {}
        unexpected: list[BaseException] = []

        def start_one(entry: _Entry) -> None:
            tolerate = not (strict and entry.spec.required)
            try:
                entry.handle = self._new_handle(entry, tolerate_failure=tolerate)
            except PluginError as exc:
                failed[entry.spec.name] = exc
            except BaseException as exc:  # a bug, or an interrupt: raised once all ended
                unexpected.append(exc)

        try:
            _at_once("start", [(entry.name, partial(start_one, entry)) for entry in entries])
        finally:
            started = [entry for entry in entries if entry.handle is not None]
            with self._lock:
                self._reserved.difference_update(entry.spec.name for entry in entries)
                closed = self._closed
                if not closed:
                    self._entries.update((entry.spec.name, entry) for entry in started)
            if closed:
                _shut_down([(entry.spec.name, entry.started) for entry in started])
        if unexpected:
            raise unexpected[0]
        if closed:
            raise InvalidState("the plugin host was closed while its plugins were starting")
        return [
            (entry.spec.name, failed[entry.spec.name])
            for entry in entries
            if entry.spec.name in failed
        ]

    def _new_handle(self, entry: _Entry, *, tolerate_failure: bool) -> PluginHandle:
        return PluginHandle(
            self._factory(entry, tolerate_failure=tolerate_failure),
            entry.config,
            entry.sink,
            entry.shown_source,
        )

    def _factory(self, entry: _Entry, *, tolerate_failure: bool) -> TransportFactory:
        """What starts ``entry``'s instance — or its replicas, each through ``_instance``,
        which a rolling reload calls again — with the outcome recorded; with
        ``tolerate_failure``, a first start that fails gives a ``FailedTransport`` (the
        plugin is then listed FAILED)."""
        spec = entry.spec
        first_start = [True]
        instance = self._instance(entry)

        def start(deadline: float | None) -> Transport:
            first = first_start.pop() if first_start else False
            try:
                if spec.replicas == 1:
                    return instance(deadline)
                from ._replicas import ReplicaTransport

                transport: Transport = ReplicaTransport.start(
                    instance, spec.replicas, entry.sink, deadline
                )
            except PluginError as exc:
                entry.error = exc.message  # replicas: the summary of every start
                if first and tolerate_failure:
                    entry.log_error(
                        f"plugin {spec.name!r} failed to load; it stays FAILED until a reload "
                        f"succeeds: {exc.message}"
                    )
                    return FailedTransport(spec.name, exc.message)
                raise
            return transport

        return start

    def _instance(self, entry: _Entry) -> TransportFactory:
        """What starts one instance of ``entry``: its source looked up again (an entry
        point may name another module now), the outcome recorded — the error, and the
        source once an instance did start from it. While watching, a source it moved to is
        watched before the instance starts from it (an edit made meanwhile is seen), and
        alone once it did."""
        spec = entry.spec
        watching = self._watching

        def start(deadline: float | None) -> Transport:
            moved = False
            try:
                source = spec.current_source()
                moved = source != entry.source
                if moved:
                    watching.watch_also(entry, source)
                factory = transport_factory(
                    source,
                    entry.config,
                    entry.sink,
                    spec.isolation,
                    variant=spec.variant,
                    trusted_keys=spec.trusted_keys,
                    ray_options=spec.ray,
                )
                transport = factory(deadline)
            except PluginError as exc:
                entry.error = exc.message
                raise
            entry.source = source
            entry.error = None
            if moved:
                watching.track(entry)
            return transport

        return start

    def _callback_for(self, name: str, explicit: LogCallback | None) -> LogCallback | None:
        if explicit is not None:
            return explicit
        if self._log_callback_for is not None:
            chosen = self._log_callback_for(name)
            if chosen is not None:
                return chosen
        return self._log_callback

    # -- plugins by name ---------------------------------------------------------------

    def add(
        self,
        name: str,
        source: str | os.PathLike[str] | None = None,
        *,
        entry_point: str | None = None,
        config: PluginConfig | Mapping[str, Any] | None = None,
        isolation: str | None = None,
        variant: str | None = None,
        trusted_keys: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        replicas: int | None = None,
        ray: Mapping[str, Any] | None = None,
        required: bool | None = None,
        log_callback: LogCallback | None = None,
    ) -> PluginHandle:
        """Start one more plugin now and return its handle; the keys are a plugin table's
        (None: the host's defaults, else the table's default). ``config``: a mapping of
        ``PluginConfig`` keys (merged over the defaults, as a table is) or a ``PluginConfig``
        (all of its fields count). Relative paths are relative to the working directory.

        A required plugin that fails raises and is not added; an optional one is added,
        FAILED. ``ConfigError`` if ``name`` is taken or a key is wrong.
        """
        table = _config_table(config)
        given = {
            "source": source,
            "entry_point": entry_point,
            "isolation": isolation,
            "variant": variant,
            "trusted_keys": trusted_keys,
            "replicas": replicas,
            "ray": ray,
            "required": required,
        }
        table.update((key, _plain(value)) for key, value in given.items() if value is not None)
        spec = plugin_spec(name, table, self._defaults, "PluginHost.add", Path.cwd())
        with self._lock:
            if self._closed:
                raise InvalidState("cannot add a plugin to a plugin host that was closed")
            if name in self._entries or name in self._reserved:
                raise ConfigError(f"this plugin host already has a plugin named {name!r}")
            if any(planned.name == name for planned in self._planned):
                raise ConfigError(
                    f"the host file of this plugin host already plans a plugin named {name!r} "
                    "(start() starts it); give the added one another name"
                )
            self._reserved.add(name)
        entry = _Entry(spec, self._callback_for(name, log_callback))
        failures = self._start_entries([entry], strict=True)
        if failures:
            raise failures[0][1]
        self._watching.track(entry)
        return entry.started

    def remove(self, name: str) -> None:
        """Stop the plugin ``name`` (within its shutdown timeout) and forget it; ``KeyError``
        if unknown. It is gone even when stopping it fails (``ShutdownFailed``)."""
        with self._lock:
            entry = self._entries.pop(name)
        self._watching.forget(name)
        entry.started.shutdown()

    def reload(self, name: str, timeout: float | None = None) -> None:
        """Reload ``name`` from its source as it is on disk now (see ``PluginHandle.reload``);
        for a plugin listed FAILED, a success makes its handle serve."""
        self._reload_entry(self._entry(name), timeout)

    def _reload_entry(self, entry: _Entry, timeout: float | None = None) -> None:
        """Reload ``entry`` (``host.reload``, and the watcher's reloads). Its starts record
        their own outcome and watch a source that moved (``_instance``); a reload refused
        before any start is not the plugin's failure and records nothing."""
        entry.started.reload(timeout)

    def __getitem__(self, name: str) -> PluginHandle:
        return self._entry(name).started

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        """The plugins' names, in the order they were added (a file's order first)."""
        with self._lock:
            return list(self._entries)

    def status(self) -> list[PluginStatus]:
        """One ``PluginStatus`` per plugin, in ``names()`` order."""
        with self._lock:
            entries = list(self._entries.values())
        return [entry.status() for entry in entries]

    def _entry(self, name: str) -> _Entry:
        with self._lock:
            return self._entries[name]

    # -- watching ----------------------------------------------------------------------

    def watch(self, debounce_s: float = 0.2) -> None:
        """Reload a plugin when its source changes on disk (its file, package directory,
        library or bundle), once per burst of changes ``debounce_s`` apart. A reload that
        fails leaves the old instance serving, sets ``status().error`` and sends an ERROR
        record to the plugin's callback. Every change made after this returns is seen. A
        second call while watching changes nothing."""
        self._watching.start(checked_seconds("debounce_s", debounce_s))

    def unwatch(self) -> None:
        """Stop watching (nothing when not watching)."""
        self._watching.stop()

    def _watchable(self) -> list[_Entry]:
        with self._lock:
            if self._closed:
                raise InvalidState("cannot watch a plugin host that was closed")
            return list(self._entries.values())

    def _current(self, name: str) -> _Entry | None:
        with self._lock:
            return None if self._closed else self._entries.get(name)

    # -- closing -----------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop watching and shut every plugin down at once, each within its own shutdown
        timeout (capped at ``timeout`` if given); idempotent. Returns within the longest
        of those (or ``timeout``) plus ``CLOSE_GRACE_S``, even while a reload runs. The
        plugins stay listed (STOPPED). ``ShutdownFailed`` naming the plugins that failed
        to stop, or did not stop in time (they go on stopping in the background)."""
        limit = None if timeout is None else checked_seconds("timeout", timeout)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            entries = list(self._entries.values())
        stopping = _Stopping([(entry.spec.name, entry.started) for entry in entries], limit)
        self._watching.stop(max(0.0, stopping.deadline - time.monotonic()))
        errors = stopping.wait()
        if errors:
            raise ShutdownFailed(
                "; ".join(f"plugin {name!r}: {exc.message}" for name, exc in errors)
            )

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> PluginHost:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._started else "not started"
        return f"<PluginHost {state}: {', '.join(self.names()) or 'no plugins'}>"


def _shut_down(handles: list[tuple[str, PluginHandle]]) -> list[tuple[str, PluginError]]:
    """Shut the named handles down at once, bounded (``_Stopping``); the failures, by name."""
    return _Stopping(handles, None).wait()


class _Stopping:
    """Named handles being shut down, each on a daemon thread of its own
    (``plugbridge-host-stop-NAME``) within its shutdown timeout (capped at ``limit``);
    ``wait()`` returns by ``deadline``: the longest of those timeouts plus
    ``CLOSE_GRACE_S``. A handle still stopping then (its reload holds it) is reported and
    stops in the background once it can."""

    def __init__(self, handles: list[tuple[str, PluginHandle]], limit: float | None) -> None:
        self._errors: dict[str, PluginError] = {}
        timeouts = [
            handle.config.shutdown_timeout
            if limit is None
            else min(limit, handle.config.shutdown_timeout)
            for _, handle in handles
        ]
        self._budget = max(timeouts, default=0.0)
        self.deadline = time.monotonic() + self._budget + CLOSE_GRACE_S
        self._threads = [
            (
                name,
                threading.Thread(
                    target=self._stop,
                    args=(name, handle, within),
                    name=f"plugbridge-host-stop-{name}",
                    daemon=True,
                ),
            )
            for (name, handle), within in zip(handles, timeouts, strict=True)
        ]
        for _, thread in self._threads:
            thread.start()

    def _stop(self, name: str, handle: PluginHandle, within: float) -> None:
        try:
            handle.shutdown(within)
        except PluginError as exc:
            self._errors[name] = exc

    def wait(self) -> list[tuple[str, PluginError]]:
        """The failures, by name, in the handles' order, once all ended or by ``deadline``."""
        failed: list[tuple[str, PluginError]] = []
        for name, thread in self._threads:
            thread.join(max(0.0, self.deadline - time.monotonic()))
            if thread.is_alive():
                failed.append(
                    (
                        name,
                        ShutdownFailed(
                            f"did not stop within {seconds(self._budget)} (a reload in "
                            "progress holds it, or its stop overran); it goes on stopping in "
                            "the background"
                        ),
                    )
                )
            elif name in self._errors:
                failed.append((name, self._errors[name]))
        return failed


def _at_once(kind: str, jobs: Sequence[tuple[str, Callable[[], None]]]) -> None:
    """Run the named ``jobs`` at once: a thread each (``plugbridge-host-KIND-NAME``), this
    thread running the first. Returns only once every job has ended, whatever interrupts it."""
    threads = [
        threading.Thread(target=job, name=f"plugbridge-host-{kind}-{name}")
        for name, job in jobs[1:]
    ]
    try:
        for thread in threads:
            thread.start()
        if jobs:
            jobs[0][1]()
    finally:
        for thread in threads:
            _join_through_interrupts(thread)


def _join_through_interrupts(thread: threading.Thread) -> None:
    """Join ``thread`` (if it was started) even if a ``KeyboardInterrupt`` lands meanwhile,
    re-raised after: the host never returns while a start or stop it began still runs."""
    if thread.ident is None:
        return
    interrupted: BaseException | None = None
    while True:
        try:
            thread.join()
            break
        except BaseException as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _config_table(config: PluginConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, PluginConfig):
        return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        for key in config:
            if key not in CONFIG_KEYS:
                raise ConfigError(
                    f"PluginHost.add: config takes PluginConfig keys only, not {key!r} "
                    "(placement keys such as isolation are add()'s own keywords)"
                )
        return dict(config)
    raise ConfigError(f"config must be a PluginConfig or a dict, not {type(config).__name__}")


def _plain(value: object) -> object:
    """Paths as strings, sequences as lists: the shapes a TOML table holds."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
