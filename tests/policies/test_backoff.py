"""The one back-off rule: doubling from `first`, capped at `maximum`, jitter drawn by the caller."""

from __future__ import annotations

import pytest

from policies.backoff import Backoff


def test_the_wait_doubles_per_failure_and_stops_at_the_maximum() -> None:
    rule = Backoff(first=0.2, maximum=1.0)
    assert [rule.step(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_no_failure_waits_nothing_and_a_zero_first_step_never_waits() -> None:
    assert Backoff(first=0.5, maximum=2.0).step(0) == 0.0
    assert Backoff(first=0.0, maximum=0.0).delay(7) == 0.0


def test_a_huge_failure_count_stays_finite_at_the_maximum() -> None:
    assert Backoff(first=10.0, maximum=120.0).step(10_000) == 120.0


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 0.5), (0.5, 0.75), (1.0, 1.0)])
def test_jitter_takes_off_at_most_the_spread_of_the_step(draw: float, expected: float) -> None:
    assert Backoff(first=1.0, maximum=1.0, spread=0.5).delay(3, draw=draw) == pytest.approx(expected)


@pytest.mark.parametrize(("first", "maximum", "spread"), [(-1.0, 1.0, 0.0), (2.0, 1.0, 0.0), (1.0, 2.0, 1.5)])
def test_a_rule_that_cannot_wait_sensibly_is_refused(first: float, maximum: float, spread: float) -> None:
    with pytest.raises(ValueError, match="invalid Backoff"):
        Backoff(first=first, maximum=maximum, spread=spread)
