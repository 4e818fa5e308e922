"""Numbers and families are written as the gateway's Go client writes them, because Prometheus 2.x
stores `le="1"` and `le="1.0"` as two series and rules select the gateway's exact names and types.

The expected strings are what Go's `strconv.FormatFloat(f, 'g', -1, 64)` (the text format's writer,
with 0 and 1 special-cased) gives for each value.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from autoscaler.interfaces import FunctionInfo, FunctionRef
from autoscaler.proxy._metrics import FunctionStats, StatsCollector, exposition, go_float


@pytest.mark.parametrize(
    ("value", "go"),
    [
        (1.0, "1"),
        (0.0, "0"),
        (-0.0, "0"),
        (10.0, "10"),
        (2.5, "2.5"),
        (0.005, "0.005"),
        (0.0001, "0.0001"),
        (0.00012, "0.00012"),
        (1e-05, "1e-05"),
        (123456.0, "123456"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-2.5, "-2.5"),
        (1.5e300, "1.5e+300"),
        (5e-324, "5e-324"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (float("nan"), "NaN"),
    ],
)
def test_numbers_are_written_with_gos_shortest_format(value: float, go: str) -> None:
    assert go_float(value) == go


def _registry(stats: FunctionStats, functions: dict[str, FunctionInfo]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: [stats], functions=lambda: functions))
    return registry


def _stats() -> FunctionStats:
    stats = FunctionStats(FunctionRef("echo", "openfaas-fn"))
    stats.started = 2
    stats.inflight = 2
    stats.finish(200, 1.0)  # exactly on a bound: counted in le="1", as Prometheus buckets are inclusive
    return stats


def test_a_label_value_is_escaped_as_go_escapes_it() -> None:
    stats = FunctionStats(FunctionRef('we"ird\\', "n\nl"))
    stats.started = 1
    stats.inflight = 1
    text = exposition(_registry(stats, {})).decode()
    assert 'gateway_function_invocation_started{function_name="we\\"ird\\\\.n\\nl"} 1\n' in text


def test_an_observation_on_a_bound_counts_in_that_bucket_and_counts_are_integers() -> None:
    text = exposition(_registry(_stats(), {})).decode()
    prefix = 'gateway_functions_seconds_bucket{code="200",function_name="echo.openfaas-fn"'
    assert f'{prefix},le="0.5"}} 0\n' in text
    assert f'{prefix},le="1"}} 1\n' in text
    assert 'gateway_functions_seconds_sum{code="200",function_name="echo.openfaas-fn"} 1\n' in text


def test_families_without_series_are_left_out_as_gos_registry_leaves_them() -> None:
    text = exposition(_registry(_stats(), {})).decode()
    assert "gateway_service_count" not in text  # the provider knows no function
    assert "# TYPE gateway_function_invocation_started counter\n" in text


def test_prometheus_clients_own_writer_keeps_the_exact_started_name_untyped() -> None:
    """A registry shared with another admin server (the demo's) goes out through generate_latest."""
    info = FunctionInfo(ref=FunctionRef("echo", "openfaas-fn"), labels={}, replicas=1, ready_replicas=1)
    registry = _registry(_stats(), {"echo.openfaas-fn": info})
    text = generate_latest(registry).decode()
    assert "# TYPE gateway_function_invocation_started untyped\n" in text
    assert 'gateway_function_invocation_started{function_name="echo.openfaas-fn"} 2.0\n' in text
    assert "gateway_function_invocation_started_total" not in text
    assert registry.get_sample_value("gateway_service_target", {"function_name": "echo.openfaas-fn"}) == 50
