"""Each policy wired to the view of a function it would have in production.

The project's policies (`openfaas`, `fixed-10m`, `adaptive`) run through `policies.engine.decide`,
the loop's own decision, reading Prometheus. Knative's KPA reads windowed concurrency; KEDA with
the HPA reads the same Prometheus rate as the loop. Each driver also names the ticks at which its
policy's inputs change, so the engine can skip the rest without changing a single decision, and asks
the policy itself when its answer may change on unchanged inputs (`policies.engine.next_change` for
the project's, `next_wakeup` for the peers'): no driver re-derives a policy's timers.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from autoscaler.errors import ConfigError
from autoscaler.simulate.views import ConcurrencyView, PrometheusView
from policies.baselines import KedaHpa, KnativeKPA
from policies.engine import FunctionState, KeepAlivePolicy, decide, next_change
from policies.model import KeepAlive, Load, ScaleType, ScalingSpec
from policies.replicas import desired_replicas, raw_replicas

Floats = npt.NDArray[np.float64]


def _load_key(spec: ScalingSpec, value: Floats) -> npt.NDArray[np.int64]:
    """Label each load figure by what `decide` makes of it: equal labels decide alike.

    That is the policy's own replica count for the figure (`policies.replicas`, applied to each
    distinct figure), unclamped when burst mode weighs it against the replicas there are, and which
    side of the activation threshold it falls on when one is set.
    """
    levels, inverse = np.unique(value, return_inverse=True)
    count = raw_replicas if spec.burst_threshold > 0 else desired_replicas
    per_level = np.array([count(spec=spec, load=float(level)) for level in levels.tolist()], dtype=np.int64)
    key: npt.NDArray[np.int64] = per_level[inverse.reshape(-1)]
    if spec.activation_threshold > 0:
        key = key * 2 + (value > spec.activation_threshold).astype(np.int64)
    return key


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
        self._active_until: list[float] = []  # per scrape in a run of active ones: the run's last tick

    def candidates(self) -> Floats:
        view, scrape, tick = self.view, self.view.scrape_interval, self.tick
        value = view.rps if self.spec.type is ScaleType.RPS else view.inflight.astype(np.float64)
        busy = view.inflight > 0
        desired = _load_key(self.spec, value)
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
                if self.state.keepalive.counts_calls:
                    picks[calls] = True  # it learns from every sighting of calls (policies.share)
            # Where a run of active scrapes goes on, its end is a candidate: `next_change` may say so.
            every = _first_ticks(np.arange(active.size), scrape=scrape, tick=tick)
            self._active_until = self._run_ends(active, first_ticks=every)
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

    @staticmethod
    def _run_ends(active: npt.NDArray[np.bool_], *, first_ticks: Floats) -> list[float]:
        """For each scrape followed by an active one: the first tick of the run's last scrape (a
        candidate, where the run's end is decided); -inf elsewhere."""
        after = np.concatenate([active[1:], [False]])
        last_of_run = np.flatnonzero(active & ~after)
        ends = np.full(active.size, -np.inf)
        runs = np.searchsorted(last_of_run, np.arange(active.size), side="left")
        inside = active & after
        ends[inside] = first_ticks[last_of_run[runs[inside]]]
        ends_list: list[float] = ends.tolist()
        return ends_list

    def next_wakeup(self, *, now: float) -> float | None:
        j = self.view.index(now)
        until = self._active_until[j] if j < len(self._active_until) else None
        return next_change(spec=self.spec, state=self.state, now=now, active_until=until)

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
