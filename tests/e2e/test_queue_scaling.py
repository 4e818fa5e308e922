"""A `type=queue` function is woken by its backlog, scaled to ceil(pending / target) and put back to zero.

Real parts: `autoscaler run` as a process, a real Prometheus and the wire-format API server. The first
test feeds the loop a backlog of an exact size through the queue-worker's own metric families
(`tests.queue.worker_exporter`) so that what the loop does with a given `pending` is visible on its
own; the second runs the whole asynchronous path: a real nats-server with JetStream, `autoscaler proxy
--nats-url` accepting `/async-function/` calls, `autoscaler queue-worker` invoking them through the
proxy, and Prometheus scraping both, so the backlog the loop scales on is the one JetStream holds.
Knobs are short (scrape 0.5 s, tick 0.5 s, zero-duration 3 s) so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import pytest

from tests.queue.worker_exporter import WorkerExporter
from tests.support.apiserver import FakeApiServer
from tests.support.child import free_port
from tests.support.cluster_processes import NAMESPACE, Pods, ServiceProcess, replica_history, start_controller
from tests.support.exporter import GatewayExporter
from tests.support.nats import NatsServer, nats_server  # noqa: F401 - fixture
from tests.support.prometheus import PrometheusFactory
from tests.support.upstream import Upstream
from tests.support.waiting import until

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

FN = "batch"
KEY = f"{FN}.{NAMESPACE}"
TARGET = 5
MAX = 4
ZERO_AFTER = 3.0
INTERVAL = 0.5
SCRAPE = 0.5
LABELS = {
    "com.openfaas.scale.type": "queue",
    "com.openfaas.scale.target": str(TARGET),
    "com.openfaas.scale.target-proportion": "1",
    "com.openfaas.scale.max": str(MAX),
    "com.openfaas.scale.zero": "true",
    "com.openfaas.scale.zero-duration": f"{ZERO_AFTER:g}s",
}
# From a change in the backlog to the patch: the worker's look, a scrape, a tick to see it, the patch.
LAG = 0.2 + SCRAPE + 2 * INTERVAL + 1.5


def scale_events(api: FakeApiServer) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for e in api.events() if e["involvedObject"]["name"] == FN]


async def replicas(api: FakeApiServer, want: int, *, within: float, log: ServiceProcess) -> float:
    return await until(
        lambda: api.replicas(FN) == want,
        within=within,
        what=lambda: f"{FN} at {want} (history {replica_history(api, FN)})\n{log.tail()}",
        poll=0.05,
    )


async def test_a_backlog_at_zero_wakes_the_function_to_its_share_and_it_sleeps_once_drained(
    prometheus_factory: PrometheusFactory, tmp_path: Path
) -> None:
    async with FakeApiServer() as api:
        api.add_faas_netes_function(FN, labels=LABELS, replicas=0)
        with GatewayExporter() as gateway, WorkerExporter() as worker:
            gateway.deploy(KEY, replicas=0)
            worker.set_pending(KEY, 0)
            prometheus = prometheus_factory.start(
                targets=[gateway.target, worker.target], scrape_interval=SCRAPE
            )
            await prometheus.wait_for_series(
                "max by (function_name) (queue_worker_pending_messages)", lambda found: KEY in found
            )
            controller = await start_controller(
                kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"),
                prometheus_url=prometheus.url,
                log=tmp_path / "controller.log",
                interval=INTERVAL,
                rate_window="5s",
            )
            try:
                await asyncio.sleep(ZERO_AFTER + 2 * LAG)
                assert api.replicas(FN) == 0, "no backlog: nothing calls for a replica"

                worker.set_pending(KEY, 12)  # ceil(12 / 5) = 3
                await replicas(api, 3, within=LAG + 2, log=controller)
                [(_, woken)] = [e for e in scale_events(api) if e[0] == "Wake"]
                assert woken.startswith("Scaled from 0 to 3 replicas: queue load 12 / (target 5 x 1)")

                worker.set_pending(KEY, 60)  # ceil(60 / 5) = 12, held at the maximum
                await replicas(api, MAX, within=LAG + 2, log=controller)

                worker.set_pending(KEY, 0)  # drained: one replica, then zero after the zero-duration
                drained = time.monotonic()
                await replicas(api, 1, within=LAG + 2, log=controller)
                at_zero = await replicas(api, 0, within=ZERO_AFTER + LAG + 3, log=controller)
                assert at_zero - drained >= ZERO_AFTER - INTERVAL
            finally:
                code = await controller.stop()
            assert code == 0, controller.tail()
    assert replica_history(api, FN) == [0, 3, MAX, 1, 0]


async def spawn_proxy(*, kubeconfig: Path, nats_url: str, log: Path) -> tuple[ServiceProcess, int, int]:
    proxy = await ServiceProcess.spawn(
        "proxy",
        args=[
            "proxy", "--kubeconfig", str(kubeconfig), "--namespaces", NAMESPACE,
            "--host", "127.0.0.1", "--port", "0", "--admin-port", "0", "--hold-timeout", "20",
            "--shutdown-grace", "2", "--nats-url", nats_url,
        ],
        log=log,
    )  # fmt: skip
    found = await proxy.wait_for(r"proxy listening on 127\.0\.0\.1:(\d+) \(admin (\d+)\)", timeout=30)
    return proxy, int(found.group(1)), int(found.group(2))


async def spawn_worker(*, nats_url: str, proxy_url: str, admin_port: int, log: Path) -> ServiceProcess:
    worker = await ServiceProcess.spawn(
        "queue-worker",
        args=[
            "queue-worker", "--nats-url", nats_url, "--proxy-url", proxy_url,
            "--admin-host", "127.0.0.1", "--admin-port", str(admin_port), "--discover-interval", "0.2",
            "--max-inflight", "2", "--no-adaptive-concurrency", "--shutdown-grace", "2",
        ],
        log=log,
    )  # fmt: skip
    await worker.wait_for(r"queue-worker consuming .* \(admin port \d+\)", timeout=30)
    return worker


@pytest.mark.nats
async def test_a_backlog_on_jetstream_scales_the_function_up_drains_and_the_function_sleeps(
    prometheus_factory: PrometheusFactory,
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    calls = 40  # each takes 0.4 s at the function, two at a time: about eight seconds of backlog
    async with FakeApiServer() as api, contextlib.AsyncExitStack() as cleanup:
        api.add_faas_netes_function(FN, labels=LABELS, replicas=0)
        upstream = Upstream(name=FN, port=free_port())
        api.set_backend(FN, host="127.0.0.1", port=upstream.port, ready_delay=0.5)
        pods = Pods(api=api, name=FN, upstream=upstream, termination_grace=0.25)
        pods.start()
        cleanup.push_async_callback(pods.close)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")

        async def stop(process: ServiceProcess) -> None:
            assert await process.stop() == 0, process.tail()

        proxy, port, proxy_admin = await spawn_proxy(
            kubeconfig=kubeconfig, nats_url=nats_server.url, log=tmp_path / "proxy.log"
        )
        cleanup.push_async_callback(stop, proxy)
        session = await cleanup.enter_async_context(aiohttp.ClientSession())
        ids: list[str] = []
        for index in range(calls):
            url = f"http://127.0.0.1:{port}/async-function/{FN}/slow?seconds=0.4&i={index}"
            async with session.post(url, data=f"call {index}".encode()) as response:
                assert response.status == 202, await response.text()
                ids.append(response.headers["X-Call-Id"])
        assert api.replicas(FN) == 0  # accepted and queued, nothing invoked yet

        # The loop watches before the worker starts, so it sees the backlog from its first count.
        worker_admin = free_port()
        prometheus = prometheus_factory.start(
            targets=[f"127.0.0.1:{proxy_admin}", f"127.0.0.1:{worker_admin}"], scrape_interval=SCRAPE
        )
        controller = await start_controller(
            kubeconfig=kubeconfig,
            prometheus_url=prometheus.url,
            log=tmp_path / "controller.log",
            interval=INTERVAL,
            rate_window="5s",
        )
        cleanup.push_async_callback(stop, controller)
        worker = await spawn_worker(
            nats_url=nats_server.url,
            proxy_url=f"http://127.0.0.1:{port}",
            admin_port=worker_admin,
            log=tmp_path / "worker.log",
        )
        cleanup.push_async_callback(stop, worker)

        await replicas(api, MAX, within=15, log=controller)  # the backlog's share, held at the maximum
        await until(
            lambda: {dict(r.headers).get("X-Call-Id") for r in upstream.received} >= set(ids),
            within=30,
            what=lambda: f"every call invoked\n{worker.tail()}",
        )
        drained = time.monotonic()
        at_zero = await replicas(api, 0, within=ZERO_AFTER + LAG + 10, log=controller)
        assert at_zero - drained >= ZERO_AFTER - 2 * INTERVAL - SCRAPE
        pods.check()

    history = replica_history(api, FN)
    assert (history[0], max(history), history[-1]) == (0, MAX, 0), history
    # The maximum came from the loop reading the backlog (the proxy's own wake-up asks for one).
    up = [m for reason, m in scale_events(api) if reason in ("Wake", "ScaleUp") and f"to {MAX} " in m]
    assert up, scale_events(api)
    assert "queue load" in up[0]
