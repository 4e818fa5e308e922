"""`decide` on virtual time: scaling by load, stabilization, scale-to-zero, and what "no data" means."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.engine import ZERO_GRACE, FunctionState, KeepAlivePolicy, decide, next_change
from policies.model import NO_DATA, KeepAlive, Load, Reason, ScaleType, ScalingSpec

ZERO = ScalingSpec(zero=True, zero_duration=60.0)


def rps(value: float, started: float = 0.0, inflight: float = 0.0) -> Load:
    return Load(rps=value, inflight=inflight, cpu=0.0, started_total=started)


class TestScalingByLoad:
    def test_a_burst_scales_up_at_once(self) -> None:
        decision = decide(spec=ScalingSpec(), load=rps(200), current=1, state=FunctionState(), now=0)
        assert (decision.desired, decision.reason) == (5, Reason.SCALE_UP)
        assert "rps load 200" in decision.message

    def test_capacity_uses_in_flight_requests(self) -> None:
        spec = ScalingSpec(type=ScaleType.CAPACITY, target=5, target_proportion=1.0)
        load = Load(rps=0.0, inflight=15.0, started_total=0.0)
        assert decide(spec=spec, load=load, current=1, state=FunctionState(), now=0).desired == 3

    def test_cpu_uses_millicores(self) -> None:
        spec = ScalingSpec(type=ScaleType.CPU, target=100, target_proportion=1.0)
        load = Load(rps=0.0, inflight=0.0, cpu=350.0, started_total=0.0)
        assert decide(spec=spec, load=load, current=1, state=FunctionState(), now=0).desired == 4

    def test_falling_load_scales_down_without_a_window(self) -> None:
        decision = decide(spec=ScalingSpec(), load=rps(10), current=5, state=FunctionState(), now=0)
        assert (decision.desired, decision.reason) == (1, Reason.SCALE_DOWN)

    def test_steady_load_changes_nothing(self) -> None:
        decision = decide(spec=ScalingSpec(), load=rps(90), current=2, state=FunctionState(), now=0)
        assert not decision.changed
        assert decision.reason is Reason.STEADY

    def test_the_message_says_what_the_bounds_did_to_the_formulas_figure(self) -> None:
        capped = decide(spec=ScalingSpec(), load=rps(10_000), current=1, state=FunctionState(), now=0)
        assert "= 222.2 -> 223, capped at max 20: scale up" in capped.message
        raised = decide(spec=ScalingSpec(), load=rps(0.0), current=3, state=FunctionState(), now=0)
        assert "= 0 -> 0, raised to min 1: scale down" in raised.message
        inside = decide(spec=ScalingSpec(), load=rps(90), current=1, state=FunctionState(), now=0)
        assert "= 2 -> 2, within [1, 20]: scale up" in inside.message

    def test_static_functions_are_never_scaled_by_load(self) -> None:
        spec = ScalingSpec(min_replicas=3, max_replicas=3)
        decision = decide(spec=spec, load=rps(10_000), current=1, state=FunctionState(), now=0)
        assert (decision.desired, decision.reason, decision.valid) == (1, Reason.STATIC, False)

    def test_a_static_function_that_may_scale_to_zero_goes_to_zero_when_idle_and_wakes_to_its_min(
        self,
    ) -> None:
        # OpenFaaS: max equal to min disables scaling, and zero is a label of its own; min = max = 1 with
        # zero=true stayed at one replica for good.
        spec = ScalingSpec(min_replicas=1, max_replicas=1, zero=True, zero_duration=60.0)
        state = FunctionState()
        assert (
            decide(spec=spec, load=rps(0.0, started=5), current=1, state=state, now=0).reason is Reason.STATIC
        )
        idle = decide(spec=spec, load=rps(0.0, started=5), current=1, state=state, now=ZERO_GRACE + 61)
        assert (idle.desired, idle.reason) == (0, Reason.SCALE_TO_ZERO)
        asleep = decide(spec=spec, load=rps(0.0, started=5), current=0, state=state, now=ZERO_GRACE + 70)
        assert (asleep.desired, asleep.reason) == (0, Reason.STEADY)
        woken = decide(spec=spec, load=rps(2.0, started=9), current=0, state=state, now=ZERO_GRACE + 80)
        assert (woken.desired, woken.reason) == (1, Reason.WAKE)
        missing = decide(spec=spec, load=NO_DATA, current=1, state=FunctionState(), now=10_000)
        assert missing.desired == 1  # no evidence of idleness: never to zero (invariant 1)


class TestDownWindow:
    def test_the_highest_recommendation_in_the_window_wins(self) -> None:
        spec = ScalingSpec(down_window=60.0)
        state = FunctionState()
        assert decide(spec=spec, load=rps(400), current=1, state=state, now=0).desired == 9
        held = decide(spec=spec, load=rps(10), current=9, state=state, now=30)
        assert (held.desired, held.reason) == (9, Reason.STABILIZING)
        released = decide(spec=spec, load=rps(10), current=9, state=state, now=61)
        assert (released.desired, released.reason) == (1, Reason.SCALE_DOWN)

    def test_scale_up_is_never_delayed_by_the_window(self) -> None:
        spec = ScalingSpec(down_window=300.0)
        state = FunctionState()
        decide(spec=spec, load=rps(10), current=1, state=state, now=0)
        assert decide(spec=spec, load=rps(400), current=1, state=state, now=1).desired == 9


class TestNoData:
    def test_missing_metrics_keep_the_current_replicas(self) -> None:
        for load in (None, NO_DATA):
            decision = decide(spec=ScalingSpec(), load=load, current=7, state=FunctionState(), now=0)
            assert (decision.desired, decision.reason, decision.valid) == (7, Reason.NO_DATA, False)

    def test_missing_metrics_never_scale_to_zero_however_long_they_last(self) -> None:
        state = FunctionState()
        for now in range(0, 3600, 2):
            decision = decide(spec=ZERO, load=None, current=1, state=state, now=now)
            assert decision.desired == 1

    def test_a_missing_field_of_another_type_does_not_matter(self) -> None:
        load = Load(rps=100.0, inflight=None, cpu=None, started_total=None)
        assert decide(spec=ScalingSpec(), load=load, current=1, state=FunctionState(), now=0).desired == 3


class TestScaleToZero:
    def test_an_idle_function_goes_to_zero_after_its_zero_duration(self) -> None:
        state = FunctionState()
        decide(spec=ZERO, load=rps(5, started=10), current=1, state=state, now=0)
        assert decide(spec=ZERO, load=rps(0, started=10), current=1, state=state, now=59).desired == 1
        decision = decide(spec=ZERO, load=rps(0, started=10), current=1, state=state, now=60)
        assert (decision.desired, decision.reason) == (0, Reason.SCALE_TO_ZERO)

    def test_each_started_invocation_restarts_the_idle_timer(self) -> None:
        state = FunctionState()
        decide(spec=ZERO, load=rps(0, started=1), current=1, state=state, now=0)
        decide(spec=ZERO, load=rps(0, started=2), current=1, state=state, now=50)
        assert decide(spec=ZERO, load=rps(0, started=2), current=1, state=state, now=100).desired == 1
        assert decide(spec=ZERO, load=rps(0, started=2), current=1, state=state, now=110).desired == 0

    def test_zero_false_functions_never_go_to_zero(self) -> None:
        state = FunctionState()
        for now in range(0, 7200, 60):
            assert decide(spec=ScalingSpec(), load=rps(0), current=1, state=state, now=now).desired == 1

    def test_in_flight_requests_keep_a_function_warm(self) -> None:
        state = FunctionState()
        decide(spec=ZERO, load=rps(0, inflight=1), current=1, state=state, now=0)
        assert decide(spec=ZERO, load=rps(0, inflight=1), current=1, state=state, now=500).desired == 1

    def test_a_busy_proxy_keeps_a_function_warm(self) -> None:
        state = FunctionState()
        decide(spec=ZERO, load=rps(0), current=1, state=state, now=0)
        assert decide(spec=ZERO, load=rps(0), current=1, state=state, now=500, busy=True).desired == 1

    def test_a_recent_wake_up_keeps_a_function_warm_for_its_zero_duration(self) -> None:
        state = FunctionState()
        decide(spec=ZERO, load=rps(0), current=1, state=state, now=0)
        assert decide(spec=ZERO, load=rps(0), current=1, state=state, now=100, last_wake=90).desired == 1
        assert decide(spec=ZERO, load=rps(0), current=1, state=state, now=150, last_wake=90).desired == 0

    def test_a_restart_starts_the_idle_timer_instead_of_trusting_old_silence(self) -> None:
        state = FunctionState()
        assert decide(spec=ZERO, load=rps(0, started=99), current=1, state=state, now=10_000).desired == 1
        assert decide(spec=ZERO, load=rps(0, started=99), current=1, state=state, now=10_060).desired == 0

    def test_a_function_at_zero_stays_there_without_traffic(self) -> None:
        state = FunctionState()
        for now in (0, 1, 100):
            decision = decide(spec=ZERO, load=rps(0, started=3), current=0, state=state, now=now)
            assert decision.desired == 0

    def test_traffic_wakes_a_function_at_zero(self) -> None:
        state = FunctionState()
        decide(spec=ZERO, load=rps(0, started=3), current=0, state=state, now=0)
        decision = decide(spec=ZERO, load=rps(100, started=4), current=0, state=state, now=2)
        assert (decision.desired, decision.reason) == (3, Reason.WAKE)

    def test_traffic_wakes_a_function_at_zero_even_before_rates_exist(self) -> None:
        state = FunctionState()
        decide(spec=ZERO, load=Load(started_total=3), current=0, state=state, now=0)
        decision = decide(spec=ZERO, load=Load(started_total=4), current=0, state=state, now=2)
        assert (decision.desired, decision.reason) == (1, Reason.WAKE)


class FixedWindows:
    """A keep-alive model with given windows, to test how decide uses one."""

    def __init__(self, prewarm: float, keep: float, *, last_call: float | None = None) -> None:
        self.prewarm, self.keep, self.calls = prewarm, keep, 0
        self.last_call = last_call  # a seeded model knows a call from before the loop started

    counts_calls = False

    def observe_call(self, *, now: float) -> None:
        self.calls += 1

    def count_calls(self, *, calls: float) -> None:
        raise AssertionError("a policy that does not count calls is never told how many")

    def windows(self, *, now: float) -> tuple[float, float]:
        return self.prewarm, self.keep

    def next_change(self, *, now: float) -> float | None:
        return None


class TestLearnedKeepAlive:
    spec = ScalingSpec(zero=True, zero_duration=600.0, keepalive=KeepAlive.ADAPTIVE)

    def test_after_a_restart_the_windows_run_from_the_call_the_model_was_seeded_with(self) -> None:
        # Called 350 s before the loop's first tick; warm from 300 s to 420 s after a call.
        state = FunctionState(keepalive=FixedWindows(prewarm=300.0, keep=120.0, last_call=-350.0))
        decide(spec=self.spec, load=rps(0, started=5), current=1, state=state, now=0)
        kept = decide(spec=self.spec, load=rps(0, started=5), current=1, state=state, now=ZERO_GRACE)
        assert kept.desired == 1
        gone = decide(spec=self.spec, load=rps(0, started=5), current=1, state=state, now=70)
        assert (gone.desired, gone.reason) == (0, Reason.SCALE_TO_ZERO)
        assert "no started invocations for 420s" in gone.message

    def test_after_a_restart_a_function_at_zero_is_prewarmed_on_the_seeded_schedule(self) -> None:
        state = FunctionState(keepalive=FixedWindows(prewarm=300.0, keep=120.0, last_call=-290.0))
        waiting = decide(spec=self.spec, load=rps(0, started=5), current=0, state=state, now=0)
        assert waiting.desired == 0
        woken = decide(spec=self.spec, load=rps(0, started=5), current=0, state=state, now=10)
        assert (woken.desired, woken.reason) == (1, Reason.PREWARM)

    def test_a_predicted_gap_unloads_after_the_grace_and_prewarms_before_the_next_call(self) -> None:
        model = FixedWindows(prewarm=300.0, keep=120.0)
        state = FunctionState(keepalive=model)
        decide(spec=self.spec, load=rps(0, started=1), current=1, state=state, now=0)
        decide(spec=self.spec, load=rps(0, started=2), current=1, state=state, now=10)
        assert model.calls == 1
        assert (
            decide(
                spec=self.spec, load=rps(0, started=2), current=1, state=state, now=10 + ZERO_GRACE - 1
            ).desired
            == 1
        )
        assert (
            decide(
                spec=self.spec, load=rps(0, started=2), current=1, state=state, now=10 + ZERO_GRACE
            ).desired
            == 0
        )
        assert decide(spec=self.spec, load=rps(0, started=2), current=0, state=state, now=200).desired == 0
        prewarm = decide(spec=self.spec, load=rps(0, started=2), current=0, state=state, now=320)
        assert (prewarm.desired, prewarm.reason) == (1, Reason.PREWARM)
        assert decide(spec=self.spec, load=rps(0, started=2), current=1, state=state, now=431).desired == 0

    def test_learned_windows_run_from_the_last_call_start_not_the_end_of_a_long_call(self) -> None:
        # Calls start every 10 minutes and run for 5: the windows, learned from the gaps between
        # starts, count from the start. Counted from the end, the pre-warm would come after the call.
        state = FunctionState(keepalive=FixedWindows(prewarm=480.0, keep=180.0))
        decide(spec=self.spec, load=rps(0, started=1), current=1, state=state, now=0)
        decide(spec=self.spec, load=rps(0, started=2, inflight=1), current=1, state=state, now=15)
        running = decide(spec=self.spec, load=rps(0, started=2, inflight=1), current=1, state=state, now=315)
        assert running.desired == 1  # a call in flight is never cut short
        done = decide(spec=self.spec, load=rps(0, started=2), current=1, state=state, now=315 + ZERO_GRACE)
        assert (done.desired, done.reason) == (0, Reason.SCALE_TO_ZERO)
        assert decide(spec=self.spec, load=rps(0, started=2), current=0, state=state, now=494).desired == 0
        prewarm = decide(spec=self.spec, load=rps(0, started=2), current=0, state=state, now=496)
        assert (prewarm.desired, prewarm.reason) == (1, Reason.PREWARM)
        assert "481s since the last call" in prewarm.message

    def test_a_wake_up_counts_as_a_call_for_the_learned_windows(self) -> None:
        state = FunctionState(keepalive=FixedWindows(prewarm=300.0, keep=120.0))
        decide(spec=self.spec, load=rps(0, started=1), current=1, state=state, now=0)
        decide(spec=self.spec, load=rps(0, started=1), current=0, state=state, now=100, last_wake=90.0)
        assert state.last_call == 90.0
        prewarm = decide(spec=self.spec, load=rps(0, started=1), current=0, state=state, now=395)
        assert prewarm.reason is Reason.PREWARM

    def test_a_fixed_zero_duration_still_runs_from_the_end_of_the_last_call(self) -> None:
        spec = ScalingSpec(zero=True, zero_duration=120.0)
        state = FunctionState()
        decide(spec=spec, load=rps(0, started=1), current=1, state=state, now=0)
        decide(spec=spec, load=rps(0, started=2, inflight=1), current=1, state=state, now=15)
        decide(spec=spec, load=rps(0, started=2, inflight=1), current=1, state=state, now=300)
        assert decide(spec=spec, load=rps(0, started=2), current=1, state=state, now=419).desired == 1
        assert decide(spec=spec, load=rps(0, started=2), current=1, state=state, now=420).desired == 0


@given(
    loads=st.lists(st.one_of(st.none(), st.floats(0, 1e5)), min_size=1, max_size=40),
    lo=st.integers(1, 5),
    span=st.integers(0, 30),
)
def test_any_sequence_of_loads_keeps_replicas_within_bounds(
    loads: list[float | None], lo: int, span: int
) -> None:
    spec = ScalingSpec(min_replicas=lo, max_replicas=lo + span, down_window=30.0)
    state = FunctionState()
    current = lo
    for step, value in enumerate(loads):
        load = None if value is None else rps(value)
        decision = decide(spec=spec, load=load, current=current, state=state, now=step * 2.0)
        assert lo <= decision.desired <= lo + span
        current = decision.desired


class TestNextChange:
    """`next_change` names the timers `decide` runs on, so a replay may skip the decisions between."""

    @staticmethod
    def after(
        spec: ScalingSpec,
        steps: list[tuple[float, Load]],
        *,
        current: int = 1,
        model: KeepAlivePolicy | None = None,
    ) -> FunctionState:
        state = FunctionState(keepalive=model)
        for now, load in steps:
            decide(spec=spec, load=load, current=current, state=state, now=now)
        return state

    @pytest.mark.parametrize(
        ("spec", "steps", "current", "want"),
        [
            (ScalingSpec(), [(0.0, rps(10))], 1, None),  # no zero, no knob: only new inputs change it
            (ZERO, [(0.0, rps(0, started=1))], 1, ZERO_GRACE),  # the grace after the first sight
            (ZERO, [(0.0, rps(0, started=1)), (40.0, rps(0, started=1))], 1, 60.0),  # zero-duration
            (ScalingSpec(zero=True, zero_duration=20.0), [(0.0, rps(0, started=1))], 1, 20.0),
            (ScalingSpec(down_window=60.0), [(0.0, rps(400)), (2.0, rps(10))], 9, 2.0),  # every decision
            (ScalingSpec(scale_down_delay=60.0), [(0.0, rps(10)), (10.0, rps(10))], 9, 60.0),
            (ScalingSpec(burst_threshold=2.0), [(0.0, rps(400))], 1, 0.0),  # a trigger renews itself
            (ScalingSpec(burst_threshold=2.0), [(0.0, rps(400)), (4.0, rps(10))], 1, 60.0),
        ],
    )
    def test_it_names_the_next_timer(
        self, spec: ScalingSpec, steps: list[tuple[float, Load]], current: int, want: float | None
    ) -> None:
        """Decisions at the steps' times, `current` replicas throughout; asked after the last one."""
        state = self.after(spec, steps, current=current)
        assert next_change(spec=spec, state=state, now=steps[-1][0]) == want

    def test_it_names_the_learned_prewarm_and_the_end_of_the_window(self) -> None:
        spec = TestLearnedKeepAlive.spec
        model = FixedWindows(prewarm=300.0, keep=120.0)
        state = self.after(spec, [(0.0, rps(0, started=1)), (40.0, rps(0, started=1))], model=model)
        assert next_change(spec=spec, state=state, now=40.0) == 300.0
        state = self.after(spec, [(0.0, rps(0, started=1)), (310.0, rps(0, started=1))], model=model)
        assert next_change(spec=spec, state=state, now=310.0) == 420.0

    def test_activity_that_goes_on_until_a_known_time_leaves_the_zero_timers_out(self) -> None:
        state = self.after(ZERO, [(0.0, rps(0, started=1)), (2.0, rps(0, started=2))])
        assert next_change(spec=ZERO, state=state, now=2.0) == 2.0 + ZERO_GRACE
        assert next_change(spec=ZERO, state=state, now=2.0, active_until=100.0) is None

    @settings(max_examples=60, deadline=None)
    @given(
        loads=st.lists(
            st.tuples(st.sampled_from([0.0, 10.0, 100.0, 400.0]), st.booleans()), min_size=1, max_size=30
        ),
        delay=st.sampled_from([0.0, 20.0]),
        burst=st.sampled_from([0.0, 2.0]),
    )
    def test_deciding_only_at_input_changes_and_named_times_decides_as_every_tick(
        self, loads: list[tuple[float, bool]], delay: float, burst: float
    ) -> None:
        spec = ScalingSpec(zero=True, zero_duration=40.0, scale_down_delay=delay, burst_threshold=burst)
        # Each input holds for 30 s (15 ticks); a True calls the function once at its start.

        def inputs(tick: int) -> Load:
            segment = min(tick // 15, len(loads) - 1)
            started = sum(1 for value, call in loads[: segment + 1] if call)
            return rps(loads[segment][0], started=float(started))

        seen: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
        for keep_all, replicas in seen.items():
            state, current, due = FunctionState(), 1, 0.0
            for tick in range(15 * len(loads) + 60):
                now = tick * 2.0
                if not (keep_all or tick % 15 == 0 or now >= due):
                    continue
                desired = decide(spec=spec, load=inputs(tick), current=current, state=state, now=now).desired
                when = next_change(spec=spec, state=state, now=now)
                due = math.inf if when is None else max(math.ceil(when / 2.0 - 1e-9) * 2.0, now + 2.0)
                if desired != current:
                    replicas.append((now, desired))
                    due = now + 2.0  # the replicas are an input too
                current = desired
        assert seen[True] == seen[False]
