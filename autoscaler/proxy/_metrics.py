"""Per-function counters kept as plain numbers on the hot path, written out as the gateway writes them.

Every request touches these counters, so they are slotted attributes and a bisect into bucket bounds
rather than prometheus_client metric children (each of which takes a lock and a label lookup). On
scrape, a custom collector turns them into the OpenFaaS gateway's metric families, and `exposition`
writes those exactly as the gateway's Go client does: dashboards, recording rules and Prometheus 2.x
series identity depend on it. Go writes `le="1"` where Python writes `le="1.0"` (two different
series to Prometheus 2.x), and Go types `gateway_function_invocation_started` as a counter without
a `_total` suffix, which prometheus_client's text writer cannot express (it appends `_total` to
every counter's name). `InvocationStats` snapshots feed the in-process load reader of the local mode.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from autoscaler.errors import SpecError
from autoscaler.interfaces import FunctionInfo, FunctionRef, InvocationStats
from autoscaler.spec import TYPE, parse_labels

# Go's prometheus.DefBuckets: the gateway's gateway_functions_seconds sets no buckets of its own.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Cold starts take from a fraction of a second (a local process) to minutes (an image pull).
COLD_START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# Behind a real OpenFaaS gateway (`--no-gateway-metrics`) the gateway exports the gateway_* names
# itself; the proxy's own counts go out under this prefix so that nothing is counted twice.
GATEWAY_PREFIX = "gateway_"
OWN_PREFIX = "autoscaler_proxy_"


def go_float(value: float) -> str:
    """`value` as Go's text exposition writes it: strconv 'g' with the shortest exact digits.

    Go leaves out a trailing `.0` (`1`, `10`), and switches to an exponent from 1e+06 and below 1e-04
    (`1e+06`, `1e-05`), where Python's repr switches at 1e+16.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"  # negative zero too, as Go's writer special-cases 0
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    assert isinstance(exponent, int)  # finite
    point = len(digit_tuple) + exponent  # where the decimal point sits after the first `point` digits
    power = point - 1
    minus = "-" if sign else ""
    if power < -4 or power >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{minus}{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return minus + digits + "0" * (point - len(digits))
    return f"{minus}{digits[:point]}.{digits[point:]}"


@functools.cache
def _le_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return (*(go_float(bound) for bound in bounds), "+Inf")


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
        """(`le` as Go writes it, count of observations at most that bound), ending with +Inf."""
        out: list[tuple[str, float]] = []
        running = 0
        for le, count in zip(_le_labels(self.bounds), self.counts, strict=True):
            running += count
            out.append((le, float(running)))
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


class GoFamily(Metric):
    """A metric family as the gateway's Go client writes it: `exposition` writes `go_name`/`go_type`.

    prometheus_client's own writer (`generate_latest`, as the demo's shared admin server uses) still
    reads it correctly: a counter whose Go name has no `_total` goes out there untyped under its exact
    name instead of renamed, and `registry.get_sample_value` finds every sample under its Go name.
    """

    def __init__(self, go_name: str, documentation: str, go_type: str, labels: Sequence[str]) -> None:
        if go_type == "counter" and go_name.endswith("_total"):
            name, typ = go_name.removesuffix("_total"), "counter"
        elif go_type == "counter":
            name, typ = go_name, "unknown"
        else:
            name, typ = go_name, go_type
        super().__init__(name, documentation, typ)
        self.go_name = go_name
        self.go_type = go_type
        self.label_names = tuple(labels)

    def add(self, values: Sequence[str], value: float) -> None:
        labels = dict(zip(self.label_names, values, strict=True))
        self.samples.append(Sample(self.go_name, labels, value))

    def add_histogram(self, values: Sequence[str], histogram: Histogram) -> None:
        labels = dict(zip(self.label_names, values, strict=True))
        name = self.go_name
        count = 0.0
        for le, count in histogram.cumulative():
            self.samples.append(Sample(name + "_bucket", {**labels, "le": le}, count))
        self.samples.append(Sample(name + "_sum", labels, histogram.total))
        self.samples.append(Sample(name + "_count", labels, count))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _go_text(family: GoFamily) -> str:
    help_text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
    lines = [f"# HELP {family.go_name} {help_text}\n", f"# TYPE {family.go_name} {family.go_type}\n"]
    for sample in family.samples:
        labels = sample.labels
        # Go sorts a metric's labels by name and writes a bucket's `le` after them.
        names = sorted(n for n in labels if n != "le")
        if "le" in labels:
            names.append("le")
        text = ",".join(f'{n}="{_escape(labels[n])}"' for n in names)
        lines.append(
            f"{sample.name}{{{text}}} {go_float(sample.value)}\n"
            if text
            else f"{sample.name} {go_float(sample.value)}\n"
        )
    return "".join(lines)


class Families(Collector):
    """Metric families made already, as a collector (a merged snapshot, or the non-Go part of one)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def exposition(registry: Collector) -> bytes:
    """The text format for a scrape: GoFamily families as Go writes them, the others as
    prometheus_client does. A Go family without samples is left out, as Go's registry leaves it."""
    go: list[str] = []
    others: list[Metric] = []
    for family in registry.collect():
        if isinstance(family, GoFamily):
            if family.samples:
                go.append(_go_text(family))
        else:
            others.append(family)
    return "".join(go).encode() + generate_latest(Families(others))


class StatsCollector(Collector):
    """Exports every function's FunctionStats under the gateway's (or the add-on's own) names, and the
    gateway's per-function service gauges from the provider's cache.

    `gateway_metrics=False` (behind a real OpenFaaS gateway, which exports the gateway_* names
    itself): the invocation families go out as `autoscaler_proxy_*` and no service gauges at all.
    """

    def __init__(
        self,
        stats: Callable[[], Iterable[FunctionStats]],
        *,
        functions: Callable[[], Mapping[str, FunctionInfo]] = dict,
        gateway_metrics: bool = True,
    ) -> None:
        self._stats = stats
        self._functions = functions
        self._gateway_metrics = gateway_metrics

    def collect(self) -> Iterator[Metric]:
        name = ["function_name"]
        prefix = GATEWAY_PREFIX if self._gateway_metrics else OWN_PREFIX
        total = GoFamily(
            prefix + "function_invocation_total",
            "Invocations answered, by function and status code.",
            "counter",
            ["function_name", "code"],
        )
        # The gateway's Go client writes this counter without a `_total` suffix; the loop's query,
        # dashboards and Pro's scale-to-zero rule read that exact name.
        started = GoFamily(
            prefix + "function_invocation_started", "Invocations started, by function.", "counter", name
        )
        inflight = GoFamily(
            prefix + "function_invocation_inflight", "Invocations in flight, held ones too.", "gauge", name
        )
        seconds = GoFamily(
            prefix + "functions_seconds",
            "Invocation duration in seconds, by function and status code.",
            "histogram",
            ["function_name", "code"],
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
        # Go's registry writes a family's series sorted by label values.
        for st in sorted(self._stats(), key=_by_key):
            key = st.key
            started.add([key], float(st.started))
            inflight.add([key], float(st.inflight))
            held.add_metric([key], float(st.held))
            wakeups.add_metric([key], float(st.wakeups))
            timeouts.add_metric([key], float(st.hold_timeouts))
            for code, count in sorted(st.completed.items(), key=_by_code):
                total.add([key, str(code)], float(count))
            for code, histogram in sorted(st.seconds.items(), key=_by_code):
                seconds.add_histogram([key, str(code)], histogram)
            cold.add_metric([key], st.cold_start.cumulative(), st.cold_start.total)
            for reason, count in list(st.rejected.items()):
                rejected.add_metric([key, reason], float(count))
        families = [total, started, inflight, seconds]
        if self._gateway_metrics:
            families += service_families(self._functions())
        yield from sorted(families, key=_by_go_name)
        yield from (held, cold, wakeups, timeouts, rejected)

    def describe(self) -> Iterator[Metric]:
        # Registration checks names against describe(); an empty pass of collect() gives them.
        return StatsCollector(lambda: (), gateway_metrics=self._gateway_metrics).collect()


def service_families(functions: Mapping[str, FunctionInfo]) -> list[GoFamily]:
    """The gateway's per-function service gauges, from the provider's cache.

    `gateway_service_count` is the CE gateway's: labelled `function_name` only, its value the
    provider's `replicas`, which faas-netes reads from the Deployment's spec.replicas (desired, not
    ready). The others are OpenFaaS Pro's, whose source is closed; inferred from Pro's metrics
    documentation (names, `function_name` label, meaning), its recording rules (which join
    `gateway_service_target_load{scaling_type}` on `function_name`) and the exporter of the CE
    gateway that briefly carried the autoscaler (target load by scaling type, min replicas, both
    from the labels with their defaults): `gateway_service_ready_count` counts ready replicas,
    `gateway_service_target` and `gateway_service_target_load` give com.openfaas.scale.target,
    `gateway_service_min` com.openfaas.scale.min. A function whose labels are invalid keeps its
    replica gauges but has no label-derived ones: no target is known for it (the loop says why).
    """
    name = ["function_name"]
    count = GoFamily("gateway_service_count", "Desired replicas of the function.", "gauge", name)
    ready = GoFamily("gateway_service_ready_count", "Ready replicas of the function.", "gauge", name)
    target = GoFamily("gateway_service_target", "Target load per replica of the function.", "gauge", name)
    minimum = GoFamily("gateway_service_min", "Replicas of the function while active.", "gauge", name)
    target_load = GoFamily(
        "gateway_service_target_load",
        "Target load per replica of the function, by scaling type.",
        "gauge",
        ["function_name", "scaling_type"],
    )
    for key in sorted(functions):
        info = functions[key]
        count.add([key], float(info.replicas))
        ready.add([key], float(info.ready_replicas))
        try:
            spec = parse_labels(info.labels)
        except SpecError:
            continue
        raw_type = info.labels.get(TYPE, "").strip().lower()
        target.add([key], spec.target)
        minimum.add([key], float(spec.min_replicas))
        target_load.add([key, raw_type or spec.type.value], spec.target)
    return [count, minimum, ready, target, target_load]


def _by_key(stats: FunctionStats) -> str:
    return stats.key


def _by_code(item: tuple[int, object]) -> str:
    return str(item[0])


def _by_go_name(family: GoFamily) -> str:
    return family.go_name
