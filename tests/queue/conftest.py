"""Fixtures for the queue's tests: a real nats-server, the real proxy with the acceptor, real HTTP
functions with scripted answers, a real callback receiver, and in-process queue-workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web
from nats.js import JetStreamContext

from autoscaler.config import ProxySettings, QueueSettings, QueueWorkerSettings
from autoscaler.proxy import Proxy
from autoscaler.queue import AsyncAcceptor, QueueWorker
from tests.support.fakeprovider import FakeProvider
from tests.support.nats import NatsServer, nats_server  # noqa: F401

pytestmark = pytest.mark.nats


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1: a scripted function, or a callback receiver."""

    # Statuses answered in turn (then 200 for ever); `delay` seconds before each answer.
    script: list[int] = field(default_factory=list)
    delay: float = 0.0
    delays: list[float] = field(default_factory=list)  # per request in turn, before `delay` applies
    capacity: int = 0  # like a function's max_inflight: 429 at once beyond this many (0: no limit)
    throttled: int = 0  # 429s answered for capacity
    seen: list[Seen] = field(default_factory=list)
    busy: int = 0
    most_busy: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body))
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            if self.capacity and self.busy > self.capacity:
                self.throttled += 1
                return web.Response(status=429, text="too many requests")
            delay = self.delays.pop(0) if self.delays else self.delay
            if delay:
                await asyncio.sleep(delay)
            status = self.script.pop(0) if self.script else 200
            return web.Response(
                status=status,
                body=b"result:" + body,
                headers={"X-Result": "yes", "Content-Type": "text/plain"},
            )
        finally:
            self.busy -= 1

    def call_ids(self) -> list[str]:
        return [seen.headers.get("X-Call-Id", "") for seen in self.seen]


@dataclass
class Stack:
    nats: NatsServer
    provider: FakeProvider
    proxy: Proxy
    acceptor: AsyncAcceptor
    queue: QueueSettings

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def worker_settings(self, **overrides: Any) -> QueueWorkerSettings:
        values: dict[str, Any] = {
            "proxy_url": self.base,
            "ack_wait": 2.0,
            "retry_min_wait": 0.2,
            "retry_max_wait": 0.4,
            "callback_min_wait": 0.1,
            "callback_max_wait": 0.2,
            "callback_attempts": 3,
            "callback_timeout": 2.0,
            "discover_interval": 0.1,
            "admin_port": 0,
            "admin_host": "127.0.0.1",
        }
        values.update(overrides)
        return QueueWorkerSettings(**values)


MakeReceiver = Callable[..., Awaitable[Receiver]]
MakeWorker = Callable[..., Awaitable[QueueWorker]]


@pytest.fixture
async def make_receiver() -> AsyncIterator[MakeReceiver]:
    started: list[Receiver] = []

    async def make(**fields: Any) -> Receiver:
        receiver = await Receiver(**fields).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def stack(nats_server: NatsServer) -> AsyncIterator[Stack]:  # noqa: F811
    provider = FakeProvider(ready_delay=0.3)
    queue = QueueSettings(nats_url=nats_server.url, publish_timeout=2.0)
    acceptor = AsyncAcceptor(settings=queue, provider=provider, default_namespace="openfaas-fn")
    await acceptor.start(wait=5.0)
    proxy = Proxy(
        settings=ProxySettings(host="127.0.0.1", port=0, admin_port=0),
        provider=provider,
        async_acceptor=acceptor,
    )
    await proxy.start()
    try:
        yield Stack(nats=nats_server, provider=provider, proxy=proxy, acceptor=acceptor, queue=queue)
    finally:
        await proxy.stop()
        await acceptor.close()
        await provider.close()


@pytest.fixture
async def make_worker(stack: Stack) -> AsyncIterator[MakeWorker]:
    started: list[QueueWorker] = []

    async def make(**overrides: Any) -> QueueWorker:
        worker = QueueWorker(queue=stack.queue, settings=stack.worker_settings(**overrides))
        await worker.start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        await worker.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def js(stack: Stack) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on the stack's nats-server, to look at what was stored."""
    nc = await nats.connect(stack.nats.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()
