"""rustbridge's ``LogLevel`` and ``LifecycleState``: the same numbers as plugbridge's own
enums (and the C ABI's), but rustbridge's classes, with rustbridge's helper methods, so code
written against rustbridge compares, converts and prints them exactly as it did."""

from __future__ import annotations

from enum import IntEnum


class LogLevel(IntEnum):
    """Log level of a plugin, as the C ABI numbers it (0 TRACE … 5 OFF)."""

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    OFF = 5

    @classmethod
    def from_code(cls, code: int) -> LogLevel:
        """The level numbered ``code``; ``ValueError`` outside 0..5."""
        if 0 <= code <= 5:
            return cls(code)
        raise ValueError(f"Invalid log level code: {code}")

    @classmethod
    def from_string(cls, level: str) -> LogLevel:
        """The level named ``level`` (any case); ``ValueError`` naming the valid ones."""
        try:
            return cls[level.upper()]
        except KeyError:
            valid = ", ".join(member.name.lower() for member in cls)
            raise ValueError(f"Invalid log level: {level}. Valid values: {valid}") from None

    def to_string(self) -> str:
        """The lower-case name, as the config JSON carries it (``"debug"``)."""
        return self.name.lower()


class LifecycleState(IntEnum):
    """Lifecycle state of a plugin, as the C ABI numbers it (0 INSTALLED … 5 FAILED)."""

    INSTALLED = 0
    STARTING = 1
    ACTIVE = 2
    STOPPING = 3
    STOPPED = 4
    FAILED = 5

    @classmethod
    def from_code(cls, code: int) -> LifecycleState:
        """The state numbered ``code``; ``ValueError`` outside 0..5."""
        if 0 <= code <= 5:
            return cls(code)
        raise ValueError(f"Invalid lifecycle state code: {code}")

    def can_handle_requests(self) -> bool:
        """Only an ACTIVE plugin serves calls."""
        return self is LifecycleState.ACTIVE

    def is_terminal(self) -> bool:
        """STOPPED and FAILED: nothing follows them."""
        return self is LifecycleState.STOPPED or self is LifecycleState.FAILED
