"""Scaling down drains: the replica leaves the endpoints, gets SIGTERM, and finishes what it serves."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from autoscaler.providers.local import ReplicaTiming
from tests.support.waiting import until

from .support import REF, MakeProvider, alive


async def test_a_request_in_flight_during_a_scale_to_zero_completes(make_provider: MakeProvider) -> None:
    provider = await make_provider()
    assert await provider.wait_ready(REF, timeout=10)
    [url] = provider.endpoints(REF)
    [replica] = provider.replicas(REF)
    async with aiohttp.ClientSession() as session:

        async def slow() -> tuple[int, str]:
            async with session.get(url + "/slow?s=1.2") as response:
                return response.status, await response.text()

        request = asyncio.create_task(slow())
        await asyncio.sleep(0.3)  # the request is now being served
        await provider.scale(REF, 0)
        assert provider.endpoints(REF) == []  # no new request is routed to a draining replica
        assert await request == (200, "ok\n")
    await until(lambda: not alive(replica.pid), within=5, what="the drained replica to exit")
    # The provider notices the exit a moment after the process is gone.
    await until(lambda: provider.replicas(REF) == [], within=5, what="the provider to forget the replica")
    assert provider.get(REF).ready_replicas == 0


async def test_scaling_down_under_load_loses_no_request(make_provider: MakeProvider) -> None:
    provider = await make_provider(replicas=3)
    await until(lambda: len(provider.endpoints(REF)) == 3, within=10, what="3 ready replicas")
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:

        async def client(n: int) -> None:
            for i in range(8):
                urls = provider.endpoints(REF)
                async with session.get(urls[(n + i) % len(urls)] + "/slow?s=0.1") as response:
                    statuses.append(response.status)

        load = [asyncio.create_task(client(n)) for n in range(6)]
        await asyncio.sleep(0.25)
        await provider.scale(REF, 1)
        await asyncio.gather(*load)
    assert statuses == [200] * 48
    await until(lambda: len(provider.replicas(REF)) == 1, within=5, what="two replicas to drain")
    assert provider.replicas(REF)[0].name == "echo-0"  # the newest go first


async def test_a_replica_that_ignores_sigterm_is_killed_after_the_grace_period(
    make_provider: MakeProvider,
) -> None:
    stubborn = ReplicaTiming(grace=0.5, drain_delay=0.0)
    provider = await make_provider(timing=stubborn, env={"IGNORE_TERM": "1"})
    assert await provider.wait_ready(REF, timeout=10)
    [replica] = provider.replicas(REF)
    started = time.monotonic()
    await provider.scale(REF, 0)
    await until(lambda: not alive(replica.pid), within=5, what="SIGKILL after the grace period")
    assert 0.5 <= time.monotonic() - started < 5.0


async def test_scaling_up_again_during_a_drain_starts_fresh_replicas(make_provider: MakeProvider) -> None:
    provider = await make_provider()
    assert await provider.wait_ready(REF, timeout=10)
    [old] = provider.endpoints(REF)
    await provider.scale(REF, 0)
    await provider.scale(REF, 2)
    await until(lambda: len(provider.endpoints(REF)) == 2, within=10, what="2 fresh replicas")
    assert old not in provider.endpoints(REF)  # the draining replica is not brought back
    await until(lambda: len(provider.replicas(REF)) == 2, within=5, what="the old replica to exit")
    assert {r.name for r in provider.replicas(REF)} == {"echo-1", "echo-2"}
    assert provider.cold_starts(REF) == 1
