"""`autoscaler proxy`: the wake-up proxy in front of the functions of a cluster.

Proxies scale horizontally: each replica watches the functions itself, and wake-ups reach the control
loop through the function's activity annotation, which the loop's own watch sees at once. With
`--nats-url`, `/async-function/` calls are queued on JetStream (`autoscaler.queue`) for
`autoscaler queue-worker`.
"""

from __future__ import annotations

import argparse
from typing import Any

from autoscaler.commands._flags import add_settings_flags, command, run_loop, settings
from autoscaler.config import ProviderSettings, ProxySettings, QueueSettings

# Seconds the proxy waits for NATS at start-up before serving (async calls are 503 until it is up).
NATS_START_WAIT = 5.0


async def serve(
    *, settings: ProxySettings, providers: ProviderSettings, queue: QueueSettings | None = None
) -> int:
    from prometheus_client import CollectorRegistry

    from autoscaler.providers.kubernetes import KubernetesProvider
    from autoscaler.proxy import Proxy, serve_forever
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
    proxy: ProxySettings = settings(args, ProxySettings)
    providers: ProviderSettings = settings(args, ProviderSettings)
    queue: QueueSettings = settings(args, QueueSettings)
    return run_loop(serve(settings=proxy, providers=providers, queue=queue))
