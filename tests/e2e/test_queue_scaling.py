"""A `type=queue` function is woken by its backlog, scaled to ceil(pending / target) and put back to zero.

Real parts: `autoscaler run` as a process, a real Prometheus and the wire-format API server. The first
test feeds the loop a backlog of an exact size through the queue-worker's own metric families
(`tests.queue.worker_exporter`) so that what the loop does with a given `pending` is visible on its
own; the others run the whole asynchronous path (`AsyncStack`): a real nats-server with JetStream,
`autoscaler proxy --nats-url` accepting `/async-function/` calls, `autoscaler queue-worker` invoking
them through the proxy, a real callback receiver, and Prometheus scraping proxy and worker, so the
backlog the loop scales on is the one JetStream holds; one run SIGKILLs the worker and restarts
nats-server mid-run and loses nothing. Knobs are short (scrape 0.5 s, tick 0.5 s, zero-duration 3 s,
ack wait 2 s) so each test takes seconds; the 10,000-call run takes about a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.queue.worker_exporter import WorkerExporter
from tests.support.apiserver import FakeApiServer
from tests.support.child import free_port, stable_port
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
                [wake] = await api.wait_events(  # written just after the scale it reports
                    lambda e: e["involvedObject"]["name"] == FN and e["reason"] == "Wake", what="Wake"
                )
                woken = wake["message"]
                assert woken.startswith("Scaled from 0 to 3 replicas: 12 pending calls / (target 5 x 1)")
                assert woken.endswith("wake to 3 for its backlog")

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


@dataclass
class Callbacks:
    """A real HTTP server for X-Callback-Url: every delivery, keyed by X-Call-Id."""

    received: dict[str, list[bytes]] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/done"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.setdefault(request.headers.get("X-Call-Id", ""), []).append(await request.read())
        return web.Response(status=202)


@dataclass
class AsyncStack:
    api: FakeApiServer
    upstream: Upstream
    controller: ServiceProcess
    worker: ServiceProcess
    callbacks: Callbacks
    ids: dict[str, int]  # X-Call-Id -> the index of the call, as accepted
    worker_args: list[str] = field(default_factory=list)
    logs: Path = Path()
    workers: int = 1  # queue-workers started so far

    def invoked(self) -> set[str]:
        return {dict(r.headers).get("X-Call-Id", "") for r in self.upstream.received}

    def called_back(self) -> int:
        return len(self.callbacks.received)

    async def kill_worker(self) -> None:
        """SIGKILL the queue-worker mid-run (a node lost) and start a fresh one in its place."""
        self.worker.process.kill()
        await self.worker.process.wait()
        self.workers += 1
        self.worker = await spawn_worker(self.worker_args, log=self.logs / f"worker-{self.workers}.log")

    def backlog_decisions(self) -> list[str]:
        """Scale-ups to the maximum made on the backlog (the proxy's own wake-up asks for one replica)."""
        ups = [m for r, m in scale_events(self.api) if r in ("Wake", "ScaleUp") and f"to {MAX} " in m]
        return [m for m in ups if "pending calls" in m]


async def spawn(name: str, args: list[str], *, log: Path, ready: str) -> tuple[ServiceProcess, list[str]]:
    process = await ServiceProcess.spawn(name, args=args, log=log)
    try:
        found = await process.wait_for(ready, timeout=30)
    except BaseException:
        await process.stop()
        raise
    return process, [str(group) for group in found.groups()]


async def queue_calls(
    session: aiohttp.ClientSession, *, port: int, calls: int, path: str, callback: str
) -> dict[str, int]:
    """POST `calls` asynchronous calls (64 at a time), each with its own body; X-Call-Id -> index."""
    ids: dict[str, int] = {}

    async def one(index: int) -> None:
        url = f"http://127.0.0.1:{port}/async-function/{FN}{path}{'&' if '?' in path else '?'}i={index}"
        headers = {"X-Callback-Url": callback}
        async with session.post(url, data=f"call {index}".encode(), headers=headers) as response:
            assert response.status == 202, await response.text()
            ids[response.headers["X-Call-Id"]] = index

    for first in range(0, calls, 1000):
        await asyncio.gather(*(one(i) for i in range(first, min(calls, first + 1000))))
    return ids


async def spawn_worker(args: list[str], *, log: Path) -> ServiceProcess:
    worker, _ = await spawn(
        "queue-worker", args, log=log, ready=r"queue-worker consuming .* \(admin port \d+\)"
    )
    return worker


@contextlib.asynccontextmanager
async def async_stack(
    *,
    prometheus_factory: PrometheusFactory,
    nats_url: str,
    tmp_path: Path,
    calls: int,
    max_inflight: int,
    path: str = "/echo",
    worker_flags: tuple[str, ...] = (),
) -> AsyncIterator[AsyncStack]:
    """The function at zero, `calls` calls queued, the loop watching; then the worker is started.

    The loop and Prometheus are up before the worker, so the loop sees the backlog from the worker's
    first count. Every process must exit 0 on SIGTERM.
    """
    async with FakeApiServer() as api, contextlib.AsyncExitStack() as cleanup:
        api.add_faas_netes_function(FN, labels=LABELS, replicas=0)
        upstream = Upstream(name=FN, port=stable_port())
        api.set_backend(FN, host="127.0.0.1", port=upstream.port, ready_delay=0.5)
        pods = Pods(api=api, name=FN, upstream=upstream, termination_grace=0.25)
        pods.start()
        cleanup.push_async_callback(pods.close)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")

        async def stop(process: ServiceProcess) -> None:
            assert await process.stop() == 0, process.tail()

        callbacks = Callbacks()
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/done", callbacks.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        cleanup.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        callbacks.port = int(runner.addresses[0][1])

        proxy, (port, proxy_admin) = await spawn(
            "proxy",
            [
                "proxy", "--kubeconfig", str(kubeconfig), "--namespaces", NAMESPACE,
                "--host", "127.0.0.1", "--port", "0", "--admin-port", "0", "--hold-timeout", "20",
                "--shutdown-grace", "2", "--nats-url", nats_url,
            ],
            log=tmp_path / "proxy.log",
            ready=r"proxy listening on 127\.0\.0\.1:(\d+) \(admin (\d+)\)",
        )  # fmt: skip
        cleanup.push_async_callback(stop, proxy)
        session = await cleanup.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        )
        ids = await queue_calls(session, port=int(port), calls=calls, path=path, callback=callbacks.url)
        assert len(ids) == calls, "every call has its own X-Call-Id"
        assert api.replicas(FN) == 0  # accepted and queued, nothing invoked yet

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
        worker_args = [
            "queue-worker", "--nats-url", nats_url, "--proxy-url", f"http://127.0.0.1:{port}",
            "--admin-host", "127.0.0.1", "--admin-port", str(worker_admin),
            "--discover-interval", "0.2", "--max-inflight", str(max_inflight), "--shutdown-grace", "2",
            *worker_flags,
        ]  # fmt: skip
        worker = await spawn_worker(worker_args, log=tmp_path / "worker.log")
        stack = AsyncStack(api, upstream, controller, worker, callbacks, ids, worker_args, tmp_path)

        async def stop_worker() -> None:
            await stop(stack.worker)  # the one running at the end, after any kill

        cleanup.push_async_callback(stop_worker)
        yield stack
        pods.check()


