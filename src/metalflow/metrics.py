"""Prometheus metrics: agent requests, action durations, workflows by state and IPAM prefix usage
(both read at scrape)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from metalflow.events import Event


class _WorkflowStates(Collector):
    def __init__(self, count_by_state: Callable[[], dict[str, int]]) -> None:
        self._count = count_by_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("metalflow_workflows", "Workflows by state", labels=["state"])
        for state, count in sorted(self._count().items()):
            family.add_metric([state], count)
        yield family


class _Counts(Collector):
    """Counters kept by a hot path as plain dicts (cheaper than a prometheus Counter per
    packet), read at scrape time."""

    def __init__(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, int]]
    ) -> None:
        self.name, self.documentation, self.label, self.read = name, documentation, label, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in sorted(self.read().items()):
            family.add_metric([value], count)
        yield family


MAX_PREFIX_SERIES = 1_000
"""Pools and reservations reported per scrape, each a series of each gauge: a scrape reads one
grouped count per prefix, and a site with more prefixes than this would swamp Prometheus."""
PREFIX_LABELS = ["prefix", "kind", "metro", "status"]


@dataclass(frozen=True)
class PrefixUsage:
    """One pool's or reservation's figures, as the IPAM counts them from its free space."""

    cidr: str
    kind: str
    metro: str | None
    status: str
    utilisation: float
    free: int


class _PrefixUsage(Collector):
    """`read(limit)` returns at most `limit` prefixes and how many there are in all; the ones
    left out are counted in `metalflow_ipam_prefixes_unreported` rather than dropped silently."""

    def __init__(self, read: Callable[[int], tuple[Sequence[PrefixUsage], int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        usages, total = self._read(MAX_PREFIX_SERIES)
        shown = usages[:MAX_PREFIX_SERIES]
        ratio = GaugeMetricFamily(
            "metalflow_ipam_prefix_utilisation_ratio",
            "Allocated share of a pool's or reservation's addresses (0 to 1)",
            labels=PREFIX_LABELS,
        )
        free = GaugeMetricFamily(
            "metalflow_ipam_prefix_free_addresses",
            "Addresses of a pool or reservation not allocated",
            labels=PREFIX_LABELS,
        )
        for usage in shown:
            labels = [usage.cidr, usage.kind, usage.metro or "", usage.status]
            ratio.add_metric(labels, usage.utilisation)
            free.add_metric(labels, usage.free)
        yield ratio
        yield free
        yield GaugeMetricFamily(
            "metalflow_ipam_prefixes_unreported",
            f"Pools and reservations beyond the first {MAX_PREFIX_SERIES:,} (by address), left"
            " out of the prefix gauges",
            value=max(total - len(shown), 0),
        )


class Metrics:
    """One registry per server, so several servers (tests) never share counters."""

    def __init__(self, count_workflows_by_state: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.agent_requests = Counter(
            "metalflow_agent_requests",
            "Agent protocol requests",
            ["endpoint"],
            registry=self.registry,
        )
        self.discovery_refused = Counter(
            "metalflow_discovery_refused",
            "Discovery requests refused: off, network, rate_address, rate_overall, mac",
            ["reason"],
            registry=self.registry,
        )
        self.action_duration = Histogram(
            "metalflow_action_duration_seconds",
            "Duration of action attempts",
            ["outcome"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.registry.register(_WorkflowStates(count_workflows_by_state))

    def register_counts(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, int]]
    ) -> None:
        self.registry.register(_Counts(name, documentation, label, read))

    def register_prefix_usage(
        self, read: Callable[[int], tuple[Sequence[PrefixUsage], int]]
    ) -> None:
        """The IPAM gauges; `read(limit)` gives at most `limit` prefixes and the count of all."""
        self.registry.register(_PrefixUsage(read))

    def on_event(self, event: Event) -> None:
        if event.kind == "workflow.action.succeeded":
            self.action_duration.labels("success").observe(event.data.get("duration", 0.0))
        elif event.kind == "workflow.action.failed":
            outcome = str(event.data.get("state", "FAILED")).lower()
            self.action_duration.labels(outcome).observe(event.data.get("duration", 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
