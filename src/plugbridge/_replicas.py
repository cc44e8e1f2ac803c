"""Replicas: several instances of one plugin behind one handle (being built, issue 9)."""

from __future__ import annotations

from ._errors import ConfigError
from ._logsink import LogSink
from ._transport import Transport, TransportFactory


class ReplicaTransport:
    """Placeholder until the replica transport lands: refuses with a clear error."""

    @classmethod
    def start(
        cls, factory: TransportFactory, count: int, sink: LogSink, deadline: float | None
    ) -> Transport:
        del factory, sink, deadline
        raise ConfigError(f"replicas = {count} is not supported by this build yet")
