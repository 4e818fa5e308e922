"""Holding has limits, each answered with its own status and a body that says what to do."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from autoscaler.config import ProxySettings
from tests.proxy.conftest import MakeProxy, base, wait_held
from tests.support.fakeprovider import FakeProvider
from tests.support.virtual_time import virtual_loop

HOLD_TIMEOUT = ProxySettings().hold_timeout  # as shipped (60 s)


async def answer(client: aiohttp.ClientSession, url: str) -> tuple[int, str, float]:
    """Status, body and the loop time the answer came at."""
    async with client.get(url) as response:
        return response.status, await response.text(), asyncio.get_running_loop().time()


async def metrics_text(client: aiohttp.ClientSession, admin_port: int) -> str:
    async with client.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
        return await response.text()


async def test_retry_after_is_the_configured_number_of_seconds(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("busy", warm=False, ready_delay=30)
    proxy = await make_proxy(max_held=1, retry_after=9)
    held = asyncio.create_task(client.get(base(proxy) + "/function/busy/"))
    await wait_held(proxy, ref.key, 1)
    async with client.get(base(proxy) + "/function/busy/") as response:
        assert (response.status, response.headers["Retry-After"]) == (429, "9")
    provider.ready_now(ref)
    assert (await held).status == 200


async def test_a_replica_gets_at_most_the_configured_connections_and_the_rest_wait_their_turn(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("narrow")
    proxy = await make_proxy(upstream_connections=2)
    url = base(proxy) + "/function/narrow/slow?seconds=0.2"

    async def call() -> int:
        async with client.get(url) as response:
            await response.read()
            return response.status

    assert await asyncio.gather(*(call() for _ in range(6))) == [200] * 6
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert (upstream.most_busy, len(upstream.received)) == (2, 6)


@pytest.mark.virtual_time
async def test_a_request_held_past_the_shipped_hold_timeout_gets_504_saying_so_at_exactly_that_time(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("slow-start", warm=False, ready_delay=3600)
    proxy = await make_proxy()  # the shipped hold timeout
    loop = virtual_loop()
    sent = loop.time()
    call = asyncio.create_task(answer(client, base(proxy) + "/function/slow-start/"))
    await wait_held(proxy, ref.key, 1)
    await asyncio.sleep(HOLD_TIMEOUT - 0.001)
    assert (call.done(), proxy.invocation_stats()[ref.key].held) == (False, 1), "cut before the timeout"
    status, text, answered = await call
    assert (status, answered - sent) == (504, HOLD_TIMEOUT)
    assert f"did not become ready within the hold timeout ({HOLD_TIMEOUT:g} s)" in text
    stats = proxy.invocation_stats()[ref.key]
    assert (stats.inflight, stats.held, stats.completed_total) == (0, 0, 1)
    metrics = await metrics_text(client, proxy.admin_port)
    assert 'autoscaler_hold_timeouts_total{function_name="slow-start.openfaas-fn"} 1.0' in metrics
    assert (
        'gateway_function_invocation_total{code="504",function_name="slow-start.openfaas-fn"} 1\n' in metrics
    )


@pytest.mark.virtual_time
async def test_past_the_hold_limit_a_429_with_retry_after_comes_at_once_and_the_held_are_served_when_ready(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("busy", warm=False, ready_delay=30)  # a slow start, inside the hold timeout
    proxy = await make_proxy(max_held=3)  # the shipped Retry-After and hold timeout
    loop = virtual_loop()
    sent = loop.time()
    held = []
    for index in range(3):
        held.append(asyncio.create_task(answer(client, base(proxy) + "/function/busy/")))
        await wait_held(proxy, ref.key, index + 1)
    async with client.get(base(proxy) + "/function/busy/") as response:
        assert (response.status, loop.time() - sent) == (429, 0.0)
        assert response.headers["Retry-After"] == str(ProxySettings().retry_after) == "2"
        assert "holds 3 requests (the hold limit)" in await response.text()
    assert [(status, answered - sent) for status, _, answered in await asyncio.gather(*held)] == [
        (200, 30.0)
    ] * 3
    metrics = await metrics_text(client, proxy.admin_port)
    assert (
        'autoscaler_hold_rejected_total{function_name="busy.openfaas-fn",reason="hold_limit"} 1.0' in metrics
    )


async def test_a_body_over_the_limit_gets_413_and_never_reaches_the_function(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy(max_body=1000)
    async with client.post(base(proxy) + "/function/echo/", data=b"x" * 1001) as response:
        assert response.status == 413
        assert "the limit is 1000 bytes (got 1001 bytes)" in await response.text()

    async def chunked() -> object:
        for _ in range(4):
            yield b"y" * 500

    async with client.post(base(proxy) + "/function/echo/", data=chunked()) as response:
        assert response.status == 413
        assert "the limit is 1000 bytes" in await response.text()
    async with client.post(base(proxy) + "/function/echo/", data=b"z" * 1000) as response:
        assert response.status == 200
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert [len(r.body) for r in upstream.received] == [1000]
    metrics = await metrics_text(client, proxy.admin_port)
    assert (
        'autoscaler_hold_rejected_total{function_name="echo.openfaas-fn",reason="body_too_large"} 2.0'
        in metrics
    )


async def test_a_cold_request_over_the_body_limit_is_refused_without_waking_the_function(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("cold", warm=False)
    proxy = await make_proxy(max_body=10)
    async with client.post(base(proxy) + "/function/cold/", data=b"x" * 11) as response:
        assert response.status == 413
    assert provider.scale_calls == []


async def test_a_client_that_gives_up_while_held_frees_its_place_in_the_hold(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False, ready_delay=30)
    proxy = await make_proxy(max_held=1)
    impatient = asyncio.create_task(client.get(base(proxy) + "/function/cold/"))
    await wait_held(proxy, ref.key, 1)
    impatient.cancel()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while proxy.invocation_stats()[ref.key].held:
        assert loop.time() < deadline, "the abandoned request was never released"
        await asyncio.sleep(0.01)
    patient = asyncio.create_task(client.get(base(proxy) + "/function/cold/"))
    await wait_held(proxy, ref.key, 1)
    provider.ready_now(ref)
    assert (await patient).status == 200
    metrics = await metrics_text(client, proxy.admin_port)
    assert 'gateway_function_invocation_total{code="499",function_name="cold.openfaas-fn"} 1\n' in metrics
