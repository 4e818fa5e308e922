"""One scaling decision for one function: the decision the loop, the local mode and the simulator share.

`decide` combines the replica formula (`policies.replicas`), scale-down stabilization
(`policies.stabilize`), the peers' behaviour knobs (`policies.knobs`) and scale-to-zero with a fixed
or learned keep-alive window. It takes `now` and a mutable per-function `FunctionState`; it never
reads a clock and never does I/O. `next_change` says when its answer may change on unchanged
inputs, so that a caller replaying inputs (the simulator) asks instead of re-deriving its timers.

Conservative branches (each says why): no data keeps the current replicas (invariant 1); activity
of any kind (started invocations, in-flight or held requests, a wake-up) restarts the idle timer
(invariant 2); a function never goes to zero within ZERO_GRACE of its last activity, whatever its
keep-alive policy predicts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from policies.knobs import bursting, delayed, rate_limited
from policies.knobs import timers as knob_timers
from policies.model import Decision, KeepAlive, Load, Reason, ScaleType, ScalingSpec
from policies.replicas import clamp, raw_replicas
from policies.stabilize import stabilized

# No policy sends a function to zero sooner than this (or its zero-duration, if shorter) after its
# last activity: the proxy refreshes its activity mark every few seconds while it holds or forwards
# requests, so this bounds the race between a wake-up and a scale-to-zero made on lagging metrics.
ZERO_GRACE = 30.0


class KeepAlivePolicy(Protocol):
    """A learned keep-alive: how long to keep an idle function warm, and when to pre-warm it."""

    def observe_call(self, *, now: float) -> None:
        """A started invocation (or a batch of them) was seen at `now`."""

    @property
    def counts_calls(self) -> bool:
        """Whether it weighs its choice by how many calls started (then every sighting matters)."""

    def count_calls(self, *, calls: float) -> None:
        """`calls` more calls started, at the sighting the next `observe_call` reports."""

    @property
    def last_call(self) -> float | None:
        """When the last call it knows of started (history it was seeded from included), or None."""

    def windows(self, *, now: float) -> tuple[float, float]:
        """(prewarm, keepalive) in seconds from the last call.

        The function may sit at zero until `prewarm` after its last call, is kept warm from then until
        `prewarm + keepalive`, then goes to zero. `(0, zero_duration)` is the fixed policy.
        """

    def next_change(self, *, now: float) -> float | None:
        """The next time `windows` may answer differently without a new call, or None (never)."""


@dataclass(slots=True)
class FunctionState:
    """What the loop remembers of one function between ticks (rebuilt from scratch after a restart)."""

    last_active: float | None = None  # last evidence of activity; the idle timer starts here
    last_call: float | None = None  # last call start seen (counter change, wake): learned windows start here
    last_started_total: float | None = None  # last seen value of the started-invocations counter
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)  # down-window history
    keepalive: KeepAlivePolicy | None = None  # set by the caller when spec.keepalive is ADAPTIVE
    lower_since: float | None = None  # scale-down delay: since when fewer replicas are recommended
    lower_from: int = 0  # ... than this many (the delay starts over when the replicas change)
    lower_peak: int = 0  # ... and the highest recommendation since then
    burst_at: float | None = None  # the last burst trigger (burst mode lasts spec.burst_window after it)


def observe(
    *, state: FunctionState, load: Load | None, now: float, busy: bool, last_wake: float | None
) -> bool:
    """Update the idle timer from this tick's evidence; True when the function is active right now."""
    active = busy
    first_count = False
    if state.last_call is None and state.keepalive is not None:
        # After a restart the learned policy remembers the last call from the history it was seeded
        # with: its windows keep running from there instead of from the controller's first tick.
        state.last_call = state.keepalive.last_call
    if load is not None:
        started = load.started_total
        if started is not None:
            # First sight of the counter: what it already counts started at an unknown time, maybe
            # while there was no data (invariant 1), so the idle timer restarts without waking it.
            first_count = state.last_started_total is None
            if state.last_started_total is not None and started != state.last_started_total:
                # Any change counts, a counter reset (proxy restart) included: it cannot mean idleness.
                active = True
                state.last_call = now
                if state.keepalive is not None:
                    if state.keepalive.counts_calls:
                        # How many calls, for a policy that weighs its cold starts by them (policies.share):
                        # the counter's increase, or after a reset what it counts since.
                        previous = state.last_started_total
                        state.keepalive.count_calls(
                            calls=started - previous if started > previous else started
                        )
                    state.keepalive.observe_call(now=now)
            state.last_started_total = started
        if load.inflight is not None and load.inflight > 0:
            active = True
        if load.pending is not None and load.pending > 0:
            active = True  # queued asynchronous work is activity (invariant 2): never zero under it
    if last_wake is not None and (state.last_active is None or last_wake > state.last_active):
        state.last_active = last_wake
    if last_wake is not None and (state.last_call is None or last_wake > state.last_call):
        state.last_call = last_wake  # a wake-up is a call arriving
    if active or first_count or state.last_active is None:
        # First sight of a function (e.g. after a restart) starts its idle timer without waking it.
        state.last_active = now
    return active


