"""A keep-alive aimed at a share of cold calls: as short as keeps a function under its target.

The headline metric of Shahrad et al. (ATC 2020), and of issue 14, is the share of a function's calls
that met a cold start, at the 75th-percentile function. A percentile of the idle times (the hybrid
histogram of `policies.adaptive`) keeps every function warm to the same point of its own gaps,
whatever that buys: a busy function called thousands of times is kept warm after every burst though a
cold start now and then would be a tiny share of its calls, and a function called ten times is let go
at its 75th percentile though each miss is a tenth of its calls.

`ShareTarget` keeps the hybrid histogram (bins, head, pre-warm, margins, fallbacks, the windows past
a burst) and chooses only the keep-alive's bin differently: the shortest one under which the
function's idle times seen so far would have left at most `target` of its calls so far cold (each
idle time longer than the keep-alive one cold start, plus the first call). A function that cannot
get under the target even warm for the histogram's whole range is kept to the percentile, as the
plain policy would (`hopeless="percentile"`), or let go as soon as the head allows
(`hopeless="short"`): warmth that cannot bring it under the line is memory spent on nothing the
metric counts.

Calls are counted from the started-invocations counter (`count_calls`, which `policies.engine.observe`
feeds with the counter's increase); like everything else here, only what has been seen by `now`.
Spending memory where it moves a function across the target, and taking it from functions far
below it, is the platform-wide budget of issue 14 in its per-function form: one target for all.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from policies.adaptive import HistogramConfig, HybridHistogram

Hopeless = Literal["percentile", "short"]
SHORT_STEP = 15.0  # seconds: the resolution of the loop's sightings (one Prometheus scrape)
SHORT_MAX = 120.0  # seconds: beyond this the minute histogram judges
SHORT_MIN = 30.0  # seconds: policies.engine.ZERO_GRACE, the shortest any policy keeps a function


class ShareTarget(HybridHistogram):
    """The hybrid histogram with its keep-alive chosen for a target share of cold calls."""

    def __init__(
        self,
        *,
        fixed_keepalive: float,
        target: float,
        hopeless: Hopeless = "percentile",
        config: HistogramConfig | None = None,
        memory_gb: float | None = None,
        buy_after: int = 1,
    ) -> None:
        if not 0 < target < 1:
            raise ValueError(f"target must be a share of calls in (0, 1), got {target}")
        if hopeless not in ("percentile", "short"):
            raise ValueError(f"hopeless must be 'percentile' or 'short', got {hopeless!r}")
        super().__init__(fixed_keepalive=fixed_keepalive, config=config, memory_gb=memory_gb)
        self.target, self.hopeless = target, hopeless
        # With a price (`config.cold_start_price`), the window bought while learning waits until the
        # function is back after an empty minute this many times.
        self.buy_after = buy_after
        self.calls = 0.0  # calls seen so far
        # Gaps between sightings of calls, in SHORT_STEP bins up to SHORT_MAX (the last bin: longer),
        # for keep-alives shorter than the minute histogram can judge.
        self.short_gaps: npt.NDArray[np.int64] = np.zeros(round(SHORT_MAX / SHORT_STEP) + 1, dtype=np.int64)
        self._sighted: float | None = None

    def observe_call(self, *, now: float) -> None:
        last = self._sighted
        if last is not None and now > last:
            self.short_gaps[min(int((now - last) // SHORT_STEP), self.short_gaps.size - 1)] += 1
        if last is None or now > last:
            self._sighted = now
        super().observe_call(now=now)

    counts_calls = True

    def count_calls(self, *, calls: float) -> None:
        """`calls` more calls started (the counter's increase at the sighting `observe_call` gets)."""
        if calls > 0:
            self.calls += calls
            self._cached = None

    def _fixed(self) -> tuple[float, float]:
        returns = int(self.counts[1:].sum()) + self.out_of_bounds
        if self.buy_after > 1 and returns < self.buy_after:
            return 0.0, self.fixed_keepalive
        return super()._fixed()

    def _percentiles(self, remaining: npt.NDArray[np.int64], elapsed: int) -> tuple[float, float]:
        prewarm, keepalive = super()._percentiles(remaining, elapsed)
        if prewarm > 0 or elapsed > 0:
            return prewarm, keepalive
        # Shorter than two minutes: judged on the gaps between sightings (a gap longer than the
        # keep-alive is a cold start), where they leave at most `target` of the calls cold.
        beyond = int(self.short_gaps.sum()) - np.cumsum(self.short_gaps)
        fits = np.flatnonzero(beyond[:-1] <= self._allowed())
        if fits.size:
            return 0.0, min(keepalive, max((int(fits[0]) + 1) * SHORT_STEP, SHORT_MIN))
        return prewarm, keepalive

    def _allowed(self) -> float:
        """Cold starts the calls seen so far may have met within the target, the first call's aside."""
        return self.target * max(self.calls, 1.0) - 1.0

    def _choose_tail(self, remaining: npt.NDArray[np.int64], elapsed: int, percentile_bin: int) -> int:
        """The shortest bin from `elapsed` on whose keep-alive leaves at most `target` of the calls
        seen cold over the idle times seen; see the module docstring for a function that cannot."""
        beyond = int(remaining.sum()) - np.cumsum(remaining) + self.out_of_bounds
        # One cold start per idle time longer than the keep-alive, and the first call's.
        fits = np.flatnonzero(beyond <= self._allowed())
        if fits.size:
            return elapsed + int(fits[0])
        return percentile_bin if self.hopeless == "percentile" else elapsed
