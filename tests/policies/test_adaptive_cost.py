"""The priced adaptive keep-alive: warmth bought with idle memory at a price per cold start.

`HistogramConfig(cold_start_price=...)` with `HybridHistogram(memory_gb=...)`: the keep-alive is the
one that costs least over the idle times seen (idle memory plus the price of each cold start), and
while the histogram cannot decide, the function is kept warm as long as the price of one cold start
buys in idle memory. Without a price, or without the function's memory, the policy is unchanged.
"""

from __future__ import annotations

import pytest

from autoscaler.simulate.policies import (
    PRICED,
    SimSettings,
    check_policy,
    describe,
    family,
    simulate_function,
)
from autoscaler.simulate.trace import TraceFunction, read_trace
from policies.adaptive import HistogramConfig, HybridHistogram
from tests.support.child import shared_path

FIXED = 600.0


def priced(price: float, memory_gb: float, *, per_call: bool = False) -> HybridHistogram:
    config = HistogramConfig(cold_start_price=price, price_per_call=per_call)
    return HybridHistogram(fixed_keepalive=FIXED, config=config, memory_gb=memory_gb)


def test_a_cheap_function_back_after_its_first_minute_is_kept_warm_as_long_as_a_cold_start_is_worth() -> None:
    policy = priced(1800.0, 0.5)
    policy.observe_call(now=100.0)
    assert policy.windows(now=100.0) == (0.0, FIXED)  # called once so far: maybe never again
    policy.observe_call(now=1000.0)
    assert policy.windows(now=1000.0) == (0.0, 3600.0)  # 1,800 GB-s buys an hour of a 0.5 GB replica


def test_the_bought_window_stays_within_the_fixed_window_and_the_histogram_range() -> None:
    dear, cheap = priced(1800.0, 8.0), priced(1800.0, 0.01)
    for policy in (dear, cheap):
        policy.observe_call(now=100.0)
        policy.observe_call(now=1000.0)
    assert dear.windows(now=100.0) == (0.0, FIXED)
    assert cheap.windows(now=100.0) == (0.0, HistogramConfig().histogram_range)


def test_without_a_price_or_without_memory_the_policy_is_the_memory_blind_one() -> None:
    plain = HybridHistogram(fixed_keepalive=FIXED)
    blind = HybridHistogram(fixed_keepalive=FIXED, config=HistogramConfig(cold_start_price=1800.0))
    unpriced = HybridHistogram(fixed_keepalive=FIXED, memory_gb=0.5)
    for policy in (plain, blind, unpriced):
        for k in range(12):
            policy.observe_call(now=k * 1800.0)
    assert plain.windows(now=20_000.0) == blind.windows(now=20_000.0) == unpriced.windows(now=20_000.0)


def test_with_a_price_the_keep_alive_covers_a_gap_only_when_its_cold_starts_cost_more_than_warmth() -> None:
    def learned(price: float) -> tuple[float, float]:
        policy = priced(price, 1.0)
        for _ in range(80):
            policy.record_idle(seconds=10)  # calls in consecutive minutes
        for _ in range(20):
            policy.record_idle(seconds=30 * 60 + 10)  # and half-hour gaps
        prewarm, keep = policy.windows(now=0.0)
        return prewarm, prewarm + keep

    # Covering the half-hour gaps costs about 33 minutes of warmth after each of the 80 short ones.
    assert learned(100.0) == (0.0, pytest.approx(2 * 60 * 1.1))  # a cold start is worth less
    assert learned(20_000.0) == (0.0, pytest.approx(32 * 60 * 1.1))  # far more: keep warm through


def test_priced_per_minute_with_calls_a_busier_function_is_kept_warm_for_less() -> None:
    rare, busy = priced(24_000.0, 1.0, per_call=True), priced(24_000.0, 1.0, per_call=True)
    rare.observe_call(now=0.0)
    rare.observe_call(now=600.0)
    for k in range(12):
        busy.observe_call(now=k * 15.0)  # three minutes of calls
    busy.observe_call(now=600.0)  # back after seven empty minutes
    assert rare.mode == busy.mode == "learning"
    assert rare.windows(now=600.0) == (0.0, 12_000.0)  # 24,000 GB-s shared by 2 minutes, for 1 GB
    assert busy.windows(now=600.0) == (0.0, 6_000.0)  # ... by 4 minutes with calls


def test_a_negative_price_or_memory_is_refused() -> None:
    with pytest.raises(ValueError, match="cold_start_price"):
        HistogramConfig(cold_start_price=-1.0)
    with pytest.raises(ValueError, match="memory_gb"):
        HybridHistogram(fixed_keepalive=FIXED, memory_gb=0.0)


def test_the_simulator_names_the_priced_policies_in_the_adaptive_family() -> None:
    assert check_policy("adaptive-share20000") == "adaptive-share20000"
    assert check_policy(PRICED) == PRICED
    assert "100000 GB-s" in describe(PRICED)
    assert family("adaptive-gbs2000") == "adaptive"


def _cut(fn: TraceFunction, minute: int) -> TraceFunction:
    counts = fn.counts.copy()
    counts[minute:] = 0
    return TraceFunction(fn.key, fn.app, fn.trigger, counts, fn.duration, fn.memory_mb)


@pytest.mark.slow
def test_priced_decisions_before_t_do_not_change_when_the_calls_after_t_are_removed() -> None:
    functions = read_trace(shared_path("traces", "azure2019-1000")).functions[:300:15]
    minute, changed = 9 * 60, 0
    for fn in functions:
        runs = [
            simulate_function(
                one, policies=(PRICED,), settings=SimSettings(), end=86400.0, keep_changes=True
            )[PRICED].changes
            for one in (fn, _cut(fn, minute))
        ]
        before = [[change for change in run if change[0] < minute * 60] for run in runs]
        assert before[0] == before[1], fn.key
        changed += runs[0] != runs[1]
    assert changed > 0  # the cut did change later decisions: the comparison was not vacuous
