"""Each policy wired to the view of a function it would have in production.

The project's policies (`openfaas`, `fixed-10m`, `adaptive`) run through `policies.engine.decide`,
the loop's own decision, reading Prometheus. Knative's KPA reads windowed concurrency; KEDA with
the HPA reads the same Prometheus rate as the loop. Each driver also names the ticks at which its
policy's inputs change, so the engine can skip the rest without changing a single decision.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from autoscaler.errors import ConfigError
from autoscaler.simulate.views import ConcurrencyView, PrometheusView
from policies.baselines import KedaHpa, KnativeKPA
from policies.engine import ZERO_GRACE, FunctionState, KeepAlivePolicy, decide, learned, windows_start
from policies.model import KeepAlive, Load, ScaleType, ScalingSpec

Floats = npt.NDArray[np.float64]


def desired_replicas_array(spec: ScalingSpec, load: Floats) -> npt.NDArray[np.int64]:
    """`policies.replicas.desired_replicas` for a whole array of loads (tested to agree with it)."""
    per_replica = spec.target * spec.target_proportion
    raw = np.where(load <= 0, 0, np.ceil(load / per_replica - 1e-9))
    return np.clip(raw, max(spec.min_replicas, 1), spec.max_replicas).astype(np.int64)


def _first_ticks(changed_scrapes: npt.NDArray[np.int64], *, scrape: float, tick: float) -> Floats:
    ticks: Floats = np.ceil(changed_scrapes * scrape / tick - 1e-9) * tick
    return ticks


def _changes(*keys: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    """Indices where any key differs from the one before (index 0 always counts)."""
    changed = np.zeros(keys[0].size, dtype=bool)
    changed[0] = True
    for key in keys:
        changed[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(changed)


class DecideDriver:
    """`policies.engine.decide` on Prometheus's view of a function, as the control loop runs it."""

    def __init__(
        self,
        *,
        spec: ScalingSpec,
        view: PrometheusView,
        tick: float,
        keepalive: KeepAlivePolicy | None = None,
    ) -> None:
        if spec.type is ScaleType.CPU:
            raise ConfigError("the simulator has no CPU model: use a policy with scale type rps or capacity")
        self.spec, self.view, self.tick = spec, view, tick
        self.state = FunctionState(keepalive=keepalive if spec.keepalive is KeepAlive.ADAPTIVE else None)
        self._rps = view.rps.tolist()
        self._inflight = view.inflight.astype(np.float64).tolist()
        self._started = view.started.astype(np.float64).tolist()
        self._continues: list[bool] = []  # per scrape: is the next scrape active too

    def candidates(self) -> Floats:
        view, scrape, tick = self.view, self.view.scrape_interval, self.tick
        value = view.rps if self.spec.type is ScaleType.RPS else view.inflight.astype(np.float64)
        busy = view.inflight > 0
        desired = desired_replicas_array(self.spec, value)
        new_calls = np.concatenate([[True], view.started[1:] != view.started[:-1]])
        active = new_calls | busy
        if self.spec.down_window > 0:
            picks = np.zeros(active.size, dtype=bool)
            picks[_changes(view.started, busy, desired)] = True
        else:
            # Within a run of active scrapes every tick decides by load alone (activity blocks the
            # zero verdict), so only the run's ends, and changes of the load's verdict, matter.
            before = np.concatenate([[False], active[:-1]])
            after = np.concatenate([active[1:], [False]])
            picks = (active & ~before) | (active & ~after)
            picks[_changes(busy, desired)] = True
            if self.state.keepalive is not None:
                # The learned keep-alive counts idle minutes: it needs one call seen per busy minute.
                # It also measures idle time from the last call of each run.
                calls = np.flatnonzero(new_calls)
                minutes = np.floor(_first_ticks(calls, scrape=scrape, tick=tick) / 60.0 + 1e-9)
                picks[calls[np.concatenate([[True], minutes[1:] != minutes[:-1]])]] = True
                run = np.cumsum(active & ~before)[calls]
                picks[calls[np.concatenate([run[1:] != run[:-1], [True]])]] = True
            self._continues = after.tolist()
        first = _first_ticks(np.flatnonzero(picks), scrape=scrape, tick=tick)
        # In-flight requests are activity at every tick that sees them. Where the next scrape shows
        # no activity, the last tick that still sees them sets the idle timer: evaluate it too.
        held = np.flatnonzero(busy & ~np.concatenate([active[1:], [True]]))
        last = (np.ceil((held + 1) * scrape / tick - 1e-9) - 1) * tick
        last = last[last >= _first_ticks(held, scrape=scrape, tick=tick)]
        return np.unique(np.concatenate([first, last]))

    def evaluate(self, *, now: float, current: int, ready: int, busy: bool, last_wake: float | None) -> int:
        j = self.view.index(now)
        load = Load(rps=self._rps[j], inflight=self._inflight[j], started_total=self._started[j])
        return decide(
            spec=self.spec,
            load=load,
            current=current,
            state=self.state,
            now=now,
            busy=busy,
            last_wake=last_wake,
        ).desired

    def next_wakeup(self, *, now: float) -> float | None:
        spec, state = self.spec, self.state
        times: list[float] = []
        if spec.down_window > 0 and state.recommendations:
            times.append(now + self.tick)  # a down window remembers every tick: evaluate them all
        if spec.zero and state.last_active is not None:
            if state.last_active >= now:
                # Active right now: nothing can go to zero within the grace, nor while the run of
                # active scrapes goes on (its end is a candidate); decide again then.
                j = self.view.index(now)
                if not (spec.down_window <= 0 and j < len(self._continues) and self._continues[j]):
                    times.append(now + ZERO_GRACE)
                return min(times) if times else None
            prewarm, keep = 0.0, spec.zero_duration
            policy = learned(spec, state)
            if policy is not None:
                prewarm, keep = policy.windows(now=now)
                change = getattr(policy, "next_change", None)
                when = change(now=now) if change is not None else None
                if when is not None:
                    times.append(when)  # the windows themselves move on at this time
            start = windows_start(spec=spec, state=state)
            timers = ((state.last_active, ZERO_GRACE), (start, prewarm), (start, prewarm + keep))
            for since, offset in timers:
                when = since + offset
                if offset > 0 and when > now - 1e-6:  # a timer due in this very tick may trip on the next one
                    times.append(when)
        return min(times) if times else None

    def on_wake(self, *, now: float) -> None:
        """The proxy's activity mark reaches `decide` as `last_wake`."""


