"""Pictures of a simulation: the policies against each other, and one function's day under each.

The trade-off is two-dimensional (cold starts against idle memory), so the comparison is a scatter
with one point per policy, lower-left being better. The timeline shows why: the calls of one function
per minute, and each policy's replicas over the same day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display: the simulator runs on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt

from autoscaler.simulate.policies import family
from autoscaler.simulate.report import PolicyResult

COLORS = {
    "adaptive": "tab:green",
    "fixed": "tab:blue",
    "openfaas": "tab:purple",
    "knative": "tab:orange",
    "keda-hpa": "tab:red",
}


def plot(
    path: Path,
    *,
    rows: Sequence[PolicyResult],
    title: str,
    function_key: str | None = None,
    counts: npt.NDArray[np.int64] | None = None,
    timelines: Mapping[str, list[tuple[float, int]]] | None = None,
    end: float = 86400.0,
) -> None:
    """Write a PNG: the comparison, plus a per-function timeline when one is given."""
    with_timeline = function_key is not None and counts is not None and timelines is not None
    fig, axes = plt.subplots(
        2 if with_timeline else 1, 1, figsize=(9, 9 if with_timeline else 5.5), squeeze=False
    )
    _comparison(axes[0][0], rows=rows, title=title)
    if with_timeline and counts is not None and timelines is not None:
        _timeline(axes[1][0], function_key=function_key, counts=counts, timelines=timelines, end=end)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _comparison(ax: Any, *, rows: Sequence[PolicyResult], title: str) -> None:
    """One point per policy (a curve per swept family): wasted memory against cold starts."""
    curves: dict[str, list[PolicyResult]] = {}
    for row in rows:
        curves.setdefault(family(row.policy), []).append(row)
    for name, points in curves.items():
        color = COLORS.get(name, "black")
        points.sort(key=lambda r: r.wasted_memory_gb_s)
        xs = [r.wasted_memory_gb_s / 3600.0 for r in points]
        ys = [r.cold_start_pct_p75_function for r in points]
        if len(points) > 1:  # a swept family: its trade-off curve
            ax.plot(xs, ys, color=color, alpha=0.6, zorder=2, label=name)
        ax.scatter(xs, ys, s=90 if len(points) == 1 else 40, color=color, zorder=3)
        for row, x, y in zip(points, xs, ys, strict=True):
            text = row.policy.removeprefix(name + "-") if len(points) > 1 else row.policy
            ax.annotate(text, (x, y), xytext=(6, 6), textcoords="offset points", fontsize="small")
    if any(len(points) > 1 for points in curves.values()):
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlabel("wasted memory (GB-hours: idle replica time x memory)")
    ax.set_ylabel("cold starts of the 75th-percentile function (%)")
    ax.set_title(title)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)


def _timeline(
    tl: Any,
    *,
    function_key: str | None,
    counts: npt.NDArray[np.int64],
    timelines: Mapping[str, list[tuple[float, int]]],
    end: float,
) -> None:
    """One function's calls per minute (bars) and each policy's replicas over the day (steps)."""
    minutes = np.arange(counts.size)
    calls = tl.twinx()
    calls.bar(minutes / 60.0, counts, width=1 / 60.0, color="lightgray", label="calls per minute")
    calls.set_ylabel("calls per minute")
    tl.set_zorder(calls.get_zorder() + 1)
    tl.patch.set_visible(False)
    for offset, (name, changes) in enumerate(timelines.items()):
        times = [0.0] + [t for t, _ in changes] + [end]
        values = [0] + [v for _, v in changes]
        values.append(values[-1])
        lift = offset * 0.06  # keep overlapping lines apart
        tl.step(
            np.array(times) / 3600.0,
            np.array(values) + lift,
            where="post",
            color=COLORS.get(family(name), "black"),
            label=name,
        )
    tl.set_xlabel("hour of the day")
    tl.set_ylabel("replicas (lines lifted apart slightly)")
    tl.set_title(f"function {function_key[:12] if function_key else ''}...: replicas under each policy")
    tl.legend(loc="upper left", fontsize="small")
