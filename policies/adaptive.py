"""A learned keep-alive: the "hybrid histogram" policy of Shahrad et al. (USENIX ATC 2020).

A fixed keep-alive (OpenFaaS's zero-duration, the 10 minutes of many platforms) is too short for a
function called every half hour (every call is cold) and too long for one called in bursts (it sits
idle for most of the window). This policy learns each function's idle times (the gaps between bursts
of calls) in a histogram of one-minute bins covering hours, and from it chooses two windows, both
measured from the start of the last call (the histogram learns the gaps between call starts; a call
that runs for minutes does not push the pre-warm past the next one):

- pre-warm = the head (5th percentile) of the idle times, less a 10 % margin: the function may sit at
  zero that long, then it is started again ahead of the predicted call;
- keep-alive = the tail of the idle times (the far edge of its bin: calls k empty minutes apart may
  be k + 2 minutes apart), plus a 10 % margin, minus the pre-warm: how long it then stays warm before
  it goes to zero. The paper takes the 99th percentile; this policy the 75th (see
  `HistogramConfig.tail_percentile`): a function is let go past its usual gaps, not its rarest.

It falls back to a standard keep-alive (no pre-warm, the function's fixed zero-duration) while it
has too few idle times, when most idle times are longer than the histogram covers, and when the
histogram is too flat to predict anything (coefficient of variation of the bin counts below 2), as
the paper does. A longer fallback while learning (the histogram's 4-hour range) was measured on the
1,000-function day: fewer cold starts, but far more memory (4 hours of a replica after the first
calls of every function, most of which are called a few times a day or never again).

One step beyond the paper: once a function has been idle past the bins of its shorter idle times,
the idle times still possible (the histogram from there on, when at least `min_conditional` of them
are known, or two that agree within the margin) may put the next call further off than the function
has been idle; it then goes to zero and is pre-warmed ahead of that call. They never keep it warm
longer than the whole histogram says. A function called in bursts an hour apart is then kept warm
within a burst and pre-warmed for the next one, where the whole histogram (head 0, tail one hour)
would keep it warm all hour.

Optionally (`prior=`, `policies.prior.IdlePrior`), a function with fewer than `min_idle_times` idle
times of its own takes its windows from the idle times of the other functions, as they stood at its
latest call, instead of the fixed window; without a prior the policy is the one above, unchanged.

Optionally (`HistogramConfig.cold_start_price` with `memory_gb=`), the keep-alive is priced: one
cold start is worth that many GB-s of idle memory (with `price_per_call`, shared by the minutes with
calls seen so far, so that it weighs as its share of the function's calls), and the keep-alive is the
one that costs least over the idle times seen, a cheap replica kept warm longer than a dear one.
While the histogram cannot decide, a function back after an empty minute is kept warm for what one
cold start buys (price / memory, within the fixed window and the histogram's range). The memory of a
function is known before any call (its replicas' size), so this looks no further ahead than the
plain policy; the control loop does not pass it yet.

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

from policies.prior import IdlePrior


@dataclass(frozen=True, slots=True)
class HistogramConfig:
    """The policy's constants: Shahrad et al., ATC 2020, section 4.2, unless a comment says why not."""

    bin_width: float = 60.0  # one-minute bins (paper: "1-minute bins")
    histogram_range: float = 4 * 3600.0  # idle times up to 4 hours (paper: 4-hour range)
    head_percentile: float = 5.0  # pre-warm from the 5th percentile (paper)
    # Keep-alive to the 75th percentile. The paper uses the 99th; on a one-day trace learned from
    # nothing the 99th percentile of a few idle times is the longest gap seen, which keeps busy
    # functions warm through rare hour-long gaps. With this config on the 1,000-function day: 99th
    # x0.62 the 75th-percentile function's cold starts of fixed-10m and x1.16 its memory, 80th x0.67
    # and x0.94, 75th x0.70 and x0.90, 70th x0.76 and x0.87 (docs/simulate.md).
    tail_percentile: float = 75.0
    margin: float = 0.10  # 10 % off the pre-warm, 10 % onto the keep-alive (paper)
    # A flatter histogram is not representative (paper: CV of the bin counts). With 240 bins and few
    # idle times the CV is high, so on a one-day trace this fallback never fires.
    cv_threshold: float = 2.0
    # Fewer idle times than this: too little history, use the fixed window. On the 1,000-function
    # day 3 gave the same cold starts for more memory (x0.93 against x0.90), 8 more cold starts.
    min_idle_times: int = 5
    max_out_of_bounds: float = 0.5  # more than half the idle times beyond the range: fixed window
    # Idle times needed beyond the elapsed idle time before they alone may put a function to zero
    # until a pre-warm (an extension, not in the paper). With 2, a function went to zero past a burst
    # on the word of two long gaps and missed the next call when it came sooner. On the 1,000-function
    # day the 75th-percentile function's cold starts fell from 33.3 % (8) to 29.5 % (10) and 28.8 %
    # (12), while wasted memory rose from x0.89 to x0.91 and x0.93 of fixed-10m (before `_agree`
    # let two idle times that agree decide). With the current windows: 6 gives x0.76 and x0.89, 10
    # x0.70 and x0.90, 16 x0.67 and x0.92.
    min_conditional: int = 10
    # False: the paper's windows only, from the whole histogram, never from the idle times still
    # possible past a burst (`adaptive-paper` in the simulator, with the paper's 99th percentile).
    conditional: bool = True
    # What one cold start is worth in idle memory (GB-s), for a policy told the function's memory
    # (`HybridHistogram(memory_gb=...)`); 0 (the default) is the policy above, memory-blind. With a
    # price the keep-alive is the one that costs least over the idle times seen (see `_tail_bin`), and
    # while learning (or in a fallback) a function back after an empty minute is kept warm price /
    # memory seconds, within the fixed window and the histogram's range, instead of the fixed window.
    # Off by default: on the 1,000-function day, shared per minute with calls, 25,000 / 50,000 /
    # 100,000 GB-s gave x0.88 / x0.65 / x0.55 the p75-function cold starts of fixed-10m for x0.88 /
    # x1.02 / x1.18 its memory, 11.3 / 12.9 / 5.6 points below the fixed curve where the plain
    # policy is 17.1 (docs/simulate.md).
    cold_start_price: float = 0.0
    # With a price: divide it by the minutes with calls seen so far, so a cold start is priced as its
    # share of the function's calls (the figure the p75 metric counts; minutes, not calls, because
    # `observe_call` is told of batches, and how many depends on how often its caller looks).
    price_per_call: bool = False

    def __post_init__(self) -> None:
        if self.bin_width <= 0 or self.histogram_range < self.bin_width:
            raise ValueError("bin_width must be > 0 and histogram_range at least one bin")
        if not 0 <= self.head_percentile < self.tail_percentile <= 100:
            raise ValueError("need 0 <= head_percentile < tail_percentile <= 100")
        if not 0 <= self.margin < 1 or self.min_idle_times < 1 or not 0 < self.max_out_of_bounds <= 1:
            raise ValueError("margin must be in [0, 1), min_idle_times >= 1, max_out_of_bounds in (0, 1]")
        if self.cold_start_price < 0:
            raise ValueError("cold_start_price must be >= 0 GB-s")


