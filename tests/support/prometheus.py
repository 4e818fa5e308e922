"""Runs the real Prometheus server for tests, so load reading is tested against the real query engine.

A fake Prometheus would answer whatever its author believed; the real binary decides what `rate()`
returns over two scrapes, how a vanished series goes stale and what an error body looks like. This
module starts `/usr/bin/prometheus` (or `prometheus` on PATH, or `$PROMETHEUS_BIN`) on a free loopback
port with a generated config and a throw-away TSDB, waits for `/-/ready`, and stops or kills it.

Use the pytest fixtures (re-export them from a conftest.py):

    from tests.support.prometheus import prometheus_factory  # noqa: F401

    async def test_something(prometheus_factory):
        with GatewayExporter() as exporter:
            prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=1.0)
            await prometheus.wait_for_series("gateway_function_invocation_inflight", lambda r: len(r) == 1)

When the binary is missing the fixtures fail if the `CI` environment variable is set (a CI run must
not pass by skipping) and skip otherwise, both saying how to install it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.support.child import ChildServer, require
from tests.support.child import find_binary as find
from tests.support.child import free_port as free_port  # re-exported: tests import it from here

INSTALL_HINT = "the prometheus binary is missing: install it with apt-get install -y prometheus"

Series = dict[str, float]  # query result keyed by function_name (or by the rendered label set)


def find_binary() -> str | None:
    """Path of the Prometheus server binary (`$PROMETHEUS_BIN`, PATH, Debian's), or None."""
    return find(env="PROMETHEUS_BIN", name="prometheus", debian_path="/usr/bin/prometheus")


def require_binary() -> str:
    """The binary's path; otherwise fail under CI and skip elsewhere, with the install hint."""
    return require(find_binary(), hint=INSTALL_HINT)


def _series_key(metric: dict[str, str]) -> str:
    if "function_name" in metric:
        return metric["function_name"]
    return "{" + ",".join(f"{k}={v!r}" for k, v in sorted(metric.items())) + "}"


class PrometheusServer(ChildServer):
    """One Prometheus process scraping `targets` (`host:port` strings) every `scrape_interval` seconds."""

    name = "prometheus"
    marker = "prometheus"

    def __init__(
        self,
        *,
        data_dir: Path,
        targets: Sequence[str],
        scrape_interval: float = 1.0,
        binary: str | None = None,
        host: str = "127.0.0.1",
        blocks: Path | None = None,
        retention: str = "1h",
        flags: Sequence[str] = (),
    ) -> None:
        self.blocks = blocks  # TSDB blocks (e.g. from `promtool tsdb create-blocks-from`) to start with
        self.flags = list(flags)  # more command-line flags, e.g. `--query.max-samples=20000`
        self.retention = retention
        self.data_dir = data_dir
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.binary = binary or require_binary()
        self.host = host
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "prometheus.log"

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:40123` (what the reader's prometheus_url takes)."""
        return f"http://{self.host}:{self.port}"

    def config(self) -> dict[str, object]:
        interval = f"{max(1, round(self.scrape_interval * 1000))}ms"
        return {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {"job_name": "gateway", "static_configs": [{"targets": self.targets}]},
            ],
        }

    def start(self, *, timeout: float = 30.0) -> PrometheusServer:
        """Start the process and wait for `/-/ready`; a port lost to a race is retried once."""
        self.check_marked()
        for attempt in range(2):
            try:
                self._spawn()
                self._wait_ready(timeout=timeout)
                return self
            except RuntimeError:
                self.stop()
                if attempt == 1 or "address already in use" not in self.log_tail():
                    raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.data_dir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(self.config()))
        self.port = free_port(self.host)
        tsdb = self.data_dir / "tsdb"
        shutil.rmtree(tsdb, ignore_errors=True)
        if self.blocks is not None:
            shutil.copytree(self.blocks, tsdb)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={tsdb}",
                    f"--storage.tsdb.retention.time={self.retention}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--log.level=warn",
                    *self.flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def release(self) -> None:
        """Stop for good (the test is over); a pooled server also closes its relays."""
        self.stop()

    def _wait_ready(self, *, timeout: float) -> None:
        self.wait_http(f"{self.url}/-/ready", timeout=timeout, poll=0.1)

    async def query(self, promql: str) -> Series:
        """Evaluate an instant query; values keyed by function_name (NaN kept as NaN)."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(f"{self.url}/api/v1/query", params={"query": promql}) as response,
        ):
            body = await response.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {body}")
        data = body["data"]
        if data["resultType"] != "vector":
            raise AssertionError(f"query {promql!r} returned {data['resultType']}, not an instant vector")
        return {_series_key(item["metric"]): float(item["value"][1]) for item in data["result"]}

    async def wait_for_series(
        self,
        query: str,
        predicate: Callable[[Series], bool],
        *,
        timeout: float = 15.0,
    ) -> Series:
        """Poll `query` until `predicate(result)` holds; returns that result or fails naming the last one."""
        deadline = time.monotonic() + timeout
        last: Series | str = "(no answer)"
        while True:
            try:
                last = await self.query(query)
                if predicate(last):
                    return last
            except aiohttp.ClientError as e:
                last = f"request failed: {e}"
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{query!r} did not satisfy the predicate within {timeout}s; last: {last}"
                )
            await asyncio.sleep(min(0.25, self.scrape_interval / 4))

    async def wait_for_rates(
        self,
        expected: Mapping[str, float],
        *,
        window: str = "5s",
        tolerance: float = 0.1,
        timeout: float = 20.0,
    ) -> Series:
        """Wait until `rate()` of the gateway counter over `window` is within `tolerance` (relative,
        or absolute near 0) of `expected[key]` for every key: rate() needs a full window of scrapes
        before it stops under-reporting a counter that started inside the window."""

        def close(result: Series) -> bool:
            return all(
                key in result and abs(result[key] - want) <= tolerance * max(1.0, abs(want))
                for key, want in expected.items()
            )

        query = f"sum by (function_name) (rate(gateway_function_invocation_total[{window}]))"
        return await self.wait_for_series(query, close, timeout=timeout)


class PrometheusFactory:
    """Starts PrometheusServers in numbered sub-directories and stops them all on `close()`."""

    def __init__(self, *, base_dir: Path, binary: str) -> None:
        self.base_dir = base_dir
        self.binary = binary
        self.servers: list[PrometheusServer] = []

    def start(self, *, targets: Sequence[str], scrape_interval: float = 1.0) -> PrometheusServer:
        """A server scraping `targets`, from the warm pool (`prometheus_pool`) unless it is off."""
        from tests.support.prometheus_pool import POOL  # the pool subclasses PrometheusServer

        if POOL.enabled and targets:
            pooled = POOL.take(targets=targets, scrape_interval=scrape_interval, binary=self.binary)
            self.servers.append(pooled)
            pooled.check_marked()
            return pooled
        server = PrometheusServer(
            data_dir=self.base_dir / f"prometheus-{len(self.servers)}",
            targets=targets,
            scrape_interval=scrape_interval,
            binary=self.binary,
        )
        self.servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in self.servers:
            server.release()


def _factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    factory = PrometheusFactory(base_dir=tmp_path_factory.mktemp("prometheus"), binary=require_binary())
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    """Per-test factory: `prometheus_factory.start(targets=[...], scrape_interval=1.0)`."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="module")
def module_prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    """Per-module factory, for one Prometheus shared by a file's tests (saves ~1 s of start-up each)."""
    yield from _factory(tmp_path_factory)
