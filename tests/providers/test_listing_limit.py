"""Hundreds of namespaces start their watches together, but only a few listings are in flight at once.

Sent all at once, the listings an API server answers last wait past the request timeout and are
retried, so a start over 500 namespaces made 2,210 listings for 1,000 (`bench/proxy_scale_bench.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from autoscaler.providers.kubernetes._watch import LISTS_AT_ONCE, Obj, Reflector
from tests.support.waiting import until

from .support import FAST


class Lists:
    """Listings that answer only when the test lets them, counting how many are in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.done = 0
        self.release = asyncio.Event()

    async def list_call(self) -> tuple[list[Obj], str]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        self.done += 1
        return [], "1"


async def watch_forever(*args: Any, **kwargs: Any) -> Any:
    await asyncio.Event().wait()


async def test_a_thousand_reflectors_starting_together_keep_lists_at_once_listings_in_flight() -> None:
    lists = Lists()
    reflectors = [
        Reflector(
            what=f"deployments in ns-{i}",
            list_call=lists.list_call,
            watch_func=watch_forever,
            watch_args=(),
            watch_kwargs={},
            on_sync=lambda items: None,
            on_event=lambda kind, obj: None,
            backoff=FAST,
            watch_timeout=300.0,
            connect_timeout=5.0,
        )
        for i in range(1000)
    ]
    tasks = [asyncio.create_task(r.run()) for r in reflectors]
    try:
        await until(lambda: lists.in_flight == LISTS_AT_ONCE, within=5.0, what="the first listings")
        for _ in range(20):
            await asyncio.sleep(0)
        assert lists.in_flight == LISTS_AT_ONCE  # the others wait for a slot, not for the server

        lists.release.set()
        await until(lambda: lists.done == 1000, within=10.0, what="every listing")
        assert lists.most == LISTS_AT_ONCE
        assert all(r.synced.is_set() for r in reflectors)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
