"""The last-active mark's one throttle: PATCHes counted at the fake API server.

At most one write per function per interval, however many callers mark it; marks for many functions
at once go through a few writers; a caller returns once the write covering its mark has landed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from autoscaler.errors import ProviderError
from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionRef
from autoscaler.providers.kubernetes._marks import WRITERS
from tests.support.apiserver import FakeApiServer

from .support import FAST, eventually, fn_labels

INTERVAL = 5.0
ECHO = FunctionRef(name="echo", namespace="openfaas-fn")
ECHO_PATCH = r"/deployments/echo$"


def mark_of(api: FakeApiServer, name: str) -> str | None:
    annotations = api.deployment(name)["metadata"].get("annotations") or {}
    value = annotations.get(LAST_ACTIVE_ANNOTATION)
    return None if value is None else str(value)


@pytest.fixture
async def provider(api: FakeApiServer, make_provider: Callable[..., Any]) -> Any:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=1)
    return await make_provider(mark_active_interval=INTERVAL)


async def test_a_crowd_marking_one_function_within_the_interval_makes_one_patch_and_all_wait_for_it(
    api: FakeApiServer, provider: Any
) -> None:
    api.delay("PATCH", ECHO_PATCH, seconds=0.2)
    landed: list[str | None] = []

    async def mark(when: float) -> None:
        await provider.mark_active(ECHO, when)
        landed.append(mark_of(api, "echo"))

    await asyncio.gather(*(mark(1000.0 + i * 0.04) for i in range(100)))

    assert api.count("PATCH", ECHO_PATCH) == 1
    assert landed == ["1000.000"] * 100, "a caller returned before the write covering its mark landed"


async def test_marks_for_many_functions_at_once_go_through_a_few_writers_one_patch_each(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    names = [f"fn-{i}" for i in range(40)]
    for name in names:
        api.add_deployment(name, labels=fn_labels(name), replicas=1)
    provider = await make_provider(mark_active_interval=INTERVAL)
    api.delay("PATCH", r"/deployments/fn-\d+$", seconds=0.02, times=len(names))
    most_in_flight = most_writers = 0

    async def watch_the_burst() -> None:
        nonlocal most_in_flight, most_writers
        while True:
            written = sum(1 for name in names if mark_of(api, name) is not None)
            most_in_flight = max(most_in_flight, api.count("PATCH", r"/deployments/fn-") - written)
            writers = [t for t in asyncio.all_tasks() if t.get_name() == "last-active marks"]
            most_writers = max(most_writers, len(writers))
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(watch_the_burst())
    try:
        await asyncio.gather(
            *(provider.mark_active(FunctionRef(name=n, namespace="openfaas-fn"), 1000.0) for n in names)
        )
    finally:
        sampler.cancel()

    assert api.count("PATCH", r"/deployments/fn-") == len(names)
    assert all(mark_of(api, name) == "1000.000" for name in names)
    assert 1 <= most_writers <= WRITERS
    assert most_in_flight <= WRITERS
    await eventually(
        lambda: not [t for t in asyncio.all_tasks() if t.get_name() == "last-active marks"],
        what="the writers to end once the queue is empty",
    )


async def test_a_mark_an_interval_later_waits_for_the_write_in_flight_and_never_overtakes_it(
    api: FakeApiServer, provider: Any
) -> None:
    api.delay("PATCH", ECHO_PATCH, seconds=0.2)
    first = asyncio.create_task(provider.mark_active(ECHO, 1000.0))
    await eventually(lambda: api.count("PATCH", ECHO_PATCH) == 1, what="the first write to be sent")

    second = asyncio.create_task(provider.mark_active(ECHO, 1000.0 + INTERVAL + 1))
    await asyncio.sleep(0.05)
    assert api.count("PATCH", ECHO_PATCH) == 1, "a second write of the same function overlapped the first"
    await asyncio.gather(first, second)

    assert api.count("PATCH", ECHO_PATCH) == 2
    assert mark_of(api, "echo") == "1006.000"


async def test_a_queued_mark_takes_a_later_one_along_in_a_single_write(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    busy = [f"busy-{i}" for i in range(WRITERS)]
    for name in ["echo", *busy]:
        api.add_deployment(name, labels=fn_labels(name), replicas=1)
    provider = await make_provider(mark_active_interval=INTERVAL)
    api.delay("PATCH", r"/deployments/busy-\d+$", seconds=0.2, times=WRITERS)
    ahead = [
        asyncio.create_task(provider.mark_active(FunctionRef(name=n, namespace="openfaas-fn"), 1000.0))
        for n in busy
    ]
    await eventually(lambda: api.count("PATCH", r"/deployments/busy-") == WRITERS, what="every writer busy")

    queued = asyncio.create_task(provider.mark_active(ECHO, 1000.0))
    later = asyncio.create_task(provider.mark_active(ECHO, 1020.0))
    await asyncio.gather(*ahead, queued, later)

    assert api.count("PATCH", ECHO_PATCH) == 1
    assert mark_of(api, "echo") == "1020.000"


async def test_a_failed_write_is_raised_to_everyone_waiting_on_it_and_the_next_mark_writes_again(
    api: FakeApiServer, provider: Any
) -> None:
    api.fail("PATCH", ECHO_PATCH, status=503, times=FAST.attempts)

    outcomes = await asyncio.gather(
        provider.mark_active(ECHO, 1000.0), provider.mark_active(ECHO, 1001.0), return_exceptions=True
    )
    assert [type(o) for o in outcomes] == [ProviderError, ProviderError]
    assert mark_of(api, "echo") is None

    await provider.mark_active(ECHO, 1002.0)

    assert api.count("PATCH", ECHO_PATCH) == FAST.attempts + 1
    assert mark_of(api, "echo") == "1002.000"


async def test_a_mark_the_cluster_already_shows_within_the_interval_costs_no_patch(
    api: FakeApiServer, provider: Any
) -> None:
    api.update_deployment("echo", annotations={LAST_ACTIVE_ANNOTATION: "1000.000"})
    await eventually(lambda: provider.get(ECHO).last_active == 1000.0, what="the watch to see the mark")

    await provider.mark_active(ECHO, 1000.0 + INTERVAL - 0.5)
    assert api.count("PATCH", ECHO_PATCH) == 0

    await provider.mark_active(ECHO, 1000.0 + INTERVAL)
    assert api.count("PATCH", ECHO_PATCH) == 1
