"""Warm Prometheus servers for the tests: a fresh Prometheus scrapes nothing for its first 5-6 s.

Prometheus 2.42 hands new targets to its scrapers only on 5 s tickers (the discovery manager's
`updatert` and the scrape manager's reloader), so every server a test started spent its first
5-6 s before the first scrape, and 61 tests paid that one after another. This pool keeps, in each
test process, one spare server per shape a test has asked for (number of targets, scrape
interval), started in the background while other tests run. The spare's static targets are
loopback relay ports the pool owns; when a test takes the spare, each relay is pointed at one of the
test's real targets and passes the scrape's bytes there, so Prometheus scrapes the test's exporter
at its next interval. A relay whose target is down closes the connection at once: a failed scrape,
as a refused connection is (`up` 0, the series go stale). Only the `instance` label differs (the
relay's port), and no query of the project's or the tests' reads it.

A test process that will run Prometheus tests starts spares of the common shapes as soon as it
has collected them (`tests/conftest.py`); the first test of any other shape starts its server cold,
as before. `AUTOSCALER_TEST_PROMETHEUS_POOL=0` turns the pool off. Spares left at exit are killed
and their directories removed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import shutil
import socket
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from tests.support.prometheus import PrometheusServer

Shape = tuple[int, float]  # (number of targets, scrape interval)
# What most tests ask for: one target scraped every 0.5 s or every second.
COMMON_SHAPES: tuple[Shape, ...] = ((1, 0.5), (1, 1.0))


class Relay:
    """A loopback TCP port that forwards each connection to `target` (`host:port`), once set."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self._listener.getsockname()[1])
        self.target: tuple[str, int] | None = None
        threading.Thread(target=self._accept, name=f"relay {self.port}", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def point_at(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host.strip("[]"), int(port))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        target = self.target
        with client:
            if target is None:
                return
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                return  # the target is down: the scrape fails, as on a refused connection
            with upstream, selectors.DefaultSelector() as selector:
                selector.register(client, selectors.EVENT_READ, upstream)
                selector.register(upstream, selectors.EVENT_READ, client)
                while True:
                    for key, _ in selector.select():
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        try:
                            data = source.recv(65536)
                            if not data:
                                return
                            key.data.sendall(data)
                        except OSError:
                            return


class PooledPrometheus(PrometheusServer):
    """A PrometheusServer scraping relays; `aim(targets)` points them at a test's real targets."""

    def __init__(self, *, shape: Shape, binary: str, data_dir: Path) -> None:
        self.relays = [Relay() for _ in range(shape[0])]
        super().__init__(
            data_dir=data_dir,
            targets=[relay.address for relay in self.relays],
            scrape_interval=shape[1],
            binary=binary,
        )
        self.booted = threading.Event()
        self.failure: BaseException | None = None

    def boot(self) -> None:
        """Spawn and wait for `/-/ready` (in a background thread); a failure is kept for `take`."""
        try:
            self._spawn()
            self._wait_ready(timeout=30.0)
        except Exception as e:  # handed to the test that takes this spare
            self.failure = e
        finally:
            self.booted.set()

    def aim(self, targets: Sequence[str]) -> None:
        for relay, target in zip(self.relays, targets, strict=True):
            relay.point_at(target)

    def release(self) -> None:
        """Stop the server and close its relays (a test may stop and start the server in between)."""
        self.stop()
        for relay in self.relays:
            relay.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class Pool:
    """One spare per shape seen, replaced in the background each time a test takes it."""

    def __init__(self) -> None:
        self._spares: dict[Shape, PooledPrometheus] = {}
        self._lock = threading.Lock()
        self._base: Path | None = None
        self.enabled = os.environ.get("AUTOSCALER_TEST_PROMETHEUS_POOL", "1") != "0"

    def take(self, *, targets: Sequence[str], scrape_interval: float, binary: str) -> PooledPrometheus:
        """A running server scraping `targets` through relays: the spare if one is ready, else cold."""
        shape: Shape = (len(targets), scrape_interval)
        with self._lock:
            spare = self._spares.pop(shape, None)
        self._prepare(shape, binary)  # the next test of this shape gets a warm one
        if spare is not None:
            spare.booted.wait(timeout=40.0)
            if spare.failure is None and spare.process is not None and spare.process.poll() is None:
                spare.aim(targets)
                return spare
            spare.release()
        server = self._new(shape, binary)
        server.aim(targets)
        server.boot()
        if server.failure is not None:
            server.release()
            raise server.failure
        return server

    def prewarm(self, shapes: Sequence[Shape], *, binary: str) -> None:
        """Start spares of `shapes` now, before any test asks (the first test of a shape then gains too)."""
        for shape in shapes:
            self._prepare(shape, binary)

    def spare_booted(self, shape: Shape, *, timeout: float) -> bool:
        """Wait until the spare of `shape` is up (for tests of the pool itself)."""
        with self._lock:
            spare = self._spares.get(shape)
        return spare is not None and spare.booted.wait(timeout=timeout) and spare.failure is None

    def close(self) -> None:
        with self._lock:
            spares, self._spares = list(self._spares.values()), {}
        for spare in spares:
            spare.booted.wait(timeout=40.0)
            spare.release()
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)

    def _new(self, shape: Shape, binary: str) -> PooledPrometheus:
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="prometheus-pool-"))
        return PooledPrometheus(shape=shape, binary=binary, data_dir=Path(tempfile.mkdtemp(dir=self._base)))

    def _prepare(self, shape: Shape, binary: str) -> None:
        if not self.enabled:
            return
        spare = self._new(shape, binary)
        with self._lock:
            if shape in self._spares:
                spare.release()
                return
            self._spares[shape] = spare
        threading.Thread(target=spare.boot, name=f"prometheus spare {shape}", daemon=True).start()


POOL = Pool()
atexit.register(POOL.close)
