"""A burst into a naive function server is served whole and fast: connections are not tied to requests.

The function here is Python's `ThreadingHTTPServer` in its own process with the standard library's
listen backlog of 5: 300 POSTs at once overflow its accept queue, so many handshakes are dropped (SYN
retries at 1, 3, 7 s) or half-done (the server never accepted a connection the proxy sees as open).
A request must take whichever connection is free first, and never wait on one the server may not have
accepted. Each burst is timed and printed; the bound is loose for a shared machine (the goal is 1 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.proxy.conftest import MakeProxy, base, wait_held
from tests.support.fakeprovider import FakeProvider
from tests.support.naive import NaiveServer

BURST = 300
BOUND = 5.0  # seconds; the goal is 1 s (bench/naive_burst_bench.py measures it), this machine is shared


@pytest.fixture(params=[False, True], ids=["http10-close", "http11-keepalive"])
async def naive(request: pytest.FixtureRequest) -> AsyncIterator[NaiveServer]:
    server = NaiveServer(keep_alive=request.param)
    await server.start()
    yield server
    await server.stop()


async def burst(client: aiohttp.ClientSession, url: str) -> list[tuple[int, str, str]]:
    async def post(index: int) -> tuple[int, str, str]:
        body = f"call {index} ".encode() * (index % 50 + 1)
        timeout = aiohttp.ClientTimeout(total=40)
        async with client.post(f"{url}/call/{index}", data=body, timeout=timeout) as response:
            expected = f"POST /call/{index} {len(body)} {hashlib.sha256(body).hexdigest()}"
            return response.status, await response.text(), expected

    return await asyncio.gather(*(post(index) for index in range(BURST)))


def check(results: list[tuple[int, str, str]]) -> None:
    wrong = [(status, text[:80]) for status, text, expected in results if (status, text) != (200, expected)]
    assert not wrong, f"{len(wrong)} of {BURST} wrong, e.g. {wrong[:3]}"


async def test_a_warm_burst_of_posts_into_a_backlog_of_five_is_answered_whole_and_fast(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, naive: NaiveServer
) -> None:
    await provider.add("naive", url=naive.url)
    proxy = await make_proxy()
    url = base(proxy) + "/function/naive"
    started = time.perf_counter()
    results = await burst(client, url)
    took = time.perf_counter() - started
    print(f"\nwarm burst of {BURST} POSTs: {took:.3f} s")
    check(results)
    assert took < BOUND


async def test_a_burst_held_from_zero_is_answered_whole_and_fast_after_readiness(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, naive: NaiveServer
) -> None:
    ref = await provider.add("naive", url=naive.url, warm=False, ready_delay=30)
    proxy = await make_proxy()
    url = base(proxy) + "/function/naive"
    calls = asyncio.ensure_future(burst(client, url))
    await wait_held(proxy, ref.key, BURST, timeout=20)
    ready = time.perf_counter()
    provider.ready_now(ref)
    results = await calls
    took = time.perf_counter() - ready
    print(f"\nburst of {BURST} POSTs from zero: {took:.3f} s after readiness")
    check(results)
    assert took < BOUND
