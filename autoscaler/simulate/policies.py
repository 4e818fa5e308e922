"""The policies the simulator compares, and the replay of one function through each of them.

The project's three policies are built from labels by `autoscaler.spec.parse_labels`, exactly as
the loop builds a function's spec, and decided by `policies.engine.decide`; the peers come from
`policies.baselines`. `adaptive-prior` is the adaptive keep-alive started from the other functions'
idle times (`policies.prior`); it needs the whole trace's prior, which `simulate_chunk` takes.
Everything a policy needs about a function (arrivals, Prometheus's view, Knative's concurrency
windows) is computed once per function and shared by all policies.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from autoscaler.simulate.account import account, concurrency
from autoscaler.simulate.drivers import DecideDriver, HpaDriver, KpaDriver
from autoscaler.simulate.engine import Driver, run
from autoscaler.simulate.trace import TraceFunction, spread_arrivals
from autoscaler.simulate.views import ConcurrencyView, PrometheusView, concurrency_view, prometheus_view
from autoscaler.spec import KEEPALIVE, ZERO, ZERO_DURATION, parse_labels
from policies.adaptive import HistogramConfig, HybridHistogram
from policies.baselines import KedaHpa, KnativeKPA
from policies.model import ScalingSpec
from policies.prior import IdlePrior
from policies.share import Hopeless, ShareTarget

# The project's policies as labels on a function (OpenFaaS Pro defaults for everything not given:
# type rps, target 50, target-proportion 0.90, min 1, max 20, zero-duration 15m; see
# docs.openfaas.com/architecture/autoscaling).
PROJECT_LABELS: dict[str, dict[str, str]] = {
    # The adaptive keep-alive, falling back to the same 10-minute window as fixed-10m.
    "adaptive": {ZERO: "true", ZERO_DURATION: "10m", KEEPALIVE: "adaptive"},
    # Keep warm 10 minutes after the last call: the fixed keep-alive baseline of Shahrad et al.
    "fixed-10m": {ZERO: "true", ZERO_DURATION: "10m"},
    # OpenFaaS Pro with scale to zero switched on and every other default: zero after 15 m idle.
    "openfaas": {ZERO: "true"},
}
POLICY_NAMES = ("adaptive", "fixed-10m", "openfaas", "knative", "keda-hpa")
# The adaptive keep-alive starting from the other functions' idle times (policies.prior) while a
# function has too few of its own; it needs the whole trace's prior (`prior_for`, `simulate_chunk`).
PRIOR = "adaptive-prior"
# The adaptive keep-alive priced by the function's memory (`HistogramConfig.cold_start_price`): with
# `adaptive-share<P>` a cold start is worth P GB-s shared by the minutes with calls seen so far, with
# `adaptive-gbs<P>` P GB-s whatever the calls;
# `adaptive-priced` is `adaptive-share100000` (docs/simulate.md: the price nearest x0.5 of fixed-10m's
# p75-function cold starts on the first 300 functions of the 1,000-function day).
PRICED = "adaptive-priced"
PRICED_DEFAULT = 100_000.0
# Shahrad et al.'s hybrid histogram as published: keep-alive to the 99th percentile, windows from the
# whole histogram only (`HistogramConfig(conditional=False)`).
PAPER = "adaptive-paper"
DESCRIPTIONS = {
    "adaptive": "policies.engine.decide + policies.adaptive.HybridHistogram (labels "
    + ", ".join(f"{k}={v}" for k, v in PROJECT_LABELS["adaptive"].items())
    + ")",
    "fixed-10m": "policies.engine.decide, fixed keep-alive 10 m (labels "
    + ", ".join(f"{k}={v}" for k, v in PROJECT_LABELS["fixed-10m"].items())
    + ")",
    "openfaas": "policies.engine.decide with OpenFaaS Pro defaults: rps, target 50, proportion 0.9, "
    "zero after 15 m",
    "knative": "policies.baselines.KnativeKPA: 60 s stable / 6 s panic windows, panic at 200 %, target "
    "utilization 70 % of min(100, pod concurrency), scale-up rate 1000, scale-down rate 2, "
    "30 s grace to zero",
    PRIOR: "policies.engine.decide + policies.adaptive.HybridHistogram started from policies.prior.IdlePrior "
    "(the first 20 idle times of every other function, known by the end of the minute that ended them) "
    "while a function has fewer than 5 idle times of its own; labels as adaptive",
    "keda-hpa": "policies.baselines.KedaHpa: HPA ratio on the Prometheus rate with target 50/replica, 10 % "
    "tolerance, 300 s scale-down stabilization, 15 s sync; KEDA 30 s polling, zero after a 300 s cooldown",
}


@dataclass(frozen=True, slots=True)
class SimSettings:
    """The simulator's assumptions (all stated in the JSON report)."""

    cold_start: float = 2.0  # seconds from scale-up to a ready pod
    tick: float = 2.0  # the project loop's interval (ControllerSettings.interval default)
    scrape_interval: float = 15.0  # Prometheus scrape interval of the proxy's metrics
    rate_window: float = 60.0  # the rate() window of the default queries (MetricsSettings.rate_window)
    seed: int = 0
    warmup: float = 0.0  # seconds replayed through every policy before anything is counted


