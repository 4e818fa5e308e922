"""Peer autoscalers, modelled faithfully with their published defaults, to compare policies against.

The simulator replays one trace through every policy; these two are the peers that do not share the
project's decision (`policies.engine.decide`): Knative's KPA and the Kubernetes HPA driven by KEDA.
Each constant names its source, so a reader can check the model against the original. Both are
pure: they take `now` and their inputs as arguments and keep only the state their originals keep.

`next_wakeup` tells a caller that evaluates only when inputs change (the simulator) the next time
the answer could change on unchanged inputs (a timer, a rate limit, panic mode); evaluating at every
tick instead gives the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Knative's autoscaler counts are whole pods; float noise in a window average must not buy a pod.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class KpaConfig:
    """Knative Serving defaults: config/core/configmaps/autoscaler.yaml ("config-autoscaler")."""

    container_concurrency_target_default: float = 100.0  # container-concurrency-target-default: "100"
    target_utilization: float = 0.70  # container-concurrency-target-percentage: "70"
    stable_window: float = 60.0  # stable-window: "60s"
    panic_window_percentage: float = 10.0  # panic-window-percentage: "10.0" (6 s of a 60 s window)
    panic_threshold: float = 2.0  # panic-threshold-percentage: "200.0"
    max_scale_up_rate: float = 1000.0  # max-scale-up-rate: "1000.0"
    max_scale_down_rate: float = 2.0  # max-scale-down-rate: "2.0"
    scale_to_zero_grace: float = 30.0  # scale-to-zero-grace-period: "30s"
    tick: float = 2.0  # pkg/autoscaler: the decider's tickInterval, 2 s

    @property
    def panic_window(self) -> float:
        return self.stable_window * self.panic_window_percentage / 100.0


class KnativeKPA:
    """The Knative Pod Autoscaler for one revision (pkg/autoscaler/scaling/autoscaler.go, Scale).

    Inputs are average concurrency (in-flight requests) over the stable and panic windows, as the
    queue-proxies and the activator report it every second, and the count of ready pods. Scale from
    zero is the activator's poke (`on_wake`); scale to zero waits the grace period once the stable
    window has gone quiet, as the KPA reconciler does.
    """

    def __init__(
        self,
        *,
        container_concurrency: float = 0.0,
        max_scale: int = 0,
        config: KpaConfig | None = None,
    ) -> None:
        self.config = cfg = config or KpaConfig()
        # With a hard limit (containerConcurrency) the soft target cannot exceed it (resources.go).
        base = cfg.container_concurrency_target_default
        if container_concurrency > 0:
            base = min(base, container_concurrency)
        self.target = base * cfg.target_utilization
        self.max_scale = max_scale  # 0 means unbounded, as in Knative
        self.panic_time: float | None = None
        self.max_panic_pods = 0
        self.inactive_since: float | None = None
        self._again: float | None = None  # next tick, when the last answer was held back

    def pod_counts(self, concurrency: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """ceil(concurrency / target), vectorised: the only way concurrency enters a decision."""
        return np.ceil(np.maximum(concurrency, 0.0) / self.target - _EPSILON).astype(np.int64)

    def on_wake(self, *, now: float) -> None:
        """The activator saw a request at zero pods and poked the autoscaler (scale to 1 at once)."""
        self.inactive_since = None

    def decide(
        self, *, now: float, stable_concurrency: float, panic_concurrency: float, ready: int, current: int
    ) -> int:
        """Desired pods at `now` (one decider tick)."""
        cfg = self.config
        self._again = None
        ready_f = float(max(1, ready))  # readyPodsCount is at least 1 in the formulas
        max_up = math.ceil(cfg.max_scale_up_rate * ready_f)
        max_down = math.floor(ready_f / cfg.max_scale_down_rate)
        stable = max(0, math.ceil(stable_concurrency / self.target - _EPSILON))
        panic = max(0, math.ceil(panic_concurrency / self.target - _EPSILON))
        dspc = min(max(stable, max_down), max_up)
        dppc = min(max(panic, max_down), max_up)
        over = dppc / ready_f >= cfg.panic_threshold
        if over:
            self.panic_time = now  # enter panic, or extend it while still over the threshold
            self._again = now + cfg.tick
        elif self.panic_time is not None and self.panic_time + cfg.stable_window < now:
            self.panic_time = None  # the surge has made its way into the stable window
            self.max_panic_pods = 0
        desired, wanted = dspc, stable
        if self.panic_time is not None:
            # Panic mode never scales down: only increases apply.
            self.max_panic_pods = max(self.max_panic_pods, dspc, dppc)
            desired, wanted = self.max_panic_pods, max(stable, panic)
        if self.max_scale > 0:
            desired, wanted = min(desired, self.max_scale), min(wanted, self.max_scale)
        if desired != wanted:
            self._again = now + cfg.tick  # a rate limit held the step back: take the next one next tick
        if desired > 0 or current == 0:
            self.inactive_since = None
            return desired
        # Desired zero: the revision turns inactive and keeps its pods for the grace period.
        if self.inactive_since is None:
            self.inactive_since = now
        if now - self.inactive_since >= cfg.scale_to_zero_grace:
            self.inactive_since = None
            return 0
        return current

    def next_wakeup(self, *, now: float) -> float | None:
        """The next time the decision may change with unchanged inputs, or None."""
        times = [t for t in (self._again,) if t is not None]
        if self.panic_time is not None:
            times.append(self.panic_time + self.config.stable_window + self.config.tick / 2)
        if self.inactive_since is not None:
            times.append(self.inactive_since + self.config.scale_to_zero_grace)
        later = [t for t in times if t > now]
        return min(later) if later else None


@dataclass(frozen=True, slots=True)
class HpaConfig:
    """Kubernetes HPA (kube-controller-manager flags, autoscaling/v2 default behavior) under KEDA."""

    sync_period: float = 15.0  # --horizontal-pod-autoscaler-sync-period=15s
    tolerance: float = 0.10  # --horizontal-pod-autoscaler-tolerance=0.1
    downscale_stabilization: float = 300.0  # behavior.scaleDown.stabilizationWindowSeconds: 300
    scale_up_percent: float = 100.0  # behavior.scaleUp.policies: Percent 100 per 15 s ...
    scale_up_pods: int = 4  # ... or Pods 4 per 15 s, selectPolicy Max
    polling_interval: float = 30.0  # KEDA ScaledObject pollingInterval default: 30 s
    cooldown_period: float = 300.0  # KEDA ScaledObject cooldownPeriod default: 300 s
    activation_threshold: float = 0.0  # KEDA trigger activationThreshold default: 0


class KedaHpa:
    """KEDA's 0 <-> 1 activation plus the HPA's ratio for 1 <-> N, on one external metric.

    The metric is the function's request rate as Prometheus reports it, with an AverageValue target
    per replica. Call `decide` at HPA sync ticks (multiples of `sync_period`); KEDA's activation check
    runs on the ticks that are multiples of `polling_interval`. A wake-up by the request-holding
    interceptor counts as activity (`on_wake`).
    """

    def __init__(
        self,
        *,
        target: float,
        min_replicas: int = 1,
        max_replicas: int = 100,
        config: HpaConfig | None = None,
    ) -> None:
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        self.config = config or HpaConfig()
        self.target = target
        self.min_replicas = max(1, min_replicas)  # the HPA's own floor; zero is KEDA's business
        self.max_replicas = max_replicas  # KEDA maxReplicaCount default: 100
        self.last_active: float | None = None
        self.recommendations: list[tuple[float, int]] = []  # (last seen, replicas), oldest first
        self._last: tuple[float, float | None, int, bool] | None = None  # time, metric, current, recorded
        self._again: float | None = None

    def metric_key(self, metric: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Label metric values so that equal labels decide alike at any replica count (vectorised).

        The decision changes only where the metric crosses the activation threshold, a tolerance
        band edge (target x replicas x (1 +- tolerance)) or a whole number of targets.
        """
        cfg, replicas = self.config, np.arange(1, self.max_replicas + 2, dtype=np.float64)
        edges = np.unique(
            np.concatenate(
                [
                    replicas * self.target * (1 - cfg.tolerance),
                    replicas * self.target * (1 + cfg.tolerance),
                    (replicas - 1 + _EPSILON) * self.target,
                    [cfg.activation_threshold],
                ]
            )
        )
        left = np.searchsorted(edges, metric, side="left")
        return (left + np.searchsorted(edges, metric, side="right")).astype(np.int64)

    def on_wake(self, *, now: float) -> None:
        """The request-holding interceptor woke the function: that is activity for the cooldown."""
        self.last_active = now

    def _is_poll(self, when: float) -> bool:
        period = self.config.polling_interval
        return abs(when / period - round(when / period)) < 1e-9

    def _fill_gap(self, *, now: float) -> None:
        """Ticks skipped since the last call saw the same inputs: credit what they would have seen."""
        if self._last is None:
            return
        then, metric, _current, recorded = self._last
        last_tick = now - self.config.sync_period
        if last_tick <= then:
            return
        if metric is not None and metric > self.config.activation_threshold:
            polls = math.floor(last_tick / self.config.polling_interval) * self.config.polling_interval
            if polls > then and (self.last_active is None or polls > self.last_active):
                self.last_active = polls
        if recorded and self.recommendations:
            seen, value = self.recommendations[-1]
            self.recommendations[-1] = (max(seen, last_tick), value)

    def decide(self, *, now: float, metric: float | None, current: int) -> int:
        """Desired replicas at the sync tick `now`."""
        cfg = self.config
        self._fill_gap(now=now)
        self._last = (now, metric, current, False)
        self._again = None
        if metric is None:
            return current  # no metric: the HPA skips the tick and KEDA does not deactivate
        active = metric > cfg.activation_threshold
        if self._is_poll(now):
            if active:
                self.last_active = now
            if current == 0:
                return 1 if active else 0  # KEDA activation
            idle_since = self.last_active
            if not active and (idle_since is None or now - idle_since >= cfg.cooldown_period):
                self.recommendations.clear()
                return 0  # KEDA deactivation after the cooldown
        if current == 0:
            return 0  # at zero the HPA is inactive until KEDA activates the target
        ratio = metric / (self.target * current)
        raw = current if abs(ratio - 1.0) <= cfg.tolerance else math.ceil(metric / self.target - _EPSILON)
        raw = min(max(raw, self.min_replicas), self.max_replicas)
        horizon = now - cfg.downscale_stabilization
        self.recommendations = [(t, v) for t, v in self.recommendations if t > horizon]
        self.recommendations.append((now, raw))
        self._last = (now, metric, current, True)
        desired = min(current, max(v for _, v in self.recommendations)) if raw < current else raw
        limit = max(math.floor(current * (1 + cfg.scale_up_percent / 100)), current + cfg.scale_up_pods)
        if desired > limit:
            desired = limit
            self._again = now + cfg.sync_period  # the rest of the step waits for the next period
        if desired > raw:
            self._again = now + cfg.sync_period  # held by the stabilization window: re-check it
        return desired

    def next_wakeup(self, *, now: float) -> float | None:
        """The next time the decision may change with unchanged inputs, or None."""
        times = [t for t in (self._again,) if t is not None]
        if self._last is not None:
            _, metric, current, _ = self._last
            quiet = metric is not None and metric <= self.config.activation_threshold
            period = self.config.polling_interval
            if current == 0 and metric is not None and not quiet:
                times.append(math.floor(now / period + 1e-9) * period + period)  # KEDA activates at its poll
            if current > 0 and quiet:
                since = self.last_active if self.last_active is not None else now
                times.append(math.ceil((since + self.config.cooldown_period) / period - 1e-9) * period)
        later = [t for t in times if t > now]
        return min(later) if later else None
