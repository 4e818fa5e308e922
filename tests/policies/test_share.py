"""The keep-alive aimed at a share of cold calls (`policies.share.ShareTarget`), and the paper's
hybrid histogram as published (`HistogramConfig(conditional=False)`, the simulator's `adaptive-paper`).

ShareTarget keeps a function warm for the shortest window under which its idle times so far would
have left at most the target share of its calls so far cold, counting calls from the counter's
increase that `policies.engine.observe` feeds it; it must look no further ahead than the plain policy.
"""

from __future__ import annotations

import pytest

from autoscaler.simulate.policies import (
    PAPER,
    SimSettings,
    check_policy,
    describe,
    family,
    is_project,
    simulate_function,
)
from autoscaler.simulate.trace import TraceFunction, read_trace
from policies.adaptive import HistogramConfig, HybridHistogram
from policies.engine import FunctionState, decide
from policies.model import KeepAlive, Load, ScalingSpec
from policies.share import ShareTarget
from tests.support.child import shared_path

FIXED = 600.0
KEEP = 60 * 1.1  # seconds of keep-alive per bin: an idle time of k bins is kept warm (k + 2) x this
# Idle times of 2, 10, 10, 10, 10 and 30 empty minutes: the head is the 2-minute bin, the 75th
# percentile the 10-minute one, and only warmth through the 30-minute gap leaves no idle time cold.
BUSY_MINUTES = (0, 3, 14, 25, 36, 47, 78)


def watched(policy: ShareTarget | HybridHistogram, *, calls_per_minute: float) -> tuple[float, float]:
    """(pre-warm, pre-warm + keep-alive) after calls in BUSY_MINUTES, at the last one."""
    for minute in BUSY_MINUTES:
        if isinstance(policy, ShareTarget):
            policy.count_calls(calls=calls_per_minute)
        policy.observe_call(now=minute * 60.0 + 1.0)
    prewarm, keep = policy.windows(now=BUSY_MINUTES[-1] * 60.0 + 1.0)
    return prewarm, prewarm + keep


@pytest.mark.parametrize(
    ("calls_per_minute", "target", "warm_bins"),
    [
        (1, 0.2, 30),  # 7 calls: no idle time may be cold, so warm through the longest
        (100, 0.2, 2),  # 700 calls: every idle time may be cold; the head (2) is the floor
        (1, 0.5, 10),  # 7 calls, 2.5 of them cold: two idle times beyond, the 10-minute bin
    ],
)
def test_the_keep_alive_is_the_shortest_that_would_have_left_at_most_the_target_share_cold(
    calls_per_minute: float, target: float, warm_bins: int
) -> None:
    prewarm, total = watched(
        ShareTarget(fixed_keepalive=FIXED, target=target), calls_per_minute=calls_per_minute
    )
    assert prewarm == pytest.approx(2 * 60 * 0.9)
    assert total == pytest.approx((warm_bins + 2) * KEEP)


def test_the_plain_policy_keeps_the_same_function_to_its_75th_percentile_whatever_its_calls() -> None:
    assert watched(HybridHistogram(fixed_keepalive=FIXED), calls_per_minute=100)[1] == pytest.approx(
        12 * KEEP
    )


@pytest.mark.parametrize(("hopeless", "warm_bins"), [("percentile", 10), ("short", 2)])
def test_a_function_that_cannot_reach_the_target_keeps_the_percentile_or_goes_once_the_head_allows(
    hopeless: str, warm_bins: int
) -> None:
    policy = ShareTarget(fixed_keepalive=FIXED, target=0.05, hopeless=hopeless)  # type: ignore[arg-type]
    # 7 calls: its first one alone is 14 % of them, over the 5 % target whatever the keep-alive.
    assert watched(policy, calls_per_minute=1)[1] == pytest.approx((warm_bins + 2) * KEEP)


def seen_in_stretches(*, calls_per_sighting: float, target: float) -> tuple[float, float]:
    """Six 10-minute stretches, sighted every 15 s, 5 minutes apart."""
    policy = ShareTarget(fixed_keepalive=FIXED, target=target)
    for stretch in range(6):
        for sighting in range(40):
            policy.count_calls(calls=calls_per_sighting)
            policy.observe_call(now=stretch * 900.0 + sighting * 15.0)
    return policy.windows(now=5 * 900.0 + 39 * 15.0)


