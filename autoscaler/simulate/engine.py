"""The simulator's clock: one function, one policy, a whole day, touching only the ticks that matter.

A control loop that ticks every 2 s for a day is 43,200 decisions per function; a thousand functions
and five policies make that far too slow in Python. Most of those ticks change nothing: the metrics a
policy reads change only at a scrape with new data, and its timers (keep-alive, grace, panic, cooldown)
expire at known times. So the engine evaluates a policy only at the ticks its driver names (input
changes), at the timers the policy reports (`next_wakeup`), after every change of replicas, and where
a starting pod becomes ready or holds a request. `every_tick=True` runs the same loop at every tick;
the tests check that both give identical replica timelines.

Pods take `cold_start` seconds to become ready. A request that reaches a function at zero replicas
wakes it at once (the wake-up proxy, Knative's activator, KEDA's interceptor all hold the request and
scale from zero), so every policy pays the same cold start for the same miss.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Driver(Protocol):
    """A policy wired to one function's inputs; see autoscaler.simulate.drivers."""

    tick: float

    def candidates(self) -> npt.NDArray[np.float64]:
        """Sorted ticks at which the policy's inputs change."""

    def evaluate(self, *, now: float, current: int, ready: int, busy: bool, last_wake: float | None) -> int:
        """Desired replicas at the tick `now`."""

    def next_wakeup(self, *, now: float) -> float | None:
        """The next time the decision may change on unchanged inputs."""

    def on_wake(self, *, now: float) -> None:
        """A request woke the function from zero at `now`."""


@dataclass(slots=True)
class Outcome:
    """What one policy did to one function."""

    pods: list[tuple[float, float, float]] = field(default_factory=list)  # (start, ready, stop)
    changes: list[tuple[float, int]] = field(default_factory=list)  # (time, replicas) after each change
    evaluations: int = 0

    @property
    def scale_events(self) -> int:
        return len(self.changes)


def tick_ceil(when: float, tick: float) -> float:
    """The first tick at or after `when`."""
    return math.ceil(when / tick - 1e-9) * tick


def run(
    driver: Driver,
    *,
    arrivals: npt.NDArray[np.float64],
    end: float,
    cold_start: float,
    wake_replicas: int = 1,
    every_tick: bool = False,
) -> Outcome:
    """Replay `arrivals` (sorted seconds) through `driver` from 0 to `end`; all pods start at zero."""
    tick = driver.tick
    if every_tick:
        cands: list[float] = (np.arange(0, math.ceil(end / tick - 1e-9)) * tick).tolist()
    else:
        cands = driver.candidates().tolist()
    n_cands, n_arr = len(cands), arrivals.size
    out = Outcome()
    starts: list[float] = []  # alive pods, each (start, ready) in the same position of two lists
    readies: list[float] = []  # kept sorted by ready time
    current, i, timer = 0, 0, math.inf
    wake_index = 0  # first arrival that can wake the function (after it last went to zero)
    up_since = -1.0  # when the function last left zero
    last_wake: float | None = None
    while True:
        now = cands[i] if i < n_cands else math.inf
        now = min(now, timer)
        if current == 0 and wake_index < n_arr:
            first = float(arrivals[wake_index])
            if first <= now and first < end:
                current, last_wake, up_since = wake_replicas, first, first
                for _ in range(wake_replicas):
                    starts.append(first)
                    readies.append(first + cold_start)
                out.changes.append((first, current))
                driver.on_wake(now=first)
                timer = min(timer, tick_ceil(first, tick))
                continue
        if now >= end:
            break
        while i < n_cands and cands[i] <= now:
            i += 1
        timer = math.inf  # every obligation still ahead is re-derived from the state below
        ready = bisect.bisect_right(readies, now)
        held = -1.0
        if current > 0 and ready == 0:
            k = int(np.searchsorted(arrivals, up_since, side="left"))
            held = float(arrivals[k]) if k < n_arr else math.inf
        desired = driver.evaluate(
            now=now, current=current, ready=ready, busy=0 <= held <= now, last_wake=last_wake
        )
        out.evaluations += 1
        if desired != current:
            if desired > current:
                for _ in range(desired - current):
                    starts.append(now)
                    readies.append(now + cold_start)
            else:
                for _ in range(current - desired):  # not-ready pods go first, then the newest
                    out.pods.append((starts.pop(), readies.pop(), now))
            if desired == 0:
                wake_index = int(np.searchsorted(arrivals, now, side="right"))
            elif current == 0:
                up_since = now
            current = desired
            out.changes.append((now, current))
            timer = min(timer, now + tick)
        wake = driver.next_wakeup(now=now)
        if wake is not None:
            timer = min(timer, max(tick_ceil(wake, tick), now + tick))
        if ready < len(readies):  # a pod is starting: its readiness and any request it holds matter
            first_ready = readies[ready]
            timer = min(timer, tick_ceil(first_ready, tick))
            if ready == 0 and current > 0:
                k = int(np.searchsorted(arrivals, up_since, side="left"))
                if k < n_arr and arrivals[k] < first_ready:
                    if arrivals[k] > now:
                        timer = min(timer, tick_ceil(float(arrivals[k]), tick))
                    last_held = (math.ceil(first_ready / tick - 1e-9) - 1) * tick
                    if last_held > now:
                        timer = min(timer, last_held)
    for start, ready_at in zip(starts, readies, strict=True):
        out.pods.append((start, ready_at, end))
    out.pods.sort()
    return out
