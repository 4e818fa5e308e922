"""Two candidates, one leader: the Lease decides, and the elector sends only the calls it declares.

On the virtual clock (see `tests.leader.virtual_clock`): renewals, back-off and durations are exact.
"""

from __future__ import annotations

import asyncio
import itertools

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient

from autoscaler.errors import ConfigError
from autoscaler.leader import API_CALLS, LeaderElector
from tests.leader.conftest import (
    RETRY_PERIOD,
    V_LEASE_DURATION,
    V_RETRY_PERIOD,
    CandidateFactory,
    Timeline,
)
from tests.leader.virtual_clock import VirtualClock
from tests.support.apiserver import LEASES, FakeApiServer

LEASE_PATH = r"/apis/coordination\.k8s\.io/v1/namespaces/openfaas/leases"


async def test_of_two_candidates_exactly_one_leads_and_renewals_keep_it_for_many_lease_durations(
    api: FakeApiServer, candidate: CandidateFactory, timeline: Timeline, clock: VirtualClock
) -> None:
    a, b = await candidate("a", clock=clock), await candidate("b", clock=clock)
    a.start()
    b.start()
    await clock.run_until(lambda: a.elector.is_leader or b.elector.is_leader, within=0, what="a leader")

    leaders_seen: set[str] = set()

    def exactly_one_leader() -> None:
        leaders = [c.identity for c in (a, b) if c.elector.is_leader]
        assert len(leaders) == 1, f"at {clock.now:g}: expected exactly one leader, got {leaders}"
        leaders_seen.update(leaders)

    puts_before = api.count("PUT", LEASE_PATH)
    renewals_due = 24  # one a retry period, over more than three lease durations
    assert renewals_due * V_RETRY_PERIOD > 3 * V_LEASE_DURATION
    await clock.run_for(renewals_due * V_RETRY_PERIOD, check=exactly_one_leader)

    assert len(leaders_seen) == 1
    (leader,) = leaders_seen
    (lease,) = api.objects(LEASES, namespace="openfaas")
    assert lease["spec"]["holderIdentity"] == leader
    assert [e for _, _, e in timeline.events] == ["started"]
    follower = b if leader == "a" else a
    assert follower.elector.holder == leader
    assert api.count("PUT", LEASE_PATH) - puts_before == renewals_due, "not one renewal a retry period"


async def test_the_elector_sends_exactly_the_lease_calls_it_declares_and_writes_a_valid_lease(
    api: FakeApiServer, candidate: CandidateFactory, clock: VirtualClock
) -> None:
    a = await candidate("a", clock=clock)
    a.start()
    await clock.run_until(lambda: a.elector.is_leader, within=0, what="a to lead")
    await clock.run_until(
        lambda: api.count("PUT", LEASE_PATH) >= 2, within=2 * V_RETRY_PERIOD, what="two renewals"
    )
    (lease,) = api.objects(LEASES, namespace="openfaas")
    kubernetes_validate.validate(lease, "1.33", strict=True)

    await a.stop()  # a cancelled leader gives the lease back

    verbs = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    sent = {("coordination.k8s.io", "leases", verbs[r.method]) for r in api.requests if "/leases" in r.path}
    assert sent == set(API_CALLS)
    (lease,) = api.objects(LEASES, namespace="openfaas")
    assert not lease["spec"].get("holderIdentity")
    kubernetes_validate.validate(lease, "1.33", strict=True)


async def test_a_follower_the_api_keeps_failing_backs_off_up_to_the_renew_deadline_then_polls_again(
    candidate: CandidateFactory, clock: VirtualClock
) -> None:
    a = await candidate("a", clock=clock)
    a.start()
    await clock.run_until(lambda: a.elector.is_leader, within=0, what="a to lead")
    b = await candidate("b", clock=clock)
    b.relay.mode = "fail"
    b.start()

    await clock.run_for(40.0)  # tries at 0, 2, 6, 14, 24 and 34 s fail
    b.relay.mode = "pass"
    await clock.run_for(10.0)  # the try at 44 s reads the lease; then 46, 48, 50 s

    times = b.relay.times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[:6] == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0], "not the capped exponential back-off"
    assert gaps[-3:] == [V_RETRY_PERIOD] * 3, "once the API answers, the follower polls each retry period"
    assert b.elector.holder == "a"
    assert a.elector.is_leader


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
