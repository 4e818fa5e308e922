"""Writes: scaling through the scale subresource, retries and error kinds, Events, the last-active mark."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from autoscaler.errors import ConflictError, NotFoundError, ProviderError
from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionRef
from tests.support.apiserver import FakeApiServer

from .support import FAST, eventually, fn_labels

SCALE = r"/deployments/echo/scale$"
ECHO = FunctionRef(name="echo", namespace="openfaas-fn")


@pytest.fixture
async def provider(api: FakeApiServer, make_provider: Callable[..., Any]) -> Any:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=1)
    return await make_provider(api_timeout=0.5)


async def test_scale_patches_the_scale_subresource(api: FakeApiServer, provider: Any) -> None:
    await provider.scale(ECHO, 4)

    assert api.replicas("echo") == 4
    assert api.count("PATCH", SCALE) == 1
    assert api.count("PATCH", r"/deployments/echo$") == 0  # never the whole Deployment
    await eventually(lambda: provider.get(ECHO).replicas == 4, what="the watch to report 4 replicas")


class TestAWakeUp:
    """The proxy's wake-up writes only over zero: its cache may not have seen a newer scale yet."""

    async def test_scales_a_function_at_zero_with_a_json_patch_conditional_on_zero(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_deployment("echo", labels=fn_labels("echo"), replicas=0)
        provider = await make_provider(api_timeout=0.5)

        assert await provider.wake(ECHO, 2) is True

        assert api.replicas("echo") == 2
        [patch] = [r for r in api.requests if r.method == "PATCH"]
        assert patch.content_type == "application/json-patch+json"

    async def test_leaves_a_function_someone_else_scaled_up_as_it_is(
        self, api: FakeApiServer, provider: Any
    ) -> None:
        await provider.scale(ECHO, 5)  # the controller's scale, which this caller's cache may not show yet

        assert await provider.wake(ECHO, 1) is False

        assert api.replicas("echo") == 5  # a plain scale would have written 1 over it
        assert api.count("PATCH", r"/deployments/echo$") == 1  # one try: a failed test is not retried


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (503, None), (429, 0.05), (409, None)])
async def test_a_transient_failure_is_retried_until_the_scale_succeeds(
    api: FakeApiServer, provider: Any, status: int, retry_after: float | None
) -> None:
    api.fail("PATCH", SCALE, status=status, times=2, retry_after=retry_after)

    await provider.scale(ECHO, 3)

    assert api.replicas("echo") == 3
    assert api.count("PATCH", SCALE) == 3


async def test_a_timed_out_call_is_retried(api: FakeApiServer, provider: Any) -> None:
    api.delay("PATCH", SCALE, seconds=1.0)  # past the 0.5 s api_timeout

    await provider.scale(ECHO, 2)

    assert api.replicas("echo") == 2
    assert api.count("PATCH", SCALE) == 2


async def test_retry_after_is_honoured_on_429(api: FakeApiServer, provider: Any) -> None:
    api.fail("PATCH", SCALE, status=429, retry_after=0.4)
    started = time.monotonic()

    await provider.scale(ECHO, 2)

    assert time.monotonic() - started >= 0.4  # the policy's own backoff is 10-50 ms
    assert api.replicas("echo") == 2


async def test_a_persistent_failure_raises_provider_error_after_bounded_attempts(
    api: FakeApiServer, provider: Any
) -> None:
    api.fail("PATCH", SCALE, status=503, times=100)

    with pytest.raises(ProviderError) as caught:
        await provider.scale(ECHO, 5)

    assert type(caught.value) is ProviderError
    assert (caught.value.status, caught.value.retryable) == (503, True)
    assert "injected failure 503" in str(caught.value)
    assert "gave up after 4 attempts" in str(caught.value)
    assert api.count("PATCH", SCALE) == FAST.attempts
    assert api.replicas("echo") == 1


async def test_a_persistent_conflict_raises_conflict_error(api: FakeApiServer, provider: Any) -> None:
    api.fail("PATCH", SCALE, status=409, times=100)

    with pytest.raises(ConflictError):
        await provider.scale(ECHO, 5)


