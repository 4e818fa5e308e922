"""Two `autoscaler run --leader-election` processes: one patches at a time, and a handover mid-burst
goes on from where the old leader was, without a burst of wrong decisions.

Both controllers run for real against the wire-format API server (which stores the Lease) and a real
Prometheus. The follower ticks without patching, so its idle timers and windows are warm when it takes
over; the test checks that from the replica history the API server recorded, for four kinds of
function whose right replicas are known (`HandoverWorld`): a burst (rising load: replicas only go
up; it has a down window, see BURSTING), steady ones already at their right replicas, idle ones
allowed to go to zero only after 2m, and busy ones (requests in flight, no completions) that may
never go to zero. A "wrong decision" is any scale the old leader would not have made on the same
load: every change of a steady, idle or busy function, and every step down of a burst.
`bench/failover_bench.py` runs the same at 5,000 functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.e2e.exporter_process import ExporterProcess
from tests.support.apiserver import DEPLOYMENTS, LEASES, FakeApiServer
from tests.support.cluster_processes import ServiceProcess, replica_history, start_controller
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory, PrometheusServer
from tests.support.waiting import until

WINDOW = "5s"
ELECTION = ("--leader-election", "--lease-name", "autoscaler-e2e", "--lease-namespace", "openfaas")
NAMESPACE = "openfaas-fn"
ZERO = {"com.openfaas.scale.zero": "true"}
BURST, GROWN = 300.0, 600.0  # the burst's rps before and during the handover (45 rps per replica)
STEADY_RPS = 60.0  # 2 replicas
# A bursting function's down window, as a platform gives one (HPA's stabilisation, 300 s by default):
# rate() over a ramp dips when a scrape runs late on a busy machine, and with no window every leader
# steps down on the dip. With one, a step down in the burst is wrong: it means the new leader's window
# was not warm (the follower records recommendations while it waits).
BURSTING = {"com.openfaas.scale.down.window": "10s"}


async def scale_total(controller: ServiceProcess) -> float:
    """Sum of `autoscaler_scale_total` on the controller's admin port: patches it made itself."""
    port = int(re.search(r"admin server on http://127\.0\.0\.1:(\d+)", controller.text()).group(1))  # type: ignore[union-attr]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    return sum(float(v) for v in re.findall(r"^autoscaler_scale_total\{[^}]*\} (\S+)$", text, re.MULTILINE))


@dataclass
class HandoverWorld:
    """N functions in four kinds on the fake API server, their load on an exporter, a real Prometheus."""

    api: FakeApiServer
    exporter: GatewayExporter | ExporterProcess
    prometheus: PrometheusServer
    kubeconfig: Path
    kinds: dict[str, list[str]]
    interval: float
    window: str  # the controllers' --rate-window

    @property
    def extra_args(self) -> tuple[str, ...]:
        """The controllers' flags: a 5 s query timeout for thousands of functions on a busy machine."""
        large = sum(len(names) for names in self.kinds.values()) > 100
        return (*ELECTION, "--query-timeout", "5") if large else ELECTION

    def keys(self, kind: str) -> list[str]:
        return [f"{name}.{NAMESPACE}" for name in self.kinds[kind]]

    def wrong_decisions(self, *, after: int = 0, until: int | None = None) -> dict[str, int]:
        """Per kind, the scales no leader should have made on this load (see the docstring), among
        the changes the API server stored after resourceVersion `after` (and up to `until`)."""
        histories: dict[str, list[tuple[int, int]]] = {}  # name -> [(resourceVersion, replicas)]
        for change in self.api.store.log:
            meta = change.obj["metadata"]
            if change.kind == DEPLOYMENTS and meta["namespace"] == NAMESPACE:
                replicas = int(change.obj["spec"]["replicas"])
                histories.setdefault(meta["name"], []).append((change.rv, replicas))
        wrong = dict.fromkeys(self.kinds, 0)
        for kind, names in self.kinds.items():
            for name in names:
                for (_, a), (rv, b) in itertools.pairwise(histories.get(name, [])):
                    if rv <= after or (until is not None and rv > until) or a == b:
                        continue
                    wrong[kind] += 1 if kind != "burst" or b < a else 0
        return wrong

    def at(self, kind: str, replicas: int) -> int:
        return sum(1 for name in self.kinds[kind] if self.api.replicas(name, namespace=NAMESPACE) == replicas)


