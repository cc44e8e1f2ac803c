"""PluginConfig: the settings a host hands to one plugin instance."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ._errors import ConfigError
from ._levels import LogLevel, parse_level


@dataclass
class PluginConfig:
    """Settings for one plugin handle. ``load`` also accepts a dict with these keys."""

    log_level: LogLevel = LogLevel.INFO
    max_concurrent_ops: int = 1000
    """Calls allowed to run at once; 0 means unlimited."""
    shutdown_timeout: float = 5.0
    """Seconds ``shutdown`` may take in all."""
    call_timeout: float | None = None
    """Default per-call timeout in seconds (None: wait as long as the handler runs)."""
    start_timeout: float = 30.0
    """Seconds ``load`` and ``reload`` wait for a new instance to be ACTIVE (``on_start``
    included); past it they raise ``InitializationFailed`` and leave nothing behind."""
    worker_threads: int | None = None
    """Threads for sync handlers that need one; None picks min(32, cpus + 4)."""
    data: Any = field(default_factory=dict)
    """Free-form settings handed to the plugin as ``ctx.data``: any JSON value. A native
    plugin gets ``null`` for ``{}`` or ``None`` (rustbridge's "no data", see ``to_wire``)."""
    init_params: dict[str, Any] | None = None
    """A JSON object handed to native plugins as rustbridge's ``init_params`` (sent only
    when set); Python plugins read it as ``ctx.config.init_params``."""
    restart_on_crash: bool = False
    """isolation="process" only: start a fresh worker when the worker dies."""
    max_restarts: int = 3
    """Restarts allowed within ``restart_window`` seconds before the handle stays FAILED."""
    restart_window: float = 60.0
    restart_backoff: float = 0.1
    """Seconds before the first restart; doubles for each further one in the window."""

    def __post_init__(self) -> None:
        self.log_level = parse_level(self.log_level)
        _check_count("max_concurrent_ops", self.max_concurrent_ops)
        self.shutdown_timeout = checked_seconds("shutdown_timeout", self.shutdown_timeout)
        self.start_timeout = checked_seconds("start_timeout", self.start_timeout)
        if self.call_timeout is not None:
            self.call_timeout = checked_seconds("call_timeout", self.call_timeout)
        if self.worker_threads is not None:
            _check_count("worker_threads", self.worker_threads)
            if self.worker_threads == 0:
                raise ConfigError("worker_threads must be at least 1 (or None for the default)")
        _check_json("data", self.data)
        if self.init_params is not None:
            if not isinstance(self.init_params, dict):
                raise ConfigError(
                    f"init_params must be a JSON object (a dict) or None, "
                    f"not {type(self.init_params).__name__}"
                )
            _check_json("init_params", self.init_params)
        if not isinstance(self.restart_on_crash, bool):
            raise ConfigError("restart_on_crash must be True or False")
        _check_count("max_restarts", self.max_restarts)
        self.restart_window = checked_seconds("restart_window", self.restart_window)
        self.restart_backoff = checked_seconds("restart_backoff", self.restart_backoff)

    @classmethod
    def coerce(cls, value: PluginConfig | Mapping[str, Any] | None) -> PluginConfig:
        """Accept a PluginConfig, a mapping of its fields, or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, PluginConfig):
            return dataclasses.replace(value)  # re-validates; the caller may mutate theirs
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                raise ConfigError(
                    f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
                )
            try:
                return cls(**value)
            except TypeError as exc:
                raise ConfigError(str(exc)) from None
        raise ConfigError(f"config must be a PluginConfig or a dict, not {type(value).__name__}")

    def thread_count(self) -> int:
        """Threads for sync plugin work: ``worker_threads``, or min(32, cpus + 4)."""
        return self.worker_threads or min(32, (os.cpu_count() or 1) + 4)

    def to_wire(self) -> dict[str, Any]:
        """The JSON config shape of the rustbridge C ABI (CONTRACT section 5).

        ``data`` is ``null`` when there is none (``{}``, the default, or ``None``): a
        rustbridge ``PluginFactory`` builds itself with ``create_configured`` for any other
        value, and fails on an empty object when it expects fields. ``init_params`` is
        present only when set.
        """
        data = self.data
        wire: dict[str, Any] = {
            "log_level": self.log_level.name.lower(),
            "max_concurrent_ops": self.max_concurrent_ops,
            "shutdown_timeout_ms": round(self.shutdown_timeout * 1000),
            "worker_threads": self.worker_threads,
            "data": None if data is None or (type(data) is dict and not data) else data,
        }
        if self.init_params is not None:
            wire["init_params"] = self.init_params
        return wire


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ConfigError(f"{name} must not be negative (got {value})")


MAX_SECONDS = 1e9
"""The longest duration accepted anywhere (~31 years): finite, so every clock, lock and
selector the runtime hands it to accepts it. ``None`` is how a caller says "no limit"."""


def checked_seconds(name: str, value: object) -> float:
    """``value`` as a duration in seconds, or ``ConfigError`` naming ``name``.

    A duration is a real number (not a bool) from 0 to ``MAX_SECONDS``: negative, NaN,
    infinite or larger values are refused rather than overflowing deep inside a wait.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf if value > 0 else -math.inf
    if math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"{name} must be a non-negative number of seconds (got {_shown(value)})")
    if seconds > MAX_SECONDS:
        raise ConfigError(
            f"{name} must be a finite number of seconds up to {MAX_SECONDS:g} "
            f"(got {_shown(value)}); use None for no limit where the setting allows it"
        )
    return seconds


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_json(name: str, value: object) -> None:
    """Settings handed to plugins travel as JSON: refuse what has no JSON form now."""
    try:
        msgspec.json.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError, RecursionError) as exc:
        raise ConfigError(f"{name} must be JSON-encodable: {exc}") from None
