"""``load()``: turn a source into a running plugin behind a ``PluginHandle``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ._config import PluginConfig
from ._errors import ConfigError
from ._handle import PluginHandle
from ._logsink import LogCallback, LogSink
from ._sources import BundleSource, NativeSource, PythonSource, Source, resolve_source
from ._transport import Transport, TransportFactory

Isolation = Literal["inprocess", "process", "ray"]
ISOLATIONS: tuple[str, ...] = ("inprocess", "process", "ray")


def load(
    source: str | os.PathLike[str],
    *,
    config: PluginConfig | Mapping[str, Any] | None = None,
    log_callback: LogCallback | None = None,
    isolation: Isolation = "inprocess",
    variant: str | None = None,
    trusted_keys: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    replicas: int = 1,
    ray_options: Mapping[str, Any] | None = None,
) -> PluginHandle:
    """Load a plugin and return its ACTIVE handle (or raise, leaving nothing behind).

    ``source``: a ``.py`` file, a package directory, ``"pkg.module[:Class]"``, a shared
    library exporting the rustbridge C ABI, or a rustbridge ``.rbp`` bundle.
    ``isolation``: ``"inprocess"``, ``"process"`` or ``"ray"`` (a Ray actor, created with
    ``ray_options``: ``num_cpus``, ``resources``, ``runtime_env``...). For a bundle,
    ``variant`` picks the library variant (default ``release``) and ``trusted_keys`` the
    minisign public keys its signatures must be made by (default:
    ``PLUGBRIDGE_TRUSTED_KEYS``); both are ignored for other sources. ``replicas`` > 1
    (isolated plugins only) runs that many instances behind the one handle: calls go to
    the least busy, a reload replaces them one at a time.
    """
    cfg = PluginConfig.coerce(config)
    check_placement(isolation, replicas, ray_options)
    sink = LogSink(log_callback, cfg.log_level)
    factory = transport_factory(
        source,
        cfg,
        sink,
        isolation,
        variant=variant,
        trusted_keys=trusted_keys,
        replicas=replicas,
        ray_options=ray_options,
    )
    return PluginHandle(factory, cfg, sink, os.fspath(source))


def check_placement(isolation: object, replicas: object, ray_options: object = None) -> None:
    """``ConfigError`` unless ``isolation`` is known and ``replicas`` and ``ray_options``
    fit it."""
    if isolation not in ISOLATIONS:
        raise ConfigError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}")
    if type(replicas) is not int or replicas < 1:
        raise ConfigError(f"replicas must be a whole number of at least 1, not {replicas!r}")
    if replicas > 1 and isolation == "inprocess":
        raise ConfigError(
            "replicas > 1 needs an isolated plugin (isolation='process' or 'ray'): in-process "
            "replicas would share one interpreter and gain nothing"
        )
    if ray_options is not None:
        if isolation != "ray":
            raise ConfigError(f"ray_options needs isolation='ray', not {isolation!r}")
        if not isinstance(ray_options, Mapping) or not all(isinstance(k, str) for k in ray_options):
            raise ConfigError(
                "ray_options must be a mapping of Ray actor options (num_cpus, resources, "
                f"runtime_env...), not {type(ray_options).__name__}"
            )


def transport_factory(
    source: str | os.PathLike[str],
    config: PluginConfig,
    sink: LogSink,
    isolation: str,
    *,
    variant: str | None = None,
    trusted_keys: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    replicas: int = 1,
    ray_options: Mapping[str, Any] | None = None,
) -> TransportFactory:
    """What starts instances of ``source`` (resolved now: a missing file, a bad variant
    name... raise here). Each start reads the source as it is on disk then."""
    resolved = resolve_source(source, variant=variant, trusted_keys=trusted_keys)
    single = _factory(resolved, config, sink, isolation, ray_options)
    if replicas == 1:
        return single

    def start_replicas(deadline: float | None) -> Transport:
        from ._replicas import ReplicaTransport

        return ReplicaTransport.start(single, replicas, sink, deadline)

    return start_replicas


def _factory(
    source: Source | BundleSource,
    config: PluginConfig,
    sink: LogSink,
    isolation: str,
    ray_options: Mapping[str, Any] | None = None,
) -> TransportFactory:
    def start(deadline: float | None) -> Transport:
        # A bundle is read and verified from disk at every start (load and each reload),
        # here in the host: a worker gets the verified library, never the bundle.
        startable = _open_bundle(source) if isinstance(source, BundleSource) else source
        if isolation == "process":
            from ._worker.host import WorkerTransport

            return WorkerTransport.start(startable, config, sink, deadline)
        if isolation == "ray":  # Ray is imported there, never by the core
            from ._ray.transport import RayTransport

            return RayTransport.start(startable, config, sink, deadline, ray_options)
        return start_local(startable, config, sink, deadline)

    return start


def start_local(
    source: Source, config: PluginConfig, sink: LogSink, deadline: float | None
) -> Transport:
    """Start an instance in this process (the host's, or a worker's)."""
    if isinstance(source, NativeSource):
        from ._native.transport import NativeTransport

        return NativeTransport.start(source, config, sink, deadline)
    assert isinstance(source, PythonSource)
    from ._inprocess.transport import InProcessTransport

    return InProcessTransport.start(source, config, sink, deadline)


def _open_bundle(source: BundleSource) -> NativeSource:
    from ._bundle.verify import open_bundle

    return open_bundle(source)
