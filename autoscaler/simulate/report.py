"""The simulator's report: one row per policy, as a table, as JSON, and the verdict on `adaptive`.

Users pick an autoscaler on two numbers: how many requests hit a cold start and how much memory sits
idle. The headline cold-start figure is that of the 75th-percentile function (Shahrad et al.), because
the share of all invocations is dominated by a few very busy functions that are never cold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from autoscaler.simulate.policies import FunctionResult

# The goal for `adaptive` against `fixed-10m`.
GOAL_COLD_RATIO = 0.5  # at most half the 75th-percentile function's cold-start percentage
GOAL_MEMORY_RATIO = 0.85  # with at most 85 % of the wasted memory


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One policy over the whole trace; the keys of the JSON contract."""

    policy: str
    cold_start_pct: float
    cold_start_pct_p75_function: float
    p99_wait_s: float
    replica_seconds: float
    idle_replica_seconds: float
    wasted_memory_gb_s: float
    scale_events: int


def summarize(policy: str, results: Sequence[FunctionResult]) -> PolicyResult:
    """Sum one policy's per-function results into its report row."""
    invocations = sum(r.invocations for r in results)
    cold = sum(r.cold_starts for r in results)
    per_function = [100.0 * r.cold_starts / r.invocations for r in results if r.invocations]
    waits = np.concatenate([r.waits for r in results]) if results else np.zeros(0)
    p99 = 0.0
    if invocations:
        # Waits of zero are not stored: the p99 is taken over all invocations, zeros included.
        rank = int(np.ceil(0.99 * invocations)) - (invocations - waits.size)
        p99 = float(np.sort(waits)[rank - 1]) if rank > 0 else 0.0
    return PolicyResult(
        policy=policy,
        cold_start_pct=100.0 * cold / invocations if invocations else 0.0,
        cold_start_pct_p75_function=float(np.percentile(per_function, 75)) if per_function else 0.0,
        p99_wait_s=p99,
        replica_seconds=float(sum(r.replica_seconds for r in results)),
        idle_replica_seconds=float(sum(r.idle_replica_seconds for r in results)),
        wasted_memory_gb_s=float(sum(r.wasted_memory_gb_s for r in results)),
        scale_events=int(sum(r.scale_events for r in results)),
    )


def verdict(rows: Sequence[PolicyResult]) -> dict[str, Any] | None:
    """Does `adaptive` beat `fixed-10m` on both axes, reach the goal, and is no baseline better on both?"""
    by_name = {row.policy: row for row in rows}
    adaptive, fixed = by_name.get("adaptive"), by_name.get("fixed-10m")
    if adaptive is None or fixed is None:
        return None
    cold_ratio = _ratio(adaptive.cold_start_pct_p75_function, fixed.cold_start_pct_p75_function)
    memory_ratio = _ratio(adaptive.wasted_memory_gb_s, fixed.wasted_memory_gb_s)
    dominated_by = [
        row.policy
        for row in rows
        if row.policy != "adaptive"
        and row.cold_start_pct_p75_function <= adaptive.cold_start_pct_p75_function
        and row.wasted_memory_gb_s <= adaptive.wasted_memory_gb_s
    ]
    return {
        "p75_cold_ratio_vs_fixed_10m": cold_ratio,
        "wasted_memory_ratio_vs_fixed_10m": memory_ratio,
        "beats_fixed_10m_on_both": cold_ratio < 1 and memory_ratio < 1,
        "goal_met": cold_ratio <= GOAL_COLD_RATIO and memory_ratio <= GOAL_MEMORY_RATIO and not dominated_by,
        # Baselines with at most adaptive's cold starts and at most its wasted memory: as good on both.
        "baselines_as_good_on_both": dominated_by,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else (1.0 if a == 0 else float("inf"))


def table(rows: Sequence[PolicyResult], *, title: str) -> Table:
    out = Table(title=title)
    for header in (
        "policy",
        "cold %",
        "cold % p75 fn",
        "p99 wait s",
        "replica-s",
        "idle replica-s",
        "wasted GB-s",
        "scale events",
    ):
        out.add_column(header, justify="left" if header == "policy" else "right", no_wrap=header == "policy")
    for row in rows:
        out.add_row(
            row.policy,
            f"{row.cold_start_pct:.3f}",
            f"{row.cold_start_pct_p75_function:.2f}",
            f"{row.p99_wait_s:.2f}",
            f"{row.replica_seconds:,.0f}",
            f"{row.idle_replica_seconds:,.0f}",
            f"{row.wasted_memory_gb_s:,.0f}",
            f"{row.scale_events:,}",
        )
    return out


def markdown(rows: Sequence[PolicyResult]) -> str:
    """The same table in Markdown, for docs."""
    lines = [
        "| policy | cold % | cold % of p75 function | p99 wait (s) | replica-s | idle replica-s | "
        "wasted memory (GB-s) | scale events |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.policy} | {r.cold_start_pct:.3f} | {r.cold_start_pct_p75_function:.2f} | "
            f"{r.p99_wait_s:.2f} | "
            f"{r.replica_seconds:,.0f} | {r.idle_replica_seconds:,.0f} | {r.wasted_memory_gb_s:,.0f} | "
            f"{r.scale_events:,} |"
        )
    return "\n".join(lines)


def document(
    *, trace: str, assumptions: Mapping[str, Any], rows: Sequence[PolicyResult], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON report: {"trace", "assumptions", "results": [...]} plus run facts."""
    return {
        "trace": trace,
        "assumptions": dict(assumptions),
        "results": [asdict(row) for row in rows],
        **extra,
    }


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def print_report(
    console: Console, rows: Sequence[PolicyResult], *, title: str, judged: dict[str, Any] | None
) -> None:
    console.print(table(rows, title=title))
    if judged is not None:
        rivals = judged["baselines_as_good_on_both"]
        console.print(
            f"adaptive vs fixed-10m: p75-function cold starts x{judged['p75_cold_ratio_vs_fixed_10m']:.2f} "
            f"(goal <= x{GOAL_COLD_RATIO}), wasted memory x{judged['wasted_memory_ratio_vs_fixed_10m']:.2f} "
            f"(goal <= x{GOAL_MEMORY_RATIO}); "
            + (f"as good on both: {', '.join(rivals)}; " if rivals else "no baseline as good on both; ")
            + ("goal met" if judged["goal_met"] else "goal NOT met")
        )


def print_frontier(console: Console, compared: Sequence[Any], sentence: str) -> None:
    """The adaptive curve's points against the fixed curve at the same wasted memory."""
    out = Table(title="adaptive against the fixed keep-alive's curve (p75-function cold starts)")
    for header in ("policy", "wasted GB-s", "cold % p75 fn", "fixed's curve there", "points below"):
        out.add_column(header, justify="left" if header == "policy" else "right", no_wrap=header == "policy")
    for point in compared:
        base, below = point.baseline_cold_pct, point.below_by
        out.add_row(
            point.policy,
            f"{point.wasted_memory_gb_s:,.0f}",
            f"{point.cold_pct:.2f}",
            "outside its range" if base is None else f"{base:.2f}",
            "" if below is None else f"{below:+.2f}",
        )
    console.print(out)
    console.print(sentence)
