"""A cold function is a delay, never an error: requests are held, one wake-up is shared, order is kept."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from autoscaler.errors import ProviderError
from autoscaler.interfaces import FunctionRef
from autoscaler.proxy._opening import RETRY
from autoscaler.proxy._proxy import WAKE_RETRY_WINDOW
from tests.proxy.conftest import MakeProxy, VirtualClock, base, wait_held
from tests.support.fakeprovider import FakeProvider
from tests.support.virtual_time import virtual_loop


async def test_500_concurrent_requests_to_a_cold_function_are_answered_in_arrival_order_with_one_wake_up(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False, ready_delay=30)
    proxy = await make_proxy()
    url = base(proxy) + "/function/cold/work"

    async def call(index: int) -> tuple[int, dict[str, object]]:
        async with client.post(url, data=f"request-{index}".encode()) as response:
            return response.status, json.loads(await response.read())

    calls = []
    for index in range(500):
        calls.append(asyncio.create_task(call(index)))
        await wait_held(proxy, ref.key, index + 1)  # arrival order is the order sent
    assert provider.scale_calls == [(ref, 1)]
    provider.ready_now(ref)
    results = await asyncio.wait_for(asyncio.gather(*calls), timeout=30)

    assert [status for status, _ in results] == [200] * 500
    assert [body["body"] for _, body in results] == [f"request-{i}" for i in range(500)]
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert [r.body.decode() for r in upstream.received] == [f"request-{i}" for i in range(500)]
    assert provider.scale_calls == [(ref, 1)]
    stats = proxy.invocation_stats()[ref.key]
    assert (stats.started_total, stats.completed_total, stats.inflight, stats.held) == (500, 500, 0, 0)


async def test_a_wake_up_marks_the_function_active_scales_it_to_its_min_and_pokes_the_loop_once(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False, labels={"com.openfaas.scale.min": "3"})
    pokes: list[FunctionRef] = []
    clock = VirtualClock()
    proxy = await make_proxy(on_wake=pokes.append, clock=clock)
    order: list[str] = []
    provider.on_scale = lambda _ref, _n: order.append(f"scale after {len(provider.mark_active_calls)} marks")

    responses = await asyncio.gather(*(client.get(base(proxy) + "/function/cold/") for _ in range(5)))
    assert [r.status for r in responses] == [200] * 5
    assert provider.scale_calls == [(ref, 3)]
    assert pokes == [ref]
    assert order == ["scale after 1 marks"]  # last-active is written before the scale-up
    assert provider.mark_active_calls[0] == (ref, clock.now)
    info = provider.get(ref)
    assert info is not None
    assert info.last_active == clock.now


async def test_a_function_already_scaled_up_but_not_ready_is_waited_for_and_not_scaled_again(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False, ready_delay=30)
    await provider.scale(ref, 4)  # the control loop scaled it up; pods are still starting
    proxy = await make_proxy()
    pending = asyncio.create_task(client.get(base(proxy) + "/function/cold/"))
    await wait_held(proxy, ref.key, 1)
    provider.ready_now(ref)
    response = await pending
    assert response.status == 200
    assert provider.scale_calls == [(ref, 4)]


@pytest.mark.virtual_time
async def test_connect_errors_right_after_a_wake_up_are_retried_until_the_replica_listens_seconds_later(
    make_proxy: MakeProxy, provider: FakeProvider, client: aiohttp.ClientSession
) -> None:
    lag = WAKE_RETRY_WINDOW - 2  # ready and listed 8 s before the server accepts connections
    provider.endpoint_lag = lag
    ref = await provider.add("laggy", warm=False, ready_delay=3.0)
    proxy = await make_proxy()
    loop = virtual_loop()
    start = loop.time()

    async def call() -> tuple[int, float]:
        async with client.post(base(proxy) + "/function/laggy/", data=b"x") as response:
            await response.read()
            return response.status, loop.time() - start

    answers = await asyncio.gather(*(call() for _ in range(10)))
    assert [status for status, _ in answers] == [200] * 10
    # Served at the first retry once it listens: never before, and one back-off step late at most.
    assert all(3.0 + lag <= took <= 3.0 + lag + RETRY.maximum for _, took in answers), answers
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert len(upstream.received) == 10


async def test_a_wake_up_the_provider_refuses_answers_503_saying_why_and_the_next_request_tries_again(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False)
    proxy = await make_proxy()
    provider.fail_scale = ProviderError("exceeded quota: pods=10", status=403)
    async with client.get(base(proxy) + "/function/cold/") as response:
        assert response.status == 503
        text = await response.text()
    assert "could not be woken" in text
    assert "exceeded quota" in text
    provider.fail_scale = None
    async with client.get(base(proxy) + "/function/cold/") as response:
        assert response.status == 200
    assert provider.scale_calls == [(ref, 1)]


async def test_once_awake_the_function_is_served_warm_without_another_wake_up(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False)
    proxy = await make_proxy()
    for _ in range(3):
        async with client.get(base(proxy) + "/function/cold/") as response:
            assert response.status == 200
    assert provider.scale_calls == [(ref, 1)]
    async with client.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as response:
        metrics = await response.text()
    assert 'autoscaler_wakeups_total{function_name="cold.openfaas-fn"} 1.0' in metrics
    assert 'autoscaler_cold_start_seconds_count{function_name="cold.openfaas-fn"} 1.0' in metrics
