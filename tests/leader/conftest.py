"""Election candidates against the fake API server, each behind its own relay, on one shared timeline."""

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
from tests.support.apiserver import FakeApiServer

LEASE_DURATION = 2.0
RENEW_DEADLINE = 1.2
RETRY_PERIOD = 0.2
SLACK = 0.4  # scheduling latency allowed on a busy machine


@dataclass
class Timeline:
    """What happened to whom, on the monotonic clock the electors use."""

    events: list[tuple[float, str, str]] = field(default_factory=list)

    def record(self, who: str, what: str) -> None:
        self.events.append((time.monotonic(), who, what))

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
    task: asyncio.Task[None] | None = None

    async def _on_started(self) -> None:
        self.timeline.record(self.identity, "started")
        if self.work is not None:
            await self.work(self)

    def _on_stopped(self) -> None:
        self.timeline.record(self.identity, "stopped")

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self._on_started, self._on_stopped))

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer() as server:
        yield server


@pytest.fixture
async def timeline() -> Timeline:
    return Timeline()


CandidateFactory = Callable[..., Awaitable[Candidate]]


@pytest.fixture
async def candidate(api: FakeApiServer, timeline: Timeline) -> AsyncIterator[CandidateFactory]:
    made: list[tuple[Candidate, ApiClient]] = []

    async def make(identity: str, *, work: Callable[[Candidate], Awaitable[None]] | None = None) -> Candidate:
        relay = await Relay(api.url).__aenter__()
        client = ApiClient(configuration=relay.configuration())
        elector = LeaderElector(
            api_client=client,
            name="autoscaler-controller",
            namespace="openfaas",
            identity=identity,
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
        )
        direct = ApiClient(configuration=api.configuration())
        made.append((Candidate(identity, elector, relay, direct, timeline, work), client))
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
