"""What the loop keeps between ticks and hands between its steps: reports, passes and memos.

`Memo` is the rule for reusing a decision at 50,000 functions (see its docstring); `Entry` is what
the loop keeps per function (parsed labels, the policy's state, what it has told); `Pass` collects
what deciding some functions calls for, acted on once at the end (`_loop.Controller._finish`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from autoscaler.errors import SpecError
from autoscaler.interfaces import FunctionInfo
from autoscaler.telemetry import FunctionView
from policies.engine import FunctionState
from policies.model import Decision, Load, Reason, ScalingSpec


@dataclass(slots=True)
class TickReport:
    """What one tick saw and did."""

    decisions: dict[str, Decision] = field(default_factory=dict)
    patched: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> error text for patches that failed
    queries: int = 0
    seconds: float = 0.0
    finished_at: float = 0.0  # unix time the tick ended
    metrics_error: str | None = None


@dataclass(slots=True)
class Pass:
    """What deciding some functions calls for: views, patches, and Events once per change."""

    views: dict[str, FunctionView] = field(default_factory=dict)
    changes: list[tuple[FunctionInfo, Decision]] = field(default_factory=list)
    invalid: list[tuple[FunctionInfo, SpecError]] = field(default_factory=list)
    warned: list[tuple[FunctionInfo, tuple[str, str]]] = field(default_factory=list)


# Decisions whose message says how long something has lasted ("held at 3 by the 60s scale-down delay
# (12s so far)"): reused, they would say a stale figure, so they are made again. A function at zero says
# since when it is idle ("idle since 2026-12-01T16:10:12Z"), which holds while its inputs repeat.
TIMED = frozenset({Reason.STABILIZING})
Inputs = tuple[Load | None, int, bool, float | None]  # load, replicas, busy, activity mark


@dataclass(frozen=True, slots=True)
class Memo:
    """The inputs of a function's last decision and, where it may be reused, the decision itself.

    A decision is reused at `now` only when all of these hold (each is what makes it the same):
    - the inputs (load figures, replicas, busy flag, activity mark) equal those of the decision that
      made it, and those equal the inputs of the one before: `observe` then finds nothing new (no
      counter change, no new mark, the same in-flight and pending figures), so the only state it
      changes is the idle timer, which the reuse moves by calling `observe` itself;
    - that decision changed nothing (a change is acted on, logged and told: it is always made);
    - `at <= now < until`, `until` being `next_change` after it: no timer of the policy is due;
    - its message holds no elapsed time (`TIMED`).
    The labels are the same by construction: a memo lives on its `Entry`, made anew on a label change.
    """

    inputs: Inputs
    reuse: tuple[Decision, FunctionView] | None = None
    at: float = 0.0
    until: float = 0.0


@dataclass(slots=True)
class Entry:
    labels: Mapping[str, str]
    spec: ScalingSpec | None
    error: SpecError | None
    state: FunctionState
    reported_error: str | None = None
    notes: tuple[tuple[str, str], ...] = ()  # (Event reason, message) the labels call for, once parsed
    reported_notes: tuple[tuple[str, str], ...] = ()  # (reason, message) warnings already told
    memo: Memo | None = None  # the last decision's inputs, and the decision if reusable
