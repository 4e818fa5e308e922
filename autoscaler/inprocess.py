"""Load read straight from the proxy in the same process: the loop's metrics when there is no Prometheus.

On one machine (the local provider, `autoscaler demo`) the proxy and the loop share a process, so
the proxy's own counters are the truth and a Prometheus server would only add a scrape delay. This
reader turns those counters into the same `LoadSnapshot` the Prometheus reader returns: rps is the
rate of `completed_total` over a sliding window (like `rate()`), in-flight and started are read as
they are. CPU is not measured here (None: no data, never zero).

Pending asynchronous calls (the figure of `type=queue`) come from a `pending` hook when the process
also runs a queue-worker (the demo with an embedded nats-server): the worker's per-function backlog.
Without a hook, or while it answers None (the worker cannot list the queue), pending is None: no
data, never zero.
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
    Functions reach the snapshot when the proxy has seen them, when `known` lists them or when
    `pending` reports a backlog for them.

    `pending` returns the queued calls per function key, or None when it cannot tell right now. A
    function it leaves out has nothing queued (the worker lists the whole queue), but, as with the
    proxy's counters, that zero is only trusted once the reader has watched for a whole window.
    """

    def __init__(
        self,
        *,
        stats: Callable[[], Mapping[str, InvocationStats]],
        clock: Callable[[], float] = time.monotonic,
        window: float = 10.0,
        known: Callable[[], Iterable[str]] | None = None,
        pending: Callable[[], Mapping[str, float] | None] | None = None,
    ) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        self._stats = stats
        self._clock = clock
        self._window = window
        self._known = known
        self._pending = pending
        self._since = clock()
        # Per function: (time, completed_total) samples, oldest first. Counters absent at the
        # start are zero then (they live in this process): the baseline is (since, 0).
        self._samples: dict[str, collections.deque[tuple[float, float]]] = {}
        for key, counters in stats().items():
            self._samples[key] = collections.deque([(self._since, counters.completed_total)])

    async def read(self, *, unused: frozenset[str] = frozenset()) -> LoadSnapshot:
        now = self._clock()
        current = dict(self._stats())
        watched = now - self._since >= self._window
        queued = self._pending() if self._pending is not None else None
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
                rps=rps,
                inflight=float(counters.inflight),
                started_total=counters.started_total,
                pending=_backlog(queued, key, watched=watched),
            )
        if self._known is not None and watched:
            for key in self._known():
                if key not in loads:
                    loads[key] = Load(
                        rps=0.0, inflight=0.0, started_total=0.0, pending=_backlog(queued, key, watched=True)
                    )
        for key, count in (queued or {}).items():
            loads.setdefault(key, Load(pending=float(count)))  # a backlog the proxy has not seen yet
        return LoadSnapshot(loads=loads, queries=1)

    async def close(self) -> None:
        self._samples.clear()


def _backlog(queued: Mapping[str, float] | None, key: str, *, watched: bool) -> float | None:
    """The function's pending calls: its count, 0 when left out (once watched), else no data."""
    if queued is None:
        return None
    if key in queued:
        return float(queued[key])
    return 0.0 if watched else None
