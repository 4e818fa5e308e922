"""When the leader goes, the other candidate takes over, and never before the old one has stopped."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

import pytest

from tests.leader.conftest import (
    LEASE_DURATION,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    SLACK,
    Candidate,
    CandidateFactory,
    Timeline,
)
from tests.support.waiting import until


async def _a_leads_b_follows(candidate: CandidateFactory, **kwargs: object) -> tuple[Candidate, Candidate]:
    a = await candidate("a", **kwargs)
    a.start()
    await until(lambda: a.elector.is_leader, within=3, what="a to lead")
    b = await candidate("b")
    b.start()
    await until(lambda: b.elector.holder == "a", within=3, what="b to see a's lease")
    return a, b


@pytest.mark.parametrize("cut", ["fail", "hang"])
async def test_a_leader_cut_off_from_the_api_stops_within_the_renew_deadline_and_the_other_takes_over(
    candidate: CandidateFactory, timeline: Timeline, cut: Literal["fail", "hang"]
) -> None:
    a, b = await _a_leads_b_follows(candidate)
    cut_at = time.monotonic()
    a.relay.mode = cut

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
    candidate: CandidateFactory, timeline: Timeline
) -> None:
    a, b = await _a_leads_b_follows(candidate)

    await a.stop()
    (a_stopped,) = timeline.times("a", "stopped")
    b_leads = await until(
        lambda: bool(timeline.times("b", "started")), within=RETRY_PERIOD + SLACK, what="b to lead"
    )

    (b_started,) = timeline.times("b", "started")
    assert a_stopped < b_started
    assert b_leads - a_stopped < LEASE_DURATION, "b waited for the lease to expire: it was not released"
    assert b.elector.is_leader


async def test_a_crash_of_the_leaders_work_is_logged_and_the_other_candidate_takes_over(
    candidate: CandidateFactory, timeline: Timeline, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    async def crash_on_cue(_: Candidate) -> None:
        await release.wait()
        raise RuntimeError("could not rebuild state")

    a, b = await _a_leads_b_follows(candidate, work=crash_on_cue)
    with caplog.at_level(logging.ERROR, logger="autoscaler.leader"):
        release.set()
        await until(
            lambda: bool(timeline.times("b", "started")), within=RETRY_PERIOD * 2 + SLACK, what="b to lead"
        )

    crash_logs = [r for r in caplog.records if "leader work crashed" in r.getMessage()]
    assert len(crash_logs) == 1
    assert crash_logs[0].exc_info is not None
    assert "could not rebuild state" in str(crash_logs[0].exc_info[1])
    (a_stopped,) = timeline.times("a", "stopped")
    (b_started,) = timeline.times("b", "started")
    assert a_stopped < b_started
    assert not a.elector.is_leader
    assert b.elector.is_leader
