"""The `virtual_time` marker puts a proxy test and its async fixtures on one virtual-time loop."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.virtual_time import START, VirtualTimeLoop


@pytest.fixture
async def fixture_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


@pytest.mark.virtual_time
async def test_a_marked_test_and_its_async_fixtures_run_on_the_virtual_loop_from_its_start(
    fixture_loop: asyncio.AbstractEventLoop,
) -> None:
    loop = asyncio.get_running_loop()
    assert (isinstance(loop, VirtualTimeLoop), fixture_loop is loop, loop.time()) == (True, True, START)


async def test_an_unmarked_test_runs_on_asyncios_own_loop_and_clock(
    fixture_loop: asyncio.AbstractEventLoop,
) -> None:
    loop = asyncio.get_running_loop()
    assert (isinstance(loop, VirtualTimeLoop), fixture_loop is loop) == (False, True)
