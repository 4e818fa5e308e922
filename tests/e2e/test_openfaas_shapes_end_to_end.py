"""OpenFaaS's own Deployments scaled end to end by their labels, and namespaces followed by annotation.

Real parts as in test_loop_end_to_end: gateway metrics -> a real Prometheus -> `autoscaler run` as a
process -> the fake API server. The functions are made as OpenFaaS makes them (tests/support/
_apiserver_cluster.py transcribes faas-netes' `makeDeploymentSpec` and the CRD operator's
`newDeployment`), so their scaling labels are on the pod template, not on the Deployment; and with
`--namespaces-annotated openfaas=1` the loop follows namespaces as they are annotated and un-annotated.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.apiserver import FakeApiServer
from tests.support.cluster_processes import ServiceProcess, start_controller
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory
from tests.support.waiting import until

INTERVAL = 1.0
WINDOW = "5s"
ZERO = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "4s"}
DEV = "dev"
DESIRED_DEV_ZERO = 'autoscaler_desired_replicas{function_name="dev-zero.dev"}'


@dataclass
class Loop:
    api: FakeApiServer
    exporter: GatewayExporter
    controller: ServiceProcess

    async def wait_replicas(self, name: str, want: int, *, namespace: str = "openfaas-fn") -> None:
        await until(
            lambda: self.api.replicas(name, namespace=namespace) == want,
            within=25,
            what=lambda: (
                f"{name}.{namespace} at {want} replicas "
                f"(it has {self.api.replicas(name, namespace=namespace)})\n{self.controller.tail()}"
            ),
            poll=0.05,
        )

    async def metrics(self) -> str:
        port = re.search(r"admin server on http://127.0.0.1:(\d+)", self.controller.text())
        assert port is not None, self.controller.tail()
        url = f"http://127.0.0.1:{port.group(1)}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await response.text()


@pytest.fixture
async def loop(prometheus_factory: PrometheusFactory, tmp_path: Path) -> AsyncIterator[Loop]:
    async with FakeApiServer() as api:
        api.add_namespace("openfaas-fn")
        api.add_namespace(DEV)  # not annotated yet
        # faas-netes' shape: labels on the pod template; the Deployment's own min=1 loses to it.
        api.add_faas_netes_function("fn-zero", labels=ZERO)
        api.add_faas_netes_function("fn-min", labels={"com.openfaas.scale.min": "2"}, replicas=1)
        api.update_deployment("fn-min", labels={"com.openfaas.scale.min": "1"})
        api.add_faas_netes_function("fn-steady")  # zero=false: never to zero
        # The CRD operator's shape: no labels on the Deployment at all, owned by a Function.
        api.add_crd_function("crd-zero", labels=ZERO)
        api.add_crd_function("crd-min", labels={"com.openfaas.scale.min": "3"}, replicas=1)
        api.add_faas_netes_function("dev-zero", namespace=DEV, labels=ZERO)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        with GatewayExporter() as exporter:
            for key in ("fn-zero", "fn-min", "fn-steady", "crd-zero", "crd-min"):
                exporter.set_function(f"{key}.openfaas-fn", rps=0.0, inflight=0)
            for key in ("dev-zero", "dev-min"):
                exporter.set_function(f"{key}.{DEV}", rps=0.0, inflight=0)
            prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=0.5)
            controller = await start_controller(
                kubeconfig=kubeconfig,
                prometheus_url=prometheus.url,
                log=tmp_path / "controller.log",
                interval=INTERVAL,
                rate_window=WINDOW,
                extra_args=("--namespaces-annotated", "openfaas=1"),
            )
            try:
                # The controller started while Prometheus took its first scrapes (no data: nothing scaled).
                await prometheus.wait_for_rates({"fn-zero.openfaas-fn": 0.0}, window=WINDOW)
                yield Loop(api=api, exporter=exporter, controller=controller)
            finally:
                code = await controller.stop()
            assert code == 0, controller.tail()


async def test_functions_of_both_openfaas_shapes_are_scaled_by_their_pod_template_labels(loop: Loop) -> None:
    await loop.wait_replicas("fn-min", 2)  # the pod template's min, not the Deployment's 1
    await loop.wait_replicas("crd-min", 3)
    await loop.wait_replicas("fn-zero", 0)
    await loop.wait_replicas("crd-zero", 0)
    await asyncio.sleep(2 * INTERVAL)
    assert loop.api.replicas("fn-steady") == 1
    assert (loop.api.replicas("fn-min"), loop.api.replicas("crd-min")) == (2, 3)
    for name in ("fn-zero", "crd-zero"):

        def to_zero(e: dict[str, Any], n: str = name) -> bool:
            return bool(e["involvedObject"]["name"] == n and e["reason"] == "ScaleToZero")

        [event] = await loop.api.wait_events(to_zero, what=name)
        assert "Scaled from 1 to 0" in event["message"]
    assert loop.api.replicas("dev-zero", namespace=DEV) == 1  # its namespace is not annotated


async def test_a_namespace_annotated_after_start_is_followed_and_dropped_when_the_annotation_goes(
    loop: Loop,
) -> None:
    await loop.wait_replicas("fn-zero", 0)  # the loop is running
    assert loop.api.replicas("dev-zero", namespace=DEV) == 1

    loop.api.annotate_namespace(DEV, {"openfaas": "1"})

    await loop.wait_replicas("dev-zero", 0, namespace=DEV)
    await loop.controller.wait_for(r"following namespace dev", timeout=5)
    assert DESIRED_DEV_ZERO in await loop.metrics()

    loop.api.annotate_namespace(DEV, {"openfaas": None})

    await loop.controller.wait_for(r"no longer following namespace dev", timeout=10)
    loop.api.add_faas_netes_function(
        "dev-min", namespace=DEV, labels={"com.openfaas.scale.min": "2"}, replicas=1
    )
    await asyncio.sleep(4 * INTERVAL)
    assert loop.api.replicas("dev-min", namespace=DEV) == 1  # not followed: left alone
    assert DESIRED_DEV_ZERO not in await loop.metrics()  # no longer one of the loop's functions
