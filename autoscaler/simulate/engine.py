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


@dataclass(slots=True)
class _Replay:
    """The replayed function: its pods, its replicas, and what the proxy knows of its wake-ups."""

    arrivals: npt.NDArray[np.float64]
    cold_start: float
    tick: float
    out: Outcome = field(default_factory=Outcome)
    starts: list[float] = field(default_factory=list)  # alive pods, (start, ready) at one position of
    readies: list[float] = field(default_factory=list)  # two lists, kept sorted by ready time
    current: int = 0
    wake_index: int = 0  # first arrival that can wake the function (after it last went to zero)
    up_since: float = -1.0  # when the function last left zero
    last_wake: float | None = None

    def first_held(self) -> float:
        """The first request since the function left zero (the one a starting pod holds), or inf."""
        k = int(np.searchsorted(self.arrivals, self.up_since, side="left"))
        return float(self.arrivals[k]) if k < self.arrivals.size else math.inf

    def wake_at(self, *, now: float, end: float) -> float | None:
        """The arrival that wakes the function from zero by `now`, if one does (the proxy's wake-up)."""
        if self.current == 0 and self.wake_index < self.arrivals.size:
            first = float(self.arrivals[self.wake_index])
            if first <= now and first < end:
                return first
        return None

    def scale(self, *, desired: int, now: float) -> None:
        if desired > self.current:
            for _ in range(desired - self.current):
                self.starts.append(now)
                self.readies.append(now + self.cold_start)
        else:
            for _ in range(self.current - desired):  # not-ready pods go first, then the newest
                self.out.pods.append((self.starts.pop(), self.readies.pop(), now))
        if desired == 0:
            self.wake_index = int(np.searchsorted(self.arrivals, now, side="right"))
        elif self.current == 0:
            self.up_since = now
        self.current = desired
        self.out.changes.append((now, desired))

    def starting(self, *, now: float, ready: int) -> float:
        """The next tick that matters while a pod starts: its readiness, and any request it holds."""
        first_ready = self.readies[ready]
        timer = tick_ceil(first_ready, self.tick)
        if ready == 0 and self.current > 0:
            held = self.first_held()
            if held < first_ready:
                if held > now:
                    timer = min(timer, tick_ceil(held, self.tick))
                last_held = (math.ceil(first_ready / self.tick - 1e-9) - 1) * self.tick
                if last_held > now:
                    timer = min(timer, last_held)
        return timer

    def step(self, driver: Driver, *, now: float) -> float:
        """Evaluate the policy at the tick `now`; returns the next tick that must be evaluated."""
        timer = math.inf  # every obligation still ahead is re-derived from the state below
        ready = bisect.bisect_right(self.readies, now)
        held = self.first_held() if self.current > 0 and ready == 0 else -1.0
        desired = driver.evaluate(
            now=now, current=self.current, ready=ready, busy=0 <= held <= now, last_wake=self.last_wake
        )
        self.out.evaluations += 1
        if desired != self.current:
            self.scale(desired=desired, now=now)
            timer = now + self.tick
        wake = driver.next_wakeup(now=now)
        if wake is not None:
            timer = min(timer, max(tick_ceil(wake, self.tick), now + self.tick))
        if ready < len(self.readies):  # a pod is starting: its readiness and any request it holds matter
            timer = min(timer, self.starting(now=now, ready=ready))
        return timer


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
    replay = _Replay(arrivals=arrivals, cold_start=cold_start, tick=tick)
    i, timer = 0, math.inf
    while True:
        now = min(cands[i] if i < len(cands) else math.inf, timer)
        first = replay.wake_at(now=now, end=end)
        if first is not None:
            replay.last_wake = first
            replay.scale(desired=wake_replicas, now=first)
            driver.on_wake(now=first)
            timer = min(timer, tick_ceil(first, tick))
            continue
        if now >= end:
            break
        while i < len(cands) and cands[i] <= now:
            i += 1
        timer = replay.step(driver, now=now)
    out = replay.out
    for start, ready_at in zip(replay.starts, replay.readies, strict=True):
        out.pods.append((start, ready_at, end))
    out.pods.sort()
    return out
