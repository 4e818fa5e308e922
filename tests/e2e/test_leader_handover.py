"""Two `autoscaler run --leader-election` processes: one patches at a time, and a handover mid-burst
goes on from where the old leader was, without a burst of wrong decisions.

Both controllers run for real against the wire-format API server (which stores the Lease) and a real
Prometheus. The follower ticks without patching, so its idle timers and windows are warm when it takes
over; the test checks that from the replica history the API server recorded.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.apiserver import LEASES, FakeApiServer
from tests.support.cluster_processes import ServiceProcess, replica_history, start_controller
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory, PrometheusServer
from tests.support.waiting import until

WINDOW = "5s"
BURSTY, SLEEPY = "bursty", "sleepy"
ELECTION = ("--leader-election", "--lease-name", "autoscaler-e2e", "--lease-namespace", "openfaas")


async def scale_total(controller: ServiceProcess) -> float:
    """Sum of `autoscaler_scale_total` on the controller's admin port: patches it made itself."""
    port = int(re.search(r"admin server on http://127\.0\.0\.1:(\d+)", controller.text()).group(1))  # type: ignore[union-attr]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    return sum(float(v) for v in re.findall(r"^autoscaler_scale_total\{[^}]*\} (\S+)$", text, re.MULTILINE))


async def wait_replicas(api: FakeApiServer, name: str, want: int, *, timeout: float, why: str) -> None:
    await until(
        lambda: api.replicas(name) == want,
        within=timeout,
        what=lambda: f"{name} at {want} replicas (it has {api.replicas(name)}): {why}",
        poll=0.05,
    )


@pytest.fixture
async def world(
    prometheus_factory: PrometheusFactory, tmp_path: Path
) -> AsyncIterator[tuple[FakeApiServer, GatewayExporter, PrometheusServer, Path]]:
    async with FakeApiServer() as api:
        api.add_deployment(BURSTY, labels={"faas_function": BURSTY}, replicas=1)
        api.add_deployment(
            SLEEPY,
            labels={
                "faas_function": SLEEPY,
                "com.openfaas.scale.zero": "true",
                "com.openfaas.scale.zero-duration": "2m",
            },
            replicas=1,
        )
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        with GatewayExporter() as exporter:
            for name in (BURSTY, SLEEPY):
                exporter.set_function(f"{name}.openfaas-fn", rps=0.0, inflight=0)
            prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=0.5)
            await prometheus.wait_for_rates({f"{BURSTY}.openfaas-fn": 0.0}, window=WINDOW)
            yield api, exporter, prometheus, kubeconfig


async def test_one_leader_patches_and_a_handover_mid_burst_continues_without_wrong_decisions(
    world: tuple[FakeApiServer, GatewayExporter, PrometheusServer, Path], tmp_path: Path
) -> None:
    api, exporter, prometheus, kubeconfig = world
    controllers = list(await asyncio.gather(*(  # started together, as two replicas of a Deployment are
        start_controller(
            kubeconfig=kubeconfig, prometheus_url=prometheus.url, log=tmp_path / f"{name}.log",
            interval=0.5, rate_window=WINDOW, extra_args=ELECTION, name=name,
        )
        for name in ("first", "second")
    )))  # fmt: skip
    try:
        leader = await asyncio.wait_for(_first_leader(controllers), 15)
        follower = next(c for c in controllers if c is not leader)
        assert len(api.objects(LEASES, namespace="openfaas")) == 1

        key = f"{BURSTY}.openfaas-fn"
        exporter.set_rate(key, 300.0)
        await wait_replicas(
            api, BURSTY, math.ceil(300 / 45), timeout=20, why="the leader did not follow the burst"
        )
        assert await scale_total(leader) >= 1
        assert await scale_total(follower) == 0
        assert "became leader" not in follower.text()

        exporter.set_rate(key, 600.0)  # the burst grows while the leader goes away
        assert await leader.stop() == 0
        await follower.wait_for("became leader", timeout=15)
        await wait_replicas(
            api, BURSTY, math.ceil(600 / 45), timeout=20, why="the new leader did not take over"
        )
        assert await scale_total(follower) >= 1

        history = replica_history(api, BURSTY)
        assert history == sorted(history), f"a scale-down happened during the handover: {history}"
        assert replica_history(api, SLEEPY) == [1]
    finally:
        for controller in controllers:
            await controller.stop()


async def _first_leader(controllers: list[ServiceProcess]) -> ServiceProcess:
    while True:
        leading = [c for c in controllers if "became leader" in c.text()]
        if leading:
            assert len(leading) == 1, "two controllers became leader at once"
            return leading[0]
        await asyncio.sleep(0.05)
