"""A stand-in for the OpenFaaS gateway's `/metrics`, so tests can feed a real Prometheus known load.

Tests that read load through Prometheus need series with exactly the gateway's names and labels, at
rates the test chooses, for anything from one function to 10,000. `GatewayExporter` serves them from
an aiohttp server on a free 127.0.0.1 port. Counters advance with real wall time between scrapes (that
is what Prometheus scrapes and what `rate()` sees); gauges hold whatever the test sets, NaN included.

The server runs on its own event loop in a daemon thread, so one exporter can outlive a test's event
loop (module-scoped fixtures) and is usable from plain synchronous code such as a benchmark script:

    with GatewayExporter() as exporter:
        exporter.set_function("echo.openfaas-fn", rps=5.0, inflight=2)
        prometheus = PrometheusServer(targets=[exporter.target])
        ...

The text is rendered by hand rather than through prometheus-client's registry: the format is four
line shapes, and rendering 10,000 functions (50,000 samples) by hand takes milliseconds, a scrape
interval's fraction that the registry's generic path does not reach.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HEADER = (
    "# HELP gateway_function_invocation_total Function invocation count by function and status code\n"
    "# TYPE gateway_function_invocation_total counter\n"
)
_STARTED_HEADER = (
    "# HELP gateway_function_invocation_started Invocations started by function\n"
    "# TYPE gateway_function_invocation_started counter\n"
)
_INFLIGHT_HEADER = (
    "# HELP gateway_function_invocation_inflight Requests in flight by function\n"
    "# TYPE gateway_function_invocation_inflight gauge\n"
)
_SERVICE_HEADER = (
    "# HELP gateway_service_count Current count of replicas for function\n"
    "# TYPE gateway_service_count gauge\n"
)
_CADVISOR_HEADER = (
    "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n"
    "# TYPE container_cpu_usage_seconds_total counter\n"
)
_CPU_HEADER = (
    "# HELP pod_cpu_usage_seconds_total CPU seconds used by the function's pods\n"
    "# TYPE pod_cpu_usage_seconds_total counter\n"
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _cadvisor_lines(key: str, seconds: float) -> list[str]:
    """The kubelet's series for one function's pod (one replica): the function's container named
    after the function (as faas-netes names it), the pause container and the pod-level cgroup."""
    name, _, namespace = key.partition(".")
    pod = f'namespace="{_escape(namespace)}",pod="{_escape(name)}-6f7c9d-x2k4p"'
    metric = "container_cpu_usage_seconds_total"
    return [
        f'{metric}{{{pod},container="{_escape(name)}"}} {_number(seconds)}\n',
        f'{metric}{{{pod},container="POD"}} {_number(seconds / 100)}\n',
        f'{metric}{{{pod},container=""}} {_number(seconds * 1.01)}\n',
    ]


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass(slots=True)
class _Counter:
    """A counter that grows at `rate` per second of the exporter's clock since `since`."""

    base: float = 0.0
    rate: float = 0.0
    since: float = 0.0

    def at(self, now: float) -> float:
        return self.base + self.rate * max(0.0, now - self.since)

    def set_rate(self, rate: float, now: float) -> None:
        self.base = self.at(now)
        self.rate = rate
        self.since = now


@dataclass(slots=True)
class _Function:
    label: str  # pre-escaped `function_name="..."`
    completed: _Counter
    started: _Counter
    cpu: _Counter
    inflight: float | None  # None: no inflight series at all
    has_cpu: bool
    code: str
    invoked: bool = True  # False: deployed, never called (only gateway_service_count is served)
    replicas: int = 1


