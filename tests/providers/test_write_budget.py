"""The API write budget: a burst of writes is served at the budget's rate, wake-ups first, Events last.

The bucket's clock is virtual: its sleep advances the clock only once every write it already let
through has reached the fake API server, so the order the server saw is the order the budget served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from autoscaler.interfaces import FunctionRef
from autoscaler.providers.kubernetes._budget import Priority, WriteBudget, scale_priority
from tests.support.apiserver import FakeApiServer

from .support import eventually, fn_labels

NAMESPACE = "openfaas-fn"
WRITES = r"/deployments/[^/]+(/scale)?$|/events$"


class VirtualClock:
    """`clock()` and `sleep()` for a WriteBudget; a sleep first lets granted writes reach the server."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api
        self.now = 0.0
        self.budget: WriteBudget | None = None
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert self.budget is not None
        taken = self.budget.taken
        await eventually(lambda: writes(self.api) >= taken, what=f"{taken} writes at the server")
        self.sleeps.append(seconds)
        self.now += seconds


def writes(api: FakeApiServer) -> int:
    return len(written(api))


def written(api: FakeApiServer) -> list[str]:
    """What each write the server saw was about, in order: `scale NAME`, `mark NAME` or `event`."""
    out = []
    for r in api.requests:
        if r.method not in ("PATCH", "POST"):
            continue
        if r.path.endswith("/events"):
            out.append("event")
        elif r.path.endswith("/scale"):
            out.append(f"scale {r.path.split('/')[-2]}")
        elif "/deployments/" in r.path:
            out.append(f"mark {r.path.split('/')[-1]}")
    return out


@pytest.fixture
async def budgeted(api: FakeApiServer, make_provider: Callable[..., Any]) -> tuple[Any, VirtualClock]:
    clock = VirtualClock(api)
    budget = WriteBudget(qps=10, burst=5, clock=clock.clock, sleep=clock.sleep)
    clock.budget = budget
    for group, replicas in (("wake", 0), ("up", 1), ("down", 3), ("busy", 2)):
        for i in range(6):
            api.add_deployment(f"{group}-{i}", labels=fn_labels(f"{group}-{i}"), replicas=replicas)
    provider = await make_provider(budget=budget)
    return provider, clock


def ref(name: str) -> FunctionRef:
    return FunctionRef(name=name, namespace=NAMESPACE)


def test_a_scale_from_zero_is_a_wake_up_then_come_scale_ups_then_scale_downs() -> None:
    assert scale_priority(0, 1) is Priority.WAKE
    assert scale_priority(1, 3) is Priority.UP
    assert scale_priority(None, 2) is Priority.UP  # unknown to the cache: not held back
    assert scale_priority(3, 1) is Priority.DOWN
    assert scale_priority(0, 0) is Priority.DOWN
    assert Priority.WAKE < Priority.UP < Priority.DOWN < Priority.LAST


async def test_queued_writes_are_served_wake_ups_first_then_ups_downs_and_events_and_marks_last(
    api: FakeApiServer, budgeted: tuple[Any, VirtualClock]
) -> None:
    provider, _ = budgeted
    calls = [provider.scale(ref(f"down-{i}"), 1) for i in range(5)]  # these take the burst
    for i in range(1, 6):  # then every kind, interleaved, in the order a busy tick might ask
        calls += [
            provider.record_event(ref(f"up-{i}"), reason="ScaledUp", message=f"event {i}"),
            provider.mark_active(ref(f"busy-{i}"), 1000.0 + i),
            provider.scale(ref(f"down-{i}"), 2),
            provider.scale(ref(f"up-{i}"), 4),
            provider.scale(ref(f"wake-{i}"), 1),
        ]

    await asyncio.gather(*calls)

    served = written(api)
    assert sorted(served[:5]) == [f"scale down-{i}" for i in range(5)]
    queued = served[5:]
    assert queued[:5] == [f"scale wake-{i}" for i in range(1, 6)]
    assert queued[5:10] == [f"scale up-{i}" for i in range(1, 6)]
    assert queued[10:15] == [f"scale down-{i}" for i in range(1, 6)]
    # Events and routine marks last (a mark asks once a mark writer task takes it up).
    assert sorted(queued[15:]) == sorted(["event"] * 5 + [f"mark busy-{i}" for i in range(1, 6)])


async def test_a_burst_drains_at_the_budgets_rate_once_the_burst_is_spent(
    api: FakeApiServer, budgeted: tuple[Any, VirtualClock]
) -> None:
    provider, clock = budgeted
    names = [f"{group}-{i}" for group in ("wake", "up", "down", "busy") for i in range(6)]

    await asyncio.gather(*(provider.scale(ref(name), 5) for name in names))

    assert writes(api) == len(names) == 24
    # 5 at once, then the other 19 at 10 per second: 1.9 s of virtual time, one token per sleep.
    assert clock.now == pytest.approx(1.9)
    assert all(s == pytest.approx(0.1) for s in clock.sleeps)


async def test_the_mark_of_a_function_at_zero_goes_with_the_wake_ups(
    api: FakeApiServer, budgeted: tuple[Any, VirtualClock]
) -> None:
    provider, _ = budgeted
    calls = [provider.scale(ref(f"down-{i}"), 1) for i in range(5)]
    calls += [provider.scale(ref("down-5"), 1), provider.mark_active(ref("busy-0"), 1000.0)]
    calls += [provider.mark_active(ref("wake-0"), 1000.0)]

    await asyncio.gather(*calls)

    assert written(api)[5:] == ["mark wake-0", "scale down-5", "mark busy-0"]


async def test_a_retried_write_takes_a_token_per_attempt(
    api: FakeApiServer, budgeted: tuple[Any, VirtualClock]
) -> None:
    provider, clock = budgeted
    api.fail("PATCH", r"/deployments/up-0/scale$", status=503, times=2)

    await provider.scale(ref("up-0"), 2)

    assert api.count("PATCH", r"/deployments/up-0/scale$") == 3
    assert clock.budget is not None
    assert clock.budget.taken == 3


async def test_with_no_rate_every_write_goes_at_once(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    for i in range(40):
        api.add_deployment(f"fn-{i}", labels=fn_labels(f"fn-{i}"), replicas=1)
    provider = await make_provider(budget=WriteBudget(qps=0, burst=1, sleep=_never))

    await asyncio.gather(*(provider.scale(ref(f"fn-{i}"), 2) for i in range(40)))

    assert api.count("PATCH", r"/scale$") == 40


async def _never(seconds: float) -> None:
    raise AssertionError(f"a budget without a rate slept {seconds}s")


def test_the_default_budget_is_controller_runtimes_20_per_second_burst_30() -> None:
    from autoscaler.config import ProviderSettings

    settings = ProviderSettings()
    assert (settings.api_qps, settings.api_burst) == (20.0, 30)
