"""The queue-worker's own metrics, served over real HTTP without a queue, so Prometheus can scrape a backlog.

Scaling on the backlog reads `queue_worker_pending_messages` through Prometheus. Tests of the reader
and of the loop need a backlog of an exact size that stays put while they look; a real worker drains
its queue as it goes. `WorkerExporter` serves the worker's real metric families (`WorkerMetrics`, so a
renamed metric breaks these tests too) with prometheus-client's own HTTP server on a free loopback
port, and the test sets the gauges:

    with WorkerExporter() as worker:
        worker.set_pending("batch.openfaas-fn", 12)
        prometheus = prometheus_factory.start(targets=[worker.target])
"""

from __future__ import annotations

import threading
from types import TracebackType
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from autoscaler.queue._worker import WorkerMetrics
from tests.support.child import free_port

QUEUE = "faas-request"


class WorkerExporter:
    """A queue-worker's /metrics with gauges the test sets; `stop()` takes the target down."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        self.port = 0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> WorkerExporter:
        self.port = free_port()
        self._server, self._thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        return self

    def set_pending(self, key: str, count: float, *, queue: str = QUEUE) -> None:
        self.metrics.pending.labels(key, queue).set(count)

    def set_inflight(self, key: str, count: float) -> None:
        self.metrics.inflight.labels(key).set(count)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> WorkerExporter:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