def moment(when: float) -> str:
    """A time given in unix seconds, as a message says it (UTC, to the second); pure, no clock read."""
    try:
        return datetime.fromtimestamp(round(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):  # beyond what datetime holds (a virtual clock)
        return f"t={when:.0f}s"


def learned(spec: ScalingSpec, state: FunctionState) -> KeepAlivePolicy | None:
    """The function's learned keep-alive, if its spec asks for one and the caller gave it one."""
    return state.keepalive if spec.keepalive is KeepAlive.ADAPTIVE else None


def windows_start(*, spec: ScalingSpec, state: FunctionState) -> float:
    """Where the keep-alive windows are measured from.

    A fixed zero-duration runs from the last activity of any kind (OpenFaaS's idle timer). A learned
    policy predicts the next call from the gaps between call starts, so its windows run from the
    last call's start: measured from the end of a call that ran for minutes, they would pre-warm too
    late (a function started every 10 minutes that runs for 5 was cold at every call).
    """
    assert state.last_active is not None
    if learned(spec, state) is not None and state.last_call is not None:
        return state.last_call
    return state.last_active


def _windows(*, spec: ScalingSpec, state: FunctionState, now: float) -> tuple[float, float]:
    policy = learned(spec, state)
    if policy is not None:
        return policy.windows(now=now)
    return 0.0, spec.zero_duration


def _zero_decision(*, spec: ScalingSpec, state: FunctionState, current: int, now: float) -> Decision | None:
    """The scale-to-zero / pre-warm verdict for an idle `zero=true` function, or None to scale by load."""
    assert state.last_active is not None
    idle = now - state.last_active
    since = now - windows_start(spec=spec, state=state)  # `idle` for a fixed zero-duration
    prewarm, keep = _windows(spec=spec, state=state, now=now)
    if current == 0:
        if prewarm > 0 and prewarm <= since < prewarm + keep:
            return Decision(
                current,
                spec.wake_replicas,
                Reason.PREWARM,
                f"{since:.0f}s since the last call: pre-warm for the call predicted after {prewarm:.0f}s",
            )
        # At zero with no activity: nothing calls for a replica. The message names when the idleness
        # began, not how long it has lasted, so it stays the same while nothing happens (a caller may
        # reuse the decision instead of making it again at every tick).
        return Decision(current, 0, Reason.STEADY, f"idle since {moment(state.last_active)}: stays at zero")
    if idle < min(ZERO_GRACE, spec.zero_duration):
        # Too recent to trust any prediction (see ZERO_GRACE); a fixed zero-duration shorter than the
        # grace is the operator's explicit choice and is honoured.
        return None
    if since >= prewarm + keep:
        return Decision(
            current,
            0,
            Reason.SCALE_TO_ZERO,
            f"no started invocations for {since:.0f}s (keep-alive {prewarm + keep:.0f}s): scale to zero",
        )
    if prewarm > 0 and since < prewarm:
        return Decision(
            current,
            0,
            Reason.SCALE_TO_ZERO,
            f"{since:.0f}s since the last call: next call predicted after {prewarm:.0f}s",
        )
    return None


def decide(
    *,
    spec: ScalingSpec,
    load: Load | None,
    current: int,
    state: FunctionState,
    now: float,
    busy: bool = False,
    last_wake: float | None = None,
) -> Decision:
    """The replicas one function should have at `now`, and why.

    `busy`: the in-process proxy holds or forwards requests for it; `last_wake`: the last activity mark
    the proxy wrote on the function (unix seconds). Both count as activity.
    """
    active = observe(state=state, load=load, now=now, busy=busy, last_wake=last_wake)
    # Idleness needs evidence: the started counter and the in-flight gauge both read this tick
    # (invariant 1: missing metrics never scale to zero).
    evidence = load is not None and load.started_total is not None and load.inflight is not None
    if spec.static:
        return _static(spec=spec, state=state, current=current, now=now, active=active, evidence=evidence)
    value = None if load is None else load.value(spec.type)
    # Burst mode scales a running function; at zero, waking is the business of activity and the proxy
    # (a rate still counting the calls from before it went to zero must not wake it).
    burst = (
        spec.burst_threshold > 0
        and current > 0
        and bursting(spec=spec, state=state, value=value, current=current, now=now)
    )
    # Burst mode never scales down, to zero neither.
    if spec.zero and not active and not burst and (evidence or current == 0):
        verdict = _zero_decision(spec=spec, state=state, current=current, now=now)
        if verdict is not None:
            return verdict
    if value is None:
        state.lower_since = None  # time without a figure never counts towards the scale-down delay
        return _without_load(spec=spec, current=current, active=active)
    if current == 0:
        return _wake(spec=spec, state=state, value=value)
    return _by_load(spec=spec, state=state, value=value, current=current, now=now, burst=burst)


def _static(
    *, spec: ScalingSpec, state: FunctionState, current: int, now: float, active: bool, evidence: bool
) -> Decision:
    """min = max: not scaled by load, while scaling to zero and waking still apply.

    OpenFaaS's docs: max "set to same as lower boundary to disable scaling", and scale to zero is a
    label of its own; min = max = 1 with zero=true is a function that is either off or at one replica.
    """
    if spec.zero and not active and (evidence or current == 0):
        verdict = _zero_decision(spec=spec, state=state, current=current, now=now)
        if verdict is not None:
            return verdict
    if current == 0 and active:
        return _without_load(spec=spec, current=current, active=active)
    return Decision(
        current, current, Reason.STATIC, f"min = max = {spec.min_replicas}: not autoscaled", False
    )


def _formula(spec: ScalingSpec, value: float, need: int) -> str:
    """The replica formula with its figures, `need` being `raw_replicas` of `value`."""
    before, ratio, bounds = spec.formula_words
    if need > spec.max_replicas:
        bounds = f", capped at max {spec.max_replicas}"  # the words say what the clamp did, not the range
    elif need < (floor := max(spec.min_replicas, 1)):
        bounds = f", raised to min {floor}"
    return f"{before}{value:.4g}{ratio}{value / (spec.target * spec.target_proportion):.4g} -> {need}{bounds}"


def _without_load(*, spec: ScalingSpec, current: int, active: bool) -> Decision:
    """The verdict when this tick has no load figure of the function's type."""
    if current == 0 and active:
        if spec.zero and spec.activation_threshold > 0:
            # No figure to weigh against the activation threshold: the loop leaves waking to the proxy.
            return Decision(
                0, 0, Reason.STEADY, f"no {spec.type} figure to pass activation-threshold: stays at zero"
            )
        # Traffic is arriving for a function at zero: waking it needs no load figure.
        return Decision(
            current, spec.wake_replicas, Reason.WAKE, "invocations arrived at zero replicas: wake"
        )
    if not spec.type.measured:
        # A custom type: no load figure to scale by, so the replicas stay as they are.
        return Decision(
            current,
            current,
            Reason.UNSUPPORTED_TYPE,
            f"scale type {spec.type_label or spec.type.value!r} is not measured: keep {current} replicas",
            False,
        )
    # Invariant 1: missing, stale or failed metrics are not zero traffic.
    return Decision(current, current, Reason.NO_DATA, f"no {spec.type} data: keep {current} replicas", False)


def _wake(*, spec: ScalingSpec, state: FunctionState, value: float) -> Decision:
    """The verdict for a function at zero that is active, or not allowed to stay at zero."""
    need = raw_replicas(spec=spec, load=value)
    formula = _formula(spec, value, need)
    if spec.zero and spec.activation_threshold > 0 and value <= spec.activation_threshold:
        # KEDA's activationThreshold: the loop does not wake it on so little; a request still wakes it
        # through the proxy, which holds the request.
        return Decision(
            0,
            0,
            Reason.STEADY,
            f"{formula}: at most activation-threshold {spec.activation_threshold:g}, stays at zero",
        )
    state.recommendations.clear()
    state.lower_since = None
    wanted = clamp(spec=spec, replicas=need)
    woken = max(wanted, spec.wake_replicas)
    extra = f" (activation-scale {spec.activation_scale})" if woken > wanted else ""
    if spec.type is ScaleType.QUEUE:
        extra += " for its backlog"
    return Decision(0, woken, Reason.WAKE, f"{formula}: wake to {woken}{extra}")


def _by_load(
    *, spec: ScalingSpec, state: FunctionState, value: float, current: int, now: float, burst: bool
) -> Decision:
    """The replica formula with the down window, the scale-down delay, burst mode and the rate limits."""
    need = raw_replicas(spec=spec, load=value)
    formula = _formula(spec, value, need)
    wanted = clamp(spec=spec, replicas=need)
    windowed = stabilized(
        history=state.recommendations, recommendation=wanted, now=now, window=spec.down_window
    )
    # Burst mode only ever scales up; its time does not count towards the scale-down delay.
    desired = max(windowed, current) if burst else windowed
    if spec.scale_down_delay > 0:
        desired = delayed(spec=spec, state=state, current=current, desired=desired, now=now)
    desired, limited = rate_limited(spec=spec, current=current, desired=desired)
    formula += limited
    if desired > current:
        return Decision(current, desired, Reason.SCALE_UP, f"{formula}: scale up")
    if desired < current:
        return Decision(current, desired, Reason.SCALE_DOWN, f"{formula}: scale down")
    if wanted >= current:
        return Decision(current, current, Reason.STEADY, f"{formula}: steady")
    if windowed >= current:
        why = f"the {spec.down_window:g}s scale-down window"
    elif burst:
        assert state.burst_at is not None
        why = f"burst mode (last triggered {now - state.burst_at:.0f}s ago, lasts {spec.burst_window:g}s)"
    else:
        assert state.lower_since is not None
        why = f"the {spec.scale_down_delay:g}s scale-down delay ({now - state.lower_since:.0f}s so far)"
    return Decision(current, current, Reason.STABILIZING, f"{formula}: held at {current} by {why}")


def next_change(
    *, spec: ScalingSpec, state: FunctionState, now: float, active_until: float | None = None
) -> float | None:
    """The earliest time at which `decide` may answer differently on the inputs it was given at `now`.

    What `decide` knows of its own timers after deciding at `now`: the zero grace, the keep-alive's
    end, the pre-warm, the learned model's next change, the scale-down delay, the end of burst mode.
    A caller that sees the same inputs (load, replicas, activity) until then may skip the decisions in
    between; any change of inputs calls for a decision anyway. A time at or before `now` means "at
    the next decision": the down window records every decision, a burst trigger renews burst mode at
    every one, and a timer that fell due at `now` itself may have missed by a rounding error.

    `active_until`: the caller's inputs show activity (calls, requests in flight) until then, where
    they change. If `decide` saw activity at `now`, each decision until then restarts the idle timer,
    so the zero timers (grace, keep-alive, pre-warm) cannot come due before it and are left out.
    """
    if spec.down_window > 0 and state.recommendations:
        return now
    times = (
        knob_timers(spec=spec, state=state, now=now) if spec.scale_down_delay or spec.burst_threshold else []
    )
    last = state.last_active
    still_active = active_until is not None and active_until > now and last is not None and last >= now
    if spec.zero and last is not None and not still_active:
        grace = min(ZERO_GRACE, spec.zero_duration)
        policy = learned(spec, state)
        if policy is None:
            times += (last + grace, last + spec.zero_duration)
        else:
            change = policy.next_change(now=now)
            if change is not None:
                times.append(change)  # the learned windows themselves move on at this time
            start = windows_start(spec=spec, state=state)
            prewarm, keep = policy.windows(now=now)
            times += (last + grace, start + prewarm + keep)
            if prewarm > 0:
                times.append(start + prewarm)
    due = [when for when in times if when > now - 1e-6]
    return min(due) if due else None
