"""A wake-up in a cluster has one writer of the scale, and a poke re-decides only the function poked.

The proxy wakes a function at zero by writing its last-active mark, then its scale. The loop's watch
sees both; it re-decides that one function (no load read, no pass over the others) once the proxy's
scale is in its cache, so its decision sees the replicas the proxy wrote and writes nothing again.
Here the real kubernetes provider runs against the fake API server, a second provider plays the
proxy, and the scale PATCHes are counted at the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from kubernetes_asyncio.client import ApiClient

from autoscaler.config import ControllerSettings, ProviderSettings
from autoscaler.controller import Controller, TickReport
from autoscaler.interfaces import FunctionRef
from autoscaler.providers.kubernetes import KubernetesProvider
from autoscaler.providers.kubernetes._calls import RetryPolicy
from policies.model import Load, Reason
from tests.support.apiserver import FakeApiServer
from tests.support.memory import MemoryProvider, StaticReader
from tests.support.waiting import until

SLEEPY = FunctionRef(name="sleepy", namespace="openfaas-fn")
WARM = FunctionRef(name="warm", namespace="openfaas-fn")
ZERO = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "60s"}
IDLE = Load(rps=0.0, inflight=0.0, cpu=0.0, started_total=0.0)
HELD = Load(rps=0.0, inflight=3.0, cpu=0.0, started_total=3.0)  # calls held by the proxy count as in flight


@dataclass
class Cluster:
    api: FakeApiServer
    watched: KubernetesProvider  # the loop's provider: its watch cache is what the loop decides on
    proxy: KubernetesProvider  # the proxy's own provider: it writes the mark and the scale
    controller: Controller
    reader: StaticReader
    refreshed: list[TickReport]

    def scale_patches(self) -> int:
        return self.api.replica_writes("sleepy")


def provider(client: ApiClient) -> KubernetesProvider:
    return KubernetesProvider(
        settings=ProviderSettings(api_timeout=2.0),
        api_client=client,
        retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05),
        mark_active_interval=0.0,
    )


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with (
        FakeApiServer() as api,
        ApiClient(api.configuration()) as loop_client,
        ApiClient(api.configuration()) as proxy_client,
    ):
        api.add_deployment("sleepy", labels=ZERO, replicas=0)
        api.add_deployment("warm", labels=ZERO, replicas=1)
        watched, proxy = provider(loop_client), provider(proxy_client)
        await watched.start()
        await proxy.start()
        reader = StaticReader()
        reader.loads = {SLEEPY.key: IDLE, WARM.key: IDLE}
        controller = Controller(provider=watched, reader=reader, settings=ControllerSettings(interval=3600))
        refreshed: list[TickReport] = []
        refresh = controller.refresh

        async def counted(ref: FunctionRef, *, now: float) -> TickReport:
            report = await refresh(ref, now=now)
            refreshed.append(report)
            return report

        controller.refresh = counted  # type: ignore[method-assign]
        controller.follow_wakes()
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop=stop))
        await asyncio.wait_for(reader.read_event.wait(), 5)  # the first, full tick
        # What Prometheus says once the proxy holds calls: a full tick that read it while the cache
        # still showed zero replicas would write the wake a second time.
        reader.loads = {SLEEPY.key: HELD, WARM.key: IDLE}
        try:
            yield Cluster(api, watched, proxy, controller, reader, refreshed)
        finally:
            stop.set()
            await asyncio.wait_for(running, 5)
            await controller.close()
            await proxy.close()
            await watched.close()


async def seen_mark(cluster: Cluster, ref: FunctionRef, when: float) -> None:
    def seen() -> bool:
        info = cluster.watched.get(ref)
        return info is not None and info.last_active == when

    await until(seen, within=5, what=f"the loop's watch to see the mark on {ref.key}")


async def wake(cluster: Cluster, ref: FunctionRef) -> None:
    """What the proxy does on a cold start: mark first, then scale to the wake replicas."""
    when = round(time.time(), 3)  # the annotation keeps milliseconds
    await cluster.proxy.mark_active(ref, when)
    # The loop's watch sees the mark while the function is still at zero, before the scale.
    await seen_mark(cluster, ref, when)
    await asyncio.sleep(0.2)
    await cluster.proxy.scale(ref, 1)


async def test_a_wake_up_by_the_proxy_is_one_scale_write_and_the_loop_re_decides_only_that_function(
    cluster: Cluster,
) -> None:
    await wake(cluster, SLEEPY)
    await until(lambda: len(cluster.refreshed) == 1, within=5, what="the poked decision")
    [report] = cluster.refreshed
    decision = report.decisions[SLEEPY.key]
    assert (decision.current, decision.desired) == (1, 1)  # the proxy's scale, seen in the cache
    assert list(report.decisions) == [SLEEPY.key]
    assert report.patched == []
    assert cluster.scale_patches() == 1  # the proxy's, and no other
    assert cluster.reader.reads == 1  # no load read: the poke used the first tick's load


async def test_each_wake_up_is_one_scale_write(cluster: Cluster) -> None:
    await wake(cluster, SLEEPY)
    await until(lambda: len(cluster.refreshed) == 1, within=5, what="the first poked decision")
    await cluster.proxy.scale(SLEEPY, 0)  # back at zero (as the loop would after its zero-duration)
    await asyncio.sleep(0.2)
    await wake(cluster, SLEEPY)
    await until(lambda: len(cluster.refreshed) == 2, within=5, what="the second poked decision")
    assert cluster.scale_patches() == 3  # wake, zero, wake: the loop wrote none of them
    assert all(not report.patched for report in cluster.refreshed)


async def test_a_periodic_mark_on_a_warm_function_pokes_nothing(cluster: Cluster) -> None:
    when = round(time.time(), 3)  # the annotation keeps milliseconds
    await cluster.proxy.mark_active(WARM, when)
    await seen_mark(cluster, WARM, when)
    await asyncio.sleep(0.2)
    assert cluster.refreshed == []
    assert cluster.reader.reads == 1


class TestPokingOneFunction:
    async def test_a_poked_function_is_decided_alone_with_the_last_ticks_load(self) -> None:
        provider, reader = MemoryProvider(), StaticReader()
        busy, other = provider.add("busy"), provider.add("other")
        reader.loads = {busy.key: Load(rps=200, inflight=0, cpu=0, started_total=0), other.key: IDLE}
        loop = Controller(provider=provider, reader=reader, settings=ControllerSettings(dry_run=True))
        await loop.tick(now=0)
        reader.loads = {}  # a new read would say "no data"; the poke must not read
        provider.add("busy", replicas=2)  # someone else scaled it meanwhile: the cache says 2
        report = await loop.refresh(busy, now=1)
        assert reader.reads == 1
        assert list(report.decisions) == [busy.key]
        decision = report.decisions[busy.key]
        assert (decision.current, decision.desired, decision.reason) == (2, 5, Reason.SCALE_UP)
        assert loop.views[other.key].decision.current == 1  # the other function's view is kept

    async def test_a_poke_with_a_function_in_a_running_loop_decides_it_without_a_tick(self) -> None:
        provider, reader = MemoryProvider(), StaticReader()
        fn = provider.add("fn", replicas=0, labels=ZERO)
        reader.loads = {fn.key: IDLE}
        held: set[str] = set()  # the in-process proxy holds calls for these
        settings = ControllerSettings(interval=3600)
        loop = Controller(provider=provider, reader=reader, settings=settings, busy=held.__contains__)
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop=stop))
        await asyncio.wait_for(reader.read_event.wait(), 5)
        assert provider.scaled == []
        held.add(fn.key)
        loop.poke(fn)
        await until(lambda: provider.scaled == [(fn.key, 1)], within=5, what="the wake decided by the poke")
        assert reader.reads == 1
        stop.set()
        await asyncio.wait_for(running, 5)
