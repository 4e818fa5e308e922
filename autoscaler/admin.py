"""The admin HTTP server: /healthz, /readyz and /metrics on a port of their own.

Kept apart from any data path so that probes and scrapes never queue behind function traffic.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from autoscaler.errors import cannot_listen


class AdminServer:
    """Serves health and metrics; `healthy` and `ready` are asked on every probe."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        registry: CollectorRegistry,
        healthy: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port = port

    @staticmethod
    def _probe(check: Callable[[], tuple[bool, str]]) -> web.Response:
        ok, why = check()
        return web.Response(status=200 if ok else 503, text=(why or ("ok" if ok else "not ok")) + "\n")

    async def _healthz(self, _request: web.Request) -> web.Response:
        return self._probe(self._healthy)

    async def _readyz(self, _request: web.Request) -> web.Response:
        return self._probe(self._ready)

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise cannot_listen(
                e, host=self._host, port=self._port, host_flag="--admin-host", port_flag="--admin-port"
            ) from e
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
