"""Load read straight from the proxy in the same process: the loop's metrics when there is no Prometheus.

On one machine (the local provider, `autoscaler demo`) the proxy and the loop share a process, so
the proxy's own counters are the truth and a Prometheus server would only add a scrape delay. This
reader turns those counters into the same `LoadSnapshot` the Prometheus reader returns: rps is the
rate of `completed_total` over a sliding window (like `rate()`), in-flight and started are read as
they are. CPU is not measured here (None: no data, never zero).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Mapping

from autoscaler.interfaces import InvocationStats, LoadSnapshot
from policies.model import Load


class ProxyLoadReader:
    """A LoadReader over the in-process proxy's counters.

    The counters live in this process, so a function the proxy has never seen truly had no traffic:
    it is reported with zero load, but only once the reader has watched for a whole window (before
    that, "not seen yet" could still mean "not measured yet", and missing data is never zero).
    Functions reach the snapshot when the proxy has seen them or when `known` lists them.
    """

    def __init__(
        self,
        *,
        stats: Callable[[], Mapping[str, InvocationStats]],
        clock: Callable[[], float] = time.monotonic,
        window: float = 10.0,
        known: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        self._stats = stats
        self._clock = clock
        self._window = window
        self._known = known
        self._since = clock()
        # Per function: (time, completed_total) samples, oldest first. Counters absent at the
        # start are zero then (they live in this process): the baseline is (since, 0).
        self._samples: dict[str, collections.deque[tuple[float, float]]] = {}
        for key, counters in stats().items():
            self._samples[key] = collections.deque([(self._since, counters.completed_total)])

    async def read(self) -> LoadSnapshot:
        now = self._clock()
        current = dict(self._stats())
        loads: dict[str, Load] = {}
        for key, counters in current.items():
            samples = self._samples.setdefault(key, collections.deque([(self._since, 0.0)]))
            if counters.completed_total < samples[-1][1]:
                # A reset (as rate() treats it): the new count arrived since the previous read.
                previous = samples[-1][0]
                samples.clear()
                samples.append((previous, 0.0))
            samples.append((now, counters.completed_total))
            # Keep one sample at or before the window's start, so the rate spans the whole window.
            while len(samples) > 2 and samples[1][0] <= now - self._window:
                samples.popleft()
            (t0, c0), (t1, c1) = samples[0], samples[-1]
            rps = (c1 - c0) / (t1 - t0) if t1 > t0 else None
            loads[key] = Load(
                rps=rps, inflight=float(counters.inflight), started_total=counters.started_total
            )
        if self._known is not None and now - self._since >= self._window:
            for key in self._known():
                loads.setdefault(key, Load(rps=0.0, inflight=0.0, started_total=0.0))
        return LoadSnapshot(loads=loads, queries=1)

    async def close(self) -> None:
        self._samples.clear()
