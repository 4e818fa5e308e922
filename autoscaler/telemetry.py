"""The add-on's own visibility: metrics of the control loop, structured decision logs.

Per-function gauges come from a custom collector that reads the last tick's decisions at scrape
time: setting four labelled gauges for each of 10,000 functions every tick would cost more than the
tick itself, and functions that disappear drop out of the output by themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# The log format lives in autoscaler.logs (no Prometheus client); still importable from here.
from autoscaler.logs import JsonFormatter as JsonFormatter
from policies.model import Decision, ScalingSpec

log = logging.getLogger("autoscaler")


@dataclass(frozen=True, slots=True)
class FunctionView:
    """What the last tick saw and decided for one function (for gauges and `explain`)."""

    decision: Decision
    spec: ScalingSpec | None
    load: float | None


class _FunctionCollector(Collector):
    def __init__(self) -> None:
        self.views: Mapping[str, FunctionView] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        desired = GaugeMetricFamily(
            "autoscaler_desired_replicas", "Replicas the last tick decided", labels=["function_name"]
        )
        replicas = GaugeMetricFamily(
            "autoscaler_replicas", "Replicas the function had at the last tick", labels=["function_name"]
        )
        load = GaugeMetricFamily(
            "autoscaler_load",
            "Load the last tick used, in the function's scale type",
            labels=["function_name", "type"],
        )
        target = GaugeMetricFamily(
            "autoscaler_target", "Load per replica aimed for (target x proportion)", labels=["function_name"]
        )
        missing = GaugeMetricFamily(
            "autoscaler_metrics_missing",
            "1 when the last tick had no load data for the function",
            labels=["function_name"],
        )
        for key, view in self.views.items():
            desired.add_metric([key], view.decision.desired)
            replicas.add_metric([key], view.decision.current)
            missing.add_metric([key], 1.0 if view.load is None else 0.0)
            if view.spec is not None:
                target.add_metric([key], view.spec.target * view.spec.target_proportion)
                if view.load is not None:
                    load.add_metric([key, view.spec.type.value], view.load)
        yield from (desired, replicas, load, target, missing)


class ControllerMetrics:
    """The control loop's metrics, in their own registry (tests and the demo build several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.tick_seconds = Histogram(
            "autoscaler_tick_seconds",
            "Time one tick of the control loop took",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.last_tick = Gauge(
            "autoscaler_last_tick_timestamp_seconds",
            "Unix time of the last completed tick",
            registry=self.registry,
        )
        self.scale_total = Counter(
            "autoscaler_scale_total",
            "Replica changes decided, by reason",
            ["function_name", "reason"],
            registry=self.registry,
        )
        self.errors_total = Counter(
            "autoscaler_errors_total",
            "Errors by kind (metrics, patch, spec, event)",
            ["kind"],
            registry=self.registry,
        )
        self.is_leader = Gauge(
            "autoscaler_is_leader",
            "1 while this controller holds the lease and may patch",
            registry=self.registry,
        )
        self.functions = _FunctionCollector()
        self.registry.register(self.functions)


def log_decision(*, key: str, decision: Decision, dry_run: bool, patched: bool) -> None:
    """The one structured log line per decision that changes replicas (invariant 5)."""
    log.info(
        "%s: %d -> %d replicas (%s): %s",
        key,
        decision.current,
        decision.desired,
        decision.reason.value,
        decision.message,
        extra={
            "fields": {
                "event": "scale",
                "function": key,
                "from": decision.current,
                "to": decision.desired,
                "reason": decision.reason.value,
                "why": decision.message,
                "dry_run": dry_run,
                "patched": patched,
            }
        },
    )