@dataclass(slots=True)
class FunctionResult:
    """One function under one policy: the figures the report sums."""

    invocations: int
    cold_starts: int
    waits: npt.NDArray[np.float64]
    replica_seconds: float
    idle_replica_seconds: float
    wasted_memory_gb_s: float
    scale_events: int
    evaluations: int
    changes: list[tuple[float, int]] = field(default_factory=list)  # kept only for the plotted function


# The frontier (`simulate --sweep`): the fixed keep-alive at windows from 1 to 120 minutes, and the
# adaptive one over its main knob, the percentile of the idle times it keeps a function warm to.
SWEEP_FIXED_MINUTES = (1, 2, 5, 10, 20, 30, 60, 90, 120)
SWEEP_ADAPTIVE_PERCENTILES = (50, 60, 70, 75, 80, 90, 95, 99)
SWEEP = (
    *(f"fixed-{m}m" for m in SWEEP_FIXED_MINUTES),
    *(f"adaptive-p{p}" for p in SWEEP_ADAPTIVE_PERCENTILES),
)
_FIXED = re.compile(r"fixed-(\d+)m")
_ADAPTIVE = re.compile(r"adaptive-p(\d+)")
_PRICED = re.compile(r"adaptive-(gbs|share)(\d+)|adaptive-priced")
# The adaptive keep-alive aimed at a target share of cold calls (policies.share): `adaptive-target<T>`
# keeps a function that cannot reach T % to the percentile, `adaptive-target<T>-short` lets it go;
# `-gbs<P>` after either: while learning, a function back after an empty minute is kept warm P GB-s.
_TARGET = re.compile(r"adaptive-target(\d+)(-short)?(?:-gbs(\d+)(?:-back(\d))?)?")


def check_policy(name: str) -> str:
    """`name` when the simulator knows it, else ValueError saying what it knows.

    Besides the named policies: `fixed-<N>m` (keep warm N minutes after the last call, 1 <= N <= 1440)
    `adaptive-p<P>` (the adaptive keep-alive keeping warm to the P-th percentile of the idle
    times, 5 < P <= 100; `adaptive` is `adaptive-p75`), and `adaptive-share<P>` / `adaptive-gbs<P>`
    (the adaptive keep-alive priced by memory: a cold start worth P GB-s, shared by the minutes with
    calls seen so far or not; `adaptive-priced` is `adaptive-share100000`).
    """
    fixed, adaptive = _FIXED.fullmatch(name), _ADAPTIVE.fullmatch(name)
    if (
        name in POLICY_NAMES
        or name in (PRIOR, PAPER)
        or (fixed is not None and 1 <= int(fixed.group(1)) <= 1440)
        or (adaptive is not None and HistogramConfig().head_percentile < int(adaptive.group(1)) <= 100)
        or _PRICED.fullmatch(name) is not None
        or _target(name) is not None
    ):
        return name
    raise ValueError(f"unknown policy {name!r}: choose from {', '.join(POLICY_NAMES)}, {policy_forms()}")


def policy_forms() -> str:
    """The policies besides the named ones, in words: for the error above and for `--help`."""
    return (
        f"{PRIOR}, {PRICED}, fixed-<N>m (N minutes, 1 to 1440), adaptive-p<P> (P the idle-time "
        "percentile kept warm, 6 to 100), adaptive-share<P> / adaptive-gbs<P> (a cold start worth P GB-s "
        f"of idle memory), {PAPER} (Shahrad et al.'s as published) or "
        "adaptive-target<T>[-short][-gbs<P>[-back<N>]] (a keep-alive aimed at T % of calls cold, 1 to 99)"
    )


def family(name: str) -> str:
    """`fixed`, `adaptive` or the policy itself: the curve a policy's point belongs to."""
    if _FIXED.fullmatch(name):
        return "fixed"
    if (
        name in ("adaptive", PAPER)
        or _ADAPTIVE.fullmatch(name)
        or _PRICED.fullmatch(name)
        or _TARGET.fullmatch(name)
    ):
        return "adaptive"
    return name


