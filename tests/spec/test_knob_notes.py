"""`autoscaler explain` says what each behaviour knob that is set does over time.

One decision cannot show a delay or a burst window at work, so the explanation carries a sentence
per knob away from its default (`spec.knob_notes`), with the label and its value as written.
"""

from __future__ import annotations

import pytest

from autoscaler.commands.explain import _result, explain_offline
from autoscaler.spec import (
    ACTIVATION_THRESHOLD,
    BURST_THRESHOLD,
    BURST_WINDOW,
    SCALE_DOWN_DELAY,
    ZERO,
    knob_notes,
    parse_labels,
)


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        ({}, []),
        ({SCALE_DOWN_DELAY: "0s"}, []),
        (
            {SCALE_DOWN_DELAY: "2m"},
            ["scale-down-delay=2m: the replicas go down only once a lower recommendation"],
        ),
        ({BURST_THRESHOLD: "250"}, ["burst-threshold=250%", "until 1m (autoscaler.dev/burst-window)"]),
        ({BURST_THRESHOLD: "200", BURST_WINDOW: "90s"}, ["until 1m30s"]),
        (
            {ZERO: "true", ACTIVATION_THRESHOLD: "3"},
            ["leaves the function at zero while its rps figure is at most 3"],
        ),
        ({ACTIVATION_THRESHOLD: "3"}, ["has no effect without com.openfaas.scale.zero=true"]),
    ],
)
def test_each_knob_that_is_set_gets_one_sentence(labels: dict[str, str], says: list[str]) -> None:
    notes = knob_notes(parse_labels(labels))
    assert len(notes) == (1 if says else 0)
    for words in says:
        assert words in notes[0]


def test_the_explanation_carries_the_sentences_and_the_durations_as_written() -> None:
    labels = {SCALE_DOWN_DELAY: "2m", BURST_THRESHOLD: "200"}
    spec, decision = explain_offline(labels=labels, load=10.0, replicas=4, idle=None, now=1000.0)
    body = _result(spec, decision, labels)
    assert len(body["behaviour"]) == 2
    assert "held at 4 by the 120s scale-down delay" in body["reason"]
    assert (body["spec"]["scale_down_delay"], body["spec"]["burst_threshold"]) == (120.0, 2.0)
    assert "behaviour" not in _result(
        *explain_offline(labels={}, load=10.0, replicas=4, idle=None, now=0.0), {}
    )
