"""When the leader goes, the other candidate takes over, and never before the old one has stopped.

Lease expiry, release and stand-back are on the virtual clock, so the times asserted are exact; the
one cut that is about a hanging connection runs on real time, against the client's real timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.leader.conftest import (
    LEASE_DURATION,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    SLACK,
    V_LEASE_DURATION,
    V_RENEW_DEADLINE,
    V_RETRY_PERIOD,
    Candidate,
    CandidateFactory,
    Timeline,
)
from tests.leader.virtual_clock import VirtualClock
from tests.support.waiting import until


async def _a_leads_b_follows(
    candidate: CandidateFactory, clock: VirtualClock, **kwargs: object
) -> tuple[Candidate, Candidate]:
    a = await candidate("a", clock=clock, **kwargs)
    a.start()
    await clock.run_until(lambda: a.elector.is_leader, within=0, what="a to lead")
    b = await candidate("b", clock=clock)
    b.start()
    await clock.run_until(lambda: b.elector.holder == "a", within=0, what="b to see a's lease")
    await clock.run_for(V_RETRY_PERIOD / 2)  # b's next look is between two of a's renewals
    return a, b


async def test_a_leader_cut_off_from_the_api_stops_at_its_renew_deadline_and_the_other_takes_over(
    candidate: CandidateFactory, timeline: Timeline, clock: VirtualClock
) -> None:
    a, b = await _a_leads_b_follows(candidate, clock)
    last_renewal = max(t for t in a.relay.times if t <= clock.now)
    a.relay.mode = "fail"

    stopped = await clock.run_until(
        lambda: not a.elector.is_leader, within=V_RENEW_DEADLINE, what="a to stop"
    )
    started = await clock.run_until(
        lambda: b.elector.is_leader, within=V_LEASE_DURATION + V_RETRY_PERIOD, what="b to lead"
    )

    (a_stopped,) = timeline.times("a", "stopped")
    (b_started,) = timeline.times("b", "started")
    assert a_stopped == stopped == last_renewal + V_RENEW_DEADLINE, "on_stopped not at the renew deadline"
    assert b_started == started
    # b saw the last renewal at its next look, then waited a full lease duration from then.
    b_saw = min(t for t in b.relay.times if t >= last_renewal)
    assert b_started - b_saw == pytest.approx(V_LEASE_DURATION, abs=V_RETRY_PERIOD)
    assert b_started - a_stopped >= V_LEASE_DURATION - V_RENEW_DEADLINE
    assert not a.elector.is_leader


async def test_a_leader_whose_connection_hangs_stops_within_the_renew_deadline_on_real_time(
    candidate: CandidateFactory, timeline: Timeline
) -> None:
    a = await candidate("a")
    a.start()
    await until(lambda: a.elector.is_leader, within=3, what="a to lead")
    b = await candidate("b")
    b.start()
    await until(lambda: b.elector.holder == "a", within=3, what="b to see a's lease")
    cut_at = time.monotonic()
    a.relay.mode = "hang"

    stopped = await until(lambda: not a.elector.is_leader, within=RENEW_DEADLINE + SLACK, what="a to stop")
    await until(lambda: b.elector.is_leader, within=LEASE_DURATION + RETRY_PERIOD + SLACK, what="b to lead")

    assert stopped - cut_at <= RENEW_DEADLINE + SLACK
    (a_stopped,) = timeline.times("a", "stopped")
    (b_started,) = timeline.times("b", "started")
    assert a_stopped <= cut_at + RENEW_DEADLINE + SLACK, "on_stopped came later than one renew deadline"
    assert a_stopped < b_started, "the new leader started before the old one had stopped"
    assert b_started - a_stopped >= LEASE_DURATION - RENEW_DEADLINE - SLACK
    assert not a.elector.is_leader


async def test_a_leader_that_is_shut_down_releases_the_lease_so_the_other_leads_at_its_next_retry(
    candidate: CandidateFactory, timeline: Timeline, clock: VirtualClock
) -> None:
    a, b = await _a_leads_b_follows(candidate, clock)

    await a.stop()
    (a_stopped,) = timeline.times("a", "stopped")
    b_leads = await clock.run_until(
        lambda: bool(timeline.times("b", "started")), within=V_RETRY_PERIOD, what="b to lead"
    )

    (b_started,) = timeline.times("b", "started")
    assert a_stopped < b_started == b_leads
    assert b_leads - a_stopped <= V_RETRY_PERIOD, "b waited for the lease to expire: it was not released"
    assert b.elector.is_leader


async def test_a_crash_of_the_leaders_work_is_logged_and_the_crashed_candidate_stands_back(
    candidate: CandidateFactory, timeline: Timeline, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    async def crash_on_cue(_: Candidate) -> None:
        await release.wait()
        raise RuntimeError("could not rebuild state")

    a, b = await _a_leads_b_follows(candidate, clock, work=crash_on_cue)
    with caplog.at_level(logging.ERROR, logger="autoscaler.leader"):
        release.set()
        await clock.run_until(
            lambda: bool(timeline.times("b", "started")), within=V_RETRY_PERIOD, what="b to lead"
        )

    crash_logs = [r for r in caplog.records if "leader work crashed" in r.getMessage()]
    assert len(crash_logs) == 1
    assert crash_logs[0].exc_info is not None
    assert "could not rebuild state" in str(crash_logs[0].exc_info[1])
    (a_stopped,) = timeline.times("a", "stopped")
    (b_started,) = timeline.times("b", "started")
    assert a_stopped < b_started

    def b_keeps_leading() -> None:
        assert b.elector.is_leader
        assert not a.elector.is_leader

    await clock.run_for(2 * V_LEASE_DURATION, check=b_keeps_leading)  # a stood back, then follows
    assert timeline.times("a", "started") == [timeline.events[0][0]]
    assert a.elector.holder == "b"
