"""A request that may have reached a replica is resent at most once, so it cannot take replicas down in a row.

The replicas are naive keep-alive function servers (`ThreadingHTTPServer`, HTTP/1.1) in their own
processes; `/crash` ends the process before it answers, as a request that kills its replica does. On a
kept-alive connection that looks exactly like a replica closing an idle link, which the proxy resends
once; but a replica that then refuses the new connection has failed with the request, and the caller
gets 502 instead of the request going on to the next replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider
from tests.support.naive import NaiveServer

REPLICAS = 4


@pytest.fixture
async def replicas() -> AsyncIterator[list[NaiveServer]]:
    servers = [NaiveServer(keep_alive=True) for _ in range(REPLICAS)]
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        for server in servers:
            await server.stop()


async def test_a_get_that_crashes_its_replica_crashes_no_other_replica(
    provider: FakeProvider,
    make_proxy: MakeProxy,
    client: aiohttp.ClientSession,
    replicas: list[NaiveServer],
) -> None:
    ref = await provider.add("fragile", url=replicas[0].url)
    provider.set_endpoints(ref, [server.url for server in replicas])
    proxy = await make_proxy()
    url = base(proxy) + "/function/fragile"
    for index in range(2 * REPLICAS):  # a kept-alive connection to every replica
        async with client.get(f"{url}/warm/{index}") as response:
            assert response.status == 200
    async with client.get(f"{url}/crash") as response:
        assert response.status == 502
        text = await response.text()
    assert "failed before answering" in text
    crashed = [server.url for server in replicas if await server.wait_exit(0.3)]
    assert len(crashed) == 1, f"crashed {crashed}"
    async with client.get(f"{url}/after") as response:  # the others still serve
        assert response.status == 200
