"""Routing stdlib log records of in-process Python plugins to their own instance.

Two paths, both ending in the instance's ``InstanceLog``:

* The plugin's own loggers live under its private namespace (``_plugbridge_<n>.*``). The
  namespace logger carries the instance's level (so a filtered-out ``log.debug`` costs one
  cached check) and one handler, and does not propagate: those records go to this instance
  only, from any thread.
* Records of other libraries reach a handler on the root logger, installed while at least
  one instance lives. It attributes a record to the instance whose code runs in the current
  context (a ContextVar the runtime sets for handlers, hooks, tasks and ``to_thread`` work).
  It leaves host behaviour alone: where the host configured no handler of its own, it hands
  the record to ``logging.lastResort`` exactly as logging would have without it.
"""

from __future__ import annotations

import logging
import threading
import traceback

from ._levels import LogLevel, from_stdlib, to_stdlib
from ._logsink import InstanceLog, attributed_instance
from ._namespace import PluginNamespace

_HOST_PREFIX = "plugbridge"


class InstanceLogRouter(logging.Handler):
    """One in-process instance's stdlib logging: its loggers, its level, its records."""

    def __init__(self, namespace: PluginNamespace, log: InstanceLog, level: LogLevel) -> None:
        super().__init__(logging.NOTSET)
        self.namespace = namespace
        self.log = log
        self.plugin_name = ""
        self.threshold = to_stdlib(level)
        self.root_logger = logging.getLogger(namespace.name)
        self.root_logger.propagate = False
        self.root_logger.setLevel(self.threshold)
        self.root_logger.addHandler(self)
        _ROOT_HANDLER.register()
        self._registered = True

    def context_logger(self, plugin_name: str) -> logging.Logger:
        """``ctx.logger``: a logger of this instance whose target is the plugin's name."""
        self.plugin_name = plugin_name
        return logging.getLogger(f"{self.namespace.name}.{plugin_name or 'plugin'}")

    def set_level(self, level: LogLevel) -> None:
        self.threshold = to_stdlib(level)
        self.root_logger.setLevel(self.threshold)  # clears logging's cached level checks

    # A Handler's handle() takes a lock and runs filters; neither is needed here.
    def handle(self, record: logging.LogRecord) -> bool:
        self.deliver(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.deliver(record)

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
            _ROOT_HANDLER.unregister()
        manager = logging.Logger.manager
        prefix = self.namespace.name
        with _logging_lock():
            names = [n for n in manager.loggerDict if n == prefix or n.startswith(prefix + ".")]
            for name in names:
                logger = manager.loggerDict[name]
                if isinstance(logger, logging.Logger):
                    # Level first: logging only clears caches of loggers still listed.
                    logger.setLevel(to_stdlib(LogLevel.OFF))
                    logger.disabled = True
                    logger.handlers.clear()
            for name in names:
                manager.loggerDict.pop(name, None)
        super().close()


def _logging_lock() -> threading.RLock:
    lock = logging._lock  # type: ignore[attr-defined]
    assert lock is not None
    return lock  # type: ignore[no-any-return]


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


class _AttributionHandler(logging.Handler):
    """On the root logger while instances live: gives foreign records to the running one."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self._users = 0
        self._users_lock = threading.Lock()

    def register(self) -> None:
        with self._users_lock:
            self._users += 1
            if self._users == 1:
                logging.getLogger().addHandler(self)

    def unregister(self) -> None:
        with self._users_lock:
            self._users -= 1
            if self._users == 0:
                logging.getLogger().removeHandler(self)

    def handle(self, record: logging.LogRecord) -> bool:
        router = attributed_instance.get()
        if isinstance(router, InstanceLogRouter) and not record.name.startswith(_HOST_PREFIX):
            router.deliver(record)
        self._stand_in_for_last_resort(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def _stand_in_for_last_resort(self, record: logging.LogRecord) -> None:
        last_resort = logging.lastResort
        if last_resort is None or record.levelno < last_resort.level:
            return
        found = logging.Logger.manager.loggerDict.get(record.name)
        logger: logging.Logger | None = (
            found if isinstance(found, logging.Logger) else logging.getLogger()
        )
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return
            if not logger.propagate:
                break
            logger = logger.parent
        last_resort.handle(record)


_ROOT_HANDLER = _AttributionHandler()