class GatewayExporter:
    """Serves gateway metrics for a controlled set of functions (keys are `NAME.NAMESPACE`).

    Every setter is thread-safe and takes effect at the next scrape. Rates are per second of real
    time; `cpu` is in cores (the counter is CPU seconds, so `rate(...) * 1000` reads millicores).
    `inflight=None` or `cpu=None` leaves that series out, as when a source does not report it.

    Like the gateway (openfaas/faas `gateway/metrics/exporter.go`), it serves `gateway_service_count`
    for every function it knows, called or not; `service_count=False` leaves that out. `cpu_series`
    picks where CPU comes from: `pro` (OpenFaaS Pro's `pod_cpu_usage_seconds_total{function_name}`)
    or `cadvisor` (the kubelet's `container_cpu_usage_seconds_total{namespace,pod,container}` with the
    pod-level and pause-container series a real kubelet also serves).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        service_count: bool = True,
        cpu_series: str = "pro",
    ):
        if cpu_series not in ("pro", "cadvisor"):
            raise ValueError(f"cpu_series must be 'pro' or 'cadvisor', got {cpu_series!r}")
        self._service_count = service_count
        self._cpu_series = cpu_series
        self._host = host
        self._requested_port = port
        self._clock = clock
        self._lock = threading.Lock()
        self._functions: dict[str, _Function] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.scrapes = 0  # /metrics requests served
        self.last_render_seconds = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, *, timeout: float = 10.0) -> GatewayExporter:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("GatewayExporter already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:  # reported to start(); the thread must not die silently
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="gateway-exporter", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"GatewayExporter did not bind {self._host} within {timeout}s")
        if failure:
            raise RuntimeError(f"GatewayExporter could not serve on {self._host}: {failure[0]}") from failure[
                0
            ]
        return self

    def stop(self) -> None:
        """Stop serving (idempotent). Prometheus then sees the target down and marks its series stale."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> GatewayExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> GatewayExporter:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("GatewayExporter is not started")
        return self._port

    @property
    def target(self) -> str:
        """`host:port`, as a Prometheus static_configs target."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    # -- the functions and their load ------------------------------------------------------------

    def set_function(
        self,
        key: str,
        *,
        rps: float = 0.0,
        started_rps: float | None = None,
        inflight: float | None = 0.0,
        cpu: float | None = 0.0,
        code: str = "200",
    ) -> None:
        """Add a function or replace its load. `started_rps` defaults to `rps`."""
        self.set_functions([key], rps=rps, started_rps=started_rps, inflight=inflight, cpu=cpu, code=code)

    def set_functions(
        self,
        keys: Iterable[str],
        *,
        rps: float = 0.0,
        started_rps: float | None = None,
        inflight: float | None = 0.0,
        cpu: float | None = 0.0,
        code: str = "200",
    ) -> None:
        """Like `set_function` for many functions at once (one lock, so 10,000 is cheap)."""
        now = self._clock()
        started = rps if started_rps is None else started_rps
        with self._lock:
            for key in keys:
                fn = self._functions.get(key)
                if fn is None:
                    fn = _Function(
                        label=f'function_name="{_escape(key)}"',
                        completed=_Counter(since=now),
                        started=_Counter(since=now),
                        cpu=_Counter(since=now),
                        inflight=0.0,
                        has_cpu=True,
                        code=code,
                    )
                    self._functions[key] = fn
                fn.completed.set_rate(rps, now)
                fn.started.set_rate(started, now)
                fn.cpu.set_rate(cpu or 0.0, now)
                fn.has_cpu = cpu is not None
                fn.inflight = inflight
                fn.code = code
                fn.invoked = True

    def deploy(self, key: str, *, replicas: int = 1) -> None:
        """Know a function that was never called: only its `gateway_service_count` is served."""
        now = self._clock()
        with self._lock:
            self._functions[key] = _Function(
                label=f'function_name="{_escape(key)}"',
                completed=_Counter(since=now),
                started=_Counter(since=now),
                cpu=_Counter(since=now),
                inflight=None,
                has_cpu=False,
                code="200",
                invoked=False,
                replicas=replicas,
            )

    def set_rate(self, key: str, rps: float, *, started_rps: float | None = None) -> None:
        """Change one function's completed (and started) invocations per second."""
        now = self._clock()
        with self._lock:
            fn = self._require(key)
            fn.completed.set_rate(rps, now)
            fn.started.set_rate(rps if started_rps is None else started_rps, now)

    def set_inflight(self, key: str, value: float | None) -> None:
        """Set one function's in-flight gauge (NaN and infinities are served as such; None drops it)."""
        with self._lock:
            self._require(key).inflight = value

    def set_cpu(self, key: str, cores: float | None) -> None:
        """Set one function's CPU use in cores (None drops its CPU series)."""
        now = self._clock()
        with self._lock:
            fn = self._require(key)
            fn.cpu.set_rate(cores or 0.0, now)
            fn.has_cpu = cores is not None

    def remove(self, key: str) -> None:
        """Drop every series of one function, as the gateway does when a function is deleted."""
        with self._lock:
            self._functions.pop(key, None)

    def functions(self) -> list[str]:
        with self._lock:
            return list(self._functions)

    def _require(self, key: str) -> _Function:
        fn = self._functions.get(key)
        if fn is None:
            raise KeyError(f"unknown function {key!r}: add it with set_function() first")
        return fn

    # -- rendering -----------------------------------------------------------------------------

    def render(self) -> str:
        """The exposition text as of now (what a scrape gets)."""
        started_at = time.perf_counter()
        now = self._clock()
        with self._lock:
            known = list(self._functions.items())
            fns = [f for f in self._functions.values() if f.invoked]
            total = [_HEADER]
            total.extend(
                f'gateway_function_invocation_total{{{f.label},code="{f.code}"}} '
                f"{_number(f.completed.at(now))}\n"
                for f in fns
            )
            total.append(_STARTED_HEADER)
            total.extend(
                f"gateway_function_invocation_started{{{f.label}}} {_number(f.started.at(now))}\n"
                for f in fns
            )
            total.append(_INFLIGHT_HEADER)
            total.extend(
                f"gateway_function_invocation_inflight{{{f.label}}} {_number(f.inflight)}\n"
                for f in fns
                if f.inflight is not None
            )
            if self._cpu_series == "pro":
                total.append(_CPU_HEADER)
                total.extend(
                    f"pod_cpu_usage_seconds_total{{{f.label}}} {_number(f.cpu.at(now))}\n"
                    for f in fns
                    if f.has_cpu
                )
            else:
                total.append(_CADVISOR_HEADER)
                for key, f in known:
                    if f.invoked and f.has_cpu:
                        total.extend(_cadvisor_lines(key, f.cpu.at(now)))
            if self._service_count:
                total.append(_SERVICE_HEADER)
                total.extend(f"gateway_service_count{{{f.label}}} {f.replicas}\n" for _, f in known)
        text = "".join(total)
        self.last_render_seconds = time.perf_counter() - started_at
        return text

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(body=self.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Bind the socket ourselves so the chosen free port is known without private attributes.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._requested_port))
        self._port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
