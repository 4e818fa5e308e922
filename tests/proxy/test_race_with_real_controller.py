"""Invariant 2 with the real control loop: a scale-to-zero tick fired in the middle of a cold start is refused.

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
from tests.proxy.conftest import base, wait_held
from tests.support.fakeprovider import FakeProvider
from tests.support.memory import StaticReader

ZERO_DURATION = 60.0
LABELS = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": f"{ZERO_DURATION:g}s"}
REQUESTS = 20
SLOW = 0.5  # seconds each request spends inside the function


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
    assert decision.reason is not Reason.SCALE_TO_ZERO and decision.desired >= 1, decision
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
        await tick(far + 1)
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

        results = await asyncio.wait_for(asyncio.gather(*calls), timeout=20)

    assert [status for status, _ in results] == [200] * REQUESTS
    assert [digest for _, digest in results] == [hashlib.sha256(body).hexdigest() for body in bodies]
    assert len(reports) == 3
    for report in reports:
        refused_zero(report, key)
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