def describe(name: str) -> str:
    """What a policy is, for the JSON report's assumptions."""
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    if name == PAPER:
        return (
            f"{DESCRIPTIONS['adaptive']} as Shahrad et al. publish it: keep-alive to the 99th percentile, "
            "windows from the whole histogram only (none from the idle times still possible past a burst)"
        )
    priced = _PRICED.fullmatch(name)
    if priced is not None:
        price = float(priced.group(2) or PRICED_DEFAULT)
        per = "the minutes with calls seen so far" if priced.group(1) != "gbs" else "nothing"
        return (
            f"{DESCRIPTIONS['adaptive']} priced by the function's memory: a cold start is worth {price:g} "
            f"GB-s of idle memory shared by {per}; the keep-alive that costs least over the idle times seen, "
            "and while the histogram cannot decide (once the function is back after an empty minute) "
            "warm for price / memory, within the fixed window and the 4 h range"
        )
    target = _target(name)
    if target is not None:
        let_go = "let go once the head allows" if target[1] == "short" else "kept to the 75th percentile"
        return (
            f"{DESCRIPTIONS['adaptive']} with policies.share.ShareTarget: the shortest keep-alive under "
            f"which the idle times seen would leave at most {target[0]:.0%} of the calls seen cold; a "
            f"function that cannot get there is {let_go}"
            + (
                f"; while learning, back after an empty minute, warm for {target[2]:g} GB-s / memory "
                "(within 10 m and 4 h)"
                if target[2]
                else ""
            )
        )
    if _FIXED.fullmatch(name):
        labels = _labels(name)
        return (
            "policies.engine.decide, fixed keep-alive (labels "
            + ", ".join(f"{k}={v}" for k, v in labels.items())
            + ")"
        )
    return (
        f"{DESCRIPTIONS['adaptive']} with tail_percentile={_tail_percentile(name):g} "
        "(the percentile of the idle times kept warm)"
    )


def _labels(name: str) -> dict[str, str]:
    fixed = _FIXED.fullmatch(name)
    if fixed is not None:
        return {ZERO: "true", ZERO_DURATION: f"{int(fixed.group(1))}m"}
    if family(name) == "adaptive" or name == PRIOR:
        return PROJECT_LABELS["adaptive"]
    return PROJECT_LABELS[name]


def _target(name: str) -> tuple[float, Hopeless, float, int] | None:
    """(target share, what a function that cannot reach it gets, GB-s bought while learning) of an
    `adaptive-target<T>[-short][-gbs<P>]` name."""
    match = _TARGET.fullmatch(name)
    if match is None or not 1 <= int(match.group(1)) <= 99:
        return None
    hopeless: Hopeless = "short" if match.group(2) else "percentile"
    return int(match.group(1)) / 100, hopeless, float(match.group(3) or 0), int(match.group(4) or 1)


def _tail_percentile(name: str) -> float:
    adaptive = _ADAPTIVE.fullmatch(name)
    return HistogramConfig().tail_percentile if adaptive is None else float(adaptive.group(1))


def is_project(name: str) -> bool:
    """Decided by the loop's own engine (as opposed to a peer's model)."""
    return family(name) in ("fixed", "adaptive") or name in PROJECT_LABELS or name == PRIOR


@functools.cache
def project_spec(name: str) -> ScalingSpec:
    """The ScalingSpec the loop would build from the policy's labels."""
    return parse_labels(_labels(check_policy(name)))


@dataclass(slots=True)
class _Inputs:
    fn: TraceFunction
    arrivals: npt.NDArray[np.float64]
    end: float
    settings: SimSettings
    prior: IdlePrior | None = None
    owner: int = -1  # the function's index in the prior
    _prometheus: PrometheusView | None = None
    _concurrency: ConcurrencyView | None = None

    @property
    def prometheus(self) -> PrometheusView:
        if self._prometheus is None:
            s = self.settings
            self._prometheus = prometheus_view(
                self.arrivals,
                duration=self.fn.duration,
                end=self.end,
                scrape_interval=s.scrape_interval,
                rate_window=s.rate_window,
            )
        return self._prometheus

    @property
    def concurrency(self) -> ConcurrencyView:
        if self._concurrency is None:
            self._concurrency = concurrency_view(self.arrivals, duration=self.fn.duration)
        return self._concurrency


