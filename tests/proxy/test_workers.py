"""`autoscaler proxy --workers 2` as a real process tree against the fake API server.

The supervisor and its two workers are real processes; the function's replica is a real HTTP server
in the test's loop, and clients open a new connection per request so that the kernel's SO_REUSEPORT
spreads them over the workers. The admin port must then show one set of series that adds up to the
requests sent, a cold burst must wake the function once (a second worker's scale writes the same
replicas), a killed worker must come back, and SIGTERM must let requests in flight on every worker
finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.apiserver import FakeApiServer
from tests.support.cluster_processes import NAMESPACE, ServiceProcess, replica_history
from tests.support.upstream import Upstream
from tests.support.waiting import until

pytestmark = pytest.mark.slow

FN = "fn"
KEY = f"{FN}.{NAMESPACE}"
LISTENING = r"proxy listening on 127\.0\.0\.1:(\d+) \(admin (\d+), 2 workers\)"
TEST_SECONDS = 40  # every test's bound, start-up and shutdown included


@dataclass
class Workers:
    api: FakeApiServer
    upstream: Upstream
    process: ServiceProcess
    port: int
    admin_port: int
    session: aiohttp.ClientSession

    async def call(self, path: str = "/echo") -> int:
        """One request on its own connection (a new one is what SO_REUSEPORT spreads)."""
        url = f"http://127.0.0.1:{self.port}/function/{FN}{path}"
        async with self.session.post(url, data=b"x" * 100, headers={"Connection": "close"}) as response:
            await response.read()
            return response.status

    async def calls(self, count: int, *, path: str = "/echo") -> list[int]:
        return list(await asyncio.gather(*(self.call(path) for _ in range(count))))

    async def admin(self, path: str) -> Any:
        async with self.session.get(f"http://127.0.0.1:{self.admin_port}{path}") as response:
            assert response.status == 200, await response.text()
            return await response.json() if path == "/workers" else await response.text()

    async def workers(self) -> list[dict[str, Any]]:
        return list((await self.admin("/workers"))["workers"])

    def scale_writes(self) -> int:
        return self.api.replica_writes(FN)


def value(text: str, name: str, **labels: str) -> float:
    """The one sample `name` with exactly `labels` in an exposition; fails if absent or repeated."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if got == labels:
            found.append(float(match.group(3)))
    assert len(found) == 1, f"{name}{labels}: {found} in\n{text}"
    return found[0]


@contextlib.asynccontextmanager
async def workers_of(tmp_path: Path, *, replicas: int, ready_delay: float = 0.0) -> AsyncIterator[Workers]:
    async with FakeApiServer() as api, contextlib.AsyncExitStack() as cleanup:
        api.add_deployment(FN, labels={"faas_function": FN}, replicas=replicas)
        upstream = Upstream(name=FN)
        await upstream.start()
        cleanup.push_async_callback(upstream.stop)
        api.set_backend(FN, host="127.0.0.1", port=upstream.port, ready_delay=ready_delay)
        process = await ServiceProcess.spawn(
            "proxy",
            args=[
                "proxy", "--workers", "2", "--kubeconfig", str(api.write_kubeconfig(tmp_path / "kubeconfig")),
                "--namespaces", NAMESPACE, "--host", "127.0.0.1", "--port", "0", "--admin-port", "0",
                "--hold-timeout", "20", "--shutdown-grace", "5",
            ],
            log=tmp_path / "proxy.log",
        )  # fmt: skip
        cleanup.push_async_callback(process.stop)
        found = await process.wait_for(LISTENING, timeout=20)
        session = await cleanup.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True),
                timeout=aiohttp.ClientTimeout(total=20),
            )
        )
        yield Workers(api, upstream, process, int(found.group(1)), int(found.group(2)), session)


async def test_two_workers_both_serve_and_the_admin_port_sums_their_counts_once(tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_SECONDS), workers_of(tmp_path, replicas=1) as proxy:
        statuses = [status for _ in range(4) for status in await proxy.calls(50)]
        assert statuses == [200] * 200, proxy.process.tail()

        workers = await proxy.workers()
        pids = {w["pid"] for w in workers}
        assert len(pids) == 2
        assert None not in pids
        assert all(w["ready"] for w in workers)
        started = [w["started"] for w in workers]
        assert all(count > 0 for count in started), f"one worker served nothing: {workers}"
        assert sum(started) == 200
        text = await proxy.admin("/metrics")
        assert value(text, "gateway_function_invocation_started", function_name=KEY) == 200
        assert value(text, "gateway_function_invocation_total", function_name=KEY, code="200") == 200
        assert value(text, "gateway_functions_seconds_count", function_name=KEY, code="200") == 200
        assert value(text, "gateway_function_invocation_inflight", function_name=KEY) == 0
        assert value(text, "gateway_service_count", function_name=KEY) == 1  # not one per worker
        assert value(text, "gateway_service_ready_count", function_name=KEY) == 1
        assert text.count("# TYPE gateway_function_invocation_started counter") == 1
        assert len(proxy.upstream.received) == 200


