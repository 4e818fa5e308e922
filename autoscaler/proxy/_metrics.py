"""Per-function counters kept as plain numbers on the hot path, exported to Prometheus on scrape.

Every request touches these counters, so they are slotted attributes and a bisect into bucket bounds
rather than prometheus_client metric children (each of which takes a lock and a label lookup). A
custom collector turns them into the OpenFaaS gateway's metric families when `/metrics` is scraped,
and `InvocationStats` snapshots feed the in-process load reader of the local mode.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

from autoscaler.interfaces import FunctionRef, InvocationStats

# prometheus_client's default buckets, as the OpenFaaS gateway uses for gateway_functions_seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Cold starts take from a fraction of a second (a local process) to minutes (an image pull).
COLD_START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class Histogram:
    """Bucket counts and a sum; `observe` costs one bisect."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class FunctionStats:
    """Everything the proxy counts for one function (`key` is NAME.NAMESPACE)."""

    __slots__ = (
        "cold_start",
        "completed",
        "held",
        "hold_timeouts",
        "inflight",
        "key",
        "ref",
        "rejected",
        "seconds",
        "started",
        "wakeups",
    )

    def __init__(self, ref: FunctionRef) -> None:
        self.ref = ref
        self.key = ref.key
        self.started = 0
        self.inflight = 0  # held requests included: they are in flight from the caller's view
        self.held = 0
        self.completed: dict[int, int] = {}
        self.seconds: dict[int, Histogram] = {}
        self.cold_start = Histogram(COLD_START_BUCKETS)
        self.wakeups = 0
        self.hold_timeouts = 0
        self.rejected: dict[str, int] = {}

    def finish(self, status: int, seconds: float) -> None:
        """Count one answered invocation."""
        self.inflight -= 1
        completed = self.completed
        completed[status] = completed.get(status, 0) + 1
        histogram = self.seconds.get(status)
        if histogram is None:
            histogram = self.seconds[status] = Histogram(REQUEST_BUCKETS)
        histogram.observe(seconds)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def snapshot(self) -> InvocationStats:
        return InvocationStats(
            completed_total=float(sum(self.completed.values())),
            started_total=float(self.started),
            inflight=self.inflight,
            held=self.held,
        )


class StatsCollector(Collector):
    """Exports every function's FunctionStats under the gateway's and the add-on's metric names."""

    def __init__(self, stats: Callable[[], Iterable[FunctionStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        name = ["function_name"]
        total = CounterMetricFamily(
            "gateway_function_invocation",
            "Invocations answered, by function and status code.",
            labels=["function_name", "code"],
        )
        # The gateway exports this counter without the `_total` suffix; dashboards and the load
        # reader query that exact name, so it goes out untyped rather than renamed.
        started = UnknownMetricFamily(
            "gateway_function_invocation_started", "Invocations started, by function.", labels=name
        )
        inflight = GaugeMetricFamily(
            "gateway_function_invocation_inflight", "Invocations in flight (held ones included).", labels=name
        )
        seconds = HistogramMetricFamily(
            "gateway_functions_seconds",
            "Invocation duration in seconds, by function and status code.",
            labels=["function_name", "code"],
        )
        held = GaugeMetricFamily("autoscaler_held_requests", "Requests held for a cold start.", labels=name)
        cold = HistogramMetricFamily(
            "autoscaler_cold_start_seconds",
            "Held requests: seconds from arrival to the function's first response byte.",
            labels=name,
        )
        wakeups = CounterMetricFamily("autoscaler_wakeups", "Wake-ups from zero replicas.", labels=name)
        timeouts = CounterMetricFamily(
            "autoscaler_hold_timeouts", "Held requests answered 504 after the hold timeout.", labels=name
        )
        rejected = CounterMetricFamily(
            "autoscaler_hold_rejected",
            "Requests refused before holding (429 hold limit, 413 body size).",
            labels=["function_name", "reason"],
        )
        for st in self._stats():
            key = st.key
            started.add_metric([key], float(st.started))
            inflight.add_metric([key], float(st.inflight))
            held.add_metric([key], float(st.held))
            wakeups.add_metric([key], float(st.wakeups))
            timeouts.add_metric([key], float(st.hold_timeouts))
            for code, count in list(st.completed.items()):
                total.add_metric([key, str(code)], float(count))
            for code, histogram in list(st.seconds.items()):
                seconds.add_metric([key, str(code)], histogram.cumulative(), histogram.total)
            cold.add_metric([key], st.cold_start.cumulative(), st.cold_start.total)
            for reason, count in list(st.rejected.items()):
                rejected.add_metric([key, reason], float(count))
        yield from (total, started, inflight, seconds, held, cold, wakeups, timeouts, rejected)

    def describe(self) -> Iterator[Metric]:
        # Registration checks names against describe(); an empty pass of collect() gives them.
        return StatsCollector(lambda: ()).collect()
