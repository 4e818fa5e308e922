"""A learned keep-alive: the "hybrid histogram" policy of Shahrad et al. (USENIX ATC 2020).

A fixed keep-alive (OpenFaaS's zero-duration, the 10 minutes of many platforms) is too short for a
function called every half hour (every call is cold) and too long for one called in bursts (it sits
idle for most of the window). This policy learns each function's idle times (the gaps between bursts
of calls) in a histogram of one-minute bins covering hours, and from it chooses two windows, both
measured from the last call:

- pre-warm = the head (5th percentile) of the idle times, less a 10 % margin: the function may sit at
  zero that long, then it is started again ahead of the predicted call;
- keep-alive = the tail (99th percentile), plus a 10 % margin, minus the pre-warm: how long it then
  stays warm before it goes to zero.

It falls back to the fixed window (the function's zero-duration) while it has too few idle times,
when most idle times are longer than the histogram covers, and when the histogram is too flat to
predict anything (coefficient of variation of the bin counts below 2), as the paper does.

One step beyond the paper: once a function has been idle past a bin, the windows come from the
idle times still possible (the histogram from that bin on), when at least `min_conditional` of them
are known. A function called in bursts an hour apart is then kept warm within a burst and pre-warmed
for the next one, where the whole histogram (head 0, tail one hour) would keep it warm all hour.

The same object serves the control loop (seeded from a Prometheus range query at start with
`from_minute_counts`, then fed by `observe_call`) and the trace simulator. Between calls its windows
change only at the instants `next_change` names, so the simulator may skip the ticks in between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class HistogramConfig:
    """The policy's constants; defaults are those of Shahrad et al., ATC 2020, section 4.2."""

    bin_width: float = 60.0  # one-minute bins (paper: "1-minute bins")
    histogram_range: float = 4 * 3600.0  # idle times up to 4 hours (paper: 4-hour range)
    head_percentile: float = 5.0  # pre-warm from the 5th percentile (paper)
    tail_percentile: float = 99.0  # keep-alive to the 99th percentile (paper)
    margin: float = 0.10  # 10 % off the pre-warm, 10 % onto the keep-alive (paper)
    cv_threshold: float = 2.0  # a flatter histogram is not representative (paper: CV of bin counts)
    min_idle_times: int = 5  # fewer idle times than this: too little history, use the fixed window
    max_out_of_bounds: float = 0.5  # more than half the idle times beyond the range: fixed window
    min_conditional: int = 2  # idle times needed beyond the elapsed idle time to predict from them alone

    def __post_init__(self) -> None:
        if self.bin_width <= 0 or self.histogram_range < self.bin_width:
            raise ValueError("bin_width must be > 0 and histogram_range at least one bin")
        if not 0 <= self.head_percentile < self.tail_percentile <= 100:
            raise ValueError("need 0 <= head_percentile < tail_percentile <= 100")
        if not 0 <= self.margin < 1 or self.min_idle_times < 1 or not 0 < self.max_out_of_bounds <= 1:
            raise ValueError("margin must be in [0, 1), min_idle_times >= 1, max_out_of_bounds in (0, 1]")


