"""The controller's side of `loop_bench.py` against a Kubernetes API: RSS, first tick and write budget.

Why it exists: at 50,000 functions what a new leader costs is its first listing (every Deployment of
500 namespaces), the memory its watch cache holds, and the time its writes take once a burst of
decisions meets the API write budget. Each figure is measured in a process of its own (spawned, so
the RSS is the controller's alone): the fake API server (`tests/support/apiserver.py`, real wire
format) serves N faas-netes-shaped functions in another process, and the controller process
  * starts a `KubernetesProvider` on every namespace (list, then watch) and reads its RSS;
  * runs one dry-run `Controller.tick()` against the run's Prometheus (seed and decide, no writes);
  * sends a burst of scale writes (a fifth wake-ups, two fifths scale-ups, two fifths scale-downs,
    interleaved) and an Event after each, through the provider's write budget at its defaults
    (20 QPS, burst 30) on a virtual clock: the writes reach the server for real, the waiting for tokens
    is counted, not slept, and the drain time printed is max(virtual, wall).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import ApiClient, Configuration
from prometheus_client import CollectorRegistry

from autoscaler.config import ControllerSettings, MetricsSettings, ProviderSettings
from autoscaler.controller import Controller
from autoscaler.interfaces import FunctionInfo
from autoscaler.metrics import PrometheusReader
from autoscaler.providers.kubernetes import KubernetesProvider
from autoscaler.providers.kubernetes._budget import Priority, WriteBudget
from autoscaler.runtime import settle_collector
from tests.support.apiserver import FakeApiServer


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve_cluster(
    keys: list[str], labels: list[dict[str, str]], conn: multiprocessing.connection.Connection
) -> None:
    """Child process: a fake API server holding one faas-netes Deployment per key, until told to stop."""

    async def serve() -> None:
        async with FakeApiServer() as api:
            for i, (key, extra) in enumerate(zip(keys, labels, strict=True)):
                name, _, namespace = key.partition(".")
                zero = extra.get("com.openfaas.scale.zero") == "true"
                api.add_faas_netes_function(
                    name, namespace=namespace, labels=extra, replicas=0 if zero else 2
                )
                if i % 5000 == 4999:
                    await asyncio.sleep(0)
            conn.send(api.url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(serve())


class TimedBudget(WriteBudget):
    """The provider's write budget, noting when (on its clock) it last granted each priority."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.granted: dict[Priority, float] = {}

    async def take(self, priority: Priority) -> None:
        await super().take(priority)
        self.granted[priority] = self._clock()


