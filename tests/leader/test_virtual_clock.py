"""The election tests' virtual clock: time jumps from wake-up to wake-up, and waits for busy actors."""

from __future__ import annotations

import asyncio

import pytest

from tests.leader.virtual_clock import VirtualClock


async def test_sleepers_wake_in_order_at_their_exact_virtual_times() -> None:
    clock = VirtualClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def ticker(name: str, period: float) -> None:
        sleep = clock.sleeper(name)
        while True:
            await sleep(period)
            woke.append((name, clock.time()))

    clock.join("fast")
    clock.join("slow")
    tasks = [asyncio.create_task(ticker("fast", 2.0)), asyncio.create_task(ticker("slow", 3.0))]
    try:
        await clock.run_for(6.0)
    finally:
        for task in tasks:
            task.cancel()

    # At 6 s both are due: the one that went to sleep first wakes first.
    assert woke == [("fast", 2.0), ("slow", 3.0), ("fast", 4.0), ("slow", 6.0), ("fast", 6.0)]
    assert clock.time() == 6.0


async def test_time_stands_still_while_an_actor_is_busy_in_real_time() -> None:
    clock = VirtualClock(start=0.0)
    busy = asyncio.Event()

    async def worker() -> None:
        sleep = clock.sleeper("worker")
        try:
            await busy.wait()  # real work: not asleep on the clock
            await sleep(5.0)
        finally:
            clock.leave("worker")  # as a stopped candidate does

    clock.join("worker")
    task = asyncio.create_task(worker())
    asyncio.get_running_loop().call_later(0.05, busy.set)

    done_at = await clock.run_until(task.done, within=10.0, what="the worker to finish")

    assert done_at == 5.0, "time moved before the busy actor went to sleep"


async def test_an_actor_that_never_sleeps_again_fails_the_test_with_its_name() -> None:
    clock = VirtualClock(start=0.0, settle_within=0.1)
    clock.join("stuck")

    with pytest.raises(AssertionError, match=r"\['stuck'\] never went back to sleep"):
        await clock.run_for(1.0)
