"""`autoscaler run`: the control loop in a cluster, with its admin server and optional leader election.

Followers tick too, but never patch: their idle timers and stabilization windows stay warm, so a new
leader acts on a rebuilt state from its first patch instead of with a burst of decisions on a blank one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autoscaler.commands._flags import add_settings_flags, command, settings
from autoscaler.config import ControllerSettings, MetricsSettings, ProviderSettings
from autoscaler.errors import ConfigError, SpecError
from autoscaler.runtime import settle_collector
from autoscaler.spec import parse_labels
from autoscaler.tasks import stoppable
from policies.model import KeepAlive

if TYPE_CHECKING:  # the running parts are imported when the command runs, not to build the parser
    from autoscaler.admin import AdminServer
    from autoscaler.controller import Controller
    from autoscaler.leader import LeaderElector
    from autoscaler.metrics import PrometheusReader
    from autoscaler.providers.kubernetes import KubernetesProvider

log = logging.getLogger("autoscaler.run")


class _Health:
    """/healthz and /readyz of the loop: ready once the functions are listed, healthy while it ticks."""

    def __init__(self, controller: Controller, settings: ControllerSettings) -> None:
        self.started = asyncio.Event()
        self._controller = controller
        self._limit = max(30.0, 10 * settings.interval)

    def healthy(self) -> tuple[bool, str]:
        report = self._controller.last_report
        if not self.started.is_set():
            return True, "starting"
        if report is None:
            return True, "first tick pending"
        age = time.time() - report.finished_at
        return age < self._limit, f"last tick {age:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        return (self.started.is_set(), "ready" if self.started.is_set() else "listing functions")


async def _admin(controller: Controller, settings: ControllerSettings, health: _Health) -> AdminServer:
    from autoscaler.admin import AdminServer

    admin = AdminServer(
        host=settings.admin_host,
        port=settings.admin_port,
        registry=controller.metrics.registry,
        healthy=health.healthy,
        ready=health.ready,
    )
    await admin.start()
    log.info(
        "admin server on http://%s:%d (/healthz, /readyz, /metrics)",
        settings.admin_host,
        admin.port,
        extra={"fields": {"event": "admin", "port": admin.port}},
    )
    return admin


def _elect(
    controller: Controller, settings: ControllerSettings, provider: KubernetesProvider
) -> tuple[LeaderElector, asyncio.Task[None]]:
    """The Lease election, running; becoming leader asks for a full tick at once."""
    from autoscaler.leader import LeaderElector

    leader = LeaderElector(
        api_client=provider.api_client,
        name=settings.lease_name,
        namespace=settings.lease_namespace,
        identity=f"{socket.gethostname()}-{os.getpid()}",
    )

    async def on_started() -> None:
        controller.metrics.is_leader.set(1)
        log.info("became leader", extra={"fields": {"event": "leader", "leader": True}})
        controller.poke()

    def on_stopped() -> None:
        controller.metrics.is_leader.set(0)
        log.info("lost leadership: patching stopped", extra={"fields": {"event": "leader", "leader": False}})

    return leader, asyncio.create_task(leader.run(on_started, on_stopped))


async def _start_up(
    reader: PrometheusReader, provider: KubernetesProvider, histories: dict[str, Any], seeded_at: float
) -> None:
    """List every function (the provider's first listings) and seed the adaptive ones' keep-alive."""
    await provider.start()
    await _seed(reader, provider, histories, seeded_at)


async def _seed(
    reader: PrometheusReader, provider: KubernetesProvider, histories: dict[str, Any], end: float
) -> None:
    """Keep-alive histories of the adaptive functions from Prometheus, before the first tick."""
    from autoscaler import keepalive

    adaptive = [key for key, info in provider.functions().items() if _adaptive(info.labels)]
    histories.update(await keepalive.read_histories(reader, keys=adaptive, now=end))


async def serve(
    *, controller_settings: ControllerSettings, metrics: MetricsSettings, providers: ProviderSettings
) -> int:
    from prometheus_client import CollectorRegistry

    from autoscaler import keepalive
    from autoscaler.controller import Controller
    from autoscaler.metrics import PrometheusReader
    from autoscaler.providers.kubernetes import KubernetesProvider

    registry = CollectorRegistry()
    # The reader first: it checks the Prometheus URL and opens nothing, while the provider opens a
    # client session that a bad URL found after it left unclosed.
    reader = PrometheusReader(settings=metrics, registry=registry)
    provider = await KubernetesProvider.create(settings=providers)
    leader: LeaderElector | None = None
    leading = not controller_settings.leader_election
    histories: dict[str, Any] = {}
    seeded_at = time.time()
    controller = Controller(
        keepalive_factory=keepalive.factory(histories, end=seeded_at),
        provider=provider,
        reader=reader,
        settings=controller_settings,
        registry=registry,
        may_patch=lambda: leader.is_leader if leader is not None else leading,
    )
    stop = _stop_on_signals()
    health = _Health(controller, controller_settings)
    admin: AdminServer | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        admin = await _admin(controller, controller_settings, health)
        if not await stoppable(_start_up(reader, provider, histories, seeded_at), stop):
            log.info("stopped during start-up")
            return 0
        settle_collector()  # every function listed and seeded: their objects live on (autoscaler.runtime)
        health.started.set()
        if controller_settings.leader_election:
            leader, election = _elect(controller, controller_settings, provider)
            tasks.append(election)
        else:
            controller.metrics.is_leader.set(1)
        controller.follow_wakes()
        _log_start(controller_settings, metrics, providers)
        await controller.run(stop=stop)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await controller.close()
        await reader.close()
        await provider.close()
        if admin is not None:
            await admin.stop()
    return 0


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def _log_start(settings: ControllerSettings, metrics: MetricsSettings, providers: ProviderSettings) -> None:
    fields = {
        "event": "start",
        "interval": settings.interval,
        "dry_run": settings.dry_run,
        "namespaces": providers.namespaces,
        "prometheus": metrics.prometheus_url,
    }
    log.info("control loop started", extra={"fields": fields})


def _adaptive(labels: Mapping[str, str]) -> bool:
    try:
        return parse_labels(labels).keepalive is KeepAlive.ADAPTIVE
    except SpecError:
        return False  # the loop reports bad labels itself, and leaves such a function alone


def add_parser(subparsers: Any) -> None:
    """Register `autoscaler run` on the CLI's subparsers."""
    parser = command(
        subparsers,
        "run",
        help="run the control loop against a Kubernetes cluster",
        description="Tick every --interval: read load from Prometheus, decide from each function's labels, "
        "patch the Deployments' scale subresource (only what changed), write an Event per change.",
        handler=run,
    )
    add_settings_flags(parser, ControllerSettings, MetricsSettings, ProviderSettings)


def run(args: argparse.Namespace) -> int:
    controller_settings: ControllerSettings = settings(args, ControllerSettings)
    metrics: MetricsSettings = settings(args, MetricsSettings)
    providers: ProviderSettings = settings(args, ProviderSettings)
    if not metrics.prometheus_url:
        raise ConfigError(
            "run needs --prometheus-url (or AUTOSCALER_PROMETHEUS_URL), "
            "e.g. http://prometheus.openfaas:9090; "
            "to try the add-on without a cluster, use `autoscaler demo`"
        )
    return asyncio.run(serve(controller_settings=controller_settings, metrics=metrics, providers=providers))
