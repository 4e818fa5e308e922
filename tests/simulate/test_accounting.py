"""Cold starts, waits and replica time on tiny hand-made traces whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoscaler.simulate.account import account
from autoscaler.simulate.engine import Outcome
from autoscaler.simulate.policies import SimSettings, simulate_function
from autoscaler.simulate.trace import TraceFunction, read_trace, spread_arrivals
from tests.simulate.support import write_trace

LAG = 2 + 15 + 2  # a tick, a scrape interval and a tick: the most the loop can lag behind a call


def _one(
    tmp_path: Path, calls: list[tuple[int, int]], *, duration_ms: float = 100.0, minutes: int = 120
) -> tuple[TraceFunction, float]:
    trace = read_trace(write_trace(tmp_path / "t", {"f": calls}, duration_ms=duration_ms, minutes=minutes))
    return trace.functions[0], trace.seconds


def test_fixed_keep_alive_keeps_a_call_five_minutes_later_warm_and_not_one_thirty_minutes_later(
    tmp_path: Path,
) -> None:
    fn, end = _one(tmp_path, [(0, 1), (5, 1), (30, 1)])
    result = simulate_function(
        fn, policies=("fixed-10m",), settings=SimSettings(), end=end, keep_changes=True
    )["fixed-10m"]
    arrivals = spread_arrivals(fn.counts, seed=0, key=fn.key)
    assert result.invocations == 3
    assert result.cold_starts == 2  # the first call and the one after the ten minutes ran out
    assert result.waits.tolist() == pytest.approx([2.0, 2.0])  # each waits exactly one cold start
    assert [replicas for _, replicas in result.changes] == [1, 0, 1, 0]
    first_life = result.changes[1][0] - arrivals[0]
    assert arrivals[1] - arrivals[0] + 600 <= first_life <= arrivals[1] - arrivals[0] + 600 + LAG
    second_life = result.changes[3][0] - arrivals[2]
    assert 600 <= second_life <= 600 + LAG
    assert result.replica_seconds == pytest.approx(first_life + second_life)
    busy = 3 * 0.1
    assert result.idle_replica_seconds == pytest.approx(first_life + second_life - busy, abs=1e-6)
    assert result.wasted_memory_gb_s == pytest.approx(result.idle_replica_seconds * 512 / 1024)


@pytest.mark.parametrize(
    ("policy", "low", "high"),
    [
        ("openfaas", 900, 900 + LAG),  # zero-duration 15 m after the last call seen
        ("fixed-10m", 600, 600 + LAG),
        ("adaptive", 600, 600 + LAG),  # no history yet: the fixed 10 m window
        ("knative", 60 + 30, 60 + 30 + 2 + 2),  # the 60 s stable window empties, then 30 s grace
        ("keda-hpa", 300, 300 + 45 + 15 + 30 + 15),  # last active poll, then the 300 s cooldown
    ],
)
def test_a_single_call_costs_one_cold_start_and_the_policy_s_keep_alive(
    tmp_path: Path, policy: str, low: float, high: float
) -> None:
    fn, end = _one(tmp_path, [(10, 1)])
    result = simulate_function(fn, policies=(policy,), settings=SimSettings(), end=end, keep_changes=True)[
        policy
    ]
    assert result.cold_starts == 1
    assert result.invocations == 1
    assert [replicas for _, replicas in result.changes] == [1, 0]
    life = result.changes[1][0] - result.changes[0][0]
    assert low <= life <= high
    assert result.scale_events == 2


def test_a_longer_cold_start_is_a_longer_wait(tmp_path: Path) -> None:
    fn, end = _one(tmp_path, [(10, 1)])
    result = simulate_function(fn, policies=("openfaas",), settings=SimSettings(cold_start=7.5), end=end)[
        "openfaas"
    ]
    assert result.waits.tolist() == pytest.approx([7.5])


def test_calls_arriving_during_a_cold_start_all_wait_for_the_same_pod() -> None:
    outcome = Outcome(pods=[(10.0, 12.0, 100.0)], changes=[(10.0, 1), (100.0, 0)])
    arrivals = np.array([10.0, 10.5, 11.0, 13.0])
    acc = account(outcome, arrivals=arrivals, duration=0.5, per_pod=10, end=200.0)
    assert acc.cold_starts == 3
    assert acc.waits.tolist() == pytest.approx([2.0, 1.5, 1.0])
    assert acc.replica_seconds == pytest.approx(90.0)
    # Busy: the three held calls run together 12.0-12.5, then 13.0-13.5.
    assert acc.busy_replica_seconds == pytest.approx(1.0)


def test_a_full_pod_makes_a_call_wait_for_a_slot_or_a_new_pod() -> None:
    outcome = Outcome(pods=[(0.0, 0.0, 100.0), (5.0, 7.0, 100.0)], changes=[(0.0, 1), (5.0, 2)])
    arrivals = np.array([4.0, 4.5, 5.0])  # one slot per pod, each call runs 10 s
    acc = account(outcome, arrivals=arrivals, duration=10.0, per_pod=1, end=100.0)
    # Both later calls find the slot taken; the new pod (ready at 7) comes before the first slot frees
    # (14). Calls waiting together are not queued against each other (stated in SERVICE_MODEL).
    assert acc.waits.tolist() == pytest.approx([2.5, 2.0])
    assert acc.cold_starts == 2


def test_a_warm_up_is_replayed_but_not_counted(tmp_path: Path) -> None:
    fn, end = _one(tmp_path, [(0, 1), (5, 1), (60, 1)])
    whole = simulate_function(fn, policies=("fixed-10m",), settings=SimSettings(), end=end)["fixed-10m"]
    later = simulate_function(fn, policies=("fixed-10m",), settings=SimSettings(warmup=1800.0), end=end)[
        "fixed-10m"
    ]
    assert (whole.invocations, whole.cold_starts) == (3, 2)
    assert (later.invocations, later.cold_starts) == (1, 1)
    assert later.replica_seconds < whole.replica_seconds
