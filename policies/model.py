"""Value types shared by every policy, the control loop and the simulator.

They live here, below the add-on, so that policies can name them without importing any I/O code.
Label parsing (strings -> ScalingSpec, with clear errors) lives in `autoscaler.spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ScaleType(StrEnum):
    """What a function's `target` is measured in."""

    RPS = "rps"  # completed requests per second
    CAPACITY = "capacity"  # in-flight requests
    CPU = "cpu"  # millicores
    QUEUE = "queue"  # pending asynchronous calls per replica (OpenFaaS Pro)
    # Any other value of the type label (a custom type): not measured, so the function is not scaled
    # by load (it keeps its replicas), while scale to zero and waking on traffic still apply.
    UNSUPPORTED = "unsupported"

    @property
    def measured(self) -> bool:
        """Whether the loop reads a load figure for this type (and so scales by load)."""
        return self is not ScaleType.UNSUPPORTED


class KeepAlive(StrEnum):
    """How long an idle `zero=true` function is kept warm (project extension label)."""

    FIXED = "fixed"  # exactly zero-duration after the last started invocation (OpenFaaS behaviour)
    ADAPTIVE = "adaptive"  # learned from the function's idle-time histogram (policies.adaptive)


@dataclass(frozen=True, slots=True)
class ScalingSpec:
    """A function's validated scaling settings. Defaults are OpenFaaS Pro's."""

    min_replicas: int = 1
    max_replicas: int = 20
    target: float = 50.0
    type: ScaleType = ScaleType.RPS
    target_proportion: float = 0.90
    zero: bool = False
    zero_duration: float = 900.0  # seconds idle before zero
    down_window: float = 0.0  # seconds of scale-down stabilization; 0 means off
    keepalive: KeepAlive = KeepAlive.FIXED
    type_label: str = ""  # a custom type label as written (type UNSUPPORTED), to name it in messages
    # Behaviour knobs: Knative's max-scale-up-rate / max-scale-down-rate (factors per decision; 0 =
    # off) and activation-scale (the replicas a function gets when it is woken from zero).
    max_scale_up_rate: float = 0.0
    max_scale_down_rate: float = 0.0
    activation_scale: int = 1
    # Knative's scale-down-delay (seconds a lower recommendation must hold before the replicas go
    # down; 0 = off), panic mode as burst mode (a factor of the current replicas' capacity that
    # triggers it, 0 = off, and how long it lasts after the last trigger: Knative's stable window),
    # and KEDA's activationThreshold (the load at or below which the loop leaves a function at zero).
    scale_down_delay: float = 0.0
    burst_threshold: float = 0.0
    burst_window: float = 60.0
    activation_threshold: float = 0.0
    # The fixed words of the replica formula in a decision's message ("capacity load 12 / (target 5 x
    # 0.9) = 2.667 -> 3, within [1, 50]"), made once per spec: a decision formats only its figures.
    formula_words: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        before = "" if self.type is ScaleType.QUEUE else f"{self.type} load "
        unit = " pending calls" if self.type is ScaleType.QUEUE else ""
        ratio = f"{unit} / (target {self.target:g} x {self.target_proportion:g}) = "
        bounds = f", within [{max(self.min_replicas, 1)}, {self.max_replicas}]"
        object.__setattr__(self, "formula_words", (before, ratio, bounds))

    @property
    def static(self) -> bool:
        """min == max: the function is not autoscaled at all."""
        return self.min_replicas == self.max_replicas

    @property
    def wake_replicas(self) -> int:
        """Replicas a function gets when it is woken from zero."""
        return max(1, self.min_replicas, min(self.activation_scale, self.max_replicas))


@dataclass(frozen=True, slots=True)
class Load:
    """One function's load as last observed. `None` means "no data", which is never zero."""

    rps: float | None = None  # completed invocations per second
    inflight: float | None = None  # requests in flight right now
    cpu: float | None = None  # millicores over all replicas
    started_total: float | None = None  # counter of started invocations (any change = activity)
    pending: float | None = None  # asynchronous calls waiting in the queue (any > 0 = activity)

    def value(self, kind: ScaleType) -> float | None:
        """The load figure the function's scale type is measured in."""
        if kind is ScaleType.RPS:
            return self.rps
        if kind is ScaleType.CAPACITY:
            return self.inflight
        if kind is ScaleType.CPU:
            return self.cpu
        if kind is ScaleType.QUEUE:
            return self.pending
        return None  # not measured (see ScaleType.measured): no data, never zero


NO_DATA = Load()


class Reason(StrEnum):
    """Why a decision came out as it did; the `reason` label of `autoscaler_scale_total`."""

    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    SCALE_TO_ZERO = "ScaleToZero"
    WAKE = "Wake"  # from zero because of traffic or a wake-up
    PREWARM = "Prewarm"  # from zero ahead of a predicted call (adaptive keep-alive)
    STEADY = "Steady"  # desired == current
    STABILIZING = "Stabilizing"  # a lower recommendation held back by the down window
    NO_DATA = "NoData"  # metrics missing, stale or failed: keep current replicas
    STATIC = "Static"  # min == max: not autoscaled
    UNSUPPORTED_TYPE = "UnsupportedType"  # a scale type the loop does not measure: not scaled by load
    INVALID_SPEC = "InvalidSpec"  # bad labels: keep current replicas


@dataclass(frozen=True, slots=True)
class Decision:
    """What one function should have, and why.

    `valid` is False when the loop has no basis for a change (no data, bad labels, static): the
    function then keeps `current`, and `desired == current`.
    """

    current: int
    desired: int
    reason: Reason
    message: str
    valid: bool = True

    @property
    def changed(self) -> bool:
        return self.desired != self.current