def test_a_busy_function_is_kept_warm_under_two_minutes_judged_on_the_gaps_between_sightings() -> None:
    # 1,200 calls: the 5 gaps between stretches may all be cold; the 15 s ones are covered by 30 s.
    assert seen_in_stretches(calls_per_sighting=5, target=0.01) == (0.0, 30.0)
    # 240 calls at 1 % allow one cold start: warm through the 5 empty minutes between stretches.
    assert seen_in_stretches(calls_per_sighting=1, target=0.01) == (0.0, pytest.approx(7 * KEEP))


def test_the_loop_feeds_the_policy_the_counter_increase_and_what_a_reset_counter_counts() -> None:
    spec = ScalingSpec(zero=True, zero_duration=FIXED, keepalive=KeepAlive.ADAPTIVE)
    policy = ShareTarget(fixed_keepalive=FIXED, target=0.1)
    state = FunctionState(keepalive=policy)
    for now, started in ((0, 40), (15, 45), (30, 52), (45, 52), (60, 3)):
        decide(
            spec=spec, load=Load(rps=0.1, inflight=0, started_total=started), current=1, state=state, now=now
        )
    assert policy.calls == 5 + 7 + 3  # the first sight counts calls of unknown time: not counted


@pytest.mark.parametrize("bad", [{"target": 0.0}, {"target": 1.0}, {"hopeless": "never"}])
def test_nonsense_settings_are_refused(bad: dict[str, object]) -> None:
    settings: dict[str, object] = {"fixed_keepalive": FIXED, "target": 0.15, **bad}
    with pytest.raises(ValueError, match=str(next(iter(bad)))):
        ShareTarget(**settings)  # type: ignore[arg-type]


def test_as_published_the_windows_come_from_the_whole_histogram_even_past_a_burst() -> None:
    policy = HybridHistogram(
        fixed_keepalive=FIXED, config=HistogramConfig(tail_percentile=99.0, conditional=False)
    )
    for _ in range(20):
        policy.record_idle(seconds=20)  # calls inside a burst
    for _ in range(10):
        policy.record_idle(seconds=59 * 60 + 10)  # an hour between bursts
    policy.observe_call(now=10_000.0)
    whole = policy.windows(now=10_010.0)
    assert whole == (0.0, pytest.approx(61 * KEEP))  # the 99th percentile: warm through the hour
    assert policy.windows(now=10_070.0) == whole  # the extension would sleep here (test_adaptive)
    assert policy.next_change(now=10_070.0) is None


@pytest.mark.parametrize(
    "name", ["adaptive-target15", "adaptive-target15-short", "adaptive-target15-gbs10000-back2", PAPER]
)
def test_the_simulator_names_the_share_target_and_the_published_policy_in_the_adaptive_family(
    name: str,
) -> None:
    assert check_policy(name) == name
    assert family(name) == "adaptive"
    assert is_project(name)
    assert ("ShareTarget" in describe(name)) != (name == PAPER)


@pytest.mark.parametrize("name", ["adaptive-target0", "adaptive-target100", "adaptive-target15-back2"])
def test_the_simulator_refuses_a_target_out_of_range_or_a_malformed_name(name: str) -> None:
    with pytest.raises(ValueError, match="adaptive-target<T>"):
        check_policy(name)


def _cut(fn: TraceFunction, minute: int) -> TraceFunction:
    counts = fn.counts.copy()
    counts[minute:] = 0
    return TraceFunction(fn.key, fn.app, fn.trigger, counts, fn.duration, fn.memory_mb)


@pytest.mark.slow
def test_share_target_decisions_before_t_do_not_change_when_the_calls_after_t_are_removed() -> None:
    functions = read_trace(shared_path("traces", "azure2019-1000")).functions[:300:15]
    name, minute, changed = "adaptive-target15-gbs10000-back2", 9 * 60, 0
    for fn in functions:
        runs = [
            simulate_function(one, policies=(name,), settings=SimSettings(), end=86400.0, keep_changes=True)[
                name
            ].changes
            for one in (fn, _cut(fn, minute))
        ]
        before = [[change for change in run if change[0] < minute * 60] for run in runs]
        assert before[0] == before[1], fn.key
        changed += runs[0] != runs[1]
    assert changed > 0  # the cut did change later decisions: the comparison was not vacuous
