"""When the function fails, the caller learns it clearly: 502/504 before an answer, a cut connection after."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from autoscaler.config import ProxySettings
from autoscaler.proxy._opening import RETRY
from autoscaler.proxy._proxy import CONNECT_RETRY_WINDOW
from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider
from tests.support.virtual_time import virtual_loop

UPSTREAM_TIMEOUT = ProxySettings().upstream_timeout  # as shipped (300 s)
NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None)  # aiohttp's own 300 s would race the proxy's


async def test_a_function_that_resets_a_small_response_mid_body_gives_502(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("flaky")
    proxy = await make_proxy()
    async with client.get(base(proxy) + "/function/flaky/reset?size=20000") as response:
        assert response.status == 502
        assert "flaky.openfaas-fn broke off its response" in await response.text()


async def test_a_function_that_resets_a_streamed_response_cuts_the_client_connection(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("flaky")
    proxy = await make_proxy()
    async with client.get(base(proxy) + "/function/flaky/reset?size=400000") as response:
        assert response.status == 200  # already sent when the function broke off
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    # The proxy itself is fine afterwards.
    async with client.get(base(proxy) + "/function/flaky/") as response:
        assert response.status == 200


@pytest.mark.virtual_time
async def test_a_warm_function_that_refuses_connections_gives_502_naming_it_after_the_retry_window(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("gone")
    upstream = provider.upstream(ref)
    assert upstream is not None
    await upstream.stop()  # the replica died; the endpoint is still listed
    proxy = await make_proxy()  # the shipped hold timeout, longer than the warm path's retry window
    loop = virtual_loop()
    start = loop.time()
    async with client.get(base(proxy) + "/function/gone/") as response:
        assert response.status == 502
        assert "function gone.openfaas-fn is unreachable" in await response.text()
    waited = loop.time() - start
    # Refused connections are retried, backing off, for the window and not past it.
    assert CONNECT_RETRY_WINDOW - RETRY.maximum < waited <= CONNECT_RETRY_WINDOW, waited
    assert proxy.invocation_stats()[ref.key].inflight == 0


async def test_a_replica_that_stops_listening_briefly_costs_a_delay_not_an_error(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("restarting")
    upstream = provider.upstream(ref)
    assert upstream is not None
    await upstream.stop()  # e.g. the container restarts while its endpoint is still listed
    proxy = await make_proxy()

    async def back_soon() -> None:
        await asyncio.sleep(0.5)
        await upstream.start()  # same port: the endpoint is valid again

    restart = asyncio.create_task(back_soon())
    async with client.post(base(proxy) + "/function/restarting/echo", data=b"kept") as response:
        assert response.status == 200
        assert (await response.json())["body"] == "kept"
    await restart


@pytest.mark.virtual_time
async def test_a_function_slower_than_the_shipped_upstream_timeout_gives_504_at_that_timeout(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("sloth")
    proxy = await make_proxy()
    loop = virtual_loop()
    start = loop.time()
    url = base(proxy) + f"/function/sloth/slow?seconds={UPSTREAM_TIMEOUT + 60:g}"
    async with client.get(url, timeout=NO_CLIENT_TIMEOUT) as response:
        assert response.status == 504
        assert f"did not answer within the upstream timeout ({UPSTREAM_TIMEOUT:g} s)" in await response.text()
    waited = loop.time() - start
    assert UPSTREAM_TIMEOUT <= waited <= UPSTREAM_TIMEOUT + 1.0, waited  # one sweep, a second, late at most


@pytest.mark.virtual_time
async def test_a_function_that_stalls_mid_stream_longer_than_the_upstream_timeout_is_cut_off_then(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("staller")
    proxy = await make_proxy()
    loop = virtual_loop()
    url = base(proxy) + "/function/staller/stream?chunks=3"
    async with client.get(url, timeout=NO_CLIENT_TIMEOUT) as response:
        assert response.status == 200
        assert await response.content.readline() == b"chunk-0\n"
        stalled = loop.time()
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()  # the function never sends the rest
    waited = loop.time() - stalled
    assert UPSTREAM_TIMEOUT <= waited <= UPSTREAM_TIMEOUT + 1.0, waited
    assert proxy.invocation_stats()["staller.openfaas-fn"].inflight == 0
