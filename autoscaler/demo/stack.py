"""The whole product on one machine: local provider, wake-up proxy and control loop in one process.

`autoscaler demo` runs this stack under a scripted load, `autoscaler demo --serve` runs it until
Ctrl-C. Load comes straight from the proxy's counters (no Prometheus to install) unless a Prometheus
URL is given, and shutdown goes in the order that loses nothing: stop deciding, drain the queue-worker,
drain the proxy, then drain the replicas.

With `embedded_nats` and a nats-server binary on the machine, the stack also runs an embedded
nats-server (`demo._nats`), the proxy accepts `/async-function/` calls onto JetStream and an
in-process queue-worker invokes them through the proxy, as in a cluster; without the binary the stack
runs without asynchronous calls and `queue_note` says how to get them. The queue-worker's backlog per
function is the loop's `pending` figure, so a `type=queue` function (`with_queue_example` adds one)
is woken and scaled by its backlog as with Prometheus in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from autoscaler.config import (
    ControllerSettings,
    MetricsSettings,
    ProxySettings,
    QueueSettings,
    QueueWorkerSettings,
)
from autoscaler.controller import Controller
from autoscaler.demo._nats import INSTALL_HINT, EmbeddedNats, find_binary
from autoscaler.functionsfile import BUILTIN_FILE, FunctionsFile, LocalFunction
from autoscaler.inprocess import ProxyLoadReader
from autoscaler.interfaces import FunctionRef, LoadReader
from autoscaler.metrics import PrometheusReader
from autoscaler.providers.local import LocalProvider
from autoscaler.proxy import Proxy
from autoscaler.queue import AsyncAcceptor, QueueWorker
from autoscaler.spec import (
    MAX,
    MAX_INFLIGHT,
    MIN,
    TARGET,
    TYPE,
    ZERO,
    ZERO_DURATION,
    format_duration,
    parse_labels,
)

log = logging.getLogger("autoscaler.demo")

S = TypeVar("S", bound=ProxySettings | ControllerSettings | QueueSettings | QueueWorkerSettings)


@dataclass(frozen=True, slots=True)
class StackSettings:
    """The knobs of a local stack; the demo shortens the clocks so a run fits in a minute.

    `interval`, `hold_timeout` and `drain_grace` are the demo's defaults: `AUTOSCALER_INTERVAL`,
    `AUTOSCALER_HOLD_TIMEOUT` and `AUTOSCALER_SHUTDOWN_GRACE` win over them, as they do in a cluster.
    """

    port: int = 0  # proxy port; 0 picks a free one
    admin_port: int = 0  # the proxy's /metrics and health port; 0 picks a free one
    prometheus_url: str | None = None  # unset: load straight from the proxy's counters
    interval: float = 0.5  # seconds between ticks
    rate_window: float = 3.0  # seconds of the in-process rps window
    hold_timeout: float = 30.0
    drain_grace: float = 5.0
    embedded_nats: bool = False  # asynchronous calls on an embedded nats-server, when the binary is found


def shorten_zero_durations(functions: FunctionsFile, *, seconds: float) -> tuple[FunctionsFile, list[str]]:
    """Set the zero-duration of every `zero=true` function to `seconds`; returns notes saying so."""
    notes = []
    changed = []
    for fn in functions.functions:
        if fn.labels.get(ZERO, "false").strip().lower() == "true":
            before = format_duration(parse_labels(fn.labels).zero_duration)
            after = format_duration(seconds)
            notes.append(f"{fn.name}: zero-duration shortened from {before} to {after} for the demo")
            fn = dataclasses.replace(fn, labels={**fn.labels, ZERO_DURATION: after})
        changed.append(fn)
    return dataclasses.replace(functions, functions=tuple(changed)), notes


QUEUE_EXAMPLE = "batch"


def with_queue_example(functions: FunctionsFile) -> FunctionsFile:
    """`functions` plus `batch`: at zero until called, scaled on its backlog of asynchronous calls.

    `type=queue` with a target of 5 pending calls per replica, up to 4 replicas, each taking one call
    at a time (250 ms): a backlog of tens of calls wants every replica, and more replicas drain it faster.
    """
    batch = LocalFunction(
        name=QUEUE_EXAMPLE,
        argv=(sys.executable, str(BUILTIN_FILE.parent / "functions" / "hello.py")),
        labels={
            MIN: "1",
            MAX: "4",
            TYPE: "queue",
            TARGET: "5",
            ZERO: "true",
            ZERO_DURATION: "5m",
            MAX_INFLIGHT: "1",
        },
        environment={"GREETING": "Done", "WORK_MS": "250"},
        health_path="/",
        initial_replicas=0,
    )
    return dataclasses.replace(functions, functions=(*functions.functions, batch))


def demo_settings(
    model: type[S], ignored: list[str], *, fixed: dict[str, Any], defaults: dict[str, Any]
) -> S:
    """`model` from the environment, over the demo's `defaults`, under its `fixed` values.

    The variables that set a `fixed` value are appended to `ignored`, so the demo can say so: a setting
    that is validated and then not used is one a user cannot explain.
    """
    given = model().model_fields_set  # what the AUTOSCALER_* variables set
    ignored.extend(f"AUTOSCALER_{name.upper()}" for name in sorted(given & fixed.keys()))
    return model(**{name: value for name, value in defaults.items() if name not in given}, **fixed)


class LocalStack:
    """Provider + proxy + loop on loopback, started and stopped as one."""

    def __init__(self, *, functions: FunctionsFile, settings: StackSettings) -> None:
        self.functions = functions
        self.settings = settings
        self.registry = CollectorRegistry()
        self.provider = LocalProvider(functions=functions)
        self.nats: EmbeddedNats | None = None
        self.acceptor: AsyncAcceptor | None = None
        self.worker: QueueWorker | None = None
        self.queue: QueueSettings | None = None
        self.queue_note = "asynchronous calls: off"
        self.ignored: list[str] = []  # AUTOSCALER_* variables the stack sets for itself
        if settings.embedded_nats:
            self._embed_nats()
        self.proxy_settings = demo_settings(
            ProxySettings,
            self.ignored,
            fixed={
                "host": "127.0.0.1",
                "port": settings.port,
                "admin_port": settings.admin_port,
                "default_namespace": functions.namespace,
            },
            defaults={"hold_timeout": settings.hold_timeout, "shutdown_grace": settings.drain_grace},
        )
        self.proxy = Proxy(
            settings=self.proxy_settings,
            provider=self.provider,
            registry=self.registry,
            on_wake=self._poke,
            async_acceptor=self.acceptor,
        )
        self.reader: LoadReader
        if settings.prometheus_url:
            self.reader = PrometheusReader(
                settings=MetricsSettings(prometheus_url=settings.prometheus_url), registry=self.registry
            )
        else:
            self.reader = ProxyLoadReader(
                stats=self.proxy.invocation_stats,
                window=settings.rate_window,
                known=lambda: self.provider.functions().keys(),
                pending=self._pending if self.queue is not None else None,
            )
        self.controller = Controller(
            provider=self.provider,
            reader=self.reader,
            settings=demo_settings(
                ControllerSettings,
                self.ignored,
                fixed={"admin_host": "127.0.0.1", "admin_port": 0},
                defaults={"interval": settings.interval},
            ),
            registry=self.registry,
            busy=self.proxy.busy,
        )
        self.refs = [FunctionRef(fn.name, functions.namespace) for fn in functions.functions]
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    def _embed_nats(self) -> None:
        """The embedded nats-server (not started yet) and the acceptor of asynchronous calls onto it."""
        binary = find_binary()
        if binary is None:
            self.queue_note = f"asynchronous calls: off, no nats-server found: {INSTALL_HINT}"
            return
        self.nats = EmbeddedNats(binary=binary)
        self.queue = demo_settings(
            QueueSettings, self.ignored, fixed={"nats_url": self.nats.url}, defaults={"publish_timeout": 5.0}
        )
        self.acceptor = AsyncAcceptor(
            settings=self.queue,
            provider=self.provider,
            default_namespace=self.functions.namespace,
            registry=self.registry,
        )
        self.queue_note = (
            f"asynchronous calls: /async-function/ on JetStream at {self.nats.url} (a temporary queue: "
            "calls still in it when the demo stops are dropped)"
        )

    def _poke(self, ref: FunctionRef) -> None:
        self.controller.poke(ref)

    def _pending(self) -> Mapping[str, float] | None:
        """The queue-worker's backlog per function; None (no data) while it is not consuming."""
        worker, queue = self.worker, self.queue
        if worker is None or queue is None or not worker.ready():
            return None
        counts: dict[str, float] = {}
        for metric in worker.metrics.pending.collect():
            for sample in metric.samples:
                if sample.labels.get("queue_name") == queue.queue_name:
                    key = sample.labels["function_name"]
                    counts[key] = counts.get(key, 0.0) + sample.value
        return counts

    def notes(self) -> list[str]:
        """What a user should know about the stack's settings: the variables it did not read."""
        if not self.ignored:
            return []
        names = ", ".join(dict.fromkeys(self.ignored))
        return [f"not read by the demo, which sets them itself: {names}"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    async def start(self, *, ready_timeout: float = 30.0) -> None:
        """Start replicas and the proxy; return once every function with replicas has a ready one."""
        await self.proxy.start()  # first: a port in use fails fast, before any replica starts
        # The provider next: the proxy answers /readyz from here on, and a call must then find its
        # function (nats-server takes about a second to start; calls in that window were 404s).
        await self.provider.start()
        self.provider.subscribe(self._poke)
        await self._start_queue()
        waiting = [
            ref for ref in self.refs if (info := self.provider.get(ref)) is not None and info.replicas > 0
        ]
        ready = await asyncio.gather(*(self.provider.wait_ready(ref, ready_timeout) for ref in waiting))
        for ref, ok in zip(waiting, ready, strict=True):
            if not ok:
                log.warning(
                    "%s has no ready replica after %.0fs; the proxy will hold its requests",
                    ref.key,
                    ready_timeout,
                )
        self._loop_task = asyncio.create_task(self._run_loop(), name="control loop")

    async def _start_queue(self) -> None:
        """nats-server, then the acceptor's connection, then a worker invoking through the proxy."""
        if self.nats is None or self.acceptor is None or self.queue is None:
            return
        try:
            await self.nats.start()
        except (RuntimeError, OSError) as e:
            # The proxy answers /async-function/ with 503 and says why; synchronous calls are unaffected.
            log.warning("%s; asynchronous calls are unavailable", e)
            self.queue_note = f"asynchronous calls: off ({e})"
            return
        await self.acceptor.start(wait=5.0)
        self.worker = QueueWorker(
            queue=self.queue,
            settings=demo_settings(
                QueueWorkerSettings,
                self.ignored,
                fixed={"proxy_url": self.url},
                defaults={
                    "discover_interval": 0.2,
                    "max_inflight": 5,
                    "retry_min_wait": 1.0,
                    "retry_max_wait": 5.0,
                },
            ),
            registry=self.registry,
        )
        await self.worker.start()

    async def _run_loop(self) -> None:
        try:
            await self.controller.run(stop=self._stop)
        except Exception:
            log.exception("the control loop crashed; replicas stay as they are")
            raise

    def sample(self, key: str, name: str) -> float:
        """A sample of the proxy's metrics for one function (0 when it has none yet)."""
        value = self.registry.get_sample_value(name, {"function_name": key})
        return value or 0.0

    async def _say_what_the_queue_drops(self) -> None:
        """The embedded queue's store is temporary: calls not finished now go with it, and are named."""
        if self.acceptor is None:
            return
        left = await self.acceptor.stored()
        if left:
            log.warning(
                "%d asynchronous call(s) queued or cut short by the stop are dropped with the demo's "
                "temporary queue (in a cluster, JetStream keeps and redelivers them)",
                left,
            )

    async def close(self) -> None:
        """Stop deciding, drain the proxy, drain and stop every replica; safe to call twice."""
        self._stop.set()
        if self._loop_task is not None:
            with contextlib.suppress(Exception):
                await self._loop_task
            self._loop_task = None
        grace = self.proxy_settings.shutdown_grace
        worker, self.worker = self.worker, None
        if worker is not None:
            with contextlib.suppress(Exception):
                await worker.drain(grace=grace)
            await worker.close()
            await self._say_what_the_queue_drops()
        with contextlib.suppress(Exception):
            await self.proxy.drain(grace=grace)
        try:
            await self.controller.close()  # its last Events go to the provider before that closes
            await self.provider.close()
        finally:
            await self.proxy.stop()
            await self.reader.close()
            if self.acceptor is not None:
                await self.acceptor.close()
            if self.nats is not None:
                await self.nats.stop()
