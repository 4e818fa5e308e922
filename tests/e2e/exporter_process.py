"""A `GatewayExporter` in a process of its own, for worlds of thousands of functions.

In the test's process the exporter's thread shares the GIL with the fake API server, and while
that serves two controllers' listings and thousands of writes a scrape of thousands of functions
overruns its timeout: Prometheus then has fewer samples, `rate()` reads a lower load and the
controllers scale down on it, which would measure the harness, not the controllers.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from types import TracebackType

from tests.support.exporter import GatewayExporter

Command = tuple[list[str], float, float]  # (keys, rps, inflight)


def _serve(conn: multiprocessing.connection.Connection) -> None:
    with GatewayExporter() as exporter:
        conn.send(exporter.target)
        while (command := conn.recv()) is not None:
            keys, rps, inflight = command
            exporter.set_functions(keys, rps=rps, inflight=inflight)
            conn.send("ok")


class ExporterProcess:
    """`with ExporterProcess() as exporter:` then `exporter.set_functions(keys, rps=..., inflight=...)`."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self.target = ""

    def __enter__(self) -> ExporterProcess:
        self._process.start()
        if not self._conn.poll(30):
            raise RuntimeError("the exporter process did not start within 30 s")
        self.target = str(self._conn.recv())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._conn.send(None)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()

    def set_functions(self, keys: list[str], *, rps: float, inflight: float) -> None:
        self._conn.send((list(keys), rps, inflight))
        if not self._conn.poll(30) or self._conn.recv() != "ok":
            raise RuntimeError("the exporter process did not take the new load")
