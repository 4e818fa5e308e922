"""Scale-down delay, burst mode and the activation threshold, step by step on virtual time.

Each row replays a load over time through `decide` (one decision every 2 s, each applied at once),
with the labels parsed by `parse_labels` as the loop parses them, and lists the changes of replicas.
"""

from __future__ import annotations

import pytest

from autoscaler.spec import (
    ACTIVATION_THRESHOLD,
    BURST_THRESHOLD,
    BURST_WINDOW,
    DOWN_WINDOW,
    MAX,
    SCALE_DOWN_DELAY,
    ZERO,
    ZERO_DURATION,
    parse_labels,
)
from policies.engine import FunctionState, decide
from policies.model import Load, Reason

Segments = list[tuple[float, float]]  # (from second, rps load)


def rps(value: float, started: float = 0.0) -> Load:
    return Load(rps=value, inflight=0.0, cpu=0.0, started_total=started)


def changes(labels: dict[str, str], segments: Segments, *, start: int, end: int) -> list[tuple[int, int]]:
    """(second, replicas) at each change, deciding every 2 s from 0 to `end` on the given loads."""
    spec, state, current, seen = parse_labels(labels), FunctionState(), start, []
    for now in range(0, end, 2):
        value = [load for since, load in segments if since <= now][-1]
        load = rps(value)
        desired = decide(spec=spec, load=load, current=current, state=state, now=float(now)).desired
        if desired != current:
            seen.append((now, desired))
        current = desired
    return seen


FALLING = [(0, 400.0), (2, 100.0), (30, 10.0)]  # 9 replicas' worth, then 3, then 1


class TestScaleDownDelay:
    @pytest.mark.parametrize(
        ("labels", "segments", "want"),
        [
            ({}, FALLING, [(2, 3), (30, 1)]),  # no delay: down with the load
            # The delay: nothing goes down until a lower recommendation has held 60 s (from t=2), then
            # to the highest one since (3); the next step waits a whole delay again (from t=64).
            ({SCALE_DOWN_DELAY: "60s"}, FALLING, [(62, 3), (124, 1)]),
            # The down window instead follows the recommendations 60 s behind: 1 at 30 + 60 s.
            ({DOWN_WINDOW: "60s"}, FALLING, [(62, 3), (90, 1)]),
            ({SCALE_DOWN_DELAY: "0s"}, FALLING, [(2, 3), (30, 1)]),
            # The load comes back at 40 s: the delay starts over when it falls again at 50 s.
            ({SCALE_DOWN_DELAY: "1m"}, [(0, 400.0), (2, 10.0), (40, 400.0), (50, 10.0)], [(110, 1)]),
        ],
    )
    def test_replicas_go_down_only_after_the_lower_recommendation_held_for_the_whole_delay(
        self, labels: dict[str, str], segments: Segments, want: list[tuple[int, int]]
    ) -> None:
        assert changes(labels, segments, start=9, end=200) == want

    def test_scale_up_is_never_delayed(self) -> None:
        assert changes({SCALE_DOWN_DELAY: "1h"}, [(0, 10.0), (10, 400.0)], start=1, end=20) == [(10, 9)]

    def test_a_held_decision_says_how_long_the_delay_has_run(self) -> None:
        spec, state = parse_labels({SCALE_DOWN_DELAY: "60s"}), FunctionState()
        load = rps(10.0)
        decide(spec=spec, load=load, current=9, state=state, now=0.0)
        held = decide(spec=spec, load=load, current=9, state=state, now=20.0)
        assert (held.desired, held.reason) == (9, Reason.STABILIZING)
        assert "the 60s scale-down delay (20s so far)" in held.message

    def test_time_without_data_does_not_count_towards_the_delay(self) -> None:
        spec, state = parse_labels({SCALE_DOWN_DELAY: "60s"}), FunctionState()
        low = rps(10.0)
        decide(spec=spec, load=low, current=9, state=state, now=0.0)
        decide(spec=spec, load=None, current=9, state=state, now=30.0)
        # The delay starts over at 62 s, the first decision with a figure again.
        assert decide(spec=spec, load=low, current=9, state=state, now=62.0).desired == 9
        assert decide(spec=spec, load=low, current=9, state=state, now=120.0).desired == 9
        assert decide(spec=spec, load=low, current=9, state=state, now=122.0).desired == 1


SURGE = [(0, 80.0), (4, 400.0), (10, 10.0)]  # 2 replicas' worth, a 4.5x surge, then almost nothing


