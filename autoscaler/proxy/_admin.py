"""The admin port: liveness, readiness and Prometheus metrics, apart from the function traffic.

Keeping these off the data port means a scrape or a probe never competes with a route a function
could own, and the data port can stop accepting on shutdown while probes still answer (readiness
turns 503 first, so the load balancer stops sending before the listener closes).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from autoscaler.proxy._metrics import exposition
from autoscaler.routes import error_response

__all__ = ["admin_app", "error_response"]

_TEXT = "text/plain; charset=utf-8"


def admin_app(*, ready: Callable[[], bool], registry: CollectorRegistry) -> web.Application:
    """`/healthz` (the process answers), `/readyz` (started, not draining), `/metrics`."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n", content_type="text/plain")

    async def readyz(_request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n", content_type="text/plain")
        return web.Response(status=503, text="not ready: starting or draining\n", content_type="text/plain")

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=exposition(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
