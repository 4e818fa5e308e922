"""Election candidates against the fake API server, each behind its own relay, on one shared timeline.

A candidate runs on real time (`candidate("a")`, short timings with slack for a busy machine) or on
the test's virtual clock (`candidate("a", clock=clock)`, the production timings, exact), see
`virtual_clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from kubernetes_asyncio.client import ApiClient

from autoscaler.leader import LeaderElector
from tests.leader.relay import Relay
from tests.leader.virtual_clock import VirtualClock
from tests.support.apiserver import FakeApiServer

LEASE_DURATION = 2.0
RENEW_DEADLINE = 1.2
RETRY_PERIOD = 0.2
SLACK = 0.4  # scheduling latency allowed on a busy machine

# On the virtual clock: the timings the controller ships with (seconds that cost no real time).
V_LEASE_DURATION = 15.0
V_RENEW_DEADLINE = 10.0
V_RETRY_PERIOD = 2.0


@dataclass
class Timeline:
    """What happened to whom, on the clock the electors use (monotonic, or the virtual one)."""

    events: list[tuple[float, str, str]] = field(default_factory=list)

    def record(self, who: str, what: str, *, at: float) -> None:
        self.events.append((at, who, what))

    def times(self, who: str, what: str) -> list[float]:
        return [t for t, w, e in self.events if w == who and e == what]


@dataclass
class Candidate:
    identity: str
    elector: LeaderElector
    relay: Relay
    direct: ApiClient  # a client that bypasses the relay, for the leader's own work
    timeline: Timeline
    work: Callable[[Candidate], Awaitable[None]] | None = None
    clock: VirtualClock | None = None
    task: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self.clock.time() if self.clock is not None else time.monotonic()

    async def _on_started(self) -> None:
        self.timeline.record(self.identity, "started", at=self.now())
        if self.work is not None:
            await self.work(self)

    def _on_stopped(self) -> None:
        self.timeline.record(self.identity, "stopped", at=self.now())

    def start(self) -> None:
        if self.clock is not None:
            self.clock.join(self.identity)
        self.task = asyncio.create_task(self.elector.run(self._on_started, self._on_stopped))

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.clock is not None:
            self.clock.leave(self.identity)


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer() as server:
        yield server


@pytest.fixture
async def timeline() -> Timeline:
    return Timeline()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


CandidateFactory = Callable[..., Awaitable[Candidate]]


@pytest.fixture
async def candidate(api: FakeApiServer, timeline: Timeline) -> AsyncIterator[CandidateFactory]:
    made: list[tuple[Candidate, ApiClient]] = []

    async def make(
        identity: str,
        *,
        work: Callable[[Candidate], Awaitable[None]] | None = None,
        clock: VirtualClock | None = None,
    ) -> Candidate:
        relay = await Relay(api.url, clock=clock.time if clock else time.monotonic).__aenter__()
        client = ApiClient(configuration=relay.configuration())
        timing = (
            {"lease_duration": LEASE_DURATION, "renew_deadline": RENEW_DEADLINE, "retry_period": RETRY_PERIOD}
            if clock is None
            else {
                "lease_duration": V_LEASE_DURATION,
                "renew_deadline": V_RENEW_DEADLINE,
                "retry_period": V_RETRY_PERIOD,
                "clock": clock.time,
                "sleep": clock.sleeper(identity),
            }
        )
        elector = LeaderElector(
            api_client=client, name="autoscaler-controller", namespace="openfaas", identity=identity, **timing
        )
        direct = ApiClient(configuration=api.configuration())
        made.append((Candidate(identity, elector, relay, direct, timeline, work, clock), client))
        return made[-1][0]

    yield make
    for c, client in made:
        try:
            async with asyncio.timeout(5):
                await c.stop()
        except TimeoutError:
            stacks = [f"{t.get_name()}: {t.get_stack()}" for t in asyncio.all_tasks()]
            pytest.fail(f"candidate {c.identity} did not stop within 5 s after cancellation; tasks: {stacks}")
        await c.relay.__aexit__(None, None, None)
        await client.close()
        await c.direct.close()
