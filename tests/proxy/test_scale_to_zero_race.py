"""Invariant 2: a function the proxy woke, holds or forwards requests for is never scaled to zero.

The race is fired on purpose: a controller step that wants the function at zero runs exactly when the
proxy's wake-up scales it up (requests held), again while the requests are inside the function
(being forwarded), and again just after they finished. Each time it must be refused because of the
proxy's signals (`busy`, the last-active time), and every request must end 200. Only once the
function has been idle for its whole zero-duration does the same step scale it to zero.
"""

from __future__ import annotations

import asyncio

import aiohttp

from autoscaler.config import ProxySettings
from autoscaler.interfaces import FunctionRef
from autoscaler.proxy import Proxy
from tests.proxy.conftest import MakeProxy, VirtualClock, base, wait_held
from tests.support.fakeprovider import FakeProvider

ZERO_DURATION = 900.0  # com.openfaas.scale.zero-duration=15m


async def controller_step(*, provider: FakeProvider, proxy: Proxy, ref: FunctionRef, now: float) -> str:
    """One scale-to-zero decision for a function whose metrics show no traffic at all."""
    info = provider.get(ref)
    assert info is not None
    if proxy.busy(ref.key):
        return "refused: busy"
    if info.last_active is not None and now - info.last_active < ZERO_DURATION:
        return "refused: active within zero-duration"
    await provider.scale(ref, 0)
    return "scaled to zero"


async def test_scale_to_zero_racing_a_wake_up_is_refused_and_every_request_is_served(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    clock = VirtualClock()
    ref = await provider.add("racy", warm=False, ready_delay=30, labels={"com.openfaas.scale.zero": "true"})
    proxy = await make_proxy(clock=clock)
    long_after = clock.now + 10 * ZERO_DURATION  # the metrics alone would say: idle for ages
    verdicts: list[str] = []
    racing: list[asyncio.Task[None]] = []

    async def fire(now: float) -> None:
        verdicts.append(await controller_step(provider=provider, proxy=proxy, ref=ref, now=now))

    # 1. The controller step runs at the very moment the wake-up scales the function up.
    scaled = asyncio.Event()

    def race(_ref: FunctionRef, replicas: int) -> None:
        if replicas > 0:
            racing.append(asyncio.get_running_loop().create_task(fire(long_after)))
            scaled.set()

    provider.on_scale = race
    url = base(proxy) + "/function/racy/slow?seconds=0.3"
    calls = [asyncio.create_task(client.post(url, data=f"r{i}".encode())) for i in range(20)]
    await wait_held(proxy, ref.key, 20)
    await asyncio.wait_for(scaled.wait(), timeout=5)
    await asyncio.gather(*racing)
    assert verdicts == ["refused: busy"]
    assert proxy.invocation_stats()[ref.key].inflight == 20

    # 2. While the requests are inside the function.
    provider.ready_now(ref)
    upstream = None
    while upstream is None or len(upstream.received) < 20:
        await asyncio.sleep(0.01)
        upstream = provider.upstream(ref)
    assert proxy.invocation_stats()[ref.key].held == 0
    await fire(long_after)
    assert verdicts[-1] == "refused: busy"

    responses = await asyncio.gather(*calls)
    assert [r.status for r in responses] == [200] * 20

    # 3. Just after: not busy any more, but woken within the zero-duration.
    assert not proxy.busy(ref.key)
    clock.now += ZERO_DURATION / 2
    await fire(clock.now)
    assert verdicts[-1] == "refused: active within zero-duration"
    assert provider.scale_calls == [(ref, 1)]

    # 4. Idle for the whole zero-duration: now it goes to zero, and the next request wakes it again.
    clock.now += ZERO_DURATION
    await fire(clock.now)
    assert verdicts[-1] == "scaled to zero"
    provider.ready_now(ref)  # the next start is quick
    async with client.get(base(proxy) + "/function/racy/") as response:
        assert response.status == 200
    assert provider.scale_calls == [(ref, 1), (ref, 0), (ref, 1)]


async def test_a_busy_warm_function_is_marked_active_at_each_request_start_and_the_provider_coalesces(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    clock = VirtualClock()
    ref = await provider.add("warm", labels={"com.openfaas.scale.zero": "true"})
    proxy = await make_proxy(clock=clock)
    for _ in range(10):
        async with client.get(base(proxy) + "/function/warm/") as response:
            assert response.status == 200
        clock.now += 1.0
    await asyncio.sleep(0.01)  # the marks are fire-and-forget
    # One call per request start; how often that becomes an API write is the provider's rule
    # (KubernetesProvider's mark_active_interval, from --mark-interval), not a second one here.
    assert [when for _, when in provider.mark_active_calls] == [clock.now - 10 + i for i in range(10)]
    info = provider.get(ref)
    assert info is not None
    assert info.last_active == clock.now - 1


async def test_a_streamed_response_marks_its_function_once_not_per_chunk(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("warm", labels={"com.openfaas.scale.zero": "true"})
    proxy = await make_proxy()
    upstream = provider.upstream(ref)
    assert upstream is not None
    upstream.gate.set()
    async with client.get(base(proxy) + "/function/warm/stream?chunks=50") as response:
        assert (await response.read()).count(b"chunk-") == 50
    await asyncio.sleep(0.01)
    assert len(provider.mark_active_calls) == 1


class SlowMarks(FakeProvider):
    """A provider whose mark is an API write that takes as long as the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = asyncio.Event()
        self.started = 0

    async def mark_active(self, ref: FunctionRef, when: float) -> None:
        self.started += 1
        await self.writes.wait()
        await super().mark_active(ref, when)


async def test_a_mark_that_waits_for_its_write_finishes_in_the_background_and_covers_requests_meanwhile(
    client: aiohttp.ClientSession,
) -> None:
    provider = SlowMarks()
    await provider.add("warm", labels={"com.openfaas.scale.zero": "true"})
    proxy = Proxy(settings=ProxySettings(host="127.0.0.1", port=0, admin_port=0), provider=provider)
    await proxy.start()
    try:
        for _ in range(5):  # the first mark is still being written: no second one meanwhile
            async with client.get(base(proxy) + "/function/warm/") as response:
                assert response.status == 200
        assert (provider.started, provider.mark_active_calls) == (1, [])
        provider.writes.set()
        await asyncio.sleep(0.01)
        assert len(provider.mark_active_calls) == 1
        async with client.get(base(proxy) + "/function/warm/") as response:
            assert response.status == 200
        assert (provider.started, len(provider.mark_active_calls)) == (2, 2)
    finally:
        await proxy.stop()
        await provider.close()


async def test_a_function_that_never_goes_to_zero_is_never_marked(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    clock = VirtualClock()
    await provider.add("always-on", labels={"com.openfaas.scale.zero": "false"})
    proxy = await make_proxy(clock=clock)
    for _ in range(10):
        async with client.get(base(proxy) + "/function/always-on/") as response:
            assert response.status == 200
        clock.now += 1.0
    await asyncio.sleep(0.01)
    assert provider.mark_active_calls == []  # each mark is an API write that buys nothing here
