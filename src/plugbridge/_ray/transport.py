"""``RayTransport``: a plugin instance in a Ray actor, behind the usual Transport.

The same shape as ``WorkerTransport``: requests cross as JSON (a ``call`` request is
encoded here exactly as the in-process runtime would see it), binary-transport calls as
their bytes, errors as their code and message, raised here as the same ``PluginError``
classes. The code is read from disk and shipped at every start (``_ray.shipping``), so the
actor may run on any node. A crash fails the session (``PluginCrashed``); with
``restart_on_crash`` a fresh actor replaces it, within ``RestartPolicy`` limits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from .._calls.sessioned import SessionTransport
from .._config import PluginConfig
from .._errors import ConfigError, start_limit
from .._logsink import LogSink
from .._sources import Source
from .._transport import ProcessUsage
from .cluster import connected_ray
from .session import ActorSession
from .shipping import pack

DEFAULT_MAX_CONCURRENCY = 1000
"""Ray's own default for async actors: coroutines, not threads, so it costs nothing idle."""
CONTROL_CALLS = 8
"""Room above the handle's limit for the actor's control requests (record poll, stop...)."""


def actor_options(ray_options: Mapping[str, Any] | None, config: PluginConfig) -> dict[str, Any]:
    """The options the actor is created with: the user's ``ray_options``, never restarted
    by Ray (the restart policy is plugbridge's), and room for every call the handle lets in."""
    options = dict(ray_options or {})
    for key in ("max_restarts", "max_task_retries"):
        if key in options:
            raise ConfigError(
                f"ray_options[{key!r}] is plugbridge's to set: use restart_on_crash/max_restarts"
                " in the plugin's config instead"
            )
    limit = config.max_concurrent_ops
    options.setdefault(
        "max_concurrency", max(DEFAULT_MAX_CONCURRENCY, limit + CONTROL_CALLS if limit else 0)
    )
    options["max_restarts"] = 0
    return options


class RayTransport(SessionTransport[ActorSession]):
    """One plugin instance hosted by a Ray actor (and its restarts, if enabled)."""

    _what: ClassVar[str] = "Ray actor"

    def __init__(
        self, source: Source, config: PluginConfig, sink: LogSink, options: dict[str, Any]
    ) -> None:
        super().__init__(source, config, sink)
        self._options = options

    @classmethod
    def start(
        cls,
        source: Source,
        config: PluginConfig,
        sink: LogSink,
        deadline: float | None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> RayTransport:
        """Start an actor with a fresh instance; ``InitializationFailed`` if it cannot."""
        transport = cls(source, config, sink, actor_options(ray_options, config))
        transport._begin(deadline)
        return transport

    def _launch(self, deadline: float | None) -> ActorSession:
        limit = start_limit(deadline, time.monotonic(), self._config.start_timeout)
        shipped = pack(self._source)  # the code as it is on disk now
        ray = connected_ray()
        wire = {f.name: getattr(self._config, f.name) for f in dataclasses.fields(self._config)}
        wire["log_level"] = int(self._sink.level)
        log = self._sink.instance_log()
        try:
            session = ActorSession.launch(ray, self._options, shipped, wire, log, deadline, limit)
        except BaseException:
            log.close()
            raise
        session.on_crash = self._on_crash
        self.metadata = session.metadata
        self._sink.name_plugin(session.metadata.name)
        return session

    def _retire(self, session: ActorSession) -> None:
        session.log.close()  # each actor's records went to its own instance log

    def _stop_failure(self, problem: str) -> str:
        return problem  # as the actor's stop words it (the Ray transport always raised it so)

    def process_usage(self) -> ProcessUsage:
        """The actor's pid, RSS and CPU seconds as seen on its node (all None once gone)."""
        return self._current.process_usage()
