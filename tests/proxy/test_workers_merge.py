"""The supervisor's sum of its workers' registries is what one process counting everything would write.

Two workers' real registries (the proxy's StatsCollector, the service gauges from a provider cache,
a prometheus_client counter as the async acceptor registers) are snapshotted as the workers send
them, merged and written out; the text must equal, byte for byte, one registry that counted every
request itself, except that the cluster's gauges appear once and a counter's `_created` is the
earliest worker's.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from autoscaler.interfaces import FunctionInfo, FunctionRef
from autoscaler.proxy._admin import exposition_of, growing, merge, snapshot
from autoscaler.proxy._metrics import FunctionStats, StatsCollector, exposition

A = FunctionRef("alpha", "openfaas-fn")
B = FunctionRef("beta", "openfaas-fn")
FUNCTIONS = {
    ref.key: FunctionInfo(ref=ref, replicas=2, ready_replicas=1, labels={"com.openfaas.scale.target": "5"})
    for ref in (A, B)
}


def count(stats: FunctionStats, answers: list[tuple[int, float]], *, held: int = 0) -> None:
    for status, seconds in answers:
        stats.started += 1
        stats.inflight += 1
        stats.finish(status, seconds)
    stats.started += held
    stats.inflight += held
    stats.held += held


def registry(stats: list[FunctionStats], *, accepted: int, created: float) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(StatsCollector(lambda: stats, functions=lambda: FUNCTIONS))
    counter = Counter("autoscaler_queue_accepted", "Calls accepted.", registry=reg)
    counter.inc(accepted)
    counter._created = created  # two workers started at known times
    return reg


def test_two_workers_merged_write_what_one_process_counting_everything_writes() -> None:
    first_a, second_a, second_b = FunctionStats(A), FunctionStats(A), FunctionStats(B)
    count(first_a, [(200, 0.003), (200, 0.2), (500, 1.5)], held=2)
    count(second_a, [(200, 0.04), (429, 0.001)], held=1)
    count(second_b, [(200, 7.0)])
    second_a.wakeups = first_a.wakeups = 1
    first = registry([first_a], accepted=3, created=100.0)
    second = registry([second_a, second_b], accepted=4, created=50.0)

    one_a, one_b = FunctionStats(A), FunctionStats(B)
    count(one_a, [(200, 0.003), (200, 0.2), (500, 1.5), (200, 0.04), (429, 0.001)], held=3)
    count(one_b, [(200, 7.0)])
    one_a.wakeups = 2
    one = registry([one_a, one_b], accepted=7, created=50.0)

    merged = exposition_of(merge([snapshot(first), snapshot(second)]))

    assert merged.decode() == exposition(one).decode()
    assert b'gateway_service_count{function_name="alpha.openfaas-fn"} 2\n' in merged  # once, not 4
    assert b'gateway_function_invocation_inflight{function_name="alpha.openfaas-fn"} 3\n' in merged


def test_a_dead_workers_counters_stay_in_the_sum_and_its_gauges_leave_it() -> None:
    dead_stats, live_stats = FunctionStats(A), FunctionStats(A)
    count(dead_stats, [(200, 0.01)] * 5, held=4)
    count(live_stats, [(200, 0.01)] * 2)
    dead = registry([dead_stats], accepted=1, created=10.0)
    live = registry([live_stats], accepted=1, created=20.0)

    retired = merge([[], growing(snapshot(dead))])
    text = exposition_of(merge([snapshot(live), retired])).decode()

    assert 'gateway_function_invocation_started{function_name="alpha.openfaas-fn"} 11\n' in text
    assert 'gateway_function_invocation_total{code="200",function_name="alpha.openfaas-fn"} 7\n' in text
    assert 'gateway_functions_seconds_count{code="200",function_name="alpha.openfaas-fn"} 7\n' in text
    assert 'gateway_function_invocation_inflight{function_name="alpha.openfaas-fn"} 0\n' in text
    assert 'autoscaler_held_requests{function_name="alpha.openfaas-fn"} 0.0\n' in text
    assert "autoscaler_queue_accepted_total 2.0\n" in text
