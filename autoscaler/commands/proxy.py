"""`autoscaler proxy`: the wake-up proxy in front of the functions of a cluster.

Proxies scale horizontally: each replica watches the functions itself, and wake-ups reach the control
loop through the function's activity annotation, which the loop's own watch sees at once. With
`--nats-url`, `/async-function/` calls are queued on JetStream (`autoscaler.queue`) for
`autoscaler queue-worker`. With `--workers N` this process supervises N worker processes, each one
this command again with its settings in the environment (`autoscaler.proxy._workers`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from autoscaler.commands._flags import add_settings_flags, command, run_loop, settings
from autoscaler.config import ProviderSettings, ProxySettings, QueueSettings

# Seconds the proxy waits for NATS at start-up before serving (async calls are 503 until it is up).
NATS_START_WAIT = 5.0
# Where a worker of `--workers N` finds what its supervisor resolved (`autoscaler.proxy._workers`
# sets and reads it; a test holds the two names equal). Looked at before the proxy's modules (aiohttp)
# are imported, so that a bad flag of the command is refused without loading them.
WORKER_ENV = "_AUTOSCALER_PROXY_WORKER"


async def serve(
    *,
    settings: ProxySettings,
    providers: ProviderSettings,
    queue: QueueSettings | None = None,
    channel: str | None = None,
) -> int:
    """Run one proxy until SIGTERM; `channel`: as a worker of `--workers N`, answering there."""
    from prometheus_client import CollectorRegistry

    from autoscaler.providers.kubernetes import KubernetesProvider
    from autoscaler.proxy import Proxy, serve_forever
    from autoscaler.proxy._workers import serve_worker
    from autoscaler.queue import AsyncAcceptor

    # The provider's mark writer is the one throttle of last-active writes (--mark-interval).
    provider = await KubernetesProvider.create(
        settings=providers, mark_active_interval=settings.mark_interval
    )
    acceptor: AsyncAcceptor | None = None
    registry = CollectorRegistry()
    try:
        await provider.start()
        if queue is not None and queue.nats_url is not None:
            acceptor = AsyncAcceptor(
                settings=queue,
                provider=provider,
                default_namespace=settings.default_namespace,
                registry=registry,
            )
            await acceptor.start(wait=NATS_START_WAIT)
        proxy = Proxy(settings=settings, provider=provider, registry=registry, async_acceptor=acceptor)
        await proxy.start()
        if channel is not None:
            return await serve_worker(proxy, registry, channel=channel, grace=settings.shutdown_grace)
        return await serve_forever(proxy, grace=settings.shutdown_grace)
    finally:
        if acceptor is not None:
            await acceptor.close()
        await provider.close()


def add_parser(subparsers: Any) -> None:
    """Register `autoscaler proxy` on the CLI's subparsers."""
    parser = command(
        subparsers,
        "proxy",
        help="run the wake-up proxy in front of the functions",
        description="Serve /function/NAME[.NAMESPACE]/...; hold requests for functions at zero replicas, "
        "wake them and forward once a replica is ready.",
        handler=run,
    )
    add_settings_flags(parser, ProxySettings, ProviderSettings, QueueSettings)


def run(args: argparse.Namespace) -> int:
    worker = None
    if WORKER_ENV in os.environ:
        from autoscaler.proxy._workers import worker_config

        worker = worker_config()
    if worker is not None:  # a worker of `--workers N`: its supervisor resolved the settings
        proxy = ProxySettings(**{**worker["proxy"], "port": worker["port"], "admin_port": 0})
        return run_loop(
            serve(
                settings=proxy,
                providers=ProviderSettings(**worker["providers"]),
                queue=QueueSettings(**worker["queue"]),
                channel=worker["channel"],
            )
        )
    proxy = settings(args, ProxySettings)
    providers: ProviderSettings = settings(args, ProviderSettings)
    queue: QueueSettings = settings(args, QueueSettings)
    if proxy.workers > 1:
        return run_loop(supervise(args, proxy, providers, queue))
    return run_loop(serve(settings=proxy, providers=providers, queue=queue))


async def supervise(
    args: argparse.Namespace, proxy: ProxySettings, providers: ProviderSettings, queue: QueueSettings
) -> int:
    """`--workers N`: N worker processes of this command on one data port, one admin port over them."""
    from autoscaler.proxy._workers import Supervisor

    command = [sys.executable, "-m", "autoscaler", "--log-level", args.log_level]
    command += ["--log-format", args.log_format, "proxy"]
    config = {
        "proxy": proxy.model_dump(mode="json"),
        "providers": providers.model_dump(mode="json"),
        "queue": queue.model_dump(mode="json"),
    }
    return await Supervisor(settings=proxy, command=command, config=config).run()
