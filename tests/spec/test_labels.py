"""Labels -> ScalingSpec: OpenFaaS defaults, Go durations, and errors that name label, value and remedy."""

from __future__ import annotations

import pytest

from autoscaler.errors import SpecError
from autoscaler.spec import format_duration, parse_duration, parse_labels, unsupported, zero_enabled
from policies.model import KeepAlive, ScaleType, ScalingSpec

P = "com.openfaas.scale."


def test_no_labels_give_the_openfaas_defaults() -> None:
    assert parse_labels({}) == ScalingSpec(
        min_replicas=1,
        max_replicas=20,
        target=50,
        type=ScaleType.RPS,
        target_proportion=0.9,
        zero=False,
        zero_duration=900,
        down_window=0,
    )


def test_every_label_is_read() -> None:
    spec = parse_labels(
        {
            P + "min": "2",
            P + "max": "8",
            P + "target": "5",
            P + "type": "capacity",
            P + "target-proportion": "0.7",
            P + "zero": "true",
            P + "zero-duration": "1h30m",
            P + "down.window": "90s",
            "autoscaler.dev/keepalive": "adaptive",
        }
    )
    assert spec == ScalingSpec(
        min_replicas=2,
        max_replicas=8,
        target=5,
        type=ScaleType.CAPACITY,
        target_proportion=0.7,
        zero=True,
        zero_duration=5400,
        down_window=90,
        keepalive=KeepAlive.ADAPTIVE,
    )


@pytest.mark.parametrize("value", ["true", " TRUE ", "False", " false", "yes", "1", "", None])
def test_the_proxys_quick_zero_check_agrees_with_the_full_parse(value: str | None) -> None:
    labels = {} if value is None else {P + "zero": value}
    try:
        parsed = parse_labels(labels).zero
    except SpecError:
        parsed = False  # the loop refuses the spec and never scales such a function to zero
    assert zero_enabled(labels) is parsed


def test_unrelated_labels_are_ignored() -> None:
    assert parse_labels({"faas_function": "x", "app": "y"}) == ScalingSpec()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25), ("0", 0), ("2m30s", 150)],
)
def test_go_durations_are_understood(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["15 minutes", "", "m", "-5m", "10", "5d", "1h 30m"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_print_back_in_go_syntax() -> None:
    assert [format_duration(s) for s in (900, 5400, 90, 1.5, 0)] == ["15m", "1h30m", "1m30s", "1.5s", "0s"]


@pytest.mark.parametrize(
    ("labels", "label", "hint"),
    [
        ({P + "min": "abc"}, P + "min", "whole number"),
        ({P + "min": "5", P + "max": "2"}, P + "min", "at most com.openfaas.scale.max (2)"),
        ({P + "max": "0"}, P + "max", "whole number >= 1"),
        ({P + "target": "0"}, P + "target", "number > 0"),
        ({P + "target": "fast"}, P + "target", "number > 0"),
        ({P + "type": " "}, P + "type", "one of rps, capacity, cpu, queue"),
        ({P + "zero-duration": "15 minutes"}, P + "zero-duration", "Go duration"),
        ({P + "zero-duration": "0"}, P + "zero-duration", "Go duration > 0"),
        ({P + "target-proportion": "1.5"}, P + "target-proportion", "<= 1"),
        ({P + "target-proportion": "nan"}, P + "target-proportion", "<= 1"),
        ({P + "zero": "yes"}, P + "zero", "one of true, false"),
        ({P + "down.window": "10m"}, P + "down.window", "at most 5m"),
        ({"autoscaler.dev/keepalive": "magic"}, "autoscaler.dev/keepalive", "fixed, adaptive"),
    ],
)
def test_invalid_labels_name_the_label_the_value_and_what_is_allowed(
    labels: dict[str, str], label: str, hint: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_labels(labels)
    assert caught.value.label == label
    message = str(caught.value)
    assert label in message
    assert repr(labels[label]) in message
    assert hint in message


@pytest.mark.parametrize(
    ("value", "kind", "named"),
    [("Latency-P99", ScaleType.UNSUPPORTED, "type='Latency-P99' is not a scaling type")],
)  # fmt: skip
def test_a_type_the_loop_does_not_measure_is_a_warning_not_an_invalid_spec(
    value: str, kind: ScaleType, named: str
) -> None:
    spec = parse_labels({P + "type": value, P + "zero": "true", P + "zero-duration": "2m"})
    assert spec.type is kind
    assert not spec.type.measured
    note = unsupported(spec)
    assert note is not None
    assert named in note
    assert "scale to zero after 2m idle and waking on traffic still apply" in note


def test_measured_types_carry_no_warning() -> None:
    for value in ("rps", "capacity", "CPU", "queue"):
        assert unsupported(parse_labels({P + "type": value})) is None
