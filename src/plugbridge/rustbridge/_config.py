"""rustbridge's ``PluginConfig``: a fluent builder whose JSON is exactly rustbridge's, and
its translation into the settings of a plugbridge ``PluginConfig`` (``load_settings``).

The builder checks nothing, as rustbridge's does: a bad value surfaces when the plugin is
loaded, as a ``PluginException``.
"""

from __future__ import annotations

import json
from typing import Any

from .._errors import ConfigError
from .._levels import LogLevel as CoreLevel
from .._levels import parse_level
from ._levels import LogLevel


class PluginConfig:
    """Configuration for plugin initialization, built by chaining::

    config = PluginConfig.defaults().log_level(LogLevel.DEBUG).set("key", "value")
    """

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._init_params: dict[str, Any] | None = None
        self._worker_threads: int | None = None
        self._log_level: str = "info"
        self._max_concurrent_ops: int = 1000
        self._shutdown_timeout_ms: int = 5000

    @classmethod
    def defaults(cls) -> PluginConfig:
        """A configuration with rustbridge's defaults (info, 1000 ops, 5000 ms)."""
        return cls()

    def worker_threads(self, threads: int) -> PluginConfig:
        self._worker_threads = threads
        return self

    def log_level(self, level: LogLevel | str) -> PluginConfig:
        """``level``: a ``LogLevel`` or its name (kept lower-cased, unchecked). rustbridge's
        and plugbridge's own ``LogLevel`` members are read by their number too."""
        if isinstance(level, str):
            self._log_level = level.lower()
        else:
            self._log_level = LogLevel(int(level)).to_string()
        return self

    def max_concurrent_ops(self, max_ops: int) -> PluginConfig:
        self._max_concurrent_ops = max_ops
        return self

    def shutdown_timeout_ms(self, timeout_ms: int) -> PluginConfig:
        self._shutdown_timeout_ms = timeout_ms
        return self

    def set(self, key: str, value: Any) -> PluginConfig:
        """A custom value, handed to the plugin under ``data``."""
        self._data[key] = value
        return self

    def init_param(self, key: str, value: Any) -> PluginConfig:
        """One initialization parameter (``init_params``: one-time setup at start)."""
        if self._init_params is None:
            self._init_params = {}
        self._init_params[key] = value
        return self

    def init_params(self, parameters: dict[str, Any]) -> PluginConfig:
        """All initialization parameters at once (replacing any set before)."""
        self._init_params = dict(parameters)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config JSON's shape: ``init_params`` only when non-empty, ``worker_threads``
        only when set."""
        config: dict[str, Any] = {
            "data": self._data,
            "log_level": self._log_level,
            "max_concurrent_ops": self._max_concurrent_ops,
            "shutdown_timeout_ms": self._shutdown_timeout_ms,
        }
        if self._init_params:
            config["init_params"] = self._init_params
        if self._worker_threads is not None:
            config["worker_threads"] = self._worker_threads
        return config

    def to_json_bytes(self) -> bytes:
        """``to_dict()`` as rustbridge writes it (``json.dumps``, UTF-8)."""
        return json.dumps(self.to_dict()).encode("utf-8")

    def load_settings(self) -> dict[str, Any]:
        """The keyword arguments of a plugbridge ``PluginConfig`` this config stands for.

        A level name the runtime does not know loads as ``info``, as rustbridge's runtime
        reads it; ``shutdown_timeout_ms`` becomes seconds (and, unlike rustbridge's runtime,
        bounds the shutdown); empty ``init_params`` are not sent, as in ``to_dict``. Values
        of the wrong kind are left for plugbridge to refuse (``ConfigError``).
        """
        timeout_ms = self._shutdown_timeout_ms
        return {
            "log_level": _runtime_level(self._log_level),
            "max_concurrent_ops": self._max_concurrent_ops,
            "shutdown_timeout": (
                timeout_ms / 1000
                if isinstance(timeout_ms, int | float) and not isinstance(timeout_ms, bool)
                else timeout_ms
            ),
            "worker_threads": self._worker_threads,
            "data": self._data,
            "init_params": self._init_params or None,
        }


def _runtime_level(name: object) -> CoreLevel:
    """The level rustbridge's runtime reads from the config's ``log_level``: a name it does
    not know is ``info`` (plugbridge also reads ``"warning"`` as ``warn``)."""
    try:
        return parse_level(name if isinstance(name, str) else str(name))
    except ConfigError:
        return CoreLevel.INFO
