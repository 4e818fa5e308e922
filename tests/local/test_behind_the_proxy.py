"""The local provider behind the real wake-up proxy: a cold start is held, a scale-down loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from autoscaler.config import ProxySettings
from autoscaler.inprocess import ProxyLoadReader
from autoscaler.providers.local import LocalProvider
from autoscaler.proxy import Proxy
from tests.support.waiting import until

from .support import FAST, READY, REF, functions_file


@contextlib.asynccontextmanager
async def serving(provider: LocalProvider) -> AsyncIterator[Proxy]:
    """The proxy in front of `provider`, both started; drained and closed in order afterwards."""
    proxy = Proxy(
        settings=ProxySettings(host="127.0.0.1", port=0, admin_port=0, hold_timeout=20.0), provider=provider
    )
    await provider.start()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.drain(grace=2.0)
        await provider.close()
        await proxy.stop()


@pytest.fixture
async def stack() -> AsyncIterator[tuple[LocalProvider, Proxy]]:
    provider = LocalProvider(functions=functions_file(replicas=0, env={"READY_AFTER": "0.5"}), timing=FAST)
    async with serving(provider) as proxy:
        yield provider, proxy


async def test_requests_to_a_function_at_zero_are_held_until_its_replica_is_ready(
    stack: tuple[LocalProvider, Proxy],
) -> None:
    provider, proxy = stack
    url = f"http://127.0.0.1:{proxy.port}/function/echo/pid"
    async with aiohttp.ClientSession() as session:

        async def call() -> tuple[int, str]:
            async with session.get(url) as response:
                return response.status, await response.text()

        answers = await asyncio.gather(*(call() for _ in range(4)))
    pid = str(provider.replicas(REF)[0].pid)
    assert answers == [(200, pid + "\n")] * 4
    assert provider.cold_starts(REF) == 1
    assert proxy.invocation_stats()[REF.key].completed_total == 4


async def test_scaling_down_under_load_through_the_proxy_loses_no_request(
    stack: tuple[LocalProvider, Proxy],
) -> None:
    provider, proxy = stack
    await provider.scale(REF, 3)
    await until(lambda: len(provider.endpoints(REF)) == 3, within=10, what="3 ready replicas")
    reader = ProxyLoadReader(stats=proxy.invocation_stats, window=1.0)
    url = f"http://127.0.0.1:{proxy.port}/function/echo/slow?s=0.05"
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            for _ in range(15):
                async with session.get(url) as response:
                    statuses.append(response.status)

        load = [asyncio.create_task(client()) for _ in range(8)]
        await asyncio.sleep(0.3)
        await provider.scale(REF, 1)
        await asyncio.gather(*load)
    assert statuses == [200] * 120
    snapshot = await reader.read()
    rps = snapshot.loads[REF.key].rps
    assert rps is not None
    assert rps > 0  # the reader sees the same traffic the proxy served
    await until(lambda: len(provider.replicas(REF)) == 1, within=5, what="two replicas to drain")


async def test_held_requests_are_released_once_the_ready_annotation_path_answers_not_when_the_root_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="autoscaler.functions")
    flag = tmp_path / "ready"  # the fixture's /ready answers 503 until this file exists
    functions = functions_file(
        replicas=0, env={"READY_PATH": "/ready", "READY_FILE": str(flag)}, annotations={READY: "/ready"}
    )
    provider = LocalProvider(functions=functions, timing=FAST)
    async with serving(provider) as proxy, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{proxy.port}/function/echo/pid"

        async def call() -> tuple[int, str]:
            async with session.get(url) as response:
                return response.status, await response.text()

        held = [asyncio.create_task(call()) for _ in range(3)]
        await until(
            lambda: caplog.text.count('"GET /ready HTTP/1.1" 503') >= 3,
            within=10,
            what="three probes of /ready answered 503",
        )
        [view] = provider.replicas(REF)
        async with session.get(f"http://127.0.0.1:{view.port}/") as response:
            assert response.status == 200  # the function's root answers; it is not ready yet
        assert not any(task.done() for task in held)
        assert provider.endpoints(REF) == []

        flag.touch()
        answers = await asyncio.wait_for(asyncio.gather(*held), timeout=10)
        assert answers == [(200, f"{view.pid}\n")] * 3
        assert caplog.text.index('"GET /ready HTTP/1.1" 200') < caplog.text.index('"GET /pid HTTP/1.1" 200')
