"""The whole product in cluster mode, every part a real process: a cold start is a delay, never an error.

`autoscaler proxy` and `autoscaler run` run as processes against the fake API server (in the test's
event loop), and a real Prometheus scrapes the proxy's admin `/metrics`, so the loop decides on the
gateway metrics the real proxy exported. The function's replica is a real HTTP server that listens only
while its Deployment has replicas (`Pods`) and becomes ready behind its EndpointSlice READY_DELAY
seconds after a scale-up (`set_backend`). Times are wall-clock seconds, the clock the loop itself uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION
from tests.support.apiserver import FakeApiServer
from tests.support.child import stable_port
from tests.support.cluster_processes import (
    Pods,
    ProxyProcess,
    ServiceProcess,
    replica_history,
    start_controller,
    start_proxy,
)
from tests.support.prometheus import PrometheusFactory, PrometheusServer
from tests.support.upstream import Upstream
from tests.support.waiting import until

FN = "sleepy"
KEY = f"{FN}.openfaas-fn"
ZERO_DURATION = 6.0
LABELS = {
    "faas_function": FN,
    "com.openfaas.scale.zero": "true",
    "com.openfaas.scale.zero-duration": f"{ZERO_DURATION:g}s",
}
READY_DELAY = 1.5
INTERVAL = 1.0
SCRAPE_INTERVAL = 0.5
# From the last request to the patch: one scrape, a tick to see it, a tick to act, the patch itself.
LATE_SLACK = SCRAPE_INTERVAL + 2 * INTERVAL + 1.5
SCALE_PATH = rf"/namespaces/openfaas-fn/deployments/{FN}/scale$"


@dataclass
class Stack:
    api: FakeApiServer
    pods: Pods
    proxy: ProxyProcess
    controller: ServiceProcess
    prometheus: PrometheusServer
    session: aiohttp.ClientSession

    def logs(self) -> str:
        return f"{self.proxy.tail()}\n{self.controller.tail()}"

    def scale_writes(self) -> int:
        return self.api.replica_writes(FN)

    async def call(self, index: int, *, path: str = "/echo", delay: float = 0.0) -> tuple[int, bytes, Any]:
        """POST a body unique to `index` after `delay` seconds; (status, sent body, JSON echo or text)."""
        await asyncio.sleep(delay)
        body = f"request {index}: ".encode() + bytes(range(256)) * 2
        url = f"{self.proxy.url}/function/{FN}{path}{'&' if '?' in path else '?'}i={index}"
        async with self.session.post(url, data=body) as response:
            answer: Any = await response.json() if response.status == 200 else await response.text()
            return response.status, body, answer

    async def calls(
        self, count: int, *, first: int = 0, path: str = "/echo", delay: float = 0.0
    ) -> list[Any]:
        results = await asyncio.gather(*(self.call(first + i, path=path, delay=delay) for i in range(count)))
        self.check(results)
        return results

    def check(self, results: list[tuple[int, bytes, Any]]) -> None:
        """Every answer is 200 and echoes its own request's body, byte for byte."""
        self.pods.check()
        failed = [(status, answer) for status, _, answer in results if status != 200]
        assert not failed, f"{len(failed)} request(s) failed: {failed[:3]}\n{self.logs()}"
        for _, body, echo in results:
            assert (echo["body_len"], echo["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
            index = body.split(b":")[0].removeprefix(b"request ").decode()
            assert echo["query_string"].endswith(f"i={index}")

    async def wait_replicas(self, want: int, *, timeout: float) -> float:
        """Wait until the Deployment wants `want` replicas; the wall-clock time it was first seen."""
        await until(
            lambda: self.api.replicas(FN) == want,
            within=timeout,
            what=lambda: (
                f"{FN} at {want} replicas (it has {self.api.replicas(FN)}); "
                f"history {replica_history(self.api, FN)}\n{self.logs()}"
            ),
            poll=0.005,
        )
        return time.time()


@pytest.fixture
async def stack(prometheus_factory: PrometheusFactory, tmp_path: Path) -> AsyncIterator[Stack]:
    codes: dict[str, int] = {}
    processes: list[ServiceProcess] = []

    async def stop(process: ServiceProcess) -> None:
        codes[process.name] = await process.stop()

    # The exit stack closes in reverse order whatever failed, before the API server goes away.
    async with FakeApiServer() as api, contextlib.AsyncExitStack() as cleanup:
        api.add_deployment(FN, labels=LABELS, replicas=0)
        upstream = Upstream(name=FN, port=stable_port())
        api.set_backend(FN, host="127.0.0.1", port=upstream.port, ready_delay=READY_DELAY)
        pods = Pods(api=api, name=FN, upstream=upstream, termination_grace=0.25)
        pods.start()
        cleanup.push_async_callback(pods.close)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        proxy = await start_proxy(kubeconfig=kubeconfig, log=tmp_path / "proxy.log")
        processes.append(proxy)
        cleanup.push_async_callback(stop, proxy)
        prometheus = prometheus_factory.start(
            targets=[f"127.0.0.1:{proxy.admin_port}"], scrape_interval=SCRAPE_INTERVAL
        )
        controller = await start_controller(
            kubeconfig=kubeconfig,
            prometheus_url=prometheus.url,
            log=tmp_path / "controller.log",
            interval=INTERVAL,
            rate_window="5s",
        )
        processes.append(controller)
        cleanup.push_async_callback(stop, controller)
        session = await cleanup.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30)
            )
        )
        yield Stack(api, pods, proxy, controller, prometheus, session)
    assert codes == {"controller": 0, "proxy": 0}, "\n".join(p.tail() for p in processes)


