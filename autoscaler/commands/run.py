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
from typing import Any

from prometheus_client import CollectorRegistry

from autoscaler import keepalive
from autoscaler.admin import AdminServer
from autoscaler.cli import settings_overrides
from autoscaler.config import ControllerSettings, MetricsSettings, ProviderSettings, build
from autoscaler.controller import Controller
from autoscaler.errors import ConfigError, SpecError
from autoscaler.interfaces import FunctionRef
from autoscaler.spec import parse_labels
from policies.model import KeepAlive

log = logging.getLogger("autoscaler.run")


async def serve(
    *, controller_settings: ControllerSettings, metrics: MetricsSettings, providers: ProviderSettings
) -> int:
    from autoscaler.metrics import PrometheusReader
    from autoscaler.providers.kubernetes import KubernetesProvider

    provider = await KubernetesProvider.create(settings=providers)
    registry = CollectorRegistry()
    reader = PrometheusReader(settings=metrics, registry=registry)
    leader = None
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
    started = asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    def healthy() -> tuple[bool, str]:
        report = controller.last_report
        if not started.is_set():
            return True, "starting"
        if report is None:
            return True, "first tick pending"
        age = time.time() - report.finished_at
        limit = max(30.0, 10 * controller_settings.interval)
        return age < limit, f"last tick {age:.1f}s ago"

    def ready() -> tuple[bool, str]:
        return (started.is_set(), "ready" if started.is_set() else "listing functions")

    admin = AdminServer(
        host=controller_settings.admin_host,
        port=controller_settings.admin_port,
        registry=controller.metrics.registry,
        healthy=healthy,
        ready=ready,
    )
    await admin.start()
    log.info(
        "admin server on http://%s:%d (/healthz, /readyz, /metrics)",
        controller_settings.admin_host,
        admin.port,
        extra={"fields": {"event": "admin", "port": admin.port}},
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        await provider.start()
        adaptive = [key for key, info in provider.functions().items() if _adaptive(info.labels)]
        histories.update(await keepalive.read_histories(reader, keys=adaptive, now=seeded_at))
        started.set()
        if controller_settings.leader_election:
            from autoscaler.leader import LeaderElector

            leader = LeaderElector(
                api_client=provider.api_client,
                name=controller_settings.lease_name,
                namespace=controller_settings.lease_namespace,
                identity=f"{socket.gethostname()}-{os.getpid()}",
            )

            async def on_started() -> None:
                controller.metrics.is_leader.set(1)
                log.info("became leader", extra={"fields": {"event": "leader", "leader": True}})
                controller.poke()

            def on_stopped() -> None:
                controller.metrics.is_leader.set(0)
                log.info(
                    "lost leadership: patching stopped",
                    extra={"fields": {"event": "leader", "leader": False}},
                )

            tasks.append(asyncio.create_task(leader.run(on_started, on_stopped)))
        else:
            controller.metrics.is_leader.set(1)
        wakes: dict[str, float | None] = {}

        def on_change(ref: FunctionRef) -> None:
            # Only a proxy waking a function at zero is worth an early tick; status churn, our own
            # patches and the proxies' periodic marks on warm functions are not.
            info = provider.get(ref)
            mark = None if info is None else info.last_active
            if info is not None and mark is not None and wakes.get(ref.key) != mark and info.replicas == 0:
                controller.poke(ref)
            wakes[ref.key] = mark

        provider.subscribe(on_change)
        log.info(
            "control loop started",
            extra={
                "fields": {
                    "event": "start",
                    "interval": controller_settings.interval,
                    "dry_run": controller_settings.dry_run,
                    "namespaces": providers.namespaces,
                    "prometheus": metrics.prometheus_url,
                }
            },
        )
        await controller.run(stop=stop)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await controller.close()
        await reader.close()
        await provider.close()
        await admin.stop()
    return 0


def _adaptive(labels: Mapping[str, str]) -> bool:
    try:
        return parse_labels(labels).keepalive is KeepAlive.ADAPTIVE
    except SpecError:
        return False  # the loop reports bad labels itself, and leaves such a function alone


def run(args: argparse.Namespace) -> int:
    controller_settings: ControllerSettings = build(
        ControllerSettings, settings_overrides(args, ControllerSettings)
    )
    metrics: MetricsSettings = build(MetricsSettings, settings_overrides(args, MetricsSettings))
    providers: ProviderSettings = build(ProviderSettings, settings_overrides(args, ProviderSettings))
    if not metrics.prometheus_url:
        raise ConfigError(
            "run needs --prometheus-url (or AUTOSCALER_PROMETHEUS_URL), "
            "e.g. http://prometheus.openfaas:9090; "
            "to try the add-on without a cluster, use `autoscaler demo`"
        )
    return asyncio.run(serve(controller_settings=controller_settings, metrics=metrics, providers=providers))
