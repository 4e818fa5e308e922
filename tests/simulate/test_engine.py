"""The event-driven engine decides exactly as a loop that evaluates every tick, only faster."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.simulate.policies import POLICY_NAMES, SimSettings, project_spec, simulate_function
from autoscaler.simulate.trace import read_trace
from tests.simulate.support import write_trace

MINUTES = 240  # four hours: long enough for every timer, short enough to run tick by tick


def _tricky(tmp_path: Path) -> Path:
    periodic = [(m, 1) for m in range(0, MINUTES, 12)]  # every 12 minutes: the adaptive pre-warm
    bursty = [(m, 3) for m in (3, 4, 5, 50, 51, 130, 131, 132, 200)]
    busy = [(m, 3600) for m in range(20, 40)] + [(m, 400) for m in range(40, 60)]  # 60 req/s, then 6.7
    slow = [(m, 2) for m in range(70, 90)] + [(m, 1) for m in (150, 151)]  # 90 s calls: long in flight
    sparse = [(m, 1) for m in (7, 100, 101, 230)]
    return write_trace(
        tmp_path / "tricky",
        {"periodic": periodic, "bursty": bursty, "busy": busy, "slow": slow, "sparse": sparse},
        duration_ms={"periodic": 200.0, "bursty": 50.0, "busy": 400.0, "slow": 90_000.0, "sparse": 10.0},
        minutes=MINUTES,
    )


@pytest.mark.slow
def test_event_driven_replay_matches_a_tick_by_tick_replay_for_every_policy(tmp_path: Path) -> None:
    trace = read_trace(_tricky(tmp_path))
    sim = SimSettings()
    for fn in trace.functions:
        fast = simulate_function(
            fn, policies=POLICY_NAMES, settings=sim, end=trace.seconds, keep_changes=True
        )
        slow = simulate_function(
            fn, policies=POLICY_NAMES, settings=sim, end=trace.seconds, keep_changes=True, every_tick=True
        )
        for name in POLICY_NAMES:
            assert fast[name].changes == slow[name].changes, (fn.key, name)
            assert fast[name].cold_starts == slow[name].cold_starts
            assert fast[name].evaluations < slow[name].evaluations / 4, (fn.key, name)


def test_the_busy_function_is_scaled_up_and_back_down_by_every_policy(tmp_path: Path) -> None:
    trace = read_trace(_tricky(tmp_path))
    busy = next(fn for fn in trace.functions if fn.key == "busy")
    results = simulate_function(
        busy, policies=POLICY_NAMES, settings=SimSettings(), end=trace.seconds, keep_changes=True
    )
    for name, result in results.items():
        peak = max(replicas for _, replicas in result.changes)
        assert peak >= 2, name
        assert result.changes[-1][1] == 0, name  # idle at the end of the four hours


def test_the_project_policies_are_built_from_labels_like_the_loop_builds_them() -> None:
    adaptive, fixed, openfaas = project_spec("adaptive"), project_spec("fixed-10m"), project_spec("openfaas")
    assert adaptive.keepalive == "adaptive"
    assert adaptive.zero
    assert adaptive.zero_duration == 600
    assert fixed.keepalive == "fixed"
    assert fixed.zero
    assert fixed.zero_duration == 600
    assert openfaas.zero
    assert openfaas.zero_duration == 900
    assert (openfaas.type, openfaas.target, openfaas.target_proportion) == ("rps", 50.0, 0.9)
