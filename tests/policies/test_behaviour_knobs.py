"""The peers' behaviour knobs: rate limits per decision (Knative) and the replicas a wake-up gets.

Table-driven on virtual time: each row steps `now` by hand through `decide`, with the labels parsed
by `parse_labels` as the loop parses them.
"""

from __future__ import annotations

import pytest

from autoscaler.errors import SpecError
from autoscaler.spec import (
    ACTIVATION_SCALE,
    ACTIVATION_THRESHOLD,
    BURST_THRESHOLD,
    BURST_WINDOW,
    SCALE_DOWN_DELAY,
    SCALE_DOWN_RATE,
    SCALE_UP_RATE,
    parse_labels,
)
from policies.engine import FunctionState, decide
from policies.model import Load, Reason


def rps(value: float, started: float = 0.0) -> Load:
    return Load(rps=value, inflight=0.0, cpu=0.0, started_total=started)


def replicas_over(labels: dict[str, str], loads: list[float], *, start: int) -> list[int]:
    """Replicas after each decision, one every 2 s, the scale applied at once."""
    spec, state, current, seen = parse_labels(labels), FunctionState(), start, []
    for tick, value in enumerate(loads):
        current = decide(spec=spec, load=rps(value), current=current, state=state, now=2.0 * tick).desired
        seen.append(current)
    return seen


class TestRateLimits:
    @pytest.mark.parametrize(
        ("labels", "loads", "start", "want"),
        [
            ({}, [900.0] * 3, 1, [20, 20, 20]),  # no limit: straight to what the load needs
            ({SCALE_UP_RATE: "2"}, [900.0] * 6, 1, [2, 4, 8, 16, 20, 20]),  # at most double
            ({SCALE_UP_RATE: "1.5"}, [900.0] * 4, 1, [2, 3, 5, 8]),  # ceil, and at least one more
            ({SCALE_DOWN_RATE: "2"}, [1.0] * 5, 16, [8, 4, 2, 1, 1]),  # at most halve
            ({SCALE_DOWN_RATE: "4"}, [1.0] * 3, 10, [2, 1, 1]),
            ({SCALE_UP_RATE: "off", SCALE_DOWN_RATE: "off"}, [900.0, 1.0], 1, [20, 1]),
        ],
    )
    def test_each_decision_moves_at_most_by_the_factor(
        self, labels: dict[str, str], loads: list[float], start: int, want: list[int]
    ) -> None:
        assert replicas_over(labels, loads, start=start) == want

    def test_the_decision_says_which_limit_held_it(self) -> None:
        spec = parse_labels({SCALE_UP_RATE: "2"})
        decision = decide(spec=spec, load=rps(900.0), current=3, state=FunctionState(), now=0.0)
        assert (decision.desired, decision.reason) == (6, Reason.SCALE_UP)
        assert "limited to 6 by max-scale-up-rate 2" in decision.message

    def test_scale_to_zero_is_not_held_back_by_the_down_rate(self) -> None:
        labels = {
            SCALE_DOWN_RATE: "2",
            "com.openfaas.scale.zero": "true",
            "com.openfaas.scale.zero-duration": "60s",
        }
        spec, state = parse_labels(labels), FunctionState()
        decision = decide(spec=spec, load=rps(0.0, 5.0), current=8, state=state, now=0.0)
        for now in range(2, 62, 2):
            decision = decide(spec=spec, load=rps(0.0, 5.0), current=8, state=state, now=float(now))
        assert (decision.desired, decision.reason) == (0, Reason.SCALE_TO_ZERO)


class TestActivationScale:
    def test_a_wake_up_gets_the_activation_scale_when_the_load_needs_less(self) -> None:
        spec = parse_labels({ACTIVATION_SCALE: "3"})
        decision = decide(spec=spec, load=rps(10.0), current=0, state=FunctionState(), now=0.0)
        assert (decision.desired, decision.reason) == (3, Reason.WAKE)
        assert "activation-scale 3" in decision.message
        assert spec.wake_replicas == 3  # the proxy's wake-up uses the same figure

    def test_a_load_that_needs_more_gets_more(self) -> None:
        spec = parse_labels({ACTIVATION_SCALE: "3"})
        assert decide(spec=spec, load=rps(400.0), current=0, state=FunctionState(), now=0.0).desired == 9

    def test_min_above_the_activation_scale_wins(self) -> None:
        assert parse_labels({ACTIVATION_SCALE: "2", "com.openfaas.scale.min": "4"}).wake_replicas == 4


@pytest.mark.parametrize(
    ("label", "value", "hint"),
    [
        (SCALE_UP_RATE, "1", "a factor > 1"),
        (SCALE_UP_RATE, "fast", "a factor > 1"),
        (SCALE_DOWN_RATE, "0.5", "a factor > 1"),
        (SCALE_DOWN_RATE, "inf", "a factor > 1"),
        (ACTIVATION_SCALE, "0", "whole number >= 1"),
        (ACTIVATION_SCALE, "50", "from 1 to com.openfaas.scale.max (20)"),
        (SCALE_DOWN_DELAY, "2h", "from 0s to 1h"),
        (SCALE_DOWN_DELAY, "-5s", "from 0s to 1h"),
        (SCALE_DOWN_DELAY, "soon", "from 0s to 1h"),
        (BURST_THRESHOLD, "100", "from 110 to 1000"),
        (BURST_THRESHOLD, "1001", "from 110 to 1000"),
        (BURST_THRESHOLD, "nan", "from 110 to 1000"),
        (BURST_THRESHOLD, "twice", "from 110 to 1000"),
        (BURST_WINDOW, "5s", "from 6s to 1h"),
        (BURST_WINDOW, "2h", "from 6s to 1h"),
        (BURST_WINDOW, "1 minute", "from 6s to 1h"),
        (ACTIVATION_THRESHOLD, "-1", "a number >= 0"),
        (ACTIVATION_THRESHOLD, "inf", "a number >= 0"),
        (ACTIVATION_THRESHOLD, "lots", "a number >= 0"),
    ],
)
def test_a_bad_knob_names_the_label_the_value_and_what_is_allowed(label: str, value: str, hint: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_labels({label: value})
    assert caught.value.label == label
    assert repr(value) in str(caught.value)
    assert hint in str(caught.value)