class TestBurstMode:
    @pytest.mark.parametrize(
        ("labels", "segments", "start", "want"),
        [
            ({}, SURGE, 2, [(4, 9), (10, 1)]),  # off: down as soon as the surge is over
            # 9 replicas' worth at 2 replicas is over 200 %: up at once, and no scale down until the
            # stable window (60 s) has passed since the last trigger at 4 s.
            ({BURST_THRESHOLD: "200"}, SURGE, 2, [(4, 9), (64, 1)]),
            ({BURST_THRESHOLD: "200%", BURST_WINDOW: "10s"}, SURGE, 2, [(4, 9), (14, 1)]),
            # 5 replicas' worth at 2 is 250 %: a burst at 200 %, none at 300 %.
            ({BURST_THRESHOLD: "200"}, [(0, 80.0), (4, 200.0), (10, 10.0)], 2, [(4, 5), (64, 1)]),
            ({BURST_THRESHOLD: "300"}, [(0, 80.0), (4, 200.0), (10, 10.0)], 2, [(4, 5), (10, 1)]),
            # Capped at max 4, the 9 replicas' worth triggers at every decision until the load falls
            # at 100 s: burst mode then lasts until 60 s after the last trigger (98 s).
            ({BURST_THRESHOLD: "200", MAX: "4"}, [(0, 80.0), (4, 400.0), (100, 10.0)], 2, [(4, 4), (158, 1)]),
        ],
    )
    def test_a_burst_scales_up_at_once_and_never_down_until_the_window_passes_without_a_trigger(
        self, labels: dict[str, str], segments: Segments, start: int, want: list[tuple[int, int]]
    ) -> None:
        assert changes(labels, segments, start=start, end=300) == want

    def test_a_held_decision_says_burst_mode_held_it(self) -> None:
        spec, state = parse_labels({BURST_THRESHOLD: "200"}), FunctionState()
        decide(spec=spec, load=rps(400.0), current=2, state=state, now=0.0)
        held = decide(spec=spec, load=rps(10.0), current=9, state=state, now=8.0)
        assert (held.desired, held.reason) == (9, Reason.STABILIZING)
        assert "burst mode (last triggered 8s ago, lasts 60s)" in held.message

    def test_burst_mode_keeps_a_function_from_zero_until_it_ends(self) -> None:
        spec = parse_labels({BURST_THRESHOLD: "200", ZERO: "true", ZERO_DURATION: "10s", BURST_WINDOW: "40s"})
        state = FunctionState()
        decide(spec=spec, load=rps(400.0, 5.0), current=2, state=state, now=0.0)
        quiet = rps(0.0, 5.0)
        assert decide(spec=spec, load=quiet, current=9, state=state, now=38.0).desired == 9
        gone = decide(spec=spec, load=quiet, current=9, state=state, now=40.0)
        assert (gone.desired, gone.reason) == (0, Reason.SCALE_TO_ZERO)

    def test_a_rate_left_over_at_zero_does_not_wake_a_function_through_burst_mode(self) -> None:
        spec, state = parse_labels({BURST_THRESHOLD: "200", ZERO: "true"}), FunctionState()
        for now in (0.0, 2.0, 4.0):  # no new calls: the rate still counts the ones before zero
            assert decide(spec=spec, load=rps(400.0, 5.0), current=0, state=state, now=now).desired == 0
        assert state.burst_at is None


class TestActivationThreshold:
    spec = parse_labels({ZERO: "true", ACTIVATION_THRESHOLD: "5"})

    @pytest.mark.parametrize(
        ("labels", "load", "want"),
        [
            ({ZERO: "true"}, rps(0.5, 4.0), 1),  # unset: any call wakes
            ({ZERO: "true", ACTIVATION_THRESHOLD: "5"}, rps(3.0, 4.0), 0),
            ({ZERO: "true", ACTIVATION_THRESHOLD: "5"}, rps(5.0, 4.0), 0),
            ({ZERO: "true", ACTIVATION_THRESHOLD: "5"}, rps(5.5, 4.0), 1),
            ({ZERO: "true", ACTIVATION_THRESHOLD: "5"}, Load(started_total=4.0), 0),  # no figure to pass it
            ({ZERO: "true"}, Load(started_total=4.0), 1),
            ({ACTIVATION_THRESHOLD: "5"}, rps(3.0, 4.0), 1),  # zero=false
        ],
    )
    def test_the_loop_wakes_a_function_at_zero_only_above_the_threshold(
        self, labels: dict[str, str], load: Load, want: int
    ) -> None:
        spec, state = parse_labels(labels), FunctionState()
        decide(spec=spec, load=rps(0.0, 3.0), current=0, state=state, now=0.0)
        assert decide(spec=spec, load=load, current=0, state=state, now=2.0).desired == want

    def test_staying_at_zero_names_the_threshold(self) -> None:
        state = FunctionState()
        decide(
            spec=self.spec,
            load=rps(0.0, 3.0),
            current=0,
            state=state,
            now=0.0,
        )
        stays = decide(
            spec=self.spec,
            load=rps(3.0, 4.0),
            current=0,
            state=state,
            now=2.0,
        )
        assert (stays.desired, stays.reason) == (0, Reason.STEADY)
        assert "activation-threshold 5" in stays.message

    def test_a_warm_function_is_scaled_as_usual_below_the_threshold(self) -> None:
        load = rps(3.0, 4.0)
        assert decide(spec=self.spec, load=load, current=3, state=FunctionState(), now=0.0).desired == 1


def test_the_knobs_default_to_off_and_read_their_values() -> None:
    default = parse_labels({})
    assert (default.scale_down_delay, default.burst_threshold, default.burst_window) == (0.0, 0.0, 60.0)
    assert default.activation_threshold == 0.0
    spec = parse_labels(
        {SCALE_DOWN_DELAY: "15m", BURST_THRESHOLD: "250%", BURST_WINDOW: "2m", ACTIVATION_THRESHOLD: "0.5"}
    )
    assert (spec.scale_down_delay, spec.burst_threshold, spec.burst_window) == (900.0, 2.5, 120.0)
    assert spec.activation_threshold == 0.5
    assert parse_labels({BURST_THRESHOLD: "off"}).burst_threshold == 0.0
