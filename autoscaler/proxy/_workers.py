"""`autoscaler proxy --workers N`: N proxy processes on one data port, one admin port over them all.

One Python process serves one core; the proxy's data path is CPU-bound at high rates, so N workers
each run a whole proxy (its own provider watch, its own held requests and wake-ups) and bind the
data port with SO_REUSEPORT: the kernel spreads new connections over the listening workers, and a
worker that dies takes only its own connections with it. The supervisor keeps the port reserved
(bound, never listening, so it gets no connections) for a restarted worker to bind again, and
serves the one admin port: `/metrics` sums what the workers count (`_admin.merge`; a dead worker's
counters as last scraped stay in the sums, so no counter goes backwards), `/readyz` is ready while
any worker is, `/workers` lists them (pid, restarts, ready, requests started).

Wake-ups need no coordination: two workers holding requests for the same function at zero each
wake it, and a wake-up writes `spec.replicas` only while it is 0 (`Provider.wake`), so the second
changes nothing. A worker that exits after it was ready is logged
and restarted after a capped back-off (policies.backoff); one that exits before it was ever ready
at start-up ends the supervisor with its exit code, as a one-process proxy fails on a bad setting.
SIGTERM or SIGINT drains every worker (each for `--shutdown-grace`) and then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import random
import shutil
import signal
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from autoscaler.config import ProxySettings
from autoscaler.errors import cannot_listen
from autoscaler.proxy._admin import Snapshot, exposition_of, growing, merge, worker_app
from autoscaler.proxy._proxy import Proxy, serve_forever
from policies.backoff import Backoff

log = logging.getLogger("autoscaler.proxy")

# The environment variable that makes `autoscaler proxy` a worker: JSON of its settings and channel.
WORKER_ENV = "_AUTOSCALER_PROXY_WORKER"
RESTART_BACKOFF = Backoff(first=0.5, maximum=30.0, spread=0.5)
STABLE_AFTER = 60.0  # seconds up after which a worker's next exit counts as its first failure
SCRAPE_TIMEOUT = 2.0  # seconds a worker has to answer its supervisor
KILL_AFTER = 10.0  # seconds past the drain grace before a worker that has not exited is killed
_PR_SET_PDEATHSIG = 1


@dataclass
class Worker:
    """One worker process and what the supervisor knows of it."""

    index: int
    channel: str  # the Unix socket it answers its supervisor on
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    failures: int = 0
    ready_once: bool = False
    last: Snapshot | None = None  # its registry as last scraped


def worker_config() -> dict[str, Any] | None:
    """In a worker process, what its supervisor gave it (settings, port, channel); else None."""
    raw = os.environ.get(WORKER_ENV)
    return None if raw is None else dict(json.loads(raw))


async def serve_worker(proxy: Proxy, registry: CollectorRegistry, *, channel: str, grace: float) -> int:
    """Run a started `proxy` as a worker: answer the supervisor on `channel`, serve until SIGTERM."""
    with contextlib.suppress(OSError, AttributeError):  # Linux: die with the supervisor, never orphaned
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    runner = web.AppRunner(worker_app(ready=proxy.ready, registry=registry), access_log=None)
    await runner.setup()
    try:
        await web.UnixSite(runner, channel).start()
        return await serve_forever(proxy, grace=grace)
    finally:
        await runner.cleanup()


class Supervisor:
    """Starts, watches, restarts and drains the workers; serves the admin port over them."""

    def __init__(self, *, settings: ProxySettings, command: Sequence[str], config: dict[str, Any]) -> None:
        self._settings = settings
        self._command = list(command)  # runs `autoscaler proxy` (the worker reads WORKER_ENV)
        self._config = config  # what every worker gets besides its port and channel
        self._dir = tempfile.mkdtemp(prefix="autoscaler-proxy-")
        self._workers = [
            Worker(i, os.path.join(self._dir, f"worker-{i}.sock")) for i in range(settings.workers)
        ]
        self._watchers: list[asyncio.Task[None]] = []
        self._retired: Snapshot = []  # the counters of workers that died, as last scraped
        self._reserved: socket.socket | None = None
        self._admin: web.AppRunner | None = None
        self._draining = False
        self._failed: asyncio.Future[int] | None = None  # a worker that died before it was ever ready
        self.port = 0
        self.admin_port = 0

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT, then drain; a worker failing at start-up ends it."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        self._failed = loop.create_future()
        stopped = loop.create_task(stop.wait())
        started: asyncio.Task[None] | None = None
        try:
            await self._start()
            started = loop.create_task(self._wait_ready())
            first: list[asyncio.Future[Any]] = [started, self._failed, stopped]
            await asyncio.wait(first, return_when="FIRST_COMPLETED")
            if started.done():
                log.info(
                    "proxy listening on %s:%d (admin %d, %d workers)",
                    self._settings.host, self.port, self.admin_port, len(self._workers),
                )  # fmt: skip
                then: list[asyncio.Future[Any]] = [self._failed, stopped]
                await asyncio.wait(then, return_when="FIRST_COMPLETED")
            if self._failed.done() and not stop.is_set():
                return self._failed.result()
            grace = self._settings.shutdown_grace
            log.info("signal received: draining %d workers for up to %g s", len(self._workers), grace)
            await self._drain()
            return 0
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            for task in (stopped, started):
                if task is not None:
                    task.cancel()
            await self._close()

    async def _start(self) -> None:
        settings = self._settings
        reserved = self._reserved = _reserve(settings.host, settings.port)
        self.port = int(reserved.getsockname()[1])
        self._admin = web.AppRunner(self._admin_app(), access_log=None)
        await self._admin.setup()
        try:
            await web.TCPSite(self._admin, settings.host, settings.admin_port).start()
        except OSError as e:
            raise cannot_listen(
                e, host=settings.host, port=settings.admin_port, host_flag="--host", port_flag="--admin-port"
            ) from e
        self.admin_port = int(self._admin.addresses[0][1])
        for worker in self._workers:
            await self._spawn(worker)
            self._watchers.append(asyncio.get_running_loop().create_task(self._watch(worker)))

    async def _spawn(self, worker: Worker) -> None:
        config = {**self._config, "port": self.port, "channel": worker.channel, "index": worker.index}
        worker.process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, WORKER_ENV: json.dumps(config)},
        )

    async def _watch(self, worker: Worker) -> None:
        """Restart `worker` whenever it exits (after a back-off), unless the supervisor is stopping."""
        loop = asyncio.get_running_loop()
        while True:
            process = worker.process
            assert process is not None
            began = loop.time()
            code = await process.wait()
            if self._draining:
                return
            if not worker.ready_once:
                log.error(
                    "worker %d (pid %d) exited with %s before it was ready", worker.index, process.pid, code
                )
                if self._failed is not None and not self._failed.done():
                    self._failed.set_result(code or 1)
                return
            if worker.last is not None:
                self._retired = merge([self._retired, growing(worker.last)])
                worker.last = None
            worker.failures = 1 if loop.time() - began > STABLE_AFTER else worker.failures + 1
            delay = RESTART_BACKOFF.delay(worker.failures, draw=random.random())
            log.warning(
                "worker %d (pid %d) exited with %s; restarting it in %.2f s",
                worker.index,
                process.pid,
                code,
                delay,
            )
            await asyncio.sleep(delay)
            if self._draining:
                return
            try:
                await self._spawn(worker)
            except OSError as e:  # e.g. out of descriptors: the dead process's wait returns at once
                log.error("worker %d could not be started again: %s", worker.index, e)
                continue
            worker.restarts += 1
            assert worker.process is not None
            log.info(
                "worker %d restarted (pid %d, restart %d)", worker.index, worker.process.pid, worker.restarts
            )

    async def _wait_ready(self) -> None:
        # The workers are other processes: their readiness is polled over their channels.
        while not all([await self._ready(worker) for worker in self._workers]):  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def _get(self, worker: Worker, path: str) -> tuple[int, Any]:
        """`path` from `worker` over its channel: (status, JSON or text); (0, None) if it cannot answer."""
        if worker.process is None or worker.process.returncode is not None:
            return 0, None
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=worker.channel), timeout=timeout
                ) as s,
                s.get(f"http://worker{path}") as response,
            ):
                body = await response.json() if path == "/registry" else await response.text()
                return response.status, body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0, None

    async def _ready(self, worker: Worker) -> bool:
        status, _ = await self._get(worker, "/readyz")
        if status == 200:
            worker.ready_once = True
        return status == 200

    async def _scrape(self, worker: Worker) -> Snapshot | None:
        status, body = await self._get(worker, "/registry")
        if status == 200 and isinstance(body, list):
            worker.last = body
        return worker.last

    async def _metrics(self) -> bytes:
        snaps = await asyncio.gather(*(self._scrape(worker) for worker in self._workers))
        return exposition_of(merge([*(s for s in snaps if s is not None), self._retired]))

    def _admin_app(self) -> web.Application:
        async def healthz(_request: web.Request) -> web.Response:
            return web.Response(text="ok\n", content_type="text/plain")

        async def readyz(_request: web.Request) -> web.Response:
            if not self._draining and any([await self._ready(w) for w in self._workers]):
                return web.Response(text="ready\n", content_type="text/plain")
            return web.Response(
                status=503, text="not ready: starting or draining\n", content_type="text/plain"
            )

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(body=await self._metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def workers(_request: web.Request) -> web.Response:
            return web.json_response({"workers": [await self._describe(w) for w in self._workers]})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/workers", workers)
        return app

    async def _describe(self, worker: Worker) -> dict[str, Any]:
        process = worker.process
        alive = process is not None and process.returncode is None
        snap = await self._scrape(worker) if alive else None
        started = sum(
            value
            for family in snap or []
            for name, _, value in family["samples"]
            if name.endswith("function_invocation_started")
        )
        return {
            "index": worker.index,
            "pid": process.pid if alive and process is not None else None,
            "restarts": worker.restarts,
            "ready": alive and await self._ready(worker),
            "started": started,
        }

    async def _drain(self) -> None:
        """SIGTERM to every worker; each drains for the grace; kill what is left after KILL_AFTER more."""
        self._draining = True
        live = [w.process for w in self._workers if w.process is not None and w.process.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in live]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=self._settings.shutdown_grace + KILL_AFTER)
        for process in live:
            if process.returncode is None:
                log.warning("worker pid %d did not exit after its drain; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        if late:
            await asyncio.wait(late)

    async def _close(self) -> None:
        self._draining = True
        for task in self._watchers:
            task.cancel()
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
        if self._admin is not None:
            await self._admin.cleanup()
        if self._reserved is not None:
            self._reserved.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (never listen on) host:port with SO_REUSEPORT: the port the workers share, held for restarts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        raise cannot_listen(e, host=host, port=port, host_flag="--host", port_flag="--port") from e
    family, _, _, _, address = min(infos, key=lambda info: info[0] != socket.AF_INET)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise cannot_listen(e, host=host, port=port, host_flag="--host", port_flag="--port") from e
    return sock