async def test_twenty_requests_to_a_function_at_zero_are_all_served_after_a_single_wake_up(
    stack: Stack,
) -> None:
    before = time.time()
    started = time.monotonic()
    await stack.calls(20)
    took = time.monotonic() - started

    assert took >= READY_DELAY  # held through the cold start, not answered by a replica already up
    assert stack.scale_writes() == 1
    assert replica_history(stack.api, FN) == [0, 1]
    assert stack.pods.starts == 1
    assert len(stack.pods.upstream.received) == 20
    annotations = stack.api.deployment(FN)["metadata"]["annotations"]
    assert before <= float(annotations[LAST_ACTIVE_ANNOTATION]) <= time.time()


async def test_after_the_traffic_stops_the_function_goes_to_zero_only_once_its_zero_duration_has_passed(
    stack: Stack,
) -> None:
    # Prometheus scrapes a new target only seconds after it starts, so the loop may take its first
    # sample of the started counter after this traffic: idle time still counts from the last request.
    await stack.calls(5)  # the wake-up
    last_sent = 0.0
    for index in range(5, 10):  # then warm traffic for a few seconds
        await asyncio.sleep(0.5)
        last_sent = time.time()
        await stack.calls(1, first=index)
    assert stack.api.replicas(FN) == 1

    zero_at = await stack.wait_replicas(0, timeout=ZERO_DURATION + LATE_SLACK + 5)
    idle = zero_at - last_sent
    assert ZERO_DURATION <= idle <= ZERO_DURATION + LATE_SLACK, f"went to zero after {idle:.2f}s idle"
    assert replica_history(stack.api, FN) == [0, 1, 0]
    [event] = await stack.api.wait_events(lambda e: e["reason"] == "ScaleToZero", what="ScaleToZero")
    assert event["involvedObject"]["name"] == FN
    assert "Scaled from 1 to 0" in event["message"]


async def test_requests_arriving_as_the_zero_duration_expires_are_all_served(stack: Stack) -> None:
    await stack.calls(5)  # woken; from here on the function idles towards its zero-duration
    # The API server holds the next scale write for RACE seconds: the loop's scale-to-zero, decided
    # and sent but not yet applied, with requests arriving before, during and after it lands.
    race = 1.0
    stack.api.delay("PATCH", SCALE_PATH, seconds=race)
    writes = stack.scale_writes()
    deadline = time.monotonic() + ZERO_DURATION + LATE_SLACK + 5
    while stack.scale_writes() == writes:
        assert time.monotonic() < deadline, f"the loop never scaled {FN} to zero\n{stack.logs()}"
        await asyncio.sleep(0.005)
    assert stack.api.replicas(FN) == 1

    results = await asyncio.gather(
        # Warm, and still inside the function when the scale to zero lands.
        *(stack.call(i, path="/slow?seconds=1.3") for i in range(100, 105)),
        *(stack.call(i) for i in range(105, 110)),
        *(stack.call(i, path="/slow?seconds=0.5", delay=race - 0.1) for i in range(110, 115)),
        # At zero: held, woken again, forwarded.
        *(stack.call(i, delay=race + 0.5) for i in range(115, 125)),
        *(stack.call(i, delay=race + 1.2) for i in range(125, 135)),
    )
    stack.check(list(results))

    # The race really happened: the scale to zero landed, then the proxy (or the loop, seeing requests
    # in flight) woke the function again.
    assert replica_history(stack.api, FN) == [0, 1, 0, 1]
    await asyncio.sleep(2 * INTERVAL)
    assert stack.api.replicas(FN) == 1  # the loop does not send the freshly woken function back to zero
