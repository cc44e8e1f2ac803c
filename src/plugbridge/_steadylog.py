"""plugbridge's own stdlib loggers, which no reconfiguration of the host's logging silences.

``logging.config.dictConfig`` and ``fileConfig`` assign ``disabled`` on every existing
logger they do not configure: True by default, False with ``disable_existing_loggers=
False``. A plugin's records are not the host's to lose that way, so the loggers plugbridge
owns are *steady*: each in-process instance's namespace loggers (``_plugbridge_<n>`` and
everything under it) and the ``plugbridge.plugin[.<name>]`` loggers that records of a
handle without a callback go to. A steady logger is of a subclass of the logger class in
use whose ``__setattr__`` turns any assignment to ``disabled`` into the private flag
``plugbridge_cut_off``, which only plugbridge sets (``cut_off``, when its instance stops).
Reading ``disabled``, on every record, stays a plain instance attribute: no cost.

Levels, handlers, propagation and filters stay the host's to decide (the public switches;
``disabled`` is undocumented). Loggers that are not plugbridge's, the root logger and the
logger class the host set are never touched.

plugbridge creates its loggers steady (``steady_logger``: logging's logger class is set to
the steady one only while logging's lock is held). A plugin also creates loggers under its
namespace whenever it likes (``getLogger(__name__ + ".worker")`` in a handler); logging
makes them plain. The namespace's root logger is registered as a *subtree*: an assignment
to its ``disabled`` — which every such reconfiguration makes, under logging's lock, to the
root before its children (names are handled sorted) — first makes every logger under it
steady, by changing its class. Such a logger works the same, a little slower (CPython's
attribute caches do not fit an object whose class changed): the modules of a plugin have
theirs made steady before they run (see ``_inprocess.namespace``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

CUT_OFF = "plugbridge_cut_off"
"""The flag a steady logger's ``disabled`` takes: set by plugbridge alone (``cut_off``)."""

_steady_of: dict[type[logging.Logger], type[logging.Logger]] = {}
"""Each logger class seen, with its steady subclass."""
_steady_classes: set[type[logging.Logger]] = set()

_subtrees: set[str] = set()
"""Names of steady loggers whose every descendant is made steady by a reconfiguration."""


def logging_lock() -> threading.RLock:
    """Logging's module lock: ``getLogger`` and the ``*Config`` functions hold it."""
    lock = logging._lock  # type: ignore[attr-defined]
    assert lock is not None
    return lock  # type: ignore[no-any-return]


def steady_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, created steady (or made steady if it exists)."""
    manager = logging.Logger.manager
    with logging_lock():
        existing = manager.loggerDict.get(name)
        if isinstance(existing, logging.Logger):
            _make_steady(existing)
            return existing
        chosen = manager.loggerClass
        manager.loggerClass = _steady_class(chosen or logging.getLoggerClass())
        try:
            return logging.getLogger(name)
        finally:
            manager.loggerClass = chosen


def steady_subtree(name: str) -> logging.Logger:
    """A steady logger whose descendants are made steady whenever logging is reconfigured."""
    with logging_lock():
        logger = steady_logger(name)
        _subtrees.add(name)
        return logger


def release_subtree(name: str) -> None:
    with logging_lock():
        _subtrees.discard(name)


def loggers_under(name: str) -> list[logging.Logger]:
    """``name``'s logger and its descendants that exist (call with ``logging_lock`` held)."""
    dotted = name + "."
    return [
        logger
        for key, logger in logging.Logger.manager.loggerDict.items()
        if (key == name or key.startswith(dotted)) and isinstance(logger, logging.Logger)
    ]


def cut_off(logger: logging.Logger) -> None:
    """Disable ``logger`` for good: no record of it is created from now on."""
    setattr(logger, CUT_OFF, True)
    logger.disabled = True  # a steady logger takes the flag's value, True now


def is_steady(logger: logging.Logger) -> bool:
    return type(logger) in _steady_classes


def _steady_class(base: type[logging.Logger]) -> type[logging.Logger]:
    if base in _steady_classes:
        return base
    steady = _steady_of.get(base)
    if steady is None:
        base_setattr = base.__setattr__

        def __setattr__(self: logging.Logger, name: str, value: Any) -> None:
            if name == "disabled":
                value = getattr(self, CUT_OFF)
                _assigned(self)
            base_setattr(self, name, value)

        steady = _steady_of[base] = type(
            base.__name__,  # the same repr as any logger of that class
            (base,),
            {
                "__module__": base.__module__,
                "__doc__": base.__doc__,
                "__setattr__": __setattr__,
                CUT_OFF: False,
            },
        )
        _steady_classes.add(steady)
    return steady


def _make_steady(logger: logging.Logger) -> None:
    if is_steady(logger):
        return
    try:
        logger.__class__ = _steady_class(type(logger))
    except TypeError:  # a logger class of the host's whose layout forbids it (__slots__)
        return
    logger.disabled = False  # takes the flag's value: live again if it was disabled


def _assigned(logger: logging.Logger) -> None:
    """Someone is setting a steady logger's ``disabled``: a reconfiguration, as a rule. On
    a subtree's root, every logger under it is made steady first."""
    if logger.name in _subtrees:
        with logging_lock():
            for each in loggers_under(logger.name):
                _make_steady(each)