class VirtualClock:
    """A WriteBudget's clock: a sleep adds to the virtual time and yields, it never waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def controller_side(
    api_url: str,
    prometheus_url: str,
    namespaces: list[str],
    burst: int,
    conn: multiprocessing.connection.Connection,
) -> None:
    """Child process: start, first tick, burst; sends back a dict of figures."""
    conn.send(asyncio.run(_controller_side(api_url, prometheus_url, namespaces, burst)))


async def _controller_side(
    api_url: str, prometheus_url: str, namespaces: list[str], burst: int
) -> dict[str, Any]:
    figures: dict[str, Any] = {"rss_before": rss_mib()}
    config = Configuration(host=api_url)
    config.connection_pool_maxsize = 0  # as KubernetesProvider.create() sets it: no pool limit
    virtual = VirtualClock()
    budget = TimedBudget(qps=20.0, burst=30, clock=virtual.clock, sleep=virtual.sleep)
    settings = ProviderSettings(namespaces=namespaces, api_timeout=120.0)
    async with ApiClient(config) as client:
        provider = KubernetesProvider(
            settings=settings, api_client=client, start_timeout=900.0, budget=budget
        )
        started = time.perf_counter()
        await provider.start()
        figures["list"] = time.perf_counter() - started
        figures["functions"] = len(provider.functions())
        figures["rss_cache"] = rss_mib()
        settle_collector()  # as `autoscaler run` does once every function is listed
        metrics = MetricsSettings(prometheus_url=prometheus_url, rate_window="10s", query_timeout=60.0)
        async with PrometheusReader(settings=metrics) as reader:
            controller = Controller(
                provider=provider,
                reader=reader,
                settings=ControllerSettings(dry_run=True),
                registry=CollectorRegistry(),
            )
            started = time.perf_counter()
            report = await controller.tick(now=time.time())
            figures["tick"] = time.perf_counter() - started
            figures["decisions"] = len(report.decisions)
            figures["queries"] = report.queries
            await controller.close()
        figures["rss_tick"] = rss_mib()
        figures.update(await _burst(provider, budget, burst))
        await provider.close()
    return figures


async def _burst(provider: KubernetesProvider, budget: TimedBudget, burst: int) -> dict[str, Any]:
    """Scale `burst` functions at once (each then records an Event): when each kind was done.

    The budget's time of a kind is when its last write was let through (the virtual clock runs ahead
    of the replies, so a write's reply is no measure of it); the wall time is when the last reply came.
    """
    infos = sorted(provider.functions().values(), key=lambda info: info.ref.key)
    at_zero = [info for info in infos if info.replicas == 0][: burst // 5]
    running = [info for info in infos if info.replicas > 0][: burst - len(at_zero)]
    half = len(running) // 2
    kinds = {"wake": at_zero, "up": running[:half], "down": running[half:]}
    desired = {"wake": 1, "up": 4, "down": 1}
    done: dict[str, float] = {}
    wall = time.perf_counter()

    async def change(kind: str, info: FunctionInfo) -> None:
        await provider.scale(info.ref, desired[kind])
        done[kind] = time.perf_counter() - wall
        await provider.record_event(info.ref, reason="Bench", message=f"{kind} to {desired[kind]}")
        done["event"] = time.perf_counter() - wall

    longest = max(len(group) for group in kinds.values())
    order = [(kind, group[i]) for i in range(longest) for kind, group in kinds.items() if i < len(group)]
    await asyncio.gather(*(change(kind, info) for kind, info in order))
    figures: dict[str, Any] = {"burst": {kind: len(found) for kind, found in kinds.items()}}
    priorities = {"wake": Priority.WAKE, "up": Priority.UP, "down": Priority.DOWN, "event": Priority.LAST}
    for kind, priority in priorities.items():
        figures[f"{kind}_done"] = (budget.granted.get(priority, 0.0), done.get(kind, 0.0))
    figures["writes"] = provider.budget.taken
    return figures


def run_in_child(target: Any, *args: Any, timeout: float) -> Any:
    """Run `target(*args, conn)` in a spawned process and return what it sends."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(*args, child), daemon=True)
    process.start()
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"{target.__name__} sent nothing within {timeout:g} s")
        return parent.recv()
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


def cluster_figures(
    keys: list[str], labels: list[dict[str, str]], prometheus_url: str, burst: int
) -> dict[str, Any]:
    """Serve `keys` from a fake API server process and measure a controller process against it."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve_cluster, args=(keys, labels, child), daemon=True)
    server.start()
    started = time.monotonic()
    try:
        if not parent.poll(1800):
            raise RuntimeError("the fake API server did not fill within 30 min")
        url = parent.recv()
        filled = time.monotonic() - started
        namespaces = sorted({key.partition(".")[2] for key in keys})
        figures = run_in_child(controller_side, url, prometheus_url, namespaces, burst, timeout=3600)
        figures.update(namespaces=len(namespaces), server_fill=filled)
        return dict(figures)
    finally:
        parent.send("stop")
        server.join(timeout=30)
        if server.is_alive():
            server.kill()


def print_cluster(figures: dict[str, Any], *, qps: float = 20.0, burst_tokens: int = 30) -> None:
    n = figures["functions"]
    print(f"  cluster side, {n} functions in {figures['namespaces']} namespaces (controller process):")
    print(
        f"    RSS {figures['rss_before']:.0f} MiB at start, {figures['rss_cache']:.0f} MiB with the cache "
        f"filled, {figures['rss_tick']:.0f} MiB after the first tick"
    )
    print(
        f"    first tick: list {figures['list']:.2f} s + seed/decide {figures['tick']:.2f} s = "
        f"{figures['list'] + figures['tick']:.2f} s "
        f"({figures['decisions']} decisions, {figures['queries']} queries)"
    )
    counts = figures["burst"]
    total = sum(counts.values())
    print(
        f"    write budget ({qps:g} QPS, burst {burst_tokens}): {total} scales "
        f"({counts['wake']} wake-ups, {counts['up']} ups, {counts['down']} downs) + {total} Events, "
        f"{figures['writes']} writes"
    )
    for kind in ("wake", "up", "down", "event"):
        virtual, wall = figures[f"{kind}_done"]
        print(
            f"      {kind + 's':7} all done at {max(virtual, wall):7.1f} s "
            f"(budget {virtual:.1f} s, wall {wall:.1f} s)"
        )
