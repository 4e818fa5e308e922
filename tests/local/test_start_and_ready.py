"""A replica counts only once its readiness path answers 2xx or 3xx, as a kubelet probe would; each has
its own port, process and log name."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest

from autoscaler.errors import NotFoundError
from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionRef
from autoscaler.providers.local._replica import ReplicaState, ReplicaTiming
from tests.support.waiting import until

from .support import READY, REF, MakeProvider


async def test_a_replica_is_ready_only_once_its_health_path_stops_answering_503(
    make_provider: MakeProvider,
) -> None:
    started = time.monotonic()
    provider = await make_provider(env={"READY_AFTER": "0.8"})
    await until(lambda: any(r.pid for r in provider.replicas(REF)), within=5, what="a spawned replica")
    assert provider.endpoints(REF) == []
    assert provider.get(REF).ready_replicas == 0

    assert await provider.wait_ready(REF, timeout=10)
    assert time.monotonic() - started >= 0.8
    [url] = provider.endpoints(REF)
    async with aiohttp.ClientSession() as session, session.get(url + "/") as response:
        assert response.status == 200
    info = provider.functions()[REF.key]
    assert (info.replicas, info.ready_replicas) == (1, 1)


async def test_a_replica_whose_root_answers_at_once_is_ready_only_once_its_ready_annotation_path_does(
    make_provider: MakeProvider,
) -> None:
    started = time.monotonic()
    provider = await make_provider(
        env={"READY_PATH": "/ready", "READY_AFTER": "0.8"}, annotations={READY: "/ready"}
    )
    await until(lambda: any(r.port for r in provider.replicas(REF)), within=5, what="a spawned replica")
    [view] = provider.replicas(REF)
    async with aiohttp.ClientSession() as session:
        root = f"http://127.0.0.1:{view.port}/"
        await until_answers(session, root, within=5)
        async with session.get(root + "ready") as response:
            assert response.status == 503
        assert provider.endpoints(REF) == []

        assert await provider.wait_ready(REF, timeout=10)
        assert time.monotonic() - started >= 0.8
        async with session.get(root + "ready") as response:
            assert response.status == 200


async def until_answers(session: aiohttp.ClientSession, url: str, *, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("status", "location", "ready"),
    [
        ("404", None, False),
        ("500", None, False),
        ("204", None, True),
        ("302", "/missing", False),  # followed on the same host, to a 404
        ("307", "/elsewhere", True),  # followed on the same host, to a 200
        ("302", "http://localhost:1/", True),  # another host name: the redirect is the answer, not dialled
    ],
)
async def test_the_ready_path_counts_as_a_kubelet_probe_does_2xx_and_3xx_only(
    make_provider: MakeProvider,
    caplog: pytest.LogCaptureFixture,
    status: str,
    location: str | None,
    ready: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="autoscaler.functions")
    env = {
        "READY_PATH": "/ready",
        "READY_STATUS": status,
        **({"READY_LOCATION": location} if location else {}),
    }
    provider = await make_provider(env=env, annotations={READY: "/ready"})
    if ready:
        assert await provider.wait_ready(REF, timeout=10)
        return
    probed = f'"GET /ready HTTP/1.1" {status}'
    await until(lambda: caplog.text.count(probed) >= 3, within=10, what=f"three probes answered {status}")
    assert provider.endpoints(REF) == []
    assert [view.state for view in provider.replicas(REF)] == [ReplicaState.STARTING]


@pytest.mark.slow
async def test_a_replica_never_ready_is_restarted_with_a_reason_naming_what_its_ready_path_answered(
    make_provider: MakeProvider,
) -> None:
    # The timeout leaves a loaded machine time to start the replica's interpreter and listen: with 0.5 s
    # a CI run once killed it before its first probe was answered ("last no answer").
    timing = ReplicaTiming(ready_timeout=3.0, grace=1.0, drain_delay=0.1, backoff_base=0.3, backoff_max=1.0)
    provider = await make_provider(
        timing=timing, env={"READY_PATH": "/ready", "READY_STATUS": "404"}, annotations={READY: "/ready"}
    )
    await until(lambda: bool(provider.events()), within=20, what="a ReplicaCrashed event")
    [event] = provider.events()[:1]
    assert event.reason == "ReplicaCrashed"
    assert "not ready after 3s: /ready last answered 404" in event.message


async def test_every_replica_runs_its_own_process_on_its_own_loopback_port(
    make_provider: MakeProvider,
) -> None:
    provider = await make_provider(replicas=3)
    await until(lambda: len(provider.endpoints(REF)) == 3, within=10, what="3 ready replicas")
    urls = provider.endpoints(REF)
    assert len(set(urls)) == 3
    assert all(url.startswith("http://127.0.0.1:") for url in urls)
    async with aiohttp.ClientSession() as session:
        pids = set()
        for url in urls:
            async with session.get(url + "/pid") as response:
                pids.add(int(await response.text()))
    assert pids == {view.pid for view in provider.replicas(REF)}


async def test_waiting_for_a_function_at_zero_times_out_with_false(make_provider: MakeProvider) -> None:
    provider = await make_provider(replicas=0)
    started = time.monotonic()
    assert await provider.wait_ready(REF, timeout=0.3) is False
    assert time.monotonic() - started < 3.0  # about the timeout; a loaded machine adds its lag
    assert provider.functions()[REF.key].replicas == 0


async def test_a_waiter_wakes_as_soon_as_a_scaled_up_replica_is_ready(make_provider: MakeProvider) -> None:
    provider = await make_provider(replicas=0)
    changes: list[FunctionRef] = []
    provider.subscribe(changes.append)
    await provider.scale(REF, 1)
    assert await provider.wait_ready(REF, timeout=10)
    assert provider.cold_starts(REF) == 1
    assert REF in changes


async def test_replica_output_is_logged_under_the_replica_name(
    make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="autoscaler.functions")
    provider = await make_provider()
    assert await provider.wait_ready(REF, timeout=10)
    await until(lambda: "[echo-0] listening on" in caplog.text, within=5, what="the replica's first line")


async def test_an_unknown_function_cannot_be_scaled_and_the_error_lists_the_known_ones(
    make_provider: MakeProvider,
) -> None:
    provider = await make_provider(replicas=0)
    with pytest.raises(NotFoundError, match=r"nope\.openfaas-fn .*known: echo\.openfaas-fn"):
        await provider.scale(FunctionRef("nope", "openfaas-fn"), 1)
    assert provider.get(FunctionRef("nope", "openfaas-fn")) is None
    assert provider.endpoints(FunctionRef("nope", "openfaas-fn")) == []


async def test_activity_and_events_are_kept_for_the_loop_and_the_demo(make_provider: MakeProvider) -> None:
    provider = await make_provider(replicas=0)
    await provider.mark_active(REF, 1000.0)
    await provider.mark_active(REF, 900.0)  # an older report never moves the time back
    await provider.record_event(REF, reason="ScaleUp", message="from 0 to 1: load 3 rps")
    info = provider.get(REF)
    assert info.last_active == 1000.0
    assert info.annotations[LAST_ACTIVE_ANNOTATION] == "1000.000"
    [event] = provider.events()
    assert (event.function, event.reason, event.message) == (REF.key, "ScaleUp", "from 0 to 1: load 3 rps")
