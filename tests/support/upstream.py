"""Real HTTP servers that play the part of function replicas in the proxy's tests.

Each `Upstream` listens on a free 127.0.0.1 port and records every request in arrival order. Its
routes cover what a reverse proxy must get right: an echo of method, raw path, query, headers and
body; status codes; a large fixed-length body; a stream released step by step by the test (so the
test can prove the proxy does not buffer); a slow answer; hop-by-hop response headers; and a
response cut off mid-body by a connection reset.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def pattern(size: int) -> bytes:
    """A deterministic body of `size` bytes, so a test can check a large body byte for byte."""
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


@dataclass
class Received:
    """One request as the function saw it."""

    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes
    seq: int


@dataclass
class Upstream:
    """One function replica: an aiohttp server on 127.0.0.1 with the routes described above."""

    name: str = "fn"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    # /stream waits on this between its first and its remaining chunks.
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    busy: int = 0  # requests being answered right now
    most_busy: int = 0  # the most it answered at once
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            return await self._answer(request)
        finally:
            self.busy -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(
                method=request.method,
                raw_path=request.raw_path,
                headers=list(request.headers.items()),
                body=body,
                seq=len(self.received),
            )
        )
        path = request.path
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            return web.Response(status=code, text=f"status {code} from {self.name}")
        if path == "/big":
            return web.Response(
                body=pattern(int(request.query["size"])), content_type="application/octet-stream"
            )
        if path == "/stream":
            return await self._stream(request)
        if path == "/slow":
            await asyncio.sleep(float(request.query.get("seconds", "1")))
        if path == "/hop":
            return web.Response(
                text="hop",
                headers={
                    "Connection": "keep-alive, X-Upstream-Hop",
                    "X-Upstream-Hop": "secret",
                    "Keep-Alive": "timeout=5",
                    "X-Kept": "yes",
                },
            )
        if path == "/redirect":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        if path == "/reset":
            return await self._reset(request)
        return web.json_response(self._echo(request, body))

    def _echo(self, request: web.Request, body: bytes) -> dict[str, Any]:
        return {
            "function": self.name,
            "method": request.method,
            "raw_path": request.raw_path,
            "query_string": request.query_string,
            "headers": [[key, value] for key, value in request.headers.items()],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body": body.decode("utf-8", "replace") if len(body) <= 1024 else None,
            "seq": len(self.received) - 1,
        }

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        chunks = int(request.query.get("chunks", "3"))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"chunk-0\n")
        await self.gate.wait()
        for index in range(1, chunks):
            await response.write(f"chunk-{index}\n".encode())
        await response.write_eof()
        return response

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        # Promise 100 kB with a fixed length, send a part, then reset the connection.
        size = int(request.query.get("size", "100000"))
        response = web.StreamResponse(headers={"Content-Length": str(size), "Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"x" * (size // 4))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return response
