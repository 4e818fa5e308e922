"""A bad behaviour knob on a function, through one real control-loop tick: the function keeps its
replicas, and one warning Event names the label, the value and what is allowed."""

from __future__ import annotations

import pytest

from autoscaler.config import ControllerSettings
from autoscaler.controller import Controller
from autoscaler.spec import ACTIVATION_THRESHOLD, BURST_THRESHOLD, BURST_WINDOW, SCALE_DOWN_DELAY
from policies.model import Load, Reason
from tests.support.memory import MemoryProvider, StaticReader


@pytest.mark.parametrize(
    ("label", "value", "allowed"),
    [
        (SCALE_DOWN_DELAY, "2h", "from 0s to 1h"),
        (BURST_THRESHOLD, "50", "from 110 to 1000"),
        (BURST_WINDOW, "1s", "from 6s to 1h"),
        (ACTIVATION_THRESHOLD, "-3", "a number >= 0"),
    ],
)
async def test_a_bad_knob_leaves_the_function_alone_and_says_why(
    label: str, value: str, allowed: str
) -> None:
    provider, reader = MemoryProvider(), StaticReader()
    provider.add("bad", replicas=3, labels={label: value})
    reader.loads = {"bad.openfaas-fn": Load(rps=900.0, inflight=0.0, cpu=0.0, started_total=0.0)}
    loop = Controller(provider=provider, reader=reader, settings=ControllerSettings())
    for now in (0.0, 2.0):
        report = await loop.tick(now=now)
    await loop.close()
    assert provider.scaled == []
    assert report.decisions["bad.openfaas-fn"].reason is Reason.INVALID_SPEC
    [(key, reason, message, warning)] = provider.events
    assert (key, reason, warning) == ("bad.openfaas-fn", "InvalidScalingLabels", True)
    assert f"{label}={value!r}" in message
    assert allowed in message