class HybridHistogram:
    """Per-function idle-time histogram that chooses (pre-warm, keep-alive); see the module docstring.

    Idle times are counted in whole bins (minutes) between the bins that saw calls, the resolution of
    the trace the paper learned from: calls in consecutive minutes give an idle time of 0, several
    calls in one minute give none. Implements `policies.engine.KeepAlivePolicy`.
    """

    def __init__(self, *, fixed_keepalive: float, config: HistogramConfig | None = None) -> None:
        if fixed_keepalive <= 0:
            raise ValueError(f"fixed_keepalive must be > 0 seconds, got {fixed_keepalive}")
        self.config = config or HistogramConfig()
        self.fixed_keepalive = float(fixed_keepalive)
        bins = round(self.config.histogram_range / self.config.bin_width)
        self.counts: npt.NDArray[np.int64] = np.zeros(bins, dtype=np.int64)
        self.out_of_bounds = 0
        self._in_range = 0  # sum of counts
        self._squares = 0  # sum of squared counts
        self.last_call: float | None = None
        self._cached: tuple[float, float] | None = None
        self._conditional: dict[int, tuple[float, float]] = {}
        self._mode = "learning"

    # -- learning ------------------------------------------------------------------------------

    def observe_call(self, *, now: float) -> None:
        """A started invocation (or a batch of them) was seen at `now`; record the idle time before it."""
        last = self.last_call
        if last is not None and now > last:
            width = self.config.bin_width
            idle_bins = math.floor(now / width) - math.floor(last / width) - 1
            if idle_bins >= 0:
                self.record_idle(seconds=idle_bins * width)
        if last is None or now > last:
            self.last_call = now

    def record_idle(self, *, seconds: float) -> None:
        """Add one idle time (seconds between two bursts of calls) to the histogram."""
        index = int(seconds // self.config.bin_width)
        if index >= self.counts.size:
            self.out_of_bounds += 1
        else:
            index = max(index, 0)
            before = int(self.counts[index])
            self.counts[index] = before + 1
            self._in_range += 1
            self._squares += 2 * before + 1  # running sum of squared bin counts, for the CV
        self._cached = None

    @property
    def idle_times(self) -> int:
        """How many idle times have been recorded, out-of-bounds ones included."""
        return self._in_range + self.out_of_bounds

    @property
    def mode(self) -> str:
        """Where the current windows come from: learning, histogram, or a named fallback."""
        self.windows(now=0.0)
        return self._mode

    # -- deciding ------------------------------------------------------------------------------

    def windows(self, *, now: float) -> tuple[float, float]:
        """(pre-warm, keep-alive) in seconds from the last call; see the module docstring.

        Once the function has been idle past a bin, idle times shorter than that can no longer
        happen: the windows then come from the idle times still possible (the histogram from the
        current bin on). Right after a call this is the whole histogram, as in the paper.
        """
        if self._cached is None:
            self._cached, self._mode = self._compute(0)
            self._conditional.clear()
        if self._mode != "histogram" or self.last_call is None:
            return self._cached
        elapsed = int((now - self.last_call) // self.config.bin_width)
        if elapsed <= 0:
            return self._cached
        if elapsed not in self._conditional:
            if len(self._conditional) > 64:
                self._conditional.clear()
            self._conditional[elapsed] = self._compute(elapsed)[0]
        return self._conditional[elapsed]

    def next_change(self, *, now: float) -> float | None:
        """The next time `windows` may answer differently without a new call (a bin with idle times
        falls behind the elapsed idle time), or None."""
        self.windows(now=now)
        if self.last_call is None or self._mode != "histogram":
            return None
        elapsed = max(0, int((now - self.last_call) // self.config.bin_width))
        ahead = np.flatnonzero(self.counts[elapsed:])
        if ahead.size == 0:
            return None
        return self.last_call + (elapsed + int(ahead[0]) + 1) * self.config.bin_width

    def _compute(self, elapsed: int) -> tuple[tuple[float, float], str]:
        cfg = self.config
        fixed = (0.0, self.fixed_keepalive)
        in_range = self._in_range
        total = in_range + self.out_of_bounds
        if total < cfg.min_idle_times:
            return fixed, "learning"
        if self.out_of_bounds > cfg.max_out_of_bounds * total:
            return fixed, "fallback: idle times beyond the histogram"
        bins = self.counts.size
        mean = in_range / bins
        variance = max(self._squares / bins - mean * mean, 0.0)
        if mean <= 0 or math.sqrt(variance) / mean < cfg.cv_threshold:
            return fixed, "fallback: histogram not representative"
        remaining = self.counts[elapsed:]
        possible = int(remaining.sum())
        if elapsed > 0 and possible < cfg.min_conditional:
            # Too few idle times this long to predict from them alone: keep the whole-histogram windows.
            return self._compute(0)[0], "histogram"
        cumulative = np.cumsum(remaining)
        head_bin = elapsed + int(
            np.searchsorted(cumulative, cfg.head_percentile / 100 * possible, side="left")
        )
        tail_bin = elapsed + int(
            np.searchsorted(cumulative, cfg.tail_percentile / 100 * possible, side="left")
        )
        head = head_bin * cfg.bin_width  # lower edge of the head bin
        tail = (tail_bin + 1) * cfg.bin_width  # upper edge of the tail bin
        prewarm = head * (1 - cfg.margin)
        keepalive = tail * (1 + cfg.margin) - prewarm
        return (prewarm, keepalive), "histogram"

    # -- seeding -------------------------------------------------------------------------------

    @classmethod
    def from_minute_counts(
        cls,
        counts: Sequence[float] | npt.NDArray[np.float64],
        *,
        end: float,
        fixed_keepalive: float,
        step: float = 60.0,
        config: HistogramConfig | None = None,
    ) -> HybridHistogram:
        """Seed a policy from a series of started-invocation counts, one per `step` seconds.

        The control loop reads this series from Prometheus at start (a range query of the increase of
        the started counter); the last entry covers the interval that ends at `end`. Each interval with
        calls counts as one observed call at its end, so gaps between busy intervals become idle times.
        """
        values = np.asarray(counts, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError("counts must be a flat series, one value per step")
        policy = cls(fixed_keepalive=fixed_keepalive, config=config)
        active = np.flatnonzero(np.nan_to_num(values, nan=0.0) > 0)
        times = end - (values.size - 1 - active) * step
        for when in times.tolist():
            policy.observe_call(now=float(when))
        return policy

    def __repr__(self) -> str:
        prewarm, keepalive = self.windows(now=0.0)
        return (
            f"HybridHistogram(mode={self._mode!r}, idle_times={self.idle_times}, "
            f"prewarm={prewarm:.0f}s, keepalive={keepalive:.0f}s)"
        )
