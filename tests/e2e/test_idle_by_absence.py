"""Functions with no invocation series go to zero only when a healthy source proves they are idle.

Real parts: a gateway-shaped exporter, a real Prometheus, `autoscaler run` as a process and the
wire-format API server holding Deployments in the shape faas-netes writes them (labels on the pod
template). A function deployed and never called has no `gateway_function_*` series at all, only the
gateway's `gateway_service_count`; one called through the CE gateway has no in-flight gauge. Both go
to zero after their zero-duration, counted from when the controller first saw them, and neither does
while Prometheus or the scrape target is down (invariant 1).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.apiserver import FakeApiServer
from tests.support.cluster_processes import ServiceProcess, start_controller
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory, PrometheusServer
from tests.support.waiting import until

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

INTERVAL = 0.5
WINDOW = "5s"
ZERO_AFTER = 6.0
# How long a down source must keep every function where it is: past the zero-duration counted from
# the moment it went down (later than any idle timer started), and four ticks more.
OUTLAST = ZERO_AFTER + 4 * INTERVAL
NEVER = "never"  # deployed, never called
CE = "ce-only"  # called through a CE gateway: started counter, no in-flight gauge
JOBS = "jobs"  # type=queue with no queue-worker answering: pending is no data, still goes to zero
LABELS = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": f"{ZERO_AFTER:g}s"}
SERVICE = "max by (function_name) (gateway_service_count)"


@dataclass
class World:
    api: FakeApiServer
    exporter: GatewayExporter
    prometheus: PrometheusServer
    controller: ServiceProcess
    started: float  # monotonic time the controller's loop started

    def scale_writes(self) -> int:
        return self.api.replica_writes()

    async def at_zero(self, name: str, *, within: float) -> float:
        return await until(
            lambda: self.api.replicas(name) == 0,
            within=within,
            what=lambda: f"{name} at 0 replicas; controller log:\n{self.controller.tail()}",
            poll=0.05,
        )


@pytest.fixture
async def world(prometheus_factory: PrometheusFactory, tmp_path: Path) -> AsyncIterator[World]:
    async with FakeApiServer() as api:
        api.add_faas_netes_function(NEVER, labels=LABELS)
        api.add_faas_netes_function(CE, labels=LABELS)
        api.add_faas_netes_function(JOBS, labels={**LABELS, "com.openfaas.scale.type": "queue"}, replicas=2)
        with GatewayExporter() as exporter:
            exporter.deploy(f"{NEVER}.openfaas-fn")
            exporter.set_function(f"{CE}.openfaas-fn", rps=0.0, inflight=None)
            exporter.set_function(f"{JOBS}.openfaas-fn", rps=0.0, inflight=None)
            prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=0.5)
            await prometheus.wait_for_series(SERVICE, lambda found: len(found) == 3)
            controller = await start_controller(
                kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"),
                prometheus_url=prometheus.url,
                log=tmp_path / "controller.log",
                interval=INTERVAL,
                rate_window=WINDOW,
            )
            try:
                yield World(api, exporter, prometheus, controller, time.monotonic())
            finally:
                code = await controller.stop()
            assert code == 0, controller.tail()


async def test_a_never_called_function_goes_to_zero_after_its_zero_duration(world: World) -> None:
    seen_at_zero = await world.at_zero(NEVER, within=ZERO_AFTER + 10)
    # Counted from when the controller first saw the function, never from before it started.
    assert seen_at_zero - world.started >= ZERO_AFTER - INTERVAL
    [event] = await world.api.wait_events(
        lambda e: e["involvedObject"]["name"] == NEVER and e["reason"] == "ScaleToZero", what=NEVER
    )
    assert "Scaled from 1 to 0" in event["message"]


async def test_a_function_called_only_through_the_ce_gateway_goes_to_zero_once_calls_stop(
    world: World,
) -> None:
    key = f"{CE}.openfaas-fn"
    world.exporter.set_rate(key, 3.0)
    await asyncio.sleep(ZERO_AFTER)  # calls keep it warm past its zero-duration
    assert world.api.replicas(CE) == 1
    world.exporter.set_rate(key, 0.0)
    stopped = time.monotonic()
    seen_at_zero = await world.at_zero(CE, within=ZERO_AFTER + 10)
    assert seen_at_zero - stopped >= ZERO_AFTER - 2.0  # less a scrape and the controller's lag


async def test_a_queue_function_no_worker_answers_for_keeps_its_replicas_and_still_goes_to_zero(
    world: World,
) -> None:
    # type=queue is measured (pending calls), so no warning; with no queue-worker series its pending
    # figure is no data, never a made-up 0: it is not scaled down by load, only to zero once idle.
    await world.at_zero(JOBS, within=ZERO_AFTER + 10)
    await world.api.wait_events(
        lambda e: e["involvedObject"]["name"] == JOBS and e["reason"] == "ScaleToZero", what=JOBS
    )
    events = [e for e in world.api.events() if e["involvedObject"]["name"] == JOBS]
    said = [(e["reason"], e["message"].split(":")[0]) for e in events]
    assert said == [("ScaleToZero", "Scaled from 2 to 0 replicas")]


async def test_with_the_scrape_target_down_nothing_goes_to_zero(world: World) -> None:
    world.exporter.stop()
    await world.prometheus.wait_for_series(SERVICE, lambda found: not found, timeout=10)
    assert time.monotonic() - world.started < ZERO_AFTER - 1, "the target went down too late to test"
    writes = world.scale_writes()
    await asyncio.sleep(OUTLAST)
    assert world.scale_writes() == writes
    assert [world.api.replicas(name) for name in (NEVER, CE, JOBS)] == [1, 1, 2]


async def test_with_prometheus_down_nothing_goes_to_zero(world: World) -> None:
    world.prometheus.kill()
    assert time.monotonic() - world.started < ZERO_AFTER - 1, "Prometheus went down too late to test"
    writes = world.scale_writes()
    await asyncio.sleep(OUTLAST)
    assert world.scale_writes() == writes
    assert [world.api.replicas(name) for name in (NEVER, CE, JOBS)] == [1, 1, 2]
