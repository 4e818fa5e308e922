"""From a policy's pods to what users pay for: cold starts, waits, replica-seconds and idle memory.

The engine decides when pods exist; this module replays every request against them with numpy. A
request that finds no ready pod waits for the first one (a cold start, held by the proxy, never an
error); one that finds every ready pod's slots taken waits for a slot or a new pod, whichever comes
first. A pod is idle whenever it serves nothing (requests spread evenly over ready pods, so a pod is busy
while it has at least one), starting pods included: that time, times the function's memory, is the
wasted memory the keep-alive literature (Shahrad et al.) compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from autoscaler.simulate.engine import Outcome

Floats = npt.NDArray[np.float64]

SERVICE_MODEL = (
    "a pod serves up to ceil(target x duration) requests at once (Little's law at the target rate, "
    "at least 1); "
    "every request runs for its function's average duration; a request with no ready pod waits for the first "
    "one (a cold start); one that finds all slots taken waits for a slot or a new pod, whichever is first "
    "(a cold start if it is the new pod); calls waiting at the same time are not queued against each other"
)


def concurrency(*, target: float, duration: float) -> int:
    """Requests one pod serves at once: the target rate times the duration (Little's law)."""
    return max(1, math.ceil(target * duration - 1e-9))


@dataclass(frozen=True, slots=True)
class Accounting:
    """One function under one policy."""

    invocations: int
    cold_starts: int
    waits: Floats  # the non-zero waits only (seconds)
    replica_seconds: float
    busy_replica_seconds: float
    scale_events: int

    @property
    def idle_replica_seconds(self) -> float:
        return max(0.0, self.replica_seconds - self.busy_replica_seconds)


def _ready_steps(outcome: Outcome) -> tuple[Floats, npt.NDArray[np.int64]]:
    """Times and ready-pod counts from each time on (a step function starting at 0 pods)."""
    ups = [ready for _, ready, stop in outcome.pods if ready < stop]
    downs = [stop for _, ready, stop in outcome.pods if ready < stop]
    times = np.array(ups + downs, dtype=np.float64)
    deltas = np.array([1] * len(ups) + [-1] * len(downs), dtype=np.int64)
    order = np.lexsort((deltas, times))  # at a tie the stop comes first: a pod never overlaps itself
    times, counts = times[order], np.cumsum(deltas[order])
    return np.concatenate([[-math.inf], times]), np.concatenate([[0], counts])


def _union_length(starts: Floats, duration: float, begin: float, end: float) -> float:
    """Length of the union of [s, s + duration) clipped to [begin, end], for sorted `starts`."""
    if starts.size == 0:
        return 0.0
    nxt = np.concatenate([starts[1:], [math.inf]])
    stop = np.minimum(np.minimum(starts + duration, nxt), end)
    return float(np.maximum(stop - np.clip(starts, begin, end), 0.0).sum())


def _busy_pods(
    starts: Floats, *, duration: float, steps: tuple[Floats, npt.NDArray[np.int64]], begin: float, end: float
) -> float:
    """Integral of min(ready pods, requests in flight): the pod-seconds spent serving."""
    times = np.concatenate([starts, starts + duration])
    deltas = np.concatenate([np.ones(starts.size, np.int64), -np.ones(starts.size, np.int64)])
    order = np.argsort(times, kind="stable")
    times, inflight = times[order], np.cumsum(deltas[order])
    grid = np.unique(np.concatenate([times, steps[0][1:], [begin, end]]))
    grid = grid[(grid >= begin) & (grid <= end)]
    flight = np.concatenate([[0], inflight])[np.searchsorted(times, grid, side="right")]
    ready = steps[1][np.searchsorted(steps[0], grid, side="right") - 1]
    serving = np.minimum(ready, flight).astype(np.float64)
    return float((serving[:-1] * np.diff(grid)).sum())


def account(
    outcome: Outcome, *, arrivals: Floats, duration: float, per_pod: int, end: float, begin: float = 0.0
) -> Accounting:
    """Cold starts, waits and pod time of one function under one policy's `outcome`.

    Only calls from `begin` on, and pod time within [begin, end], count (an unmeasured warm-up before).
    """
    steps = _ready_steps(outcome)
    step_times, step_counts = steps
    at = np.searchsorted(step_times, arrivals, side="right") - 1
    ready = step_counts[at]
    # For each step, when the next step with more ready pods (or any) begins.
    n = step_times.size
    next_any = np.full(n, math.inf)
    later = math.inf
    for k in range(n - 1, -1, -1):  # few steps per function: a plain loop is cheapest
        next_any[k] = later
        if step_counts[k] > 0:
            later = step_times[k]
    next_up = np.full(n, math.inf)
    if n > 1:
        rises = np.flatnonzero(np.diff(step_counts) > 0) + 1
        pos = np.searchsorted(rises, np.arange(n), side="right")
        has = pos < rises.size
        next_up[has] = step_times[rises[pos[has]]]
    waits = np.zeros(arrivals.size)
    cold = ready == 0
    waits[cold] = np.minimum(next_any[at[cold]], end) - arrivals[cold]
    index = np.arange(arrivals.size)
    done = np.searchsorted(arrivals + duration, arrivals, side="right")
    inflight = index + 1 - done  # requests started and not finished, this one included
    full = (~cold) & (inflight > ready * per_pod)
    if full.any():
        ahead = index[full] - ready[full] * per_pod  # the request whose slot frees first
        slot = arrivals[np.maximum(ahead, 0)] + duration
        pod = next_up[at[full]]
        waits[full] = np.maximum(np.minimum(slot, pod) - arrivals[full], 0.0)
        cold[np.flatnonzero(full)[pod < slot]] = True
    starts = np.sort(arrivals + waits)
    replica_seconds = sum(max(0.0, min(stop, end) - max(start, begin)) for start, _, stop in outcome.pods)
    if int(step_counts.max()) > 1:
        busy = _busy_pods(starts, duration=duration, steps=steps, begin=begin, end=end)
    else:
        busy = _union_length(starts, duration, begin, end)
    counted = arrivals >= begin
    return Accounting(
        invocations=int(counted.sum()),
        cold_starts=int((cold & counted).sum()),
        waits=waits[(waits > 0) & counted],
        replica_seconds=float(replica_seconds),
        busy_replica_seconds=min(busy, float(replica_seconds)),
        scale_events=sum(1 for when, _ in outcome.changes if when >= begin),
    )