def make_driver(name: str, inputs: _Inputs, *, per_pod: int) -> Driver:
    """A fresh policy object (no memory of other functions) wired to this function's inputs."""
    if is_project(name):
        spec = project_spec(name)
        keepalive: HybridHistogram | None = None
        aim = _target(name)
        if aim is not None:
            keepalive = ShareTarget(
                fixed_keepalive=spec.zero_duration,
                target=aim[0],
                hopeless=aim[1],
                config=HistogramConfig(cold_start_price=aim[2]),
                memory_gb=inputs.fn.memory_mb / 1024.0,
                buy_after=aim[3],
            )
        elif family(name) == "adaptive":
            priced = _PRICED.fullmatch(name)
            if priced is not None:
                config = HistogramConfig(
                    cold_start_price=float(priced.group(2) or PRICED_DEFAULT),
                    price_per_call=priced.group(1) != "gbs",
                )
            elif name == PAPER:
                config = HistogramConfig(tail_percentile=99.0, conditional=False)
            else:
                config = HistogramConfig(tail_percentile=_tail_percentile(name))
            keepalive = HybridHistogram(
                fixed_keepalive=spec.zero_duration, config=config, memory_gb=inputs.fn.memory_mb / 1024.0
            )
        elif name == PRIOR:
            if inputs.prior is None:
                raise ValueError(
                    f"{PRIOR} needs the trace's prior: simulate_chunk(..., prior=prior_for(trace))"
                )
            keepalive = HybridHistogram(
                fixed_keepalive=spec.zero_duration, prior=inputs.prior, owner=inputs.owner
            )
        return DecideDriver(spec=spec, view=inputs.prometheus, tick=inputs.settings.tick, keepalive=keepalive)
    if name == "knative":
        kpa = KnativeKPA(container_concurrency=float(per_pod))
        return KpaDriver(kpa=kpa, view=inputs.concurrency, end=inputs.end)
    if name == "keda-hpa":
        target = project_spec("openfaas").target  # the same per-replica rate as the project's policies
        return HpaDriver(hpa=KedaHpa(target=target), view=inputs.prometheus)
    raise ValueError(f"unknown policy {name!r}: choose from {', '.join(POLICY_NAMES)}")


def simulate_function(
    fn: TraceFunction,
    *,
    policies: tuple[str, ...],
    settings: SimSettings,
    end: float,
    every_tick: bool = False,
    keep_changes: bool = False,
    prior: IdlePrior | None = None,
    owner: int = -1,
) -> dict[str, FunctionResult]:
    """Replay one function through each policy; the arrivals are the same for all of them.

    `prior` and `owner` (the function's index in it) serve `adaptive-prior`."""
    arrivals = spread_arrivals(fn.counts, seed=settings.seed, key=fn.key)
    arrivals = arrivals[arrivals < end]
    inputs = _Inputs(fn, arrivals, end, settings, prior, owner)
    per_pod = concurrency(target=project_spec("openfaas").target, duration=fn.duration)
    results: dict[str, FunctionResult] = {}
    for name in policies:
        driver = make_driver(name, inputs, per_pod=per_pod)
        outcome = run(
            driver, arrivals=arrivals, end=end, cold_start=settings.cold_start, every_tick=every_tick
        )
        acc = account(
            outcome, arrivals=arrivals, duration=fn.duration, per_pod=per_pod, end=end, begin=settings.warmup
        )
        results[name] = FunctionResult(
            invocations=acc.invocations,
            cold_starts=acc.cold_starts,
            waits=acc.waits,
            replica_seconds=acc.replica_seconds,
            idle_replica_seconds=acc.idle_replica_seconds,
            wasted_memory_gb_s=acc.idle_replica_seconds * fn.memory_mb / 1024.0,
            scale_events=acc.scale_events,
            evaluations=outcome.evaluations,
            changes=list(outcome.changes) if keep_changes else [],
        )
    return results


def simulate_chunk(
    functions: list[tuple[int, TraceFunction]],
    *,
    policies: tuple[str, ...],
    settings: SimSettings,
    end: float,
    keep_key: str | None = None,
    prior: IdlePrior | None = None,
) -> list[tuple[int, dict[str, FunctionResult]]]:
    """Simulate a batch of (index, function) pairs: the unit of work of a worker process.

    `prior`: the whole trace's (`prior_for`), for `adaptive-prior`; each function is its index there.
    """
    return [
        (
            index,
            simulate_function(
                fn,
                policies=policies,
                settings=settings,
                end=end,
                keep_changes=fn.key == keep_key,
                prior=prior,
                owner=index,
            ),
        )
        for index, fn in functions
    ]


def prior_for(functions: list[TraceFunction]) -> IdlePrior:
    """The cross-function prior of a trace's functions, function i being owner i (as in `simulate`)."""
    return IdlePrior.from_minute_counts([fn.counts for fn in functions])
