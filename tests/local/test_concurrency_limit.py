"""Local mode: `max_inflight` in a function's `environment` (functions file) is the proxy's limit too.

The functions file's `environment` is what each replica process runs with, as stack.yml's
`environment:` is for an OpenFaaS function, so the local provider reports its `max_inflight` and the
real proxy in front of real replica processes sends each replica no more than that at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from autoscaler.config import ProxySettings
from autoscaler.providers.local import LocalProvider
from autoscaler.proxy import Proxy
from tests.support.waiting import until

from .support import FAST, REF, MakeProvider, functions_file

SLOW = 0.4  # seconds each call takes in the replica


async def test_the_functions_files_environment_max_inflight_reaches_the_function_info(
    make_provider: MakeProvider,
) -> None:
    provider = await make_provider(replicas=0, env={"max_inflight": "2", "GREETING": "hi"})
    info = provider.get(REF)
    assert info is not None
    assert info.env_max_inflight == "2"
    assert "max_inflight" not in info.labels


async def test_a_function_without_it_declares_no_limit(make_provider: MakeProvider) -> None:
    provider = await make_provider(replicas=0, env={"GREETING": "hi"})
    info = provider.get(REF)
    assert info is not None
    assert info.env_max_inflight is None


@pytest.fixture
async def stack() -> AsyncIterator[tuple[LocalProvider, Proxy]]:
    provider = LocalProvider(functions=functions_file(replicas=1, env={"max_inflight": "2"}), timing=FAST)
    proxy = Proxy(
        settings=ProxySettings(host="127.0.0.1", port=0, admin_port=0, hold_timeout=20.0), provider=provider
    )
    await provider.start()
    await proxy.start()
    yield provider, proxy
    await proxy.drain(grace=2.0)
    await provider.close()
    await proxy.stop()


async def test_the_proxy_sends_a_local_replica_no_more_than_its_environment_allows(
    stack: tuple[LocalProvider, Proxy],
) -> None:
    provider, proxy = stack
    await until(lambda: len(provider.endpoints(REF)) == 1, within=10, what="a ready replica")
    url = f"http://127.0.0.1:{proxy.port}/function/echo/slow?s={SLOW}"
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:

        async def call() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        started = loop.time()
        statuses = await asyncio.gather(*(call() for _ in range(6)))
        took = loop.time() - started
    assert statuses == [200] * 6
    # Two at a time, so three rounds of SLOW seconds; the replica (a threading server) alone would
    # have answered all six in about one.
    assert took >= 3 * SLOW * 0.95, f"6 calls took {took:.2f} s: more than 2 at once reached the replica"