async def test_scaling_an_unknown_function_raises_not_found_without_retrying(
    api: FakeApiServer, provider: Any
) -> None:
    with pytest.raises(NotFoundError, match=r"scale ghost\.openfaas-fn to 1: HTTP 404"):
        await provider.scale(FunctionRef(name="ghost", namespace="openfaas-fn"), 1)

    assert api.count("PATCH", r"/deployments/ghost/scale$") == 1


async def test_a_negative_replica_count_is_refused_before_any_call(api: FakeApiServer, provider: Any) -> None:
    with pytest.raises(ProviderError, match="replicas must be an integer >= 0"):
        await provider.scale(ECHO, -1)

    assert api.count("PATCH") == 0


async def test_an_event_records_reason_and_message_on_the_deployment(
    api: FakeApiServer, provider: Any
) -> None:
    await provider.record_event(
        ECHO, reason="ScaledUp", message="from 1 to 3 replicas: 120 rps over target 50"
    )

    (event,) = api.events(namespace="openfaas-fn")
    assert (event["reason"], event["type"], event["count"]) == ("ScaledUp", "Normal", 1)
    assert event["message"] == "from 1 to 3 replicas: 120 rps over target 50"
    involved = event["involvedObject"]
    deployment = api.deployment("echo")
    assert (involved["kind"], involved["name"], involved["uid"]) == (
        "Deployment",
        "echo",
        deployment["metadata"]["uid"],
    )
    assert event["source"] == {"component": "autoscaler"}
    assert event["firstTimestamp"] == event["lastTimestamp"]
    assert abs(datetime.fromisoformat(event["firstTimestamp"]).timestamp() - time.time()) < 5


async def test_a_repeated_event_bumps_its_count_instead_of_piling_up(
    api: FakeApiServer, provider: Any
) -> None:
    for _ in range(3):
        await provider.record_event(ECHO, reason="InvalidLabels", message="min > max", warning=True)
    await provider.record_event(ECHO, reason="ScaledDown", message="from 3 to 1")

    events = api.events(namespace="openfaas-fn")
    assert [(e["reason"], e["type"], e["count"]) for e in events] == [
        ("InvalidLabels", "Warning", 3),
        ("ScaledDown", "Normal", 1),
    ]


async def test_a_failed_event_is_logged_and_never_raised(
    api: FakeApiServer, provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api.fail("POST", r"/events$", status=500, times=100)

    await provider.record_event(ECHO, reason="ScaledUp", message="from 1 to 2")

    assert api.events() == []
    assert "could not record event ScaledUp on echo.openfaas-fn" in caplog.text


async def test_the_last_active_mark_round_trips_through_the_annotation(
    api: FakeApiServer, provider: Any
) -> None:
    await provider.mark_active(ECHO, 1_700_000_000.25)

    assert api.deployment("echo")["metadata"]["annotations"][LAST_ACTIVE_ANNOTATION] == "1700000000.250"
    await eventually(lambda: provider.get(ECHO).last_active == 1_700_000_000.25, what="the annotation")


async def test_marks_closer_than_the_interval_are_coalesced(api: FakeApiServer, provider: Any) -> None:
    for when in (1000.0, 1001.0, 999.0, 1004.9, 1005.0):
        await provider.mark_active(ECHO, when)

    assert api.count("PATCH", r"/deployments/echo$") == 2
    assert api.deployment("echo")["metadata"]["annotations"][LAST_ACTIVE_ANNOTATION] == "1005.000"


async def test_an_unreadable_last_active_annotation_is_ignored(
    api: FakeApiServer, provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api.update_deployment("echo", annotations={LAST_ACTIVE_ANNOTATION: "yesterday"}, replicas=2)

    await eventually(lambda: provider.get(ECHO).replicas == 2, what="the update")
    assert provider.get(ECHO).last_active is None
    assert "is not unix seconds" in caplog.text
