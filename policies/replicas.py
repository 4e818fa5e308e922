"""The OpenFaaS Pro replica formula, alone, so that every other policy can reuse and test it.

desired = ceil(load / (target x target_proportion)), clamped to [min, max]. It only reads; it keeps no
state and knows nothing of zero (scale-to-zero is `policies.idle`'s job).
"""

from __future__ import annotations

import math

from policies.model import ScalingSpec

# Loads this close above a whole number of replicas' worth are that number: float noise in a rate
# (e.g. 45.00000001 req/s for 45) must not buy a replica.
_EPSILON = 1e-9


def raw_replicas(*, spec: ScalingSpec, load: float) -> int:
    """Replicas the load needs before clamping (0 for no load)."""
    per_replica = spec.target * spec.target_proportion
    if load <= 0:
        return 0
    return max(0, math.ceil(load / per_replica - _EPSILON))


def clamp(*, spec: ScalingSpec, replicas: int) -> int:
    """Keep `replicas` within [min, max]; min may be 0 only through scale-to-zero, never here."""
    return max(max(spec.min_replicas, 1), min(spec.max_replicas, replicas))


def desired_replicas(*, spec: ScalingSpec, load: float) -> int:
    """The active replica count for `load` (never 0: going to zero is decided separately)."""
    return clamp(spec=spec, replicas=raw_replicas(spec=spec, load=load))
