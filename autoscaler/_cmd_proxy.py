"""`autoscaler proxy`: the wake-up proxy in front of the functions of a cluster.

Proxies scale horizontally: each replica watches the functions itself, and wake-ups reach the control
loop through the function's activity annotation, which the loop's own watch sees at once.
"""

from __future__ import annotations

import argparse
import asyncio

from autoscaler.cli import settings_overrides
from autoscaler.config import ProviderSettings, ProxySettings, build


async def serve(*, settings: ProxySettings, providers: ProviderSettings) -> int:
    from autoscaler.providers.kubernetes import KubernetesProvider
    from autoscaler.proxy import Proxy, serve_forever

    provider = await KubernetesProvider.create(settings=providers)
    try:
        await provider.start()
        proxy = Proxy(settings=settings, provider=provider)
        await proxy.start()
        return await serve_forever(proxy, grace=settings.shutdown_grace)
    finally:
        await provider.close()


def run(args: argparse.Namespace) -> int:
    settings: ProxySettings = build(ProxySettings, settings_overrides(args, ProxySettings))
    providers: ProviderSettings = build(ProviderSettings, settings_overrides(args, ProviderSettings))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(serve(settings=settings, providers=providers))
    return uvloop.run(serve(settings=settings, providers=providers))
