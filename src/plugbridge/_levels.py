"""Log levels: plugbridge's six levels and their mapping onto stdlib logging numbers."""

from __future__ import annotations

import logging
from enum import IntEnum

from ._errors import ConfigError


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    OFF = 5


TRACE_STDLIB = 5
"""stdlib number used for TRACE records (below DEBUG)."""

_TO_STDLIB = {
    LogLevel.TRACE: TRACE_STDLIB,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.OFF: logging.CRITICAL + 100,
}

_ALIASES = {"warning": LogLevel.WARN, "critical": LogLevel.ERROR, "fatal": LogLevel.ERROR}


def to_stdlib(level: LogLevel) -> int:
    """The stdlib threshold that lets exactly ``level`` and above through."""
    return _TO_STDLIB[level]


def from_stdlib(levelno: int) -> LogLevel:
    """The plugbridge level of a stdlib record."""
    if levelno < logging.DEBUG:
        return LogLevel.TRACE
    if levelno < logging.INFO:
        return LogLevel.DEBUG
    if levelno < logging.WARNING:
        return LogLevel.INFO
    if levelno < logging.ERROR:
        return LogLevel.WARN
    return LogLevel.ERROR


def parse_level(value: object) -> LogLevel:
    """Accept a ``LogLevel``, its int value or its name in any case; else ``ConfigError``."""
    if isinstance(value, LogLevel):
        return value
    if isinstance(value, bool):
        raise ConfigError(f"invalid log level {value!r}")
    if isinstance(value, int):
        try:
            return LogLevel(value)
        except ValueError:
            raise ConfigError(f"invalid log level {value!r} (expected 0..5)") from None
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _ALIASES:
            return _ALIASES[key]
        try:
            return LogLevel[key.upper()]
        except KeyError:
            names = ", ".join(m.name.lower() for m in LogLevel)
            raise ConfigError(f"unknown log level {value!r} (expected one of {names})") from None
    raise ConfigError(f"invalid log level {value!r} (expected a LogLevel or its name)")