async def drained_then_zero(stack: AsyncStack, *, calls: int, within: float) -> None:
    """Every call invoked and called back once, then the function back at zero after its zero-duration."""
    await until(
        lambda: sum(len(v) for v in stack.callbacks.received.values()) >= calls,
        within=within,
        what=lambda: f"{calls} callbacks ({len(stack.callbacks.received)} so far)\n{stack.worker.tail()}",
        poll=0.1,
    )
    drained = time.monotonic()
    assert stack.invoked() >= set(stack.ids)
    at_zero = await replicas(stack.api, 0, within=ZERO_AFTER + LAG + 10, log=stack.controller)
    assert at_zero - drained >= ZERO_AFTER - 2 * INTERVAL - SCRAPE
    # Exactly one callback per X-Call-Id, carrying the answer to that call's own body.
    assert set(stack.callbacks.received) == set(stack.ids)
    for call_id, bodies in stack.callbacks.received.items():
        [body] = bodies
        echo = json.loads(body)
        assert echo["body_sha256"] == hashlib.sha256(f"call {stack.ids[call_id]}".encode()).hexdigest()
    history = replica_history(stack.api, FN)
    assert (history[0], max(history), history[-1]) == (0, MAX, 0), history
    assert stack.backlog_decisions(), scale_events(stack.api)


