"""The in-process reader: the proxy's counters become per-function load, on a virtual clock."""

from __future__ import annotations

import pytest

from autoscaler.inprocess import ProxyLoadReader
from autoscaler.interfaces import InvocationStats
from policies.model import Load


class Counters:
    """Stands in for `Proxy.invocation_stats` and a clock that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.stats: dict[str, InvocationStats] = {}

    def clock(self) -> float:
        return self.now

    def serve(self, key: str, *, completed: float, inflight: int = 0, held: int = 0) -> None:
        self.stats[key] = InvocationStats(
            completed_total=completed, started_total=completed + inflight, inflight=inflight, held=held
        )


def reader_for(
    counters: Counters, *, window: float = 10.0, known: list[str] | None = None
) -> ProxyLoadReader:
    return ProxyLoadReader(
        stats=lambda: counters.stats,
        clock=counters.clock,
        window=window,
        known=(lambda: known) if known is not None else None,
    )


async def test_rps_is_the_rate_of_completed_requests_over_the_sliding_window() -> None:
    counters = Counters()
    counters.serve("hello.fn", completed=0)
    reader = reader_for(counters)
    for second in range(1, 11):  # 5 req/s for 10 s
        counters.now = 100.0 + second
        counters.serve("hello.fn", completed=5 * second, inflight=2, held=1)
        snapshot = await reader.read()
    assert snapshot.loads["hello.fn"] == Load(rps=5.0, inflight=2.0, started_total=52.0)
    assert snapshot.error is None
    for second in range(11, 16):  # then 1 req/s: the window forgets the old rate
        counters.now = 100.0 + second
        counters.serve("hello.fn", completed=50 + (second - 10))
        snapshot = await reader.read()
    # The 10 s window ending at 115 starts at 105 (25 completed); 55 at 115.
    assert snapshot.loads["hello.fn"].rps == pytest.approx(3.0)


async def test_a_function_first_seen_after_the_start_counts_from_zero_at_the_start() -> None:
    counters = Counters()
    reader = reader_for(counters)
    counters.now = 104.0
    counters.serve("late.fn", completed=8, inflight=1)
    snapshot = await reader.read()
    assert snapshot.loads["late.fn"].rps == pytest.approx(2.0)  # 8 requests in the 4 s since the start
    assert snapshot.loads["late.fn"].inflight == 1.0


async def test_a_function_the_proxy_never_saw_has_no_data_until_a_whole_window_passed() -> None:
    counters = Counters()
    reader = reader_for(counters, window=10.0, known=["idle.fn"])
    counters.now = 105.0
    assert "idle.fn" not in (await reader.read()).loads  # not measured long enough: no data, not zero
    counters.now = 110.0
    assert (await reader.read()).loads["idle.fn"] == Load(rps=0.0, inflight=0.0, started_total=0.0)


async def test_without_a_known_list_only_functions_the_proxy_saw_are_reported() -> None:
    counters = Counters()
    reader = reader_for(counters)
    counters.now = 200.0
    assert (await reader.read()).loads == {}


async def test_a_counter_reset_restarts_the_rate_instead_of_going_negative() -> None:
    counters = Counters()
    counters.serve("hello.fn", completed=100)
    reader = reader_for(counters)
    counters.now = 102.0
    counters.serve("hello.fn", completed=120)
    assert (await reader.read()).loads["hello.fn"].rps == pytest.approx(10.0)
    counters.now = 104.0
    counters.serve("hello.fn", completed=4)
    assert (await reader.read()).loads["hello.fn"].rps == pytest.approx(2.0)  # 4 since the reset, in 2 s