class HybridHistogram:
    """Per-function idle-time histogram that chooses (pre-warm, keep-alive); see the module docstring.

    Idle times are counted in whole bins (minutes) between the bins that saw calls, the resolution of
    the trace the paper learned from: calls in consecutive minutes give an idle time of 0, several
    calls in one minute give none. Implements `policies.engine.KeepAlivePolicy`.
    """

    def __init__(
        self,
        *,
        fixed_keepalive: float,
        config: HistogramConfig | None = None,
        prior: IdlePrior | None = None,
        owner: int = -1,
        memory_gb: float | None = None,
    ) -> None:
        if fixed_keepalive <= 0:
            raise ValueError(f"fixed_keepalive must be > 0 seconds, got {fixed_keepalive}")
        if memory_gb is not None and memory_gb <= 0:
            raise ValueError(f"memory_gb must be > 0, got {memory_gb}")
        self.config = config or HistogramConfig()
        self.fixed_keepalive = float(fixed_keepalive)
        # The function's memory per replica: with `config.cold_start_price` it prices the keep-alive.
        self.memory_gb = memory_gb
        self.busy_minutes = 0  # bins with calls seen (with `config.price_per_call`, they share the price)
        bins = round(self.config.histogram_range / self.config.bin_width)
        self.counts: npt.NDArray[np.int64] = np.zeros(bins, dtype=np.int64)
        self.out_of_bounds = 0
        self._in_range = 0  # sum of counts
        self._squares = 0  # sum of squared counts
        self.last_call: float | None = None
        self._cached: tuple[float, float] | None = None
        self._conditional: dict[int, tuple[float, float]] = {}
        self._mode = "learning"
        # A cross-function prior (policies.prior), read at each call while the function's own idle
        # times are too few; `owner` is this function's index in it, left out of its own prior.
        self.prior, self.owner = prior, owner
        self._prior_counts: tuple[npt.NDArray[np.int64], int] | None = None

    # -- learning ------------------------------------------------------------------------------

    counts_calls = False  # it learns from when calls come, not how many (policies.share does count)

    def count_calls(self, *, calls: float) -> None:
        """Ignored: the histogram learns idle times, one sighting at a time."""

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
        width = self.config.bin_width
        if last is None or math.floor(now / width) > math.floor(last / width):
            self.busy_minutes += 1
            if self._priced and self.config.price_per_call:
                self._cached = None
        if self.prior is not None and self.idle_times < self.config.min_idle_times:
            self._prior_counts = self.prior.counts(before=now, exclude=self.owner)
            self._cached = None

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

        Once the function has been idle past the bins of its shorter idle times, those can no longer
        happen. If the idle times still possible put the next call further off than the function has
        now been idle, it goes to zero and is pre-warmed ahead of that call (windows from the
        histogram from the current bin on); otherwise the whole histogram's windows stand, as in the
        paper (they never extend its keep-alive).
        """
        if self._cached is None:
            self._cached, self._mode = self._compute(0)
            self._conditional.clear()
        if self._mode != "histogram" or self.last_call is None or not self.config.conditional:
            return self._cached
        elapsed = int((now - self.last_call) // self.config.bin_width)
        if elapsed <= 0:
            return self._cached
        # The idle times still possible change only where a bin with counts falls behind, so judge
        # from the first bin after the last such one: the answer then holds until `next_change`.
        passed = np.flatnonzero(self.counts[: min(elapsed, self.counts.size)])
        start = int(passed[-1]) + 1 if passed.size else 0
        if start == 0:
            return self._cached
        if start not in self._conditional:
            if len(self._conditional) > 64:
                self._conditional.clear()
            conditional = self._compute(start)[0]
            ahead = conditional[0] > start * self.config.bin_width
            self._conditional[start] = conditional if ahead else self._cached
        return self._conditional[start]

    def next_change(self, *, now: float) -> float | None:
        """The next time `windows` may answer differently without a new call (a bin with idle times
        falls behind the elapsed idle time), or None."""
        self.windows(now=now)
        if self.last_call is None or self._mode != "histogram" or not self.config.conditional:
            return None
        elapsed = max(0, int((now - self.last_call) // self.config.bin_width))
        ahead = np.flatnonzero(self.counts[elapsed:])
        if ahead.size == 0:
            return None
        return self.last_call + (elapsed + int(ahead[0]) + 1) * self.config.bin_width

    @property
    def _priced(self) -> bool:
        return self.config.cold_start_price > 0 and self.memory_gb is not None

    def _price(self) -> float:
        """What one cold start is worth (GB-s) at the moment."""
        cfg = self.config
        if cfg.price_per_call:
            return cfg.cold_start_price / max(self.busy_minutes, 1)
        return cfg.cold_start_price

    def _fixed(self) -> tuple[float, float]:
        """The window without a usable histogram: the fixed one, or with a price, warm for as long as
        the price of one cold start buys in idle memory (within the fixed window and the range)."""
        if not self._priced or (not self.counts[1:].any() and self.out_of_bounds == 0):
            # Not back after an empty minute since its first calls: most such functions never come back
            # (154 of the 1,000 are called in one minute only), so warmth bought for them is wasted.
            return 0.0, self.fixed_keepalive
        assert self.memory_gb is not None
        bought = self._price() / self.memory_gb
        return 0.0, min(max(bought, self.fixed_keepalive), self.config.histogram_range)

    def _compute(self, elapsed: int) -> tuple[tuple[float, float], str]:
        cfg = self.config
        fixed = self._fixed()
        in_range = self._in_range
        total = in_range + self.out_of_bounds
        if total < cfg.min_idle_times:
            prior = self._from_prior()
            return (fixed, "learning") if prior is None else (prior, "prior")
        if self.out_of_bounds > cfg.max_out_of_bounds * total:
            return fixed, "fallback: idle times beyond the histogram"
        bins = self.counts.size
        mean = in_range / bins
        variance = max(self._squares / bins - mean * mean, 0.0)
        if mean <= 0 or math.sqrt(variance) / mean < cfg.cv_threshold:
            return fixed, "fallback: histogram not representative"
        remaining = self.counts[elapsed:]
        possible = int(remaining.sum())
        if elapsed > 0 and possible < cfg.min_conditional and not self._agree(remaining, elapsed):
            # Too few idle times this long to predict from them alone: keep the whole-histogram windows.
            return self._compute(0)[0], "histogram"
        return self._percentiles(remaining, elapsed), "histogram"

    def _percentiles(self, remaining: npt.NDArray[np.int64], elapsed: int) -> tuple[float, float]:
        """(pre-warm, keep-alive) from the head and tail of the idle times in `remaining`, which
        starts at bin `elapsed`."""
        cfg = self.config
        possible = int(remaining.sum())
        cumulative = np.cumsum(remaining)
        head_bin = elapsed + int(
            np.searchsorted(cumulative, cfg.head_percentile / 100 * possible, side="left")
        )
        tail_bin = elapsed + int(
            np.searchsorted(cumulative, cfg.tail_percentile / 100 * possible, side="left")
        )
        # An idle time of k bins is k empty minutes between two minutes with calls: the calls were
        # between k and k + 2 minutes apart. Pre-warm from the shortest, keep warm to the longest
        # (k + 1 left calls in consecutive minutes, up to 2 minutes apart, cold half the time).
        tail_bin = max(self._choose_tail(remaining, elapsed, tail_bin), head_bin)
        head = head_bin * cfg.bin_width
        tail = (tail_bin + 2) * cfg.bin_width
        prewarm = head * (1 - cfg.margin)
        keepalive = tail * (1 + cfg.margin) - prewarm
        return prewarm, keepalive

    def _choose_tail(self, remaining: npt.NDArray[np.int64], elapsed: int, percentile_bin: int) -> int:
        """The keep-alive's bin: the tail percentile's, or with a price the cheapest (subclasses
        such as `policies.share.ShareTarget` choose otherwise)."""
        return self._tail_bin(remaining, elapsed) if self._priced else percentile_bin

    def _tail_bin(self, remaining: npt.NDArray[np.int64], elapsed: int) -> int:
        """The keep-alive bin that costs least over the idle times in `remaining` (from bin `elapsed`).

        Kept warm to the far edge of bin k (plus the margin), an idle time of j <= k bins costs its
        j + 1 minutes of idle memory, a longer one the whole keep-alive and a cold start at the price.
        """
        cfg = self.config
        assert self.memory_gb is not None
        width = cfg.bin_width
        k = np.arange(elapsed, elapsed + remaining.size, dtype=np.float64)
        counts = remaining.astype(np.float64)
        within = np.cumsum(counts * (k + 1)) * width  # idle seconds of the idle times up to bin k
        beyond = counts.sum() - np.cumsum(counts)  # idle times longer than bin k
        cost = self.memory_gb * (within + beyond * (k + 2) * width * (1 + cfg.margin))
        cost += self._price() * beyond
        return elapsed + int(np.argmin(cost))

    def _from_prior(self) -> tuple[float, float] | None:
        """The windows of the prior as it stood at the last call, or None without a usable one.

        The prior's histogram decides as the function's own would (head and tail percentiles, the
        margins), but only when it holds at least `min_conditional` idle times, most of them within
        the histogram.
        """
        if self._prior_counts is None:
            return None
        counts, beyond = self._prior_counts
        inside = int(counts.sum())
        if inside < self.config.min_conditional or beyond > self.config.max_out_of_bounds * (inside + beyond):
            return None
        return self._percentiles(counts, 0)

    def _agree(self, remaining: npt.NDArray[np.int64], elapsed: int) -> bool:
        """Do at least two idle times remain, all within the margin of the shortest of them?

        Such idle times (a function called every hour, give or take a minute) predict the next call
        as well as many would, so they need not wait for `min_conditional` of them. On the
        1,000-function day this cut the wasted memory from x0.91 to x0.84 of fixed-10m's (measured
        before the keep-alive reached the far edge of the tail bin).
        """
        seen = np.flatnonzero(remaining)
        if seen.size == 0 or int(remaining.sum()) < 2:
            return False
        span = int(seen[-1]) + 1 - int(seen[0])  # bins from the shortest to the end of the longest
        return span <= max(1.0, self.config.margin * (elapsed + int(seen[0])))

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
