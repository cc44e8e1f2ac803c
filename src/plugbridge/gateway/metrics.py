"""``/metrics``: the host's statistics in the Prometheus text format, read at scrape time.

``HostCollector`` turns ``host.status()`` into metric families when Prometheus scrapes,
so nothing is counted twice and the call path pays nothing for it: calls, errors by code,
refusals, calls in flight, reloads, restarts, the handle's own latency percentiles, and a
worker's memory and CPU. The one thing the handles do not keep in a form Prometheus can
aggregate is a latency *histogram*: the gateway observes the duration of every call it
carries into ``plugbridge_gateway_call_duration_seconds`` (per plugin and route).

Each application has its own registry, so several gateways in one process never collide.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from .._host import PluginHost
from .._lifecycle import LifecycleState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

CALL_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Seconds: from an in-process echo (well under a millisecond) to a slow handler."""


class HostCollector(Collector):
    """The statistics of every plugin of ``host``, per plugin, as of the scrape."""

    def __init__(self, host: PluginHost) -> None:
        self._host = host

    def collect(self) -> Iterable[Metric]:
        plugin = ["plugin"]
        info = GaugeMetricFamily(
            "plugbridge_plugin_info",
            "A plugin of the host (always 1): its version, isolation and trust",
            labels=["plugin", "version", "isolation", "trust"],
        )
        up = GaugeMetricFamily("plugbridge_up", "1 while the plugin is ACTIVE", labels=plugin)
        state = GaugeMetricFamily(
            "plugbridge_state",
            "Lifecycle state (0 INSTALLED, 1 STARTING, 2 ACTIVE, 3 STOPPING, 4 STOPPED, 5 FAILED)",
            labels=plugin,
        )
        calls = CounterMetricFamily(
            "plugbridge_calls", "Calls that ran (succeeded or failed)", labels=plugin
        )
        errors = CounterMetricFamily(
            "plugbridge_errors",
            "Failed calls by error code (refusals included)",
            labels=["plugin", "code"],
        )
        rejected = CounterMetricFamily(
            "plugbridge_rejected", "Calls refused by the concurrency limit", labels=plugin
        )
        in_flight = GaugeMetricFamily("plugbridge_in_flight", "Calls running now", labels=plugin)
        latency = GaugeMetricFamily(
            "plugbridge_call_latency_seconds",
            "Call duration percentiles as the handle measured them (all callers)",
            labels=["plugin", "quantile"],
        )
        reloads = CounterMetricFamily("plugbridge_reloads", "Successful reloads", labels=plugin)
        restarts = CounterMetricFamily(
            "plugbridge_restarts", "Crashed workers replaced", labels=plugin
        )
        uptime = GaugeMetricFamily(
            "plugbridge_uptime_seconds", "Seconds since the plugin was loaded", labels=plugin
        )
        rss = GaugeMetricFamily(
            "plugbridge_worker_rss_bytes", "Resident memory of the worker process", labels=plugin
        )
        cpu = CounterMetricFamily(
            "plugbridge_worker_cpu_seconds", "CPU time of the worker process", labels=plugin
        )
        for status in self._host.status():
            name = [status.name]
            stats = status.stats
            meta = status.metadata
            info.add_metric([status.name, meta.version, status.isolation, meta.trust], 1)
            up.add_metric(name, 1 if status.state is LifecycleState.ACTIVE else 0)
            state.add_metric(name, int(status.state))
            calls.add_metric(name, stats.calls)
            for code, count in sorted(stats.errors.items()):
                errors.add_metric([status.name, code], count)
            rejected.add_metric(name, stats.rejected)
            in_flight.add_metric(name, stats.in_flight)
            for quantile, value in (
                ("0.5", stats.latency_p50_ms),
                ("0.99", stats.latency_p99_ms),
                ("1", stats.latency_max_ms),
            ):
                if value is not None:
                    latency.add_metric([status.name, quantile], value / 1000.0)
            reloads.add_metric(name, stats.reloads)
            restarts.add_metric(name, stats.restarts)
            uptime.add_metric(name, stats.uptime_s)
            if stats.rss_bytes is not None:
                rss.add_metric(name, stats.rss_bytes)
            if stats.cpu_seconds is not None:
                cpu.add_metric(name, stats.cpu_seconds)
        return (info, up, state, calls, errors, rejected, in_flight, latency, reloads, restarts,
                uptime, rss, cpu)  # fmt: skip


class GatewayMetrics:
    """One application's registry: the host's statistics and the gateway's histogram."""

    def __init__(self, host: PluginHost) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HostCollector(host))
        self.call_duration = Histogram(
            "plugbridge_gateway_call_duration_seconds",
            "Duration of the calls carried by the gateway, as its clients saw them",
            labelnames=["plugin", "route"],
            buckets=CALL_BUCKETS,
            registry=self.registry,
        )

    def text(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