class KpaDriver:
    """Knative's KPA on windowed concurrency, ticking every 2 s like its decider."""

    def __init__(self, *, kpa: KnativeKPA, view: ConcurrencyView, end: float) -> None:
        self.kpa, self.view, self.end = kpa, view, end
        self.tick = kpa.config.tick
        self._known: dict[float, tuple[float, float]] = {}  # tick -> (stable, panic) averages

    def candidates(self) -> Floats:
        cfg = self.kpa.config
        ticks = self.view.busy_ticks(tick=self.tick, reach=cfg.stable_window, end=self.end)
        if ticks.size == 0:
            return ticks
        stable = self.view.average(ticks, cfg.stable_window)
        panic = self.view.average(ticks, cfg.panic_window)
        self._known = dict(
            zip(ticks.tolist(), zip(stable.tolist(), panic.tolist(), strict=True), strict=True)
        )
        stable_pods = self.kpa.pod_counts(stable)
        # Outside panic mode the panic count matters only once it reaches the threshold (2 pods at
        # the least); in panic mode the KPA re-decides every tick anyway.
        panic_pods = self.kpa.pod_counts(panic)
        panic_pods = np.where(panic_pods < self.kpa.config.panic_threshold, 0, panic_pods)
        gap = np.concatenate([[True], np.diff(ticks) > self.tick * 1.5])  # after a gap both were 0
        changed = np.zeros(ticks.size, dtype=bool)
        changed[1:] = (stable_pods[1:] != stable_pods[:-1]) | (panic_pods[1:] != panic_pods[:-1])
        changed |= gap & ((stable_pods > 0) | (panic_pods > 0))
        changed[0] = True
        return ticks[changed]

    def evaluate(self, *, now: float, current: int, ready: int, busy: bool, last_wake: float | None) -> int:
        known = self._known.get(now)
        if known is None:
            cfg = self.kpa.config
            at = np.array([now])
            known = (
                float(self.view.average(at, cfg.stable_window)[0]),
                float(self.view.average(at, cfg.panic_window)[0]),
            )
        return self.kpa.decide(
            now=now, stable_concurrency=known[0], panic_concurrency=known[1], ready=ready, current=current
        )

    def next_wakeup(self, *, now: float) -> float | None:
        return self.kpa.next_wakeup(now=now)

    def on_wake(self, *, now: float) -> None:
        self.kpa.on_wake(now=now)


class HpaDriver:
    """KEDA + HPA on Prometheus's request rate, at the HPA's 15 s sync period."""

    def __init__(self, *, hpa: KedaHpa, view: PrometheusView) -> None:
        self.hpa, self.view = hpa, view
        self.tick = hpa.config.sync_period
        self._rps = view.rps.tolist()

    def candidates(self) -> Floats:
        changed = _changes(self.hpa.metric_key(self.view.rps))
        return np.unique(_first_ticks(changed, scrape=self.view.scrape_interval, tick=self.tick))

    def evaluate(self, *, now: float, current: int, ready: int, busy: bool, last_wake: float | None) -> int:
        return self.hpa.decide(now=now, metric=self._rps[self.view.index(now)], current=current)

    def next_wakeup(self, *, now: float) -> float | None:
        return self.hpa.next_wakeup(now=now)

    def on_wake(self, *, now: float) -> None:
        self.hpa.on_wake(now=now)
