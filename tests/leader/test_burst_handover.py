"""A handover in the middle of a burst of scale patches: no overlap, no lost or repeated step.

Each candidate's work stands in for the control loop: once it leads it rebuilds its state from the
cluster (reads the scale subresource), then patches one replica more every tick, asking `is_leader`
before each patch as the controller does. The patches go straight to the API server, not through the
candidate's relay, so only the elector's guarantees keep the old leader from writing. The ticks, the
lease and the cut are on the virtual clock; the patches are real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kubernetes_asyncio.client import AppsV1Api

from tests.leader.conftest import (
    V_LEASE_DURATION,
    V_RENEW_DEADLINE,
    V_RETRY_PERIOD,
    Candidate,
    CandidateFactory,
    Timeline,
)
from tests.leader.virtual_clock import VirtualClock
from tests.support.apiserver import FakeApiServer

NAME, NAMESPACE = "burst", "openfaas-fn"
TICK = 0.25  # virtual seconds between two patches of a leader


class Burst:
    """Patches recorded as (time, identity, replicas), and each leader's rebuilt state."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.patches: list[tuple[float, str, int]] = []
        self.rebuilt: dict[str, tuple[float, int]] = {}
        self.done = False

    async def work(self, candidate: Candidate) -> None:
        actor = f"{candidate.identity}'s work"
        self.clock.join(actor)
        try:
            await self._patch_while_leading(candidate, self.clock.sleeper(actor))
        finally:
            self.clock.leave(actor)

    async def _patch_while_leading(
        self, candidate: Candidate, sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        apps = AppsV1Api(candidate.direct)
        scale = await apps.read_namespaced_deployment_scale(NAME, NAMESPACE)
        replicas = int(scale.spec.replicas)
        self.rebuilt[candidate.identity] = (self.clock.now, replicas)
        while not self.done:
            await sleep(TICK)
            if not candidate.elector.is_leader:
                continue
            replicas += 1
            self.patches.append((self.clock.now, candidate.identity, replicas))
            # A patch that was sent completes even if leadership ends meanwhile, so what is recorded
            # is what reached the cluster.
            await asyncio.shield(
                apps.patch_namespaced_deployment_scale(NAME, NAMESPACE, {"spec": {"replicas": replicas}})
            )

    def of(self, identity: str) -> list[tuple[float, str, int]]:
        return [p for p in self.patches if p[1] == identity]


async def test_a_new_leader_rebuilds_from_the_cluster_and_continues_the_burst_after_the_old_one_stopped(
    api: FakeApiServer, candidate: CandidateFactory, timeline: Timeline, clock: VirtualClock
) -> None:
    api.add_deployment(NAME, namespace=NAMESPACE, replicas=1)
    burst = Burst(clock)
    a = await candidate("a", work=burst.work, clock=clock)
    a.start()
    await clock.run_until(lambda: len(burst.of("a")) >= 10, within=10 * TICK, what="a's burst to start")
    b = await candidate("b", work=burst.work, clock=clock)
    b.start()
    await clock.run_until(lambda: b.elector.holder == "a", within=0, what="b to see a's lease")

    cut_at = clock.now
    a.relay.mode = "fail"  # a can still reach the API for patches, but no longer renew its lease
    await clock.run_until(
        lambda: len(burst.of("b")) >= 10,
        within=V_LEASE_DURATION + V_RETRY_PERIOD + 10 * TICK,
        what="b's burst",
    )

    last_a, first_b = burst.of("a")[-1], burst.of("b")[0]
    (b_started,) = timeline.times("b", "started")
    rebuilt_at, rebuilt_replicas = burst.rebuilt["b"]
    assert last_a[0] <= cut_at + V_RENEW_DEADLINE, "the old leader kept patching past its renew deadline"
    assert last_a[0] < b_started <= rebuilt_at < first_b[0], "patching overlapped, or b patched first"
    assert rebuilt_replicas == last_a[2], "b did not start from the replicas a left in the cluster"
    assert first_b[2] == last_a[2] + 1

    burst.done = True
    await clock.run_for(2 * TICK)  # the works see `done`; the patch in flight, if any, lands
    who = [identity for _, identity, _ in burst.patches]
    assert who == ["a"] * who.count("a") + ["b"] * who.count("b"), "the two leaders' patches interleaved"
    assert [r for _, _, r in burst.patches] == list(range(2, 2 + len(burst.patches))), (
        "a step was lost or repeated"
    )
    assert api.replicas(NAME, namespace=NAMESPACE) == burst.patches[-1][2]
