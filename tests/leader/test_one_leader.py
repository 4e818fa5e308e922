"""Two candidates, one leader: the Lease decides, and the elector sends only the calls it declares."""

from __future__ import annotations

import asyncio
import time

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient

from autoscaler.errors import ConfigError
from autoscaler.leader import API_CALLS, LeaderElector
from tests.leader.conftest import RETRY_PERIOD, CandidateFactory, Timeline
from tests.support.apiserver import LEASES, FakeApiServer
from tests.support.waiting import until

LEASE_PATH = r"/apis/coordination\.k8s\.io/v1/namespaces/openfaas/leases"


async def test_of_two_candidates_exactly_one_leads_and_holds_the_lease(
    api: FakeApiServer, candidate: CandidateFactory, timeline: Timeline
) -> None:
    a, b = await candidate("a"), await candidate("b")
    a.start()
    b.start()
    await until(lambda: a.elector.is_leader or b.elector.is_leader, within=3, what="a leader")

    leaders_seen: set[str] = set()
    end = time.monotonic() + 2.5  # more than a lease duration: renewals keep the same leader
    while time.monotonic() < end:
        leaders = [c.identity for c in (a, b) if c.elector.is_leader]
        assert len(leaders) == 1, f"expected exactly one leader, got {leaders}"
        leaders_seen.update(leaders)
        await asyncio.sleep(0.02)

    assert len(leaders_seen) == 1
    (leader,) = leaders_seen
    (lease,) = api.objects(LEASES, namespace="openfaas")
    assert lease["spec"]["holderIdentity"] == leader
    assert [e for _, _, e in timeline.events] == ["started"]
    follower = b if leader == "a" else a
    assert follower.elector.holder == leader


async def test_the_elector_sends_exactly_the_lease_calls_it_declares_and_writes_a_valid_lease(
    api: FakeApiServer, candidate: CandidateFactory
) -> None:
    a = await candidate("a")
    a.start()
    await until(lambda: a.elector.is_leader, within=3, what="a to lead")
    await until(lambda: api.count("PUT", LEASE_PATH) >= 2, within=3, what="two renewals")
    (lease,) = api.objects(LEASES, namespace="openfaas")
    kubernetes_validate.validate(lease, "1.33", strict=True)

    await a.stop()  # a cancelled leader gives the lease back

    verbs = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    sent = {("coordination.k8s.io", "leases", verbs[r.method]) for r in api.requests if "/leases" in r.path}
    assert sent == set(API_CALLS)
    (lease,) = api.objects(LEASES, namespace="openfaas")
    assert not lease["spec"].get("holderIdentity")
    kubernetes_validate.validate(lease, "1.33", strict=True)


async def test_is_leader_turns_false_at_the_renew_deadline_without_waiting_for_the_loop(
    api: FakeApiServer,
) -> None:
    now = [1000.0]
    async with ApiClient(configuration=api.configuration()) as client:
        elector = LeaderElector(
            api_client=client,
            name="lease",
            namespace="openfaas",
            identity="a",
            lease_duration=2.0,
            renew_deadline=1.2,
            retry_period=RETRY_PERIOD,
            clock=lambda: now[0],
        )
        started = asyncio.Event()

        async def on_started() -> None:
            started.set()

        task = asyncio.create_task(elector.run(on_started, lambda: None))
        try:
            await asyncio.wait_for(started.wait(), 3)
            assert elector.is_leader
            now[0] += 1.19
            assert elector.is_leader
            now[0] += 0.02  # past the deadline: no await in between, so no renewal could have run
            assert not elector.is_leader
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


@pytest.mark.parametrize(
    ("lease_duration", "renew_deadline", "retry_period"),
    [(10.0, 10.0, 2.0), (15.0, 10.0, 10.0), (15.0, 10.0, 0.0)],
)
async def test_timings_that_could_let_two_leaders_overlap_are_refused_with_a_clear_error(
    api: FakeApiServer, lease_duration: float, renew_deadline: float, retry_period: float
) -> None:
    async with ApiClient(configuration=api.configuration()) as client:
        with pytest.raises(ConfigError, match="lease_duration > renew_deadline > retry_period > 0"):
            LeaderElector(
                api_client=client,
                name="lease",
                namespace="openfaas",
                identity="a",
                lease_duration=lease_duration,
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            )
