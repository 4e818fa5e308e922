"""The wake-up proxy: forwards warm traffic, holds cold traffic, and never scales a busy function away.

One aiohttp low-level server takes every request (no router or middleware on the hot path), resolves
it to a function the provider knows, and either forwards it at once or holds it through a cold start
(`_hold`); a function that declares a concurrency limit gets at most that many requests
per replica and the rest queue for a slot (`_slots`). Counters are plain numbers exported on scrape
(`_metrics`). The proxy tells the provider that a function is active at the start of each request
for it (the provider coalesces the writes: `--mark-interval`), and `busy()` and `invocation_stats()`
expose the same facts to the control loop (invariant 2). The client side of the port keeps an edge
proxy's limits (`_downstream`), and request bodies are counted against buffer caps before they are
read (`_bodies`).

Behind an OpenFaaS gateway the proxy is the gateway's `functions_provider_url`: the gateway sends it
`/function/NAME[.NAMESPACE]/...` unchanged (with `direct_functions=false`) together with everything
else it forwards to a provider (`/system/...`, `/healthz`). With `--provider-url` those other
requests go to the real provider (faas-netes) untouched, bodies streamed both ways; else 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from yarl import URL

from autoscaler.config import ProxySettings
from autoscaler.errors import cannot_listen
from autoscaler.interfaces import FunctionRef, InvocationStats, Provider
from autoscaler.proxy._admin import admin_app, error_response
from autoscaler.proxy._bodies import BodyBudget, BodyRefused, read_body
from autoscaler.proxy._downstream import ClientLimits, ClientServer, listen
from autoscaler.proxy._drain import serve_pending, settle
from autoscaler.proxy._eager import run_eagerly
from autoscaler.proxy._forward import Forwarder, UpstreamError
from autoscaler.proxy._hold import ColdStarts, FunctionState, HoldError
from autoscaler.proxy._intake import screen
from autoscaler.proxy._metrics import StatsCollector
from autoscaler.proxy._opening import Opener
from autoscaler.proxy._passthrough import pass_through
from autoscaler.proxy._respond import ProxyRequest, request_factory
from autoscaler.proxy._routing import PREFIX, RouteError, Router
from autoscaler.proxy._slots import concurrency_limit
from autoscaler.routes import not_found
from autoscaler.runtime import settle_collector
from autoscaler.spec import zero_enabled
from autoscaler.tasks import Background

log = logging.getLogger("autoscaler.proxy")

# Right after a wake-up, endpoints lag readiness: connect errors are retried for this long after it.
WAKE_RETRY_WINDOW = 10.0
CONNECT_RETRY_WINDOW = 5.0  # warm path: how long refused connections are retried before 502
# Status recorded for a request whose client went away (or that shutdown cut) before an answer.
CLIENT_CLOSED = 499
# The data port's listen backlog (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 4096


class AsyncAcceptor(Protocol):
    """Takes `/async-function/...` requests (autoscaler.queue.AsyncAcceptor puts them on JetStream)."""

    async def accept(self, request: web.BaseRequest) -> web.StreamResponse: ...


class Proxy:
    """The `/function/NAME[.NAMESPACE]/...` data path plus its admin port."""

    def __init__(
        self,
        *,
        settings: ProxySettings,
        provider: Provider,
        registry: CollectorRegistry | None = None,
        on_wake: Callable[[FunctionRef], None] | None = None,
        clock: Callable[[], float] = time.time,
        async_acceptor: AsyncAcceptor | None = None,
    ) -> None:
        self._settings = settings
        self._async_acceptor = async_acceptor  # /async-function/ calls go to the queue (autoscaler.queue)
        self._provider = provider
        self._registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._router = Router(default_namespace=settings.default_namespace)
        # The real provider: its origin (the pool's endpoint) and a base path put before each target.
        self._provider_origin: str | None = None
        self._provider_base = ""
        self._provider_what = ""
        if settings.provider_url is not None:
            url = URL(settings.provider_url)
            self._provider_origin = str(url.origin())
            self._provider_base = url.raw_path.rstrip("/")
            self._provider_what = f"the provider at {url}"
        self._states: dict[str, FunctionState] = {}
        self._background = Background()
        self._cold = ColdStarts(
            provider=provider,
            hold_timeout=settings.hold_timeout,
            max_held=settings.max_held,
            background=self._background,
            on_wake=on_wake,
            clock=clock,
        )
        self._forwarder = Forwarder(
            upstream_timeout=settings.upstream_timeout,
            background=self._background,
            max_connections_per_host=settings.upstream_connections,
            idle_timeout=settings.upstream_idle_timeout,
        )
        self._opener = Opener(settings=settings, provider=provider, forwarder=self._forwarder)
        self._bodies = BodyBudget(per_function=settings.max_buffered, total=settings.max_buffered_total)
        self._collector = StatsCollector(
            lambda: [state.stats for state in list(self._states.values())],
            functions=provider.functions,
            gateway_metrics=settings.gateway_metrics,
        )
        self._registry.register(self._collector)
        self._runner: web.ServerRunner | None = None
        self._server: ClientServer | None = None
        self._site: web.BaseSite | None = None
        self._listener: socket.socket | None = None  # the data port's listening socket
        self._admin_runner: web.AppRunner | None = None
        self._port = self._admin_port = 0
        self._started = False
        self._draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the data and admin ports (port 0 picks a free one) and start serving."""
        settings = self._settings
        # Kept for the data path: Python 3.11's asyncio.get_running_loop() makes a getpid() call.
        self._loop = asyncio.get_running_loop()
        await self._forwarder.start()
        self._provider.subscribe(self._changed)
        self._server = server = ClientServer(
            self._handle,
            limits=ClientLimits(
                header_timeout=settings.header_timeout,
                keepalive_timeout=settings.keepalive_timeout,
                max_head_size=settings.max_head_size,
                send_timeout=settings.send_timeout,
                body_timeout=settings.body_timeout,
            ),
            request_factory=request_factory(max_body=settings.max_body),
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
        )
        runner = self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        admin_runner = self._admin_runner = web.AppRunner(
            admin_app(ready=self.ready, registry=self._registry), access_log=None
        )
        await admin_runner.setup()
        try:
            # aiohttp listens with a backlog of 128: a burst of callers would overflow it (SYN retries
            # of 1 s and more), as the functions' small queues overflow behind us.
            def data_site() -> web.BaseSite:
                self._listener = listen(server, settings.host, settings.port, reuse_port=settings.workers > 1)
                return web.SockSite(runner, self._listener, backlog=LISTEN_BACKLOG)

            self._site = await self._listen(data_site, "--port", settings.port)
            self._port = _bound_port(runner)
            self._background.spawn(server.sweep(), name="client limits")
            await self._listen(
                lambda: web.TCPSite(admin_runner, settings.host, settings.admin_port),
                "--admin-port",
                settings.admin_port,
            )
            self._admin_port = _bound_port(admin_runner)
        except BaseException:
            await self.stop()
            raise
        self._started = True
        log.info("proxy listening on %s:%d (admin %d)", settings.host, self._port, self._admin_port)

    async def _listen(self, make: Callable[[], web.BaseSite], flag: str, port: int) -> web.BaseSite:
        try:
            site = make()
            await site.start()
        except OSError as e:
            raise cannot_listen(
                e, host=self._settings.host, port=port, host_flag="--host", port_flag=flag
            ) from e
        return site

    @property
    def port(self) -> int:
        return self._port

    @property
    def admin_port(self) -> int:
        return self._admin_port

    def ready(self) -> bool:
        return self._started and not self._draining

    async def drain(self, *, grace: float) -> None:
        """Stop accepting, let in-flight and held requests finish for up to `grace` seconds."""
        self._draining = True
        if self._site is not None and self._server is not None and self._listener is not None:
            # The listen queue outlives the site's close in a duplicate: what it holds is served.
            pending = socket.socket(fileno=os.dup(self._listener.fileno()))
            await self._site.stop()  # new connections are refused (or go to the other workers)
            self._site = None
            await serve_pending(self._server, pending)
        if self._server is not None:
            await settle(self._server, inflight=lambda: self._inflight, idle=self._idle, grace=grace)

    async def stop(self) -> None:
        """Close everything at once (after `drain` for a graceful stop)."""
        self._draining = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        await self._background.close()
        await self._forwarder.close()
        with contextlib.suppress(KeyError):
            self._registry.unregister(self._collector)

    # -- what the control loop reads ---------------------------------------------------------------

    def invocation_stats(self) -> Mapping[str, InvocationStats]:
        """Per-function counters keyed by NAME.NAMESPACE; `inflight` includes held requests."""
        return {key: state.stats.snapshot() for key, state in list(self._states.items())}

    def busy(self, key: str) -> bool:
        """True while the proxy holds or forwards requests for the function `key`."""
        state = self._states.get(key)
        return state is not None and state.stats.inflight > 0

    # -- the data path -------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        refusal = screen(request)  # CONNECT, HTTP/0.9; a 100 Continue when one is owed
        if refusal is not None:
            return refusal
        if self._async_acceptor is not None and request.raw_path.startswith("/async-function/"):
            return await self._async_acceptor.accept(request)
        if self._provider_origin is not None and not request.raw_path.startswith(PREFIX):
            return await self._pass_through(request, self._provider_origin)
        try:
            ref, path = self._router.resolve(request.raw_path)
        except RouteError as e:
            return error_response(e.status, e.message)
        info = self._provider.get(ref)
        if info is None:
            missing = not_found(ref)
            return error_response(missing.status, missing.message)
        state = self._states.get(ref.key)
        if state is None:
            state = self._states[ref.key] = FunctionState(ref)
        stats = state.stats
        assert self._loop is not None  # requests come only after start()
        loop_time = self._loop.time
        arrived = loop_time()
        stats.started += 1
        stats.inflight += 1
        self._inflight += 1
        cold = info.ready_replicas <= 0
        if not cold and zero_enabled(info.labels) and not state.marking:
            # Only functions that can be scaled to zero need the mark (invariant 2), once per request
            # start; the provider coalesces the writes (--mark-interval), and a mark still being
            # written covers the requests that start meanwhile. A wake-up marks the function itself.
            state.marking = True
            run_eagerly(self._mark(state, self._clock()), background=self._background, name=f"mark {ref.key}")
        status = CLIENT_CLOSED
        limit = concurrency_limit(state, info)
        try:
            response = await self._serve(request, state, path, cold=cold, arrived=arrived, limit=limit)
            status = response.status
            return response
        finally:
            stats.finish(status, loop_time() - arrived)
            self._inflight -= 1
            if self._draining and self._inflight == 0:
                self._idle.set()

    def _changed(self, ref: FunctionRef) -> None:
        # The provider's watch saw the function change (e.g. a new replica): let queued requests on.
        state = self._states.get(ref.key)
        if state is not None and state.slots is not None:
            state.slots.dispatch()

    async def _mark(self, state: FunctionState, now: float) -> None:
        try:
            await self._provider.mark_active(state.ref, now)
        finally:
            state.marking = False

    async def _serve(
        self,
        request: web.BaseRequest,
        state: FunctionState,
        path: str,
        *,
        cold: bool,
        arrived: float,
        limit: int | None,
    ) -> web.StreamResponse:
        settings = self._settings
        endpoints = self._provider.endpoints(state.ref)
        held = cold or not endpoints
        body: bytes | None = None
        try:
            if held:
                self._cold.admit(state)  # before the body is read: a full hold reads none of it
            if request.body_exists:
                body = await read_body(
                    request, budget=self._bodies, key=state.ref.key, max_body=settings.max_body
                )
            return await self._forward(
                request, state, path, body, endpoints=None if held else endpoints, arrived=arrived,
                limit=limit,
            )  # fmt: skip
        except BodyRefused as e:
            state.stats.reject("body_too_large" if e.status == 413 else "body_buffers_full")
            response = self._refused(e)
            response.force_close()  # the body (or the rest of it) may still be on its way
            return response
        except HoldError as e:
            return self._refused(e)
        finally:
            if body:
                self._bodies.give(state.ref.key, len(body))

    async def _forward(
        self,
        request: web.BaseRequest,
        state: FunctionState,
        path: str,
        body: bytes | None,
        *,
        endpoints: list[str] | None,
        arrived: float,
        limit: int | None,
    ) -> web.StreamResponse:
        """Hold the request (when `endpoints` is None) or not, open it upstream, relay the answer."""
        loop = self._loop
        assert loop is not None
        hold_timeout = self._settings.hold_timeout
        deadline = arrived + hold_timeout
        held = endpoints is None
        if held:
            await self._cold.hold(state, deadline=deadline)  # HoldError: 429, 503, 504, 404
            retry_until = deadline
        else:
            # A refused connection never reached the function, so retrying is safe even for a POST:
            # a replica that stopped listening before its endpoint left the EndpointSlice costs a
            # short delay, not an error. Right after a wake-up, endpoints lag readiness: longer.
            woken = loop.time() - state.woken_at < WAKE_RETRY_WINDOW
            retry_until = loop.time() + (
                WAKE_RETRY_WINDOW if woken else min(hold_timeout, CONNECT_RETRY_WINDOW)
            )
        slot: str | None = None
        try:
            upstream, slot = await self._opener.open(
                request, state, path, body, endpoints=endpoints, retry_until=retry_until, limit=limit,
                deadline=deadline,
            )  # fmt: skip
            if held:
                state.stats.cold_start.observe(waited := loop.time() - arrived)
                if isinstance(request, ProxyRequest):
                    request.held_for(waited)  # X-Autoscaler-Cold-Start on the function's answer
            return await self._forwarder.relay(request, upstream, key=state.ref.key)
        except UpstreamError as e:
            return error_response(e.status, str(e))
        finally:
            if slot is not None and state.slots is not None:
                state.slots.release(slot)

    def _refused(self, error: HoldError | BodyRefused) -> web.Response:
        headers = {"Retry-After": str(self._settings.retry_after)} if error.status == 429 else None
        return error_response(error.status, str(error), headers=headers)

    async def _pass_through(self, request: web.BaseRequest, origin: str) -> web.StreamResponse:
        self._inflight += 1
        try:
            return await pass_through(
                request, forwarder=self._forwarder, origin=origin, base=self._provider_base,
                what=self._provider_what,
            )  # fmt: skip
        finally:
            self._inflight -= 1
            if self._draining and self._inflight == 0:
                self._idle.set()


def _bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the server did not bind any address")


async def serve_forever(proxy: Proxy, *, grace: float) -> int:
    """Serve until SIGTERM or SIGINT, then drain for up to `grace` seconds and stop; returns 0."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        if not proxy.ready():
            await proxy.start()
        settle_collector()  # thousands of live connections and held requests (autoscaler.runtime)
        await stop.wait()
        log.info("signal received: draining for up to %g s", grace)
        await proxy.drain(grace=grace)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await proxy.stop()
    return 0