async def test_a_cold_burst_over_both_workers_wakes_the_function_to_one_replica_once(tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_SECONDS), workers_of(tmp_path, replicas=0, ready_delay=1.5) as proxy:
        statuses = await proxy.calls(60)

        assert statuses == [200] * 60, proxy.process.tail()
        workers = await proxy.workers()
        assert all(w["started"] > 0 for w in workers), f"the burst did not reach both workers: {workers}"
        # Each worker holding requests may write the scale; both write 1, so the function went 0 -> 1
        # once and stayed there.
        assert 1 <= proxy.scale_writes() <= 2
        assert replica_history(proxy.api, FN) == [0, 1]
        text = await proxy.admin("/metrics")
        assert value(text, "autoscaler_cold_start_seconds_count", function_name=KEY) == 60
        assert 1 <= value(text, "autoscaler_wakeups_total", function_name=KEY) <= 2


async def test_a_killed_worker_is_restarted_and_its_counts_stay_in_the_sums(tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_SECONDS), workers_of(tmp_path, replicas=1) as proxy:
        assert await proxy.calls(40) == [200] * 40
        text = await proxy.admin("/metrics")  # the supervisor's last view of each worker's counts
        assert value(text, "gateway_function_invocation_started", function_name=KEY) == 40
        before = await proxy.workers()
        victim = before[0]["pid"]

        os.kill(victim, signal.SIGKILL)
        await proxy.process.wait_for(rf"worker 0 \(pid {victim}\) exited with -9; restarting it", timeout=5)
        await proxy.process.wait_for(r"worker 0 restarted \(pid \d+, restart 1\)", timeout=10)
        workers: list[dict[str, Any]] = []

        async def check() -> None:
            workers[:] = await proxy.workers()

        async def restarted() -> bool:
            await check()
            return workers[0]["ready"] and workers[0]["pid"] not in (None, victim)

        for _ in range(200):
            if await restarted():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"worker 0 never came back ready: {workers}\n{proxy.process.tail()}")
        assert workers[0]["restarts"] == 1
        assert workers[1]["pid"] == before[1]["pid"]
        assert await proxy.calls(40) == [200] * 40
        # The dead worker's counts as last scraped stay in the sum: the counter never goes backwards.
        text = await proxy.admin("/metrics")
        assert value(text, "gateway_function_invocation_started", function_name=KEY) == 80


async def test_sigterm_drains_requests_in_flight_on_both_workers_then_exits_0(tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_SECONDS), workers_of(tmp_path, replicas=1) as proxy:
        slow = [asyncio.ensure_future(proxy.call("/slow?seconds=1.5")) for _ in range(20)]
        await until(lambda: proxy.upstream.busy == 20, within=5, what="20 slow requests at the function")
        workers = await proxy.workers()
        assert all(w["started"] > 0 for w in workers), f"the slow requests did not reach both: {workers}"

        assert proxy.process.process.returncode is None
        proxy.process.process.send_signal(signal.SIGTERM)
        await proxy.process.wait_for(r"draining 2 workers", timeout=5)
        assert await asyncio.gather(*slow) == [200] * 20
        code = await asyncio.wait_for(proxy.process.process.wait(), 10)
        assert code == 0, proxy.process.tail()
        with pytest.raises(aiohttp.ClientConnectionError):
            await proxy.call()


async def test_workers_below_one_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    process = await ServiceProcess.spawn(
        "proxy", args=["proxy", "--workers", "0"], log=tmp_path / "proxy.log"
    )
    code = await asyncio.wait_for(process.process.wait(), 20)
    assert code == 2
    assert "--workers" in process.text()


async def test_a_host_that_does_not_resolve_is_a_usage_error_naming_the_host_flag(tmp_path: Path) -> None:
    args = ["proxy", "--workers", "2", "--host", "999.1.1.1", "--port", "0", "--admin-port", "0"]
    process = await ServiceProcess.spawn("proxy", args=args, log=tmp_path / "proxy.log")
    code = await asyncio.wait_for(process.process.wait(), 20)
    assert code == 2
    assert "'999.1.1.1' is not an address this machine can resolve" in process.text()
    assert "give --host an IP address" in process.text()
    assert "Traceback" not in process.text()


async def test_a_data_port_another_program_holds_is_a_usage_error_before_any_worker_starts(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:  # no SO_REUSEPORT: the workers could not share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["proxy", "--workers", "2", "--host", "127.0.0.1", "--port", str(port), "--admin-port", "0"]
        process = await ServiceProcess.spawn("proxy", args=args, log=tmp_path / "proxy.log")
        code = await asyncio.wait_for(process.process.wait(), 20)
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in process.text()
    assert "choose another --port" in process.text()
    assert "proxy listening" not in process.text()  # nothing served on any port
