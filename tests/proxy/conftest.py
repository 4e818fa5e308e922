"""Fixtures for the proxy's tests: a FakeProvider with real upstream servers, started proxies, a client.

A test marked `virtual_time` runs, fixtures and all, on tests.support.virtual_time's loop: the
proxy's timeouts are then tested at their shipped values, in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from autoscaler.config import ProxySettings
from autoscaler.interfaces import FunctionRef
from autoscaler.proxy import Proxy
from tests.support import virtual_time
from tests.support.fakeprovider import FakeProvider

MakeProxy = Callable[..., Awaitable[Proxy]]


class VirtualClock:
    """Wall-clock time that only moves when a test moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", virtual_time.MARKER_HELP)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return virtual_time.loop_factories(item)


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider(ready_delay=0.2)
    yield fake
    await fake.close()


@pytest.fixture
async def make_proxy(provider: FakeProvider) -> AsyncIterator[MakeProxy]:
    started: list[Proxy] = []

    async def make(
        *,
        on_wake: Callable[[FunctionRef], None] | None = None,
        clock: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> Proxy:
        settings = ProxySettings(host="127.0.0.1", port=0, admin_port=0, **overrides)
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        proxy = Proxy(settings=settings, provider=provider, on_wake=on_wake, **extra)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        yield session


async def wait_held(proxy: Proxy, key: str, count: int, *, timeout: float = 5.0) -> None:
    """Wait until the proxy holds `count` requests for `key` (it shares the test's event loop).

    Without moving loop time: a virtual clock stands still here, so a hold is observed at the instant
    the request came in; the bound is on the real clock.
    """
    deadline = time.monotonic() + timeout
    while True:
        stats = proxy.invocation_stats().get(key)
        if stats is not None and stats.held >= count:
            return
        assert time.monotonic() < deadline, f"{key} never held {count} requests (stats: {stats})"
        await asyncio.sleep(0)


def base(proxy: Proxy) -> str:
    return f"http://127.0.0.1:{proxy.port}"
