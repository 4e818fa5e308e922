"""A loopback HTTP relay between one election candidate and the fake API server.

Failure injection on the API server hits every client at once; a leader that loses its own
connection while the other candidate still reaches the server needs a path of its own. Each
candidate talks through a relay, and a test can make one relay answer 503 or hang, as a broken
network or an overloaded API server would look from that one pod.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

import aiohttp
from aiohttp import web
from kubernetes_asyncio.client import Configuration

Mode = Literal["pass", "fail", "hang"]


class Relay:
    """`async with Relay(upstream) as relay:`; point a client at `relay.configuration()`."""

    def __init__(self, upstream: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream = upstream
        self.mode: Mode = "pass"
        self.times: list[float] = []  # when each request arrived, on `clock`
        self._clock = clock
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Relay:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def configuration(self) -> Configuration:
        config = Configuration(host=self.url)
        config.verify_ssl = False
        return config

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.times.append(self._clock())
        if self.mode == "hang":
            await asyncio.sleep(30)  # the client's own timeout ends this first
        if self.mode != "pass":
            body = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 503,
                "reason": "ServiceUnavailable",
                "message": "relay cut off",
            }
            return web.json_response(body, status=503)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=await request.read(), headers=headers
        ) as upstream:
            return web.Response(
                status=upstream.status, body=await upstream.read(), content_type=upstream.content_type
            )
