"""Invariant 2 with the real control loop: a scale-to-zero tick fired during a cold start is refused.

The real `Proxy` and the real `Controller` share one process, as in the local mode: the loop gets the
proxy's `busy` signal and reads load either from metrics that lag behind the burst (they still show the
function idle, as a Prometheus that has not scraped it yet would) or from the proxy's own counters.
Each tick is fired at a `now` far beyond the zero-duration, at the exact moments the race can happen:
when the wake-up scales the function, while requests are held, while they are inside the (slow)
function. None of them may send the function to zero and every request must end 200; once the
requests are done and the zero-duration has passed, the same loop does scale it to zero.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from autoscaler.config import ControllerSettings, ProxySettings
from autoscaler.controller import Controller, TickReport
from autoscaler.inprocess import ProxyLoadReader
from autoscaler.interfaces import FunctionRef, LoadReader
from autoscaler.proxy import Proxy
from policies.model import Load, Reason
from tests.proxy.conftest import VirtualClock, base, wait_held
from tests.support.fakeprovider import FakeProvider
from tests.support.memory import StaticReader

ZERO_DURATION = 60.0
LABELS = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": f"{ZERO_DURATION:g}s"}
REQUESTS = 20
SLOW = 2.0  # seconds each request spends inside the function: all 20 inside at once, under load too


def lagging_metrics(key: str) -> Callable[[Proxy, FakeProvider], LoadReader]:
    """Metrics that still say "idle": the started counter never moves and nothing is in flight."""

    def make(_proxy: Proxy, _provider: FakeProvider) -> LoadReader:
        reader = StaticReader()
        reader.loads = {key: Load(rps=0.0, inflight=0.0, cpu=None, started_total=0.0)}
        return reader

    return make


def proxy_counters(proxy: Proxy, provider: FakeProvider) -> LoadReader:
    return ProxyLoadReader(stats=proxy.invocation_stats, known=lambda: provider.functions().keys())


@dataclass
class World:
    provider: FakeProvider
    proxy: Proxy
    controller: Controller
    ref: FunctionRef


@pytest.fixture(params=["lagging metrics", "the proxy's own counters"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    provider = FakeProvider(ready_delay=30.0)  # a slow start: the test says when the replica is ready
    ref = await provider.add("racy", warm=False, labels=LABELS)
    proxy = Proxy(settings=ProxySettings(host="127.0.0.1", port=0, admin_port=0), provider=provider)
    await proxy.start()
    make = lagging_metrics(ref.key) if request.param == "lagging metrics" else proxy_counters
    controller = Controller(
        provider=provider,
        reader=make(proxy, provider),
        settings=ControllerSettings(interval=1.0),
        busy=proxy.busy,
    )
    try:
        yield World(provider=provider, proxy=proxy, controller=controller, ref=ref)
    finally:
        await controller.close()
        await proxy.stop()
        await provider.close()


def refused_zero(report: TickReport, key: str) -> None:
    decision = report.decisions[key]
    assert decision.reason is not Reason.SCALE_TO_ZERO, decision
    assert decision.desired >= 1, decision
    assert key not in report.failed


async def test_ticks_fired_while_requests_are_held_or_inside_the_function_never_scale_it_to_zero(
    world: World,
) -> None:
    provider, proxy, controller, ref = world.provider, world.proxy, world.controller, world.ref
    key = ref.key
    far = time.time() + 10 * ZERO_DURATION  # by the clock alone, idle for ages
    reports: list[TickReport] = []
    racing: list[asyncio.Task[None]] = []

    async def tick(now: float) -> None:
        reports.append(await controller.tick(now=now))

    def at_scale(_ref: FunctionRef, replicas: int) -> None:
        if replicas > 0 and not racing:  # the wake-up is scaling the function up right now
            racing.append(asyncio.get_running_loop().create_task(tick(far)))

    provider.on_scale = at_scale
    bodies = [f"body {i} ".encode() * 50 for i in range(REQUESTS)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:

        async def call(body: bytes) -> tuple[int, str]:
            url = f"{base(proxy)}/function/racy/slow?seconds={SLOW}"
            async with client.post(url, data=body, timeout=aiohttp.ClientTimeout(total=20)) as response:
                echo = await response.json() if response.status == 200 else {}
                return response.status, echo.get("body_sha256", "")

        calls = [asyncio.create_task(call(body)) for body in bodies]
        # 1. At the moment the wake-up scales the function up, and 2. while all requests are held.
        await wait_held(proxy, key, REQUESTS)
        await asyncio.wait_for(asyncio.gather(*racing), timeout=5)
        assert len(racing) == 1
        refused_zero(reports[-1], key)
        await tick(far + 1)
        refused_zero(reports[-1], key)
        assert proxy.invocation_stats()[key].held == REQUESTS

        # 3. While every request is inside the function.
        provider.ready_now(ref)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while (upstream := provider.upstream(ref)) is None or len(upstream.received) < REQUESTS:
            assert loop.time() < deadline, "the held requests were never forwarded"
            await asyncio.sleep(0.005)
        stats = proxy.invocation_stats()[key]
        assert (stats.held, stats.inflight) == (0, REQUESTS)
        await tick(far + 2)
        refused_zero(reports[-1], key)

        results = await asyncio.wait_for(asyncio.gather(*calls), timeout=20)

    assert [status for status, _ in results] == [200] * REQUESTS
    assert [digest for _, digest in results] == [hashlib.sha256(body).hexdigest() for body in bodies]
    assert len(reports) == 3
    assert provider.scale_calls == [(ref, 1)]

    # 4. Done and idle, but active within the zero-duration: still refused.
    assert not proxy.busy(key)
    await tick(far + 3)
    refused_zero(reports[-1], key)
    # 5. Idle for the whole zero-duration: now the same loop scales it to zero.
    await tick(far + 2 + ZERO_DURATION + 1)
    assert reports[-1].decisions[key].reason is Reason.SCALE_TO_ZERO
    assert reports[-1].patched == [key]
    assert provider.scale_calls == [(ref, 1), (ref, 0)]


class CoalescingMarks(FakeProvider):
    """Writes a mark only when the last one is `interval` seconds old, as KubernetesProvider does."""

    def __init__(self, *, interval: float, ready_delay: float) -> None:
        super().__init__(ready_delay=ready_delay)
        self.interval = interval
        self._written: dict[str, float] = {}

    async def mark_active(self, ref: FunctionRef, when: float) -> None:
        if when < self._written.get(ref.key, float("-inf")) + self.interval:
            return
        self._written[ref.key] = when
        await super().mark_active(ref, when)


async def test_traffic_the_metrics_first_show_after_it_ended_still_gets_its_whole_zero_duration() -> None:
    # Prometheus scrapes a function's series only after the proxy served it (a 15 s scrape interval is
    # common): the loop's first sample of the started counter may come after the traffic, and the
    # provider writes the proxy's activity marks only every few seconds. The idle time must not include
    # traffic.
    clock = VirtualClock()
    provider = CoalescingMarks(interval=5.0, ready_delay=0.05)
    ref = await provider.add("late", warm=False, labels=LABELS)
    proxy = Proxy(
        settings=ProxySettings(host="127.0.0.1", port=0, admin_port=0), provider=provider, clock=clock
    )
    await proxy.start()
    reader = StaticReader()  # no sample of the function yet
    controller = Controller(
        provider=provider, reader=reader, settings=ControllerSettings(interval=1.0), busy=proxy.busy
    )
    try:
        await controller.tick(now=clock.now)
        woken = clock.now
        async with aiohttp.ClientSession() as client:
            for step in (0.0, 4.0):  # the wake-up, then warm calls within the mark interval
                clock.now = woken + step
                for _ in range(3):
                    async with client.get(f"{base(proxy)}/function/late/") as response:
                        assert response.status == 200
        assert [when for _, when in provider.mark_active_calls] == [woken]
        last_call = clock.now
        stats = proxy.invocation_stats()[ref.key]
        clock.now = last_call + 0.5  # the first scrape: everything is already over
        reader.loads = {ref.key: Load(rps=0.0, inflight=0.0, started_total=stats.started_total)}
        await controller.tick(now=clock.now)

        report = await controller.tick(now=woken + ZERO_DURATION + 1)  # idle only ZERO_DURATION - 3
        refused_zero(report, ref.key)
        report = await controller.tick(now=last_call + ZERO_DURATION + 1)
        assert report.decisions[ref.key].reason is Reason.SCALE_TO_ZERO
        assert provider.scale_calls == [(ref, 1), (ref, 0)]
    finally:
        await controller.close()
        await proxy.stop()
        await provider.close()
