"""Learned keep-alive for the real loop: seed each adaptive function's histogram from Prometheus.

A restart must not throw away what the loop learned (invariant 6): at start the loop reads hours of
per-minute started-invocation counts with one range query for all functions, and every function with
`autoscaler.dev/keepalive: adaptive` gets a HybridHistogram seeded from its own series. After that the
loop feeds the histogram from its own observations (see `policies.engine.observe`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import numpy as np
import numpy.typing as npt

from autoscaler.interfaces import FunctionRef
from policies.adaptive import HistogramConfig, HybridHistogram
from policies.engine import KeepAlivePolicy
from policies.model import ScalingSpec

log = logging.getLogger("autoscaler.keepalive")

HISTORY_QUERY = "sum by (function_name) (increase(gateway_function_invocation_started{{{selector}}}[1m]))"
STEP = 60.0


class HistorySource(Protocol):
    async def history(
        self, *, query: str, start: float, end: float, step: float
    ) -> dict[str, npt.NDArray[np.float64]]: ...


def history_query(keys: Iterable[str]) -> str:
    """The range query for some functions only (`NAME.NAMESPACE` keys), so a big cluster stays cheap."""
    pattern = "|".join(re.escape(key) for key in sorted(keys)).replace("\\", "\\\\")
    return HISTORY_QUERY.format(selector=f'function_name=~"{pattern}"')


async def read_histories(
    source: HistorySource, *, keys: Iterable[str], now: float, config: HistogramConfig | None = None
) -> dict[str, npt.NDArray[np.float64]]:
    """Per-minute started counts over the histogram's range for `keys`; {} when none or unavailable.

    Failure is not fatal: the histograms then start empty and fall back to the fixed window until they
    have learned enough, which is the conservative choice.
    """
    wanted = list(keys)
    if not wanted:
        return {}
    span = (config or HistogramConfig()).histogram_range
    try:
        return await source.history(query=history_query(wanted), start=now - span, end=now, step=STEP)
    except Exception as e:
        log.warning(
            "could not read invocation history for the adaptive keep-alive (%s); "
            "adaptive functions start learning from scratch",
            e,
            extra={"fields": {"event": "history_error"}},
        )
        return {}


def factory(
    histories: Mapping[str, npt.NDArray[np.float64]], *, end: float, config: HistogramConfig | None = None
) -> Callable[[FunctionRef, ScalingSpec], KeepAlivePolicy]:
    """A `keepalive_factory` for the Controller: seeded from `histories` where a series exists."""

    def make(ref: FunctionRef, spec: ScalingSpec) -> KeepAlivePolicy:
        series = histories.get(ref.key)
        if series is None or series.size == 0:
            return HybridHistogram(fixed_keepalive=spec.zero_duration, config=config)
        policy = HybridHistogram.from_minute_counts(
            series, end=end, fixed_keepalive=spec.zero_duration, step=STEP, config=config
        )
        log.info(
            "%s: adaptive keep-alive seeded from history: %r",
            ref.key,
            policy,
            extra={"fields": {"event": "keepalive_seeded", "function": ref.key, "mode": policy.mode}},
        )
        return policy

    return make
