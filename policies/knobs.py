"""The behaviour knobs the peers have, each a small pure rule that `policies.engine.decide` applies.

They are kept apart from the engine so that each can be read (and tested) against its original:

- `rate_limited`: Knative's `max-scale-up-rate` / `max-scale-down-rate`, per decision;
- `delayed`: Knative's `scale-down-delay`, a delay rather than a window over recommendations (the
  down window, `policies.stabilize`, lets the replicas follow the recommendations a window behind;
  the delay holds the replicas until a lower recommendation has held for the whole delay, and starts
  over after every change of replicas);
- `bursting`: Knative's panic mode, renamed burst mode because it is not an error. The loop feeds one
  load figure per tick, so the burst figure is that tick's figure (the one the replica formula uses:
  for `rps` Prometheus's rate over its window, for `capacity` the in-flight gauge) against what the
  current replicas carry: burst mode starts when the figure needs at least `burst_threshold` times the
  current replicas (Knative: panic pods / ready pods >= 200 %) and lasts `burst_window` after the
  last such tick (Knative's stable window); in burst mode the replicas never go down.

Each rule takes `now` and the function's `FunctionState`; none reads a clock.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from policies.model import ScalingSpec
from policies.replicas import raw_replicas

if TYPE_CHECKING:
    from policies.engine import FunctionState


def rate_limited(*, spec: ScalingSpec, current: int, desired: int) -> tuple[int, str]:
    """`desired` within Knative's rate limits of one decision, and a note when a limit applied.

    At most ceil(current x max-scale-up-rate) and at least floor(current / max-scale-down-rate)
    (Knative's `max-scale-up-rate`, `max-scale-down-rate`); a limit of 0 is off. Scale to zero is
    decided apart and is not limited.
    """
    if spec.max_scale_up_rate and desired > current:
        ceiling = max(current + 1, math.ceil(current * spec.max_scale_up_rate))
        if desired > ceiling:
            return ceiling, f", limited to {ceiling} by max-scale-up-rate {spec.max_scale_up_rate:g}"
    if spec.max_scale_down_rate and desired < current:
        floor = max(1, math.floor(current / spec.max_scale_down_rate))
        if desired < floor:
            return floor, f", limited to {floor} by max-scale-down-rate {spec.max_scale_down_rate:g}"
    return desired, ""


def delayed(*, spec: ScalingSpec, state: FunctionState, current: int, desired: int, now: float) -> int:
    """`desired`, or `current` while a lower recommendation has not yet held for the scale-down delay.

    The delay starts at the first decision that recommends fewer than `current` replicas and starts
    over when a recommendation reaches `current` again or the replicas change. Once it has run out,
    the replicas go down to the highest recommendation seen during it: every recommendation since
    has been at or below that, so that is the level that held for the whole delay.
    """
    if spec.scale_down_delay <= 0 or desired >= current:
        state.lower_since = None
        return desired
    if state.lower_since is None or state.lower_from != current:
        state.lower_since, state.lower_from, state.lower_peak = now, current, desired
    state.lower_peak = max(state.lower_peak, desired)
    if now - state.lower_since >= spec.scale_down_delay:
        state.lower_since = None
        return state.lower_peak
    return current


def bursting(
    *, spec: ScalingSpec, state: FunctionState, value: float | None, current: int, now: float
) -> bool:
    """Record a burst trigger at `now` if this tick's figure is one; True while in burst mode.

    For a running function (`current` >= 1): `decide` does not ask at zero.
    """
    if spec.burst_threshold <= 0:
        return False
    if value is not None and raw_replicas(spec=spec, load=value) >= spec.burst_threshold * current:
        state.burst_at = now  # enter burst mode, or extend it while the figure stays over the threshold
    return state.burst_at is not None and now - state.burst_at < spec.burst_window


def timers(*, spec: ScalingSpec, state: FunctionState, now: float) -> list[float]:
    """When the knobs' own timers run out on unchanged inputs (for `policies.engine.next_change`).

    A burst trigger at `now` would trigger again at the next decision on the same figure and extend
    burst mode: `now` itself is returned then (decide again at the next tick).
    """
    times: list[float] = []
    if spec.scale_down_delay > 0 and state.lower_since is not None:
        times.append(state.lower_since + spec.scale_down_delay)
    if spec.burst_threshold > 0 and state.burst_at is not None:
        times.append(now if state.burst_at >= now else state.burst_at + spec.burst_window)
    return times
