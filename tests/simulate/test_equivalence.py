"""On real trace functions, the event-driven replay decides exactly as a loop deciding every tick.

The driver skips the ticks at which nothing can change: those between input changes, up to the time
`policies.engine.next_change` names. These tests replay functions of the Azure 2019 traces in
`../shared/traces` (chosen by how often they are called, from once a day to every minute) through
the project's engine with each behaviour knob, event-driven and tick by tick, and compare every
change of replicas.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
import pytest

from autoscaler.simulate.drivers import DecideDriver
from autoscaler.simulate.engine import Outcome, run
from autoscaler.simulate.policies import prior_for
from autoscaler.simulate.trace import TraceFunction, read_trace, spread_arrivals
from autoscaler.simulate.views import prometheus_view
from autoscaler.spec import (
    ACTIVATION_SCALE,
    ACTIVATION_THRESHOLD,
    BURST_THRESHOLD,
    BURST_WINDOW,
    DOWN_WINDOW,
    KEEPALIVE,
    SCALE_DOWN_DELAY,
    SCALE_DOWN_RATE,
    SCALE_UP_RATE,
    TARGET,
    ZERO,
    ZERO_DURATION,
    parse_labels,
)
from policies.adaptive import HistogramConfig, HybridHistogram
from policies.model import KeepAlive
from policies.prior import IdlePrior
from tests.support.child import shared_path

PRICE = 100_000.0  # GB-s per cold start (per call seen, with price_per_call): the simulator's adaptive
HOURS = 3.0  # an eighth of the day: every timer fires many times, and the tick-by-tick replay is quick

ZERO_10M = {ZERO: "true", ZERO_DURATION: "10m"}
LOW_TARGET = {TARGET: "5"}  # so that the traces' rates need several replicas and the knobs matter
LABELS: dict[str, dict[str, str]] = {
    "fixed-10m": ZERO_10M,
    "adaptive": {**ZERO_10M, KEEPALIVE: "adaptive"},
    "down-window": {**ZERO_10M, **LOW_TARGET, DOWN_WINDOW: "90s"},
    "scale-down-delay": {**ZERO_10M, **LOW_TARGET, SCALE_DOWN_DELAY: "2m"},
    "burst": {**ZERO_10M, **LOW_TARGET, BURST_THRESHOLD: "120", BURST_WINDOW: "5m"},
    "activation-threshold": {ZERO: "true", ZERO_DURATION: "1m", **LOW_TARGET, ACTIVATION_THRESHOLD: "0.5"},
    "rates": {**ZERO_10M, **LOW_TARGET, SCALE_UP_RATE: "2", SCALE_DOWN_RATE: "2", ACTIVATION_SCALE: "2"},
    "all-knobs": {
        ZERO: "true",
        ZERO_DURATION: "2m",
        KEEPALIVE: "adaptive",
        **LOW_TARGET,
        SCALE_DOWN_DELAY: "45s",
        BURST_THRESHOLD: "150",
        ACTIVATION_THRESHOLD: "0.2",
        SCALE_DOWN_RATE: "3",
    },
}


@cache
def functions() -> list[TraceFunction]:
    """Ten functions of the 1,000-function day, from the rarely to the always called, and the
    busiest of the ten-function day."""
    day = read_trace(shared_path("traces", "azure2019-1000")).functions
    minutes = np.array([int((fn.counts[: int(HOURS * 60)] > 0).sum()) for fn in day])
    order = np.argsort(minutes, kind="stable")
    called = order[minutes[order] > 0]
    picks = [day[int(called[round(q * (called.size - 1))])] for q in np.linspace(0, 1, 10)]
    ten = read_trace(shared_path("traces", "azure2019-10")).functions
    busiest = max(ten, key=lambda fn: int(fn.counts.sum()))
    return [*picks, busiest]


@cache
def day_prior() -> tuple[IdlePrior, dict[str, int]]:
    """The 1,000-function day's cross-function prior, and each function's index in it."""
    day = read_trace(shared_path("traces", "azure2019-1000")).functions
    return prior_for(day), {fn.key: index for index, fn in enumerate(day)}


@cache
def arrivals_before_end(key: str) -> npt.NDArray[np.float64]:
    """The calls of function `key` within the replayed hours (made once: the busiest has millions)."""
    fn = next(fn for fn in functions() if fn.key == key)
    arrivals = spread_arrivals(fn.counts, seed=0, key=fn.key)
    return arrivals[arrivals < HOURS * 3600.0]


def replay(
    fn: TraceFunction,
    labels: dict[str, str],
    *,
    every_tick: bool,
    prior: bool = False,
    config: HistogramConfig | None = None,
) -> Outcome:
    spec = parse_labels(labels)
    end = HOURS * 3600.0
    arrivals = arrivals_before_end(fn.key)
    view = prometheus_view(arrivals, duration=fn.duration, end=end, scrape_interval=15.0, rate_window=60.0)
    keepalive = None
    if spec.keepalive is KeepAlive.ADAPTIVE and prior:
        shared, owners = day_prior()
        keepalive = HybridHistogram(
            fixed_keepalive=spec.zero_duration, prior=shared, owner=owners.get(fn.key, -1)
        )
    elif spec.keepalive is KeepAlive.ADAPTIVE:
        keepalive = HybridHistogram(
            fixed_keepalive=spec.zero_duration, config=config, memory_gb=fn.memory_mb / 1024.0
        )
    driver = DecideDriver(spec=spec, view=view, tick=2.0, keepalive=keepalive)
    return run(
        driver,
        arrivals=arrivals,
        end=end,
        cold_start=2.0,
        wake_replicas=spec.wake_replicas,
        every_tick=every_tick,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LABELS))
def test_the_event_driven_replay_of_real_functions_matches_a_tick_by_tick_replay(name: str) -> None:
    labels, skipped = LABELS[name], 0
    for fn in functions():
        fast = replay(fn, labels, every_tick=False)
        slow = replay(fn, labels, every_tick=True)
        assert fast.changes == slow.changes, (name, fn.key)
        assert fast.pods == slow.pods, (name, fn.key)
        skipped += slow.evaluations - fast.evaluations
    assert skipped > 0


@pytest.mark.slow
def test_the_adaptive_keep_alive_started_from_the_cross_function_prior_replays_alike_both_ways() -> None:
    labels, differs = LABELS["adaptive"], False
    for fn in functions():
        fast = replay(fn, labels, every_tick=False, prior=True)
        assert fast.changes == replay(fn, labels, every_tick=True, prior=True).changes, fn.key
        differs |= fast.changes != replay(fn, labels, every_tick=False).changes
    assert differs  # the prior changed some decisions


@pytest.mark.slow
@pytest.mark.parametrize("per_call", [False, True])
def test_the_adaptive_keep_alive_priced_by_memory_replays_alike_both_ways(per_call: bool) -> None:
    labels, differs = LABELS["adaptive"], False
    config = HistogramConfig(cold_start_price=PRICE, price_per_call=per_call)
    for fn in functions():
        fast = replay(fn, labels, every_tick=False, config=config)
        assert fast.changes == replay(fn, labels, every_tick=True, config=config).changes, fn.key
        differs |= fast.changes != replay(fn, labels, every_tick=False).changes
    assert differs  # the price changed some decisions


@pytest.mark.slow
def test_the_knobs_change_what_the_replay_does() -> None:
    """The equivalence above is not vacuous: on these functions every knob changes some replicas."""
    base = {**ZERO_10M, **LOW_TARGET}
    for name in ("down-window", "scale-down-delay", "burst", "activation-threshold", "rates"):
        differs = any(
            replay(fn, LABELS[name], every_tick=False).changes != replay(fn, base, every_tick=False).changes
            for fn in functions()
        )
        assert differs, name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adaptive-target15", "adaptive-target15-gbs10000-back2", "adaptive-paper"])
def test_the_share_target_and_the_published_hybrid_replay_alike_both_ways(name: str) -> None:
    from autoscaler.simulate.policies import SimSettings, simulate_function

    end, differs = HOURS * 3600.0, False
    for fn in functions():
        fast, slow = (
            simulate_function(
                fn,
                policies=policies,  # adaptive once, event-driven: only to show the policy differs from it
                settings=SimSettings(),
                end=end,
                every_tick=tick,
                keep_changes=True,
            )
            for tick, policies in ((False, (name, "adaptive")), (True, (name,)))
        )
        assert fast[name].changes == slow[name].changes, fn.key
        assert fast[name].evaluations < slow[name].evaluations
        differs |= fast[name].changes != fast["adaptive"].changes
    assert differs  # the policy changed some decisions: the comparison was not vacuous
