"""The one back-off rule of the add-on: capped exponential, with optional jitter drawn by the caller.

API retries, watch reconnects, replica restarts, the proxy's connect retries and the queue's retry
schedule all wait the same way: `first` after the first failure, doubling per further failure, never
more than `maximum`. Jitter ("full" from `spread`, e.g. 0.5 for [d/2, d]) takes a random draw in [0, 1)
from the caller, so the rule stays pure and testable.
"""

from __future__ import annotations

from dataclasses import dataclass

# 2**62 is far past any maximum; capping the exponent keeps the float finite.
_MAX_EXPONENT = 62


@dataclass(frozen=True, slots=True)
class Backoff:
    """`first` seconds after one failure, doubling per failure up to `maximum`."""

    first: float
    maximum: float
    spread: float = 0.0  # fraction of the step taken off at random: 0.5 waits in [d/2, d]

    def __post_init__(self) -> None:
        if self.first < 0 or self.maximum < self.first or not 0 <= self.spread <= 1:
            raise ValueError(
                f"invalid Backoff(first={self.first}, maximum={self.maximum}, spread={self.spread}): "
                "need 0 <= first <= maximum and 0 <= spread <= 1"
            )

    def step(self, failures: int) -> float:
        """The wait after `failures` consecutive failures (1 = the first), before jitter."""
        if failures < 1 or self.first == 0:
            return 0.0 if failures < 1 else self.first
        return min(self.maximum, self.first * 2.0 ** min(failures - 1, _MAX_EXPONENT))

    def delay(self, failures: int, *, draw: float = 1.0) -> float:
        """The wait with jitter: `draw` in [0, 1] (e.g. `random.random()`); 1.0 is the full step."""
        step = self.step(failures)
        return step * (1.0 - self.spread * (1.0 - draw))
