"""The whole control path with real parts: gateway metrics -> Prometheus -> `autoscaler run` -> API server.

The controller runs as a real process (`python -m autoscaler run`) against a real Prometheus that
scrapes an exporter serving the OpenFaaS gateway's metric names, and against an HTTP server that speaks
the Kubernetes API's wire format. Times are measured from what Prometheus itself answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.support.apiserver import FakeApiServer
from tests.support.cluster_processes import start_controller
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory, PrometheusServer
from tests.support.waiting import until

INTERVAL = 1.0
WINDOW = "5s"
BURSTY = "bursty"
SLEEPY = "sleepy"  # zero=true
STEADY = "steady"  # zero=false, idle
SLEEPY_LABELS = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "4s"}


@dataclass
class Cluster:
    api: FakeApiServer
    exporter: GatewayExporter
    prometheus: PrometheusServer
    log: Path

    async def wait_replicas(self, name: str, want: int, *, timeout: float) -> float:
        """Wait until the Deployment has `want` replicas; return the monotonic time it was seen."""
        return await until(
            lambda: self.api.replicas(name) == want,
            within=timeout,
            what=lambda: (
                f"{name} at {want} replicas (it has {self.api.replicas(name)}); "
                f"controller log tail:\n{self.log.read_text()[-3000:]}"
            ),
            poll=0.05,
        )

    def scale_writes(self) -> int:
        return self.api.replica_writes()


@contextlib.asynccontextmanager
async def running_cluster(factory: PrometheusFactory, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with FakeApiServer() as api:
        api.add_deployment(BURSTY, labels={"faas_function": BURSTY}, replicas=1)
        api.add_deployment(SLEEPY, labels={"faas_function": SLEEPY, **SLEEPY_LABELS}, replicas=1)
        api.add_deployment(STEADY, labels={"faas_function": STEADY}, replicas=1)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        with GatewayExporter() as exporter:
            for name in (BURSTY, SLEEPY, STEADY):
                exporter.set_function(f"{name}.openfaas-fn", rps=0.0, inflight=0)
            prometheus = factory.start(targets=[exporter.target], scrape_interval=0.5)
            controller = await start_controller(
                kubeconfig=kubeconfig,
                prometheus_url=prometheus.url,
                log=tmp_path / "controller.log",
                interval=INTERVAL,
                rate_window=WINDOW,
            )
            try:
                # The controller started while Prometheus took its first scrapes (no data: nothing scaled).
                await prometheus.wait_for_rates({f"{BURSTY}.openfaas-fn": 0.0}, window=WINDOW)
                yield Cluster(api=api, exporter=exporter, prometheus=prometheus, log=controller.log)
            finally:
                code = await controller.stop()
            assert code == 0, controller.tail()


@pytest.fixture
async def cluster(prometheus_factory: PrometheusFactory, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A cluster of its own, for a test that changes the load or kills Prometheus."""
    async with running_cluster(prometheus_factory, tmp_path) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def quiet_cluster(
    module_prometheus_factory: PrometheusFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    """One cluster left idle, shared by the tests that only watch it go quiet."""
    async with running_cluster(module_prometheus_factory, tmp_path_factory.mktemp("quiet")) as running:
        yield running


def rate_at_least(key: str, value: float) -> Callable[[dict[str, float]], bool]:
    return lambda series: series.get(key, 0.0) >= value


async def test_a_burst_scales_up_within_two_ticks_of_prometheus_seeing_it(cluster: Cluster) -> None:
    key = f"{BURSTY}.openfaas-fn"
    cluster.exporter.set_rate(key, 300.0)
    want = math.ceil(300.0 / (50 * 0.9))
    query = f"sum by (function_name) (rate(gateway_function_invocation_total[{WINDOW}]))"
    # "Seeing it" = Prometheus answers a rate that already calls for the full replica count.
    await cluster.prometheus.wait_for_series(query, rate_at_least(key, (want - 1) * 45 + 1), timeout=20)
    seen = time.monotonic()
    scaled = await cluster.wait_replicas(BURSTY, want, timeout=10)
    assert scaled - seen <= 2 * INTERVAL + 0.5
    await cluster.api.wait_events(
        lambda e: (
            e["involvedObject"]["name"] == BURSTY
            and e["reason"] == "ScaleUp"
            and "to 7 replicas" in e["message"]
        ),
        what=f"{BURSTY} ScaleUp to 7",
    )


@pytest.mark.asyncio(loop_scope="module")
async def test_silence_scales_a_zero_function_to_zero_and_never_a_zero_false_one(
    quiet_cluster: Cluster,
) -> None:
    cluster = quiet_cluster
    await cluster.wait_replicas(SLEEPY, 0, timeout=20)
    await asyncio.sleep(3 * INTERVAL)
    assert cluster.api.replicas(STEADY) == 1
    assert cluster.api.replicas(BURSTY) == 1
    [event] = await cluster.api.wait_events(lambda e: e["involvedObject"]["name"] == SLEEPY, what=SLEEPY)
    assert event["reason"] == "ScaleToZero"
    assert "Scaled from 1 to 0" in event["message"]


async def test_with_prometheus_killed_nothing_is_scaled_down(cluster: Cluster) -> None:
    bursty, sleepy = f"{BURSTY}.openfaas-fn", f"{SLEEPY}.openfaas-fn"
    cluster.exporter.set_rate(bursty, 300.0)
    cluster.exporter.set_rate(sleepy, 2.0)
    await cluster.wait_replicas(BURSTY, 7, timeout=20)
    cluster.prometheus.kill()
    writes = cluster.scale_writes()
    cluster.exporter.set_rate(bursty, 0.0)
    cluster.exporter.set_rate(sleepy, 0.0)
    await asyncio.sleep(6 * INTERVAL)  # the sleepy function's zero-duration (4s) and two ticks more
    assert cluster.scale_writes() == writes
    assert (cluster.api.replicas(BURSTY), cluster.api.replicas(SLEEPY)) == (7, 1)
    assert "unreachable" in cluster.log.read_text()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_admin_port_serves_health_and_the_loops_metrics(quiet_cluster: Cluster) -> None:
    cluster = quiet_cluster
    port = int(re.search(r"admin server on http://127.0.0.1:(\d+)", cluster.log.read_text()).group(1))  # type: ignore[union-attr]
    await cluster.wait_replicas(SLEEPY, 0, timeout=20)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200
        # The loop counts a scale just after the API server has answered it: read until it has.
        scaled = 'autoscaler_scale_total{function_name="sleepy.openfaas-fn",reason="ScaleToZero"} 1.0'
        deadline = time.monotonic() + 5
        text = ""
        while scaled not in text and time.monotonic() < deadline:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
    assert 'autoscaler_desired_replicas{function_name="steady.openfaas-fn"} 1.0' in text
    assert scaled in text
    assert "autoscaler_tick_seconds_count" in text
    assert "autoscaler_is_leader 1.0" in text
