"""Adaptive concurrency per function: start at one call, one more after a round of successes, half
after repeated 429s, never above --max-inflight; a pure decision first, then a real throttling function."""

from __future__ import annotations

import aiohttp
import pytest

from policies.concurrency import Concurrency, after_call
from tests.queue.conftest import MakeReceiver, MakeWorker, Stack
from tests.support.waiting import until


def run(
    statuses: list[int], *, ceiling: int, start: Concurrency | None = None, busy: int | None = None
) -> list[int]:
    """The limits after each status; `busy` None: every call ran with the limit in full use."""
    state = start or Concurrency()
    limits = []
    for status in statuses:
        state = after_call(state, status=status, ceiling=ceiling, busy=state.limit if busy is None else busy)
        limits.append(state.limit)
    return limits


class TestTheLimit:
    def test_rises_by_one_after_a_round_of_successes_at_the_current_limit(self) -> None:
        assert run([200] * 10, ceiling=10) == [2, 2, 3, 3, 3, 4, 4, 4, 4, 5]

    def test_does_not_rise_on_successes_while_the_limit_is_not_in_use(self) -> None:
        assert run([200] * 10, ceiling=10, start=Concurrency(limit=3), busy=1) == [3] * 10

    def test_never_rises_above_the_ceiling(self) -> None:
        assert run([200] * 8, ceiling=2)[-1] == 2

    def test_is_halved_after_two_429s_in_a_row_and_never_below_one(self) -> None:
        start = Concurrency(limit=8)
        assert run([429, 429], ceiling=8, start=start) == [8, 4]
        assert run([429] * 10, ceiling=8, start=start)[-1] == 1

    def test_is_not_cut_by_a_single_429(self) -> None:
        assert run([429, 200, 200, 200], ceiling=8, start=Concurrency(limit=4)) == [4, 4, 4, 4]

    def test_is_halved_by_a_second_429_at_the_same_limit_even_between_successes(self) -> None:
        assert run([429, 200, 429, 200], ceiling=8, start=Concurrency(limit=4)) == [4, 4, 2, 2]

    @pytest.mark.parametrize("status", [0, 500, 502, 404])
    def test_is_kept_on_other_failures(self, status: int) -> None:
        assert run([status] * 3, ceiling=8, start=Concurrency(limit=3)) == [3, 3, 3]

    def test_follows_a_lowered_ceiling_at_once(self) -> None:
        assert run([200], ceiling=2, start=Concurrency(limit=6)) == [2]


async def drive(stack: Stack, make_receiver: MakeReceiver, make_worker: MakeWorker, *, adaptive: bool) -> int:
    """20 calls to a function that takes 2 at once, through a worker allowed 16: the 429s it answered."""
    name = "adaptive" if adaptive else "fixed"
    function = await make_receiver(delay=0.1, capacity=2)
    callback = await make_receiver()
    await stack.provider.add(name, url=function.url)
    async with aiohttp.ClientSession() as client:
        for i in range(20):
            async with client.post(
                f"{stack.base}/async-function/{name}",
                data=f"{i}".encode(),
                headers={"X-Callback-Url": callback.url},
            ) as response:
                assert response.status == 202
    worker = await make_worker(
        max_inflight=16,
        adaptive_concurrency=adaptive,
        retry_min_wait=0.1,
        retry_max_wait=0.2,
        retry_attempts=50,
    )
    try:
        await until(lambda: len(callback.seen) == 20, within=30, what=f"twenty callbacks ({name})")
        assert {seen.headers["X-Function-Status"] for seen in callback.seen} == {"200"}
        if adaptive:
            # Below the ceiling of 16 (the proxy absorbs some 429s with its own back-off, so the limit
            # wanders above the function's capacity of 2 between cuts).
            assert 1 <= worker.metrics.limit.labels(f"{name}.openfaas-fn")._value.get() < 16
    finally:
        await worker.close()
    return function.throttled


@pytest.mark.nats
class TestAThrottlingFunction:
    @pytest.mark.slow
    async def test_gets_all_its_calls_with_far_fewer_429s_than_at_a_fixed_concurrency(
        self, stack: Stack, make_receiver: MakeReceiver, make_worker: MakeWorker
    ) -> None:
        fixed = await drive(stack, make_receiver, make_worker, adaptive=False)
        adaptive = await drive(stack, make_receiver, make_worker, adaptive=True)
        assert adaptive * 2 < fixed, f"429s: adaptive {adaptive}, fixed {fixed}"
