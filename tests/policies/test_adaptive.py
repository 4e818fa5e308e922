"""The hybrid-histogram keep-alive: windows from the idle-time histogram, and its fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from policies.adaptive import HistogramConfig, HybridHistogram
from policies.engine import FunctionState, decide
from policies.model import KeepAlive, Load, Reason, ScalingSpec

FIXED = 600.0


def calls_every(seconds: float, count: int, *, start: float = 0.0) -> HybridHistogram:
    policy = HybridHistogram(fixed_keepalive=FIXED)
    for k in range(count):
        policy.observe_call(now=start + k * seconds)
    return policy


def test_too_little_history_keeps_the_fixed_window() -> None:
    policy = calls_every(1800, 5)  # four idle times: one short of the minimum
    assert policy.mode == "learning"
    assert policy.windows(now=9000) == (0.0, FIXED)


def test_a_half_hourly_function_is_pre_warmed_just_before_its_next_call() -> None:
    policy = calls_every(1800, 10)
    assert policy.mode == "histogram"
    assert policy.counts[29] == 9  # 29 idle minutes between the minutes with calls
    prewarm, keep = policy.windows(now=9 * 1800)
    assert prewarm == pytest.approx(29 * 60 * 0.9)  # head bin 29, less the 10 % margin
    # Calls in minutes 29 idle minutes apart may be up to 31 minutes apart: keep warm to that, plus 10 %
    assert prewarm + keep == pytest.approx(31 * 60 * 1.1)
    assert prewarm < 1800 < prewarm + keep


def test_a_function_called_every_minute_stays_warm_across_two_minutes() -> None:
    # One call a minute at a random second: consecutive calls are up to two minutes apart, and the
    # histogram, which sees only minutes, must keep the function warm that long.
    offsets = np.random.default_rng(7).uniform(0, 60, size=30)
    policy = HybridHistogram(fixed_keepalive=FIXED)
    for minute, offset in enumerate(offsets):
        policy.observe_call(now=minute * 60 + offset)
    assert policy.mode == "histogram"
    assert policy.counts[0] == 29
    prewarm, keep = policy.windows(now=policy.last_call or 0.0)
    assert prewarm == 0.0
    assert prewarm + keep >= 120.0
    assert float(np.diff(np.arange(30) * 60 + offsets).max()) < prewarm + keep


def test_a_flat_histogram_is_not_representative() -> None:
    policy = HybridHistogram(fixed_keepalive=FIXED)
    for minutes in range(240):
        policy.record_idle(seconds=minutes * 60 + 30)
    assert policy.mode == "fallback: histogram not representative"
    assert policy.windows(now=0) == (0.0, FIXED)


def test_idle_times_mostly_beyond_the_histogram_fall_back_to_the_fixed_window() -> None:
    policy = calls_every(5 * 3600, 5)
    policy.record_idle(seconds=600)
    assert policy.out_of_bounds == 4
    assert policy.mode == "fallback: idle times beyond the histogram"
    assert policy.windows(now=0) == (0.0, FIXED)


def test_past_a_burst_the_windows_come_from_the_idle_times_still_possible() -> None:
    policy = HybridHistogram(fixed_keepalive=FIXED)
    for _ in range(20):
        policy.record_idle(seconds=20)  # calls inside a burst
    for _ in range(10):
        policy.record_idle(seconds=59 * 60 + 10)  # an hour between bursts, often enough to trust
    policy.observe_call(now=10_000.0)
    prewarm, keep = policy.windows(now=10_010.0)
    assert prewarm == 0.0
    assert prewarm + keep == pytest.approx(61 * 60 * 1.1)
    assert policy.next_change(now=10_010.0) == pytest.approx(10_060.0)
    prewarm, keep = policy.windows(now=10_070.0)
    assert prewarm == pytest.approx(59 * 60 * 0.9)  # past it: sleep until just before the next hour
    assert prewarm + keep == pytest.approx(61 * 60 * 1.1)
    assert policy.next_change(now=10_070.0) == pytest.approx(10_000.0 + 60 * 60)


def test_past_a_burst_near_idle_times_never_extend_the_keep_alive() -> None:
    policy = HybridHistogram(fixed_keepalive=FIXED)
    for seconds, times in ((10, 30), (70, 12), (20 * 60 + 10, 12)):
        for _ in range(times):
            policy.record_idle(seconds=seconds)
    policy.observe_call(now=10_000.0)
    whole = policy.windows(now=10_010.0)
    assert whole == (0.0, pytest.approx(3 * 60 * 1.1))  # the 75th percentile is the 1-minute bin
    assert policy.windows(now=10_070.0) == whole  # the next call may still come in a minute: stay
    prewarm, keep = policy.windows(now=10_130.0)  # past it, the next call is 20 minutes off
    assert prewarm == pytest.approx(20 * 60 * 0.9)
    assert prewarm + keep == pytest.approx(22 * 60 * 1.1)


def test_a_few_scattered_long_idle_times_do_not_decide_alone_past_a_burst() -> None:
    policy = HybridHistogram(fixed_keepalive=FIXED)
    for _ in range(20):
        policy.record_idle(seconds=20)
    for k in range(HistogramConfig().min_conditional - 1):
        policy.record_idle(seconds=(30 + 10 * k) * 60 + 10)  # 30 to 110 minutes
    policy.observe_call(now=10_000.0)
    assert policy.windows(now=10_070.0) == policy.windows(now=10_010.0)  # the whole histogram's


def test_two_long_idle_times_that_agree_are_enough_to_pre_warm_past_a_burst() -> None:
    policy = HybridHistogram(fixed_keepalive=FIXED)
    for _ in range(20):
        policy.record_idle(seconds=20)
    for minutes in (59, 60):  # an hour apart, give or take a minute
        policy.record_idle(seconds=minutes * 60 + 10)
    policy.observe_call(now=10_000.0)
    assert policy.windows(now=10_010.0)[0] == 0.0
    prewarm, keep = policy.windows(now=10_070.0)
    assert prewarm == pytest.approx(59 * 60 * 0.9)
    assert prewarm + keep == pytest.approx(62 * 60 * 1.1)


def test_rare_long_idle_times_beyond_the_tail_percentile_do_not_keep_a_function_warm() -> None:
    def learned(config: HistogramConfig) -> HybridHistogram:
        policy = HybridHistogram(fixed_keepalive=FIXED, config=config)
        for _ in range(90):
            policy.record_idle(seconds=2 * 60 + 10)  # calls every three minutes
        for _ in range(10):
            policy.record_idle(seconds=3 * 3600)  # and a few three-hour gaps
        return policy

    prewarm, keep = learned(HistogramConfig()).windows(now=0.0)
    assert (prewarm, prewarm + keep) == (pytest.approx(2 * 60 * 0.9), pytest.approx(4 * 60 * 1.1))
    paper = learned(HistogramConfig(tail_percentile=99.0))
    assert sum(paper.windows(now=0.0)) > 3 * 3600  # the paper's 99th percentile keeps it warm for hours


def test_seeding_from_minute_counts_equals_watching_the_same_calls() -> None:
    counts = np.zeros(600)
    counts[::30] = 3  # busy minutes every half hour
    seeded = HybridHistogram.from_minute_counts(counts, end=36_000.0, fixed_keepalive=FIXED)
    watched = HybridHistogram(fixed_keepalive=FIXED)
    for minute in np.flatnonzero(counts):
        watched.observe_call(now=36_000.0 - (599 - minute) * 60.0)
    assert np.array_equal(seeded.counts, watched.counts)
    assert seeded.windows(now=36_000.0) == watched.windows(now=36_000.0)
    assert seeded.mode == "histogram"


def test_the_loop_pre_warms_a_learned_function_through_decide() -> None:
    spec = ScalingSpec(zero=True, zero_duration=FIXED, keepalive=KeepAlive.ADAPTIVE)
    state = FunctionState(keepalive=calls_every(1800, 10))
    state.last_active = 9 * 1800.0
    state.last_started_total = 10.0
    idle = Load(rps=0.0, inflight=0.0, started_total=10.0)
    gone = decide(spec=spec, load=idle, current=1, state=state, now=9 * 1800.0 + 60)
    assert (gone.desired, gone.reason) == (0, Reason.SCALE_TO_ZERO)
    back = decide(spec=spec, load=idle, current=0, state=state, now=9 * 1800.0 + 1570)
    assert (back.desired, back.reason) == (1, Reason.PREWARM)


@pytest.mark.parametrize(
    "bad",
    [
        {"bin_width": 0.0},
        {"head_percentile": 99.0, "tail_percentile": 5.0},
        {"margin": 1.0},
        {"min_idle_times": 0},
    ],
)
def test_nonsense_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        HistogramConfig(**bad)  # type: ignore[arg-type]


def test_a_fixed_window_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="fixed_keepalive"):
        HybridHistogram(fixed_keepalive=0)
