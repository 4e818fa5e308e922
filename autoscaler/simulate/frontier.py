"""The trade-off as two curves: where the adaptive keep-alive sits against fixed windows' frontier.

One policy is one point (cold starts of the 75th-percentile function against wasted memory); a single
point says little, because a longer fixed window buys fewer cold starts with more memory. Sweeping
the fixed window from 1 to 120 minutes draws the curve any fixed keep-alive lies on, and sweeping the
adaptive policy's knob draws its own; the adaptive policy is worth having at the memory levels where
its curve runs below the fixed one (Shahrad et al. compare policies this way). Pure: rows in, numbers
out, so the comparison is tested on made-up points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autoscaler.simulate.policies import family
from autoscaler.simulate.report import PolicyResult


@dataclass(frozen=True, slots=True)
class Against:
    """One point of a curve against the baseline curve at the same wasted memory."""

    policy: str
    wasted_memory_gb_s: float
    cold_pct: float  # the 75th-percentile function's cold-start percentage
    baseline_cold_pct: float | None  # the baseline curve there; None outside its memory range

    @property
    def below_by(self) -> float | None:
        """Percentage points under the baseline curve (negative: above it)."""
        return None if self.baseline_cold_pct is None else self.baseline_cold_pct - self.cold_pct


def curve(rows: Sequence[PolicyResult], name: str) -> list[PolicyResult]:
    """The points of one family (`fixed`, `adaptive`), by increasing wasted memory."""
    return sorted((r for r in rows if family(r.policy) == name), key=lambda r: r.wasted_memory_gb_s)


def against(
    rows: Sequence[PolicyResult], *, points: str = "adaptive", baseline: str = "fixed"
) -> list[Against]:
    """Each point of `points` with the `baseline` curve's cold starts at its memory (linear between
    the baseline's points; no extrapolation beyond its cheapest and its dearest point)."""
    base = curve(rows, baseline)
    xs = np.array([r.wasted_memory_gb_s for r in base])
    ys = np.array([r.cold_start_pct_p75_function for r in base])
    out = []
    for row in curve(rows, points):
        x = row.wasted_memory_gb_s
        inside = len(base) >= 2 and xs[0] <= x <= xs[-1]
        out.append(
            Against(
                policy=row.policy,
                wasted_memory_gb_s=x,
                cold_pct=row.cold_start_pct_p75_function,
                baseline_cold_pct=float(np.interp(x, xs, ys)) if inside else None,
            )
        )
    return out


def summary(compared: Sequence[Against], *, points: str = "adaptive", baseline: str = "fixed") -> str:
    """One sentence: at which memory levels the points are below the baseline curve, and by how much."""
    measured = [a for a in compared if a.below_by is not None]
    if not measured:
        return f"no {points} point falls within the memory range of the {baseline} curve: nothing to compare"
    below = [a for a in measured if a.below_by is not None and a.below_by > 0]
    if not below:
        return f"{points} is nowhere below the {baseline} curve ({len(measured)} points compared)"
    best = max(below, key=lambda a: a.below_by or 0.0)
    low, high = min(a.wasted_memory_gb_s for a in below), max(a.wasted_memory_gb_s for a in below)
    return (
        f"{points} is below the {baseline} curve at {len(below)} of {len(measured)} points, between "
        f"{low:,.0f} and {high:,.0f} GB-s of wasted memory; most at {best.policy} "
        f"({best.wasted_memory_gb_s:,.0f} GB-s): {best.cold_pct:.2f} % against "
        f"{best.baseline_cold_pct:.2f} %, {best.below_by:.2f} points lower"
    )
