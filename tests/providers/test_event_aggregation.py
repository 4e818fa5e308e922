"""A function that flaps, or whose messages carry changing numbers, makes few Event objects, not one each.

Counted on the fake API server: Event objects created (POST) against Events patched (PATCH), as
client-go's EventCorrelator would leave them (`tools/record/events_cache.go`: 10 similar events
within 10 minutes, then one aggregate whose count is bumped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, CoreV1Api

from autoscaler.interfaces import FunctionRef
from autoscaler.providers.kubernetes._budget import WriteBudget
from autoscaler.providers.kubernetes._events import (
    AGGREGATE_INTERVAL,
    AGGREGATE_MAX_EVENTS,
    AGGREGATE_PREFIX,
    EventRecorder,
)
from tests.support.apiserver import FakeApiServer

from .support import FAST, fn_labels

ECHO = FunctionRef(name="echo", namespace="openfaas-fn")
CREATED, PATCHED = r"/namespaces/openfaas-fn/events$", r"/namespaces/openfaas-fn/events/[^/]+$"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def provider(api: FakeApiServer, make_provider: Callable[..., Any]) -> Any:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=1)
    return await make_provider(budget=WriteBudget(qps=0, burst=1))  # Events not paced: counted


@pytest.fixture
async def recorder(api_client: ApiClient) -> tuple[EventRecorder, Clock]:
    """The provider's recorder on a clock the test moves, writing through a real client."""
    core, clock = CoreV1Api(api_client), Clock()
    return (
        EventRecorder(
            create=core.create_namespaced_event,
            patch=core.patch_namespaced_event,
            retry=FAST,
            component="autoscaler",
            instance="test",
            uid_of=lambda ref: None,
            clock=clock,
        ),
        clock,
    )


def by_reason(api: FakeApiServer) -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for event in api.events(namespace="openfaas-fn"):
        found.setdefault(event["reason"], []).append((event["count"], event["message"]))
    return found


async def test_a_function_flapping_up_and_down_with_changing_loads_makes_ten_events_per_reason_then_counts(
    api: FakeApiServer, provider: Any
) -> None:
    for i in range(30):
        up, down = f"Scaled from 1 to 3 replicas: {100 + i} rps", f"Scaled from 3 to 1 replicas: {i} rps"
        await provider.record_event(ECHO, reason="ScaleUp", message=up)
        await provider.record_event(ECHO, reason="ScaleDown", message=down)

    assert api.count("POST", CREATED) == 2 * AGGREGATE_MAX_EVENTS
    assert api.count("PATCH", PATCHED) == 2 * (30 - AGGREGATE_MAX_EVENTS)
    events = by_reason(api)
    for reason, last in (("ScaleUp", "129 rps"), ("ScaleDown", "29 rps")):
        singles, aggregate = events[reason][:-1], events[reason][-1]
        assert [count for count, _ in singles] == [1] * (AGGREGATE_MAX_EVENTS - 1)
        assert aggregate[0] == 30 - (AGGREGATE_MAX_EVENTS - 1)
        assert aggregate[1].startswith(AGGREGATE_PREFIX)
        assert aggregate[1].endswith(last)


async def test_a_function_flapping_between_the_same_two_decisions_keeps_two_events_and_bumps_them(
    api: FakeApiServer, provider: Any
) -> None:
    for _ in range(20):
        await provider.record_event(ECHO, reason="Wake", message="Scaled from 0 to 1 replicas: a request")
        await provider.record_event(ECHO, reason="ScaleToZero", message="Scaled from 1 to 0 replicas: idle")

    assert api.count("POST", CREATED) == 2
    assert api.count("PATCH", PATCHED) == 38
    assert {reason: [c for c, _ in found] for reason, found in by_reason(api).items()} == {
        "Wake": [20],
        "ScaleToZero": [20],
    }


async def test_similar_events_are_counted_afresh_after_a_quiet_interval(
    api: FakeApiServer, recorder: tuple[EventRecorder, Clock]
) -> None:
    events, clock = recorder
    for i in range(12):
        await events.record(ECHO, reason="ScaleUp", message=f"to {i}")
        clock.now += 1
    assert api.count("POST", CREATED) == AGGREGATE_MAX_EVENTS

    clock.now += AGGREGATE_INTERVAL + 1
    await events.record(ECHO, reason="ScaleUp", message="to 99")

    assert api.count("POST", CREATED) == AGGREGATE_MAX_EVENTS + 1
    assert by_reason(api)["ScaleUp"][-1] == (1, "to 99")  # its own Event, not the aggregate's


async def test_other_functions_and_reasons_are_never_combined_with_each_other(
    api: FakeApiServer, provider: Any
) -> None:
    api.add_deployment("other", labels=fn_labels("other"), replicas=1)
    for i in range(AGGREGATE_MAX_EVENTS - 1):
        for ref in (ECHO, FunctionRef(name="other", namespace="openfaas-fn")):
            for reason in ("ScaleUp", "ScaleDown"):
                await provider.record_event(ref, reason=reason, message=f"{reason} {i}")

    assert api.count("POST", CREATED) == 4 * (AGGREGATE_MAX_EVENTS - 1)
    assert not any(e["message"].startswith(AGGREGATE_PREFIX) for e in api.events())


async def test_the_recorder_forgets_the_least_recently_used_series_past_its_bound() -> None:
    written: list[str] = []

    async def create(namespace: str, body: Any) -> None:
        written.append(body.metadata.name)

    async def patch(name: str, namespace: str, body: Any) -> None:
        raise AssertionError("nothing repeats here")

    events = EventRecorder(
        create=create,
        patch=patch,
        retry=FAST,
        component="c",
        instance="i",
        uid_of=lambda ref: None,
        max_series=50,
    )
    for i in range(150):
        await events.record(FunctionRef(name=f"fn-{i}", namespace="ns"), reason="ScaleUp", message="x")

    assert len(written) == 150
    assert len(events._series) == len(events._groups) == 50
    assert min(key[0] for key in events._series) == "fn-100.ns"  # the oldest ones went first
