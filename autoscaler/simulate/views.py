"""What each autoscaler gets to see of a function's traffic, computed for a whole day at once.

A policy that reads perfect, instant load looks better on paper than it is. The project's loop and
KEDA read Prometheus: counters scraped every `scrape_interval`, rates over `rate_window`, seen by the
loop at its next tick. Knative's autoscaler instead averages the concurrency its queue-proxies report
every second. These views compute those signals with numpy for every scrape or tick of the day, so
the engine only touches Python where a policy's input actually changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

PROMETHEUS_MODEL = (
    "the proxy's counters are scraped every scrape_interval from t=0; a query at tick t sees the last "
    "scrape at or before t; rate(x[rate_window]) is (last - first sample in the window) / their distance, "
    "which is what Prometheus's extrapolation gives with evenly spaced scrapes; a call counts as "
    "completed at its arrival + its duration"
)
CONCURRENCY_MODEL = (
    "Knative's stable and panic windows average the exact in-flight count (arrival to arrival + duration) "
    "over the window ending at the tick, standing in for the per-second queue-proxy reports"
)


@dataclass(frozen=True, slots=True)
class PrometheusView:
    """One function as Prometheus reports it, at every scrape of the day."""

    scrape_interval: float
    started: Ints  # gateway_function_invocation_started at each scrape
    inflight: Ints  # gateway_function_invocation_inflight at each scrape
    rps: Floats  # rate(gateway_function_invocation_total[rate_window]) at each scrape

    def index(self, now: float) -> int:
        """The scrape a query at `now` sees (the last one at or before `now`)."""
        return min(math.floor(now / self.scrape_interval + 1e-9), self.rps.size - 1)


def prometheus_view(
    arrivals: Floats, *, duration: float, end: float, scrape_interval: float, rate_window: float
) -> PrometheusView:
    """Scrape-by-scrape counters and rates of one function for the trace's whole span."""
    span_samples = round(rate_window / scrape_interval) - 1
    if span_samples < 1:
        raise ValueError("rate_window must cover at least two scrapes")
    scrapes = np.arange(0.0, end + scrape_interval, scrape_interval)
    started = np.searchsorted(arrivals, scrapes, side="right").astype(np.int64)
    completed = np.searchsorted(arrivals + duration, scrapes, side="right").astype(np.int64)
    earlier = np.concatenate([np.zeros(span_samples, dtype=np.int64), completed[:-span_samples]])
    rps = (completed - earlier) / (span_samples * scrape_interval)
    return PrometheusView(scrape_interval, started, started - completed, rps)


@dataclass(frozen=True, slots=True)
class ConcurrencyView:
    """One function's in-flight requests, as window averages at any instant (Knative's input)."""

    arrivals: Floats
    prefix: Floats  # prefix[k] = sum of the first k arrivals
    duration: float

    def integral(self, times: Floats) -> Floats:
        """The in-flight count integrated from 0 to each of `times` (request-seconds)."""
        a, d = self.arrivals, self.duration
        done = np.searchsorted(a, times - d, side="right")
        begun = np.searchsorted(a, times, side="right")
        running = (begun - done) * times - (self.prefix[begun] - self.prefix[done])
        return done * d + running

    def any_inflight(self, start: Floats, stop: Floats) -> npt.NDArray[np.bool_]:
        """Whether any request was in flight during (start, stop] (exact, integer counts)."""
        begun = np.searchsorted(self.arrivals, stop, side="right")
        ended = np.searchsorted(self.arrivals + self.duration, start, side="right")
        return np.asarray(begun - ended > 0)

    def average(self, times: Floats, window: float) -> Floats:
        """Average in-flight count over (t - window, t] for each t; exactly 0 when nothing ran."""
        mean = (self.integral(times) - self.integral(times - window)) / window
        return np.where(self.any_inflight(times - window, times), np.maximum(mean, 0.0), 0.0)

    def busy_ticks(self, *, tick: float, reach: float, end: float) -> Floats:
        """Ticks within `reach` after any request, plus the first tick after each such stretch."""
        a = self.arrivals
        if a.size == 0:
            return np.zeros(0)
        stops = a + self.duration + reach
        new_group = np.concatenate([[True], a[1:] > np.maximum.accumulate(stops)[:-1]])
        firsts = np.flatnonzero(new_group)
        group_start = a[firsts]
        group_stop = np.maximum.accumulate(stops)[np.concatenate([firsts[1:] - 1, [a.size - 1]])]
        lo = np.ceil(group_start / tick - 1e-9).astype(np.int64)
        hi = np.minimum(np.floor(group_stop / tick + 1e-9).astype(np.int64) + 1, int(end // tick))
        lengths = np.maximum(hi - lo + 1, 0)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ticks = np.repeat(lo, lengths) + offsets
        return np.unique(ticks).astype(np.float64) * tick


def concurrency_view(arrivals: Floats, *, duration: float) -> ConcurrencyView:
    prefix = np.concatenate([[0.0], np.cumsum(arrivals)])
    return ConcurrencyView(arrivals, prefix, duration)
