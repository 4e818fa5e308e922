"""The provider's retry policy waits by the one back-off rule (`policies.backoff`), jittered in [d/2, d]."""

from __future__ import annotations

import pytest

from autoscaler.providers.kubernetes._calls import RetryPolicy
from policies.backoff import Backoff


def test_each_retry_waits_between_half_and_all_of_the_capped_doubling_step() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=3.0)
    rule = Backoff(0.2, 3.0)
    for failures in range(1, 12):
        step = rule.step(failures)
        waits = [policy.backoff(failures) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits), failures
        assert max(waits) - min(waits) > step / 4, "no jitter"
    assert rule.step(5) == 3.0  # 0.2, 0.4, 0.8, 1.6, then the cap


def test_the_policy_is_the_rule_with_its_bounds_and_half_spread() -> None:
    assert RetryPolicy(base_delay=0.5, max_delay=8.0).schedule == Backoff(0.5, 8.0, spread=0.5)


@pytest.mark.parametrize(("attempts", "base", "most"), [(0, 0.2, 10.0), (3, -1.0, 10.0), (3, 2.0, 1.0)])
def test_a_policy_that_cannot_work_is_refused(attempts: int, base: float, most: float) -> None:
    with pytest.raises(ValueError, match="invalid RetryPolicy"):
        RetryPolicy(attempts=attempts, base_delay=base, max_delay=most)