@pytest.mark.nats
async def test_a_backlog_on_jetstream_scales_the_function_up_drains_and_the_function_sleeps(
    prometheus_factory: PrometheusFactory,
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Each call takes 0.4 s at the function, two at a time: about eight seconds of backlog.
    async with async_stack(
        prometheus_factory=prometheus_factory, nats_url=nats_server.url, tmp_path=tmp_path, calls=40,
        max_inflight=2, path="/slow?seconds=0.4",
    ) as stack:  # fmt: skip
        await replicas(stack.api, MAX, within=15, log=stack.controller)  # the backlog's share: the maximum
        await drained_then_zero(stack, calls=40, within=30)


@pytest.mark.nats
async def test_ten_thousand_calls_at_zero_are_each_invoked_and_called_back_once_and_the_function_sleeps_after(
    prometheus_factory: PrometheusFactory,
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    calls = 10_000
    async with async_stack(
        prometheus_factory=prometheus_factory, nats_url=nats_server.url, tmp_path=tmp_path, calls=calls,
        max_inflight=5,
    ) as stack:  # fmt: skip
        await replicas(stack.api, MAX, within=20, log=stack.controller)  # the backlog's share: the maximum
        await drained_then_zero(stack, calls=calls, within=240)


@pytest.mark.nats
async def test_a_worker_killed_and_nats_server_restarted_mid_run_lose_no_call(
    prometheus_factory: PrometheusFactory,
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    calls, inflight = 1_000, 5  # about 3 s of work at full speed: each interruption lands mid-run
    async with async_stack(
        prometheus_factory=prometheus_factory, nats_url=nats_server.url, tmp_path=tmp_path, calls=calls,
        max_inflight=inflight, worker_flags=("--ack-wait", "2"),
    ) as stack:  # fmt: skip
        await until(lambda: stack.called_back() >= calls // 4, within=60, what="a quarter done")
        await stack.kill_worker()
        killed_at = stack.called_back()
        await until(lambda: stack.called_back() >= calls // 2, within=60, what="half done")
        await asyncio.to_thread(nats_server.stop)  # file storage: the stream survives the restart
        restarted_at = stack.called_back()
        await asyncio.to_thread(nats_server.start)
        await until(
            lambda: stack.called_back() == calls,
            within=120,
            what=lambda: f"every call called back ({stack.called_back()})\n{stack.worker.tail()}",
            poll=0.1,
        )
    assert killed_at < restarted_at < calls, "both interruptions came mid-run"
    assert set(stack.callbacks.received) == set(stack.ids)  # nothing lost
    for call_id, bodies in stack.callbacks.received.items():
        # At least once: a call running when its worker died or its ack was lost runs again, visibly
        # (the same X-Call-Id); every delivery carries the answer to that call's own body.
        for body in bodies:
            want = hashlib.sha256(f"call {stack.ids[call_id]}".encode()).hexdigest()
            assert json.loads(body)["body_sha256"] == want
    again = sum(len(bodies) - 1 for bodies in stack.callbacks.received.values())
    assert again <= 4 * inflight, f"{again} calls delivered twice: more than the two interruptions explain"