def kinds_of(functions: int) -> dict[str, list[str]]:
    """About 1 % bursting (at least one), the rest a third each steady, idle and busy."""
    names = [f"fn-{i:05d}" for i in range(functions)]
    burst = max(1, functions // 100)
    rest = names[burst:]
    return {"burst": names[:burst], "steady": rest[0::3], "idle": rest[1::3], "busy": rest[2::3]}


@contextlib.asynccontextmanager
async def handover_world(
    prometheus_factory: PrometheusFactory, tmp_path: Path, *, functions: int, interval: float = 0.5
) -> AsyncIterator[HandoverWorld]:
    """Small worlds scrape every 0.5 s over a 5 s window; large ones every 2 s over 10 s from an
    exporter in its own process (`exporter_process`): a failed scrape leaves rate() extrapolating
    from fewer samples, a lower load, and scale-downs the controllers did not choose."""
    kinds = kinds_of(functions)
    scrape, window = (0.5, WINDOW) if functions <= 100 else (2.0, "10s")
    async with FakeApiServer() as api:
        api.store.log = deque(maxlen=4 * functions + 2000)  # every replica change stays readable
        for kind, names in kinds.items():
            labels = {
                "idle": {**ZERO, "com.openfaas.scale.zero-duration": "2m"},
                "busy": {**ZERO},
                "burst": BURSTING,
            }
            replicas = 2 if kind == "steady" else 1
            for name in names:
                api.add_deployment(
                    name, labels={"faas_function": name, **labels.get(kind, {})}, replicas=replicas
                )
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        with GatewayExporter() if functions <= 100 else ExporterProcess() as exporter:
            keys = {kind: [f"{name}.{NAMESPACE}" for name in names] for kind, names in kinds.items()}
            exporter.set_functions(keys["burst"] + keys["idle"], rps=0.0, inflight=0)
            exporter.set_functions(keys["steady"], rps=STEADY_RPS, inflight=0)
            exporter.set_functions(keys["busy"], rps=0.0, inflight=2)  # calls in flight, none done
            prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=scrape)
            await prometheus.wait_for_rates(
                {keys["burst"][0]: 0.0, keys["steady"][0]: STEADY_RPS}, window=window
            )
            world = HandoverWorld(api, exporter, prometheus, kubeconfig, kinds, interval, window)
            yield world


@dataclass
class Outcome:
    """Wrong decisions by stretch of the API server's history, and seconds from the leader's SIGTERM."""

    wrong: dict[str, int]  # from the follower's "became leader" on: the new leader's
    wrong_before: dict[str, int]  # up to the SIGTERM: the old leader's, same load and rules
    wrong_between: dict[str, int]  # SIGTERM to "became leader": the old leader's last writes
    new_leader_patches: float
    takeover: float  # to "became leader" in the new leader's log
    exit: float  # to the old leader's exit
    converged: float  # to every burst at its grown replicas


async def _converge(world: HandoverWorld, replicas: int, *, timeout: float, why: str) -> None:
    total = len(world.kinds["burst"])
    await until(
        lambda: world.at("burst", replicas) == total,
        within=timeout,
        what=lambda: f"all {total} bursts at {replicas} replicas ({world.at('burst', replicas)} are): {why}",
        poll=0.05,
    )


async def hand_over(
    world: HandoverWorld, tmp_path: Path, *, timeout: float = 20.0, stop_timeout: float = 15.0
) -> Outcome:
    """Leader follows the burst; the burst grows as the leader exits; the follower takes over."""
    controllers = list(await asyncio.gather(*(  # started together, as two replicas of a Deployment are
        start_controller(
            kubeconfig=world.kubeconfig, prometheus_url=world.prometheus.url, log=tmp_path / f"{name}.log",
            interval=world.interval, rate_window=world.window, extra_args=world.extra_args, name=name,
        )
        for name in ("first", "second")
    )))  # fmt: skip
    try:
        leader = await asyncio.wait_for(_first_leader(controllers), timeout)
        follower = next(c for c in controllers if c is not leader)
        assert len(world.api.objects(LEASES, namespace="openfaas")) == 1

        world.exporter.set_functions(world.keys("burst"), rps=BURST, inflight=0)
        await _converge(world, math.ceil(BURST / 45), timeout=timeout, why="the leader did not follow")
        assert await scale_total(leader) >= 1
        assert await scale_total(follower) == 0
        assert "became leader" not in follower.text()

        world.exporter.set_functions(world.keys("burst"), rps=GROWN, inflight=0)  # grows as the leader goes
        term, term_rv = time.monotonic(), world.api.store.rv
        stopping = asyncio.create_task(leader.stop(timeout=stop_timeout))  # SIGTERM, then its exit
        await follower.wait_for("became leader", timeout=timeout)
        took_over, lead_rv = time.monotonic(), world.api.store.rv
        assert await stopping == 0
        exited = time.monotonic()
        await _converge(world, math.ceil(GROWN / 45), timeout=timeout, why="the new leader did not take over")
        converged = time.monotonic()
        await asyncio.sleep(3 * world.interval)  # a few more ticks of the new leader, to be counted too
        return Outcome(
            wrong=world.wrong_decisions(after=lead_rv),
            wrong_before=world.wrong_decisions(until=term_rv),
            wrong_between=world.wrong_decisions(after=term_rv, until=lead_rv),
            new_leader_patches=await scale_total(follower),
            takeover=took_over - term,
            exit=exited - term,
            converged=converged - term,
        )
    finally:
        for controller in controllers:
            await controller.stop(timeout=stop_timeout)


async def test_one_leader_patches_and_a_handover_mid_burst_continues_without_wrong_decisions(
    prometheus_factory: PrometheusFactory, tmp_path: Path
) -> None:
    async with handover_world(prometheus_factory, tmp_path, functions=8) as world:
        outcome = await hand_over(world, tmp_path)

    assert outcome.new_leader_patches >= 1
    assert outcome.wrong_before == outcome.wrong_between == {"burst": 0, "steady": 0, "idle": 0, "busy": 0}
    assert outcome.wrong == {"burst": 0, "steady": 0, "idle": 0, "busy": 0}, (
        f"wrong decisions around the handover: {outcome.wrong}; histories: "
        f"{ {name: replica_history(world.api, name) for names in world.kinds.values() for name in names} }"
    )


async def _first_leader(controllers: list[ServiceProcess]) -> ServiceProcess:
    while True:
        leading = [c for c in controllers if "became leader" in c.text()]
        if leading:
            assert len(leading) == 1, "two controllers became leader at once"
            return leading[0]
        await asyncio.sleep(0.05)
