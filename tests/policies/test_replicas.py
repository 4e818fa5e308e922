"""The replica formula: OpenFaaS's documented examples and properties that must hold for any input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.model import ScaleType, ScalingSpec
from policies.replicas import desired_replicas, raw_replicas


@pytest.mark.parametrize(
    ("spec", "load", "expected"),
    [
        # OpenFaaS docs: 15 in-flight, target 5, proportion 1.0 -> 3 replicas.
        (ScalingSpec(type=ScaleType.CAPACITY, target=5, target_proportion=1.0), 15, 3),
        # OpenFaaS docs: load 90, target 100, proportion 0.7 -> 2 replicas.
        (ScalingSpec(target=100, target_proportion=0.7), 90, 2),
        # Defaults: 50 rps x 0.9 = 45 per replica.
        (ScalingSpec(), 45, 1),
        (ScalingSpec(), 45.0000000001, 1),
        (ScalingSpec(), 46, 2),
        (ScalingSpec(), 0, 1),
        (ScalingSpec(min_replicas=3), 0, 3),
        (ScalingSpec(max_replicas=4), 10_000, 4),
        (ScalingSpec(type=ScaleType.CPU, target=500, target_proportion=1.0), 1250, 3),
    ],
)
def test_desired_replicas_follow_the_openfaas_formula(spec: ScalingSpec, load: float, expected: int) -> None:
    assert desired_replicas(spec=spec, load=load) == expected


def test_raw_replicas_is_zero_without_load() -> None:
    assert raw_replicas(spec=ScalingSpec(), load=0) == 0


specs = st.builds(
    lambda lo, span, target, proportion: ScalingSpec(
        min_replicas=lo, max_replicas=lo + span, target=target, target_proportion=proportion
    ),
    st.integers(0, 50),
    st.integers(0, 50),
    st.floats(0.001, 1e6),
    st.floats(0.01, 1.0),
)
loads = st.floats(0, 1e9, allow_nan=False)


@given(spec=specs, load=loads)
def test_the_result_is_always_within_min_and_max(spec: ScalingSpec, load: float) -> None:
    replicas = desired_replicas(spec=spec, load=load)
    assert max(spec.min_replicas, 1) <= replicas <= max(spec.max_replicas, 1)


@given(spec=specs, low=loads, high=loads)
def test_more_load_never_means_fewer_replicas(spec: ScalingSpec, low: float, high: float) -> None:
    low, high = sorted((low, high))
    assert desired_replicas(spec=spec, load=low) <= desired_replicas(spec=spec, load=high)
