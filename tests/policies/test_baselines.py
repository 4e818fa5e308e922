"""The peer models against hand-computed scenarios: Knative's KPA and KEDA with the HPA."""

from __future__ import annotations

from policies.baselines import KedaHpa, KnativeKPA


def test_kpa_targets_seventy_percent_of_its_concurrency_target() -> None:
    assert KnativeKPA().target == 70.0  # 100 x 0.70
    assert KnativeKPA(container_concurrency=10).target == 7.0  # a hard limit caps the soft target


def test_kpa_scales_to_the_stable_window_average() -> None:
    kpa = KnativeKPA()
    assert kpa.decide(now=0, stable_concurrency=139.0, panic_concurrency=70.0, ready=1, current=1) == 2
    assert kpa.panic_time is None  # 1 panic pod for 1 ready pod: far from the 200 % threshold
    assert kpa.decide(now=2, stable_concurrency=139.0, panic_concurrency=139.0, ready=1, current=2) == 2
    assert kpa.panic_time == 2  # 2 panic pods for 1 ready pod: exactly at the threshold panics


def test_kpa_panics_at_twice_the_capacity_and_never_scales_down_while_panicking() -> None:
    kpa = KnativeKPA()
    assert kpa.decide(now=0, stable_concurrency=70.0, panic_concurrency=350.0, ready=1, current=1) == 5
    assert kpa.panic_time == 0
    # The surge is over in the panic window, but panic mode holds the pods for the stable window.
    assert kpa.decide(now=30, stable_concurrency=70.0, panic_concurrency=0.0, ready=5, current=5) == 5
    assert kpa.decide(now=60, stable_concurrency=70.0, panic_concurrency=0.0, ready=5, current=5) == 5
    # After 60 s without panic: out of panic, and down at most by half per tick (max-scale-down-rate 2).
    assert kpa.decide(now=62, stable_concurrency=70.0, panic_concurrency=0.0, ready=5, current=5) == 2
    assert kpa.panic_time is None
    assert kpa.decide(now=64, stable_concurrency=70.0, panic_concurrency=0.0, ready=2, current=2) == 1


def test_kpa_waits_the_grace_period_before_zero() -> None:
    kpa = KnativeKPA()
    assert kpa.decide(now=100, stable_concurrency=0.0, panic_concurrency=0.0, ready=1, current=1) == 1
    assert kpa.next_wakeup(now=100) == 130
    assert kpa.decide(now=128, stable_concurrency=0.0, panic_concurrency=0.0, ready=1, current=1) == 1
    assert kpa.decide(now=130, stable_concurrency=0.0, panic_concurrency=0.0, ready=1, current=1) == 0


def test_kpa_activity_during_the_grace_keeps_the_pod() -> None:
    kpa = KnativeKPA()
    kpa.decide(now=100, stable_concurrency=0.0, panic_concurrency=0.0, ready=1, current=1)
    kpa.on_wake(now=110)
    assert kpa.decide(now=112, stable_concurrency=0.5, panic_concurrency=0.5, ready=1, current=1) == 1
    assert kpa.decide(now=131, stable_concurrency=0.5, panic_concurrency=0.0, ready=1, current=1) == 1


def test_hpa_ignores_changes_within_its_ten_percent_tolerance() -> None:
    hpa = KedaHpa(target=50)
    hpa.on_wake(now=0)
    assert hpa.decide(now=15, metric=105.0, current=2) == 2  # ratio 1.05
    assert hpa.decide(now=45, metric=120.0, current=2) == 3  # ratio 1.2: ceil(120 / 50)


def test_hpa_scales_down_only_after_five_minutes_of_lower_recommendations() -> None:
    hpa = KedaHpa(target=50)
    hpa.on_wake(now=0)
    assert hpa.decide(now=15, metric=150.0, current=1) == 3
    assert hpa.decide(now=30, metric=40.0, current=3) == 3  # held: 3 was recommended within 300 s
    assert hpa.next_wakeup(now=30) == 45  # held recommendations are re-checked every period
    assert hpa.decide(now=300, metric=40.0, current=3) == 3
    assert hpa.decide(now=315, metric=40.0, current=3) == 1  # the 3 of t=15 has left the window


def test_hpa_scale_up_is_limited_to_double_or_four_pods_per_period() -> None:
    hpa = KedaHpa(target=50)
    hpa.on_wake(now=0)
    assert hpa.decide(now=15, metric=1000.0, current=1) == 5  # max(1 x 2, 1 + 4)
    assert hpa.next_wakeup(now=15) == 30


def test_keda_goes_to_zero_after_the_cooldown_at_a_poll() -> None:
    hpa = KedaHpa(target=50)
    hpa.on_wake(now=0)
    for now in (15, 30, 45, 270, 285):
        assert hpa.decide(now=now, metric=0.0, current=1) == 1
    assert hpa.next_wakeup(now=285) == 300
    assert hpa.decide(now=300, metric=0.0, current=1) == 0


def test_keda_activates_a_function_at_zero_on_its_poll_only() -> None:
    hpa = KedaHpa(target=50)
    assert hpa.decide(now=15, metric=2.0, current=0) == 0  # not a polling tick
    assert hpa.next_wakeup(now=15) == 30
    assert hpa.decide(now=30, metric=2.0, current=0) == 1


def test_skipped_ticks_with_the_same_metric_count_as_activity() -> None:
    hpa = KedaHpa(target=50)
    hpa.on_wake(now=0)
    hpa.decide(now=15, metric=3.0, current=1)
    # Nothing changed until t=600: KEDA saw the function active at every poll up to 585.
    assert hpa.decide(now=600, metric=0.0, current=1) == 1
    assert hpa.last_active == 570
    assert hpa.decide(now=840, metric=0.0, current=1) == 1
    assert hpa.decide(now=870, metric=0.0, current=1) == 0  # 300 s after the last active poll
