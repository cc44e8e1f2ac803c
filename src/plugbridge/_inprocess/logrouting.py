"""Routing stdlib log records of in-process Python plugins to their own instance.

Two paths, both ending in the instance's ``InstanceLog``:

* The plugin's own loggers live under its private namespace (``_plugbridge_<n>.*``). The
  namespace logger carries the instance's level (so a filtered-out ``log.debug`` costs one
  cached check) and one handler, and does not propagate: those records go to this instance
  only, from any thread. Those loggers are steady (``_steadylog``): a reconfiguration of
  the host's logging (``dictConfig``, ``fileConfig``, ...) neither disables them nor
  closes the instance's routing.
* Records of other libraries are attributed when they are created: while at least one
  instance lives, the log record factory is wrapped, and a new record also goes to the
  instance whose code runs in the current context (a ContextVar the runtime sets for
  handlers, hooks, tasks and ``to_thread`` work). The host's handlers are not touched.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable
from typing import Any

from .._levels import LogLevel, from_stdlib, to_stdlib
from .._logsink import InstanceLog, attributed_instance
from .._steadylog import (
    cut_off,
    loggers_under,
    logging_lock,
    release_subtree,
    steady_logger,
    steady_subtree,
)
from .namespace import NAMESPACE_PREFIX, PluginNamespace


class InstanceLogRouter:
    """One in-process instance's stdlib logging: its loggers, its level, its records.

    The instance's loggers are steady (``_steadylog``): no reconfiguration of the host's
    logging disables them. Their handler is not this object but a ``_NamespaceHandler``
    that logging may close as it likes (``dictConfig`` and ``fileConfig`` close every
    handler logging knows of, and so does ``logging.shutdown`` at exit): only ``close``
    here, when plugbridge stops the instance, cuts the instance off.
    """

    def __init__(self, namespace: PluginNamespace, log: InstanceLog, level: LogLevel) -> None:
        self.namespace = namespace
        self.log = log
        self.plugin_name = ""
        self.threshold = to_stdlib(level)
        self.root_logger = steady_subtree(namespace.name)
        self.root_logger.propagate = False
        self.root_logger.setLevel(self.threshold)
        self.root_logger.addHandler(_NamespaceHandler(self.deliver))
        _ATTRIBUTION.register()
        self._registered = True

    def context_logger(self, plugin_name: str) -> logging.Logger:
        """``ctx.logger``: a logger of this instance whose target is the plugin's name."""
        self.plugin_name = plugin_name
        return steady_logger(f"{self.namespace.name}.{plugin_name or 'plugin'}")

    def set_log_level(self, level: LogLevel) -> None:
        self.threshold = to_stdlib(level)
        self.root_logger.setLevel(self.threshold)  # clears logging's cached level checks

    def deliver(self, record: logging.LogRecord) -> None:
        if record.levelno < self.threshold:
            return
        target = self.namespace.strip(record.name)
        self.log.emit(from_stdlib(record.levelno), target or self.plugin_name, _message(record))

    def close(self) -> None:
        """Cut this instance's loggers off: no record of it is delivered after this returns."""
        self.log.close()
        if self._registered:
            self._registered = False
            _ATTRIBUTION.unregister()
        manager = logging.Logger.manager
        prefix = self.namespace.name
        with logging_lock():
            release_subtree(prefix)
            loggers = loggers_under(prefix)
            for logger in loggers:
                # Level first: logging only clears caches of loggers still listed.
                logger.setLevel(to_stdlib(LogLevel.OFF))
                cut_off(logger)
                logger.handlers.clear()
            for logger in loggers:
                manager.loggerDict.pop(logger.name, None)


class _NamespaceHandler(logging.Handler):
    """The one handler of an instance's namespace logger: hands records to its router."""

    def __init__(self, deliver: Callable[[logging.LogRecord], None]) -> None:
        super().__init__(logging.NOTSET)
        self._deliver = deliver

    # A Handler's handle() takes a lock and runs filters; neither is needed here.
    def handle(self, record: logging.LogRecord) -> bool:
        self._deliver(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self._deliver(record)

    def close(self) -> None:
        """Logging's close (a reconfiguration, ``logging.shutdown``): nothing to release,
        and the instance's records keep flowing; ``InstanceLogRouter.close`` ends them."""


def _message(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception as exc:
        text = f"{record.msg!r} (formatting failed: {exc!r})"
    if record.exc_info and record.exc_info[0] is not None:
        text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
    elif record.exc_text:
        text += "\n" + record.exc_text
    if record.stack_info:
        text += "\n" + record.stack_info
    return text


class _Attribution:
    """Wraps the log record factory while instances live, to attribute foreign records.

    A record factory, unlike a root handler, changes nothing the host can see: root keeps
    exactly the host's handlers (so ``basicConfig`` and ``logging.lastResort`` behave as
    without plugbridge), and every record the host's levels let through is still created
    and handled as before. The factory only also hands it to the instance whose code is
    running in the current context.
    """

    def __init__(self) -> None:
        self._users = 0
        self._lock = threading.Lock()
        self._installed: _AttributingFactory | None = None

    def fresh_lock(self) -> None:
        """In a forked child: a lock a parent thread held at the fork would stay held."""
        self._lock = threading.Lock()

    def register(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._installed = _AttributingFactory(logging.getLogRecordFactory())
                logging.setLogRecordFactory(self._installed)

    def unregister(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._installed is not None:
                installed, self._installed = self._installed, None
                installed.active = False  # inert even if someone wrapped it meanwhile
                if logging.getLogRecordFactory() is installed:
                    logging.setLogRecordFactory(installed.previous)


class _AttributingFactory:
    __slots__ = ("active", "previous")

    def __init__(self, previous: Callable[..., logging.LogRecord]) -> None:
        self.previous = previous
        self.active = True

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        router = attributed_instance.get()
        if (
            router is not None
            and self.active
            and isinstance(router, InstanceLogRouter)
            and not record.name.startswith(_NOT_FOREIGN)
        ):
            router.deliver(record)
        return record


_NOT_FOREIGN = (NAMESPACE_PREFIX, "plugbridge")
"""Records of plugin loggers (routed by name) and of plugbridge itself (the host's)."""

_ATTRIBUTION = _Attribution()
os.register_at_fork(after_in_child=_ATTRIBUTION.fresh_lock)
