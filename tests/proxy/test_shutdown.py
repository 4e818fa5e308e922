"""SIGTERM stops accepting, finishes held and in-flight requests within the grace, and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]


async def held_requests(client: aiohttp.ClientSession, admin_port: int) -> float:
    async with client.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith('autoscaler_held_requests{function_name="sleepy.openfaas-fn"}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
async def test_sigterm_with_held_requests_serves_them_then_exits_zero() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.proxyprocess", "--ready-delay", "1.5", "--grace", "10",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ports = json.loads(await asyncio.wait_for(process.stdout.readline(), timeout=20))
        url = f"http://127.0.0.1:{ports['port']}/function/sleepy/"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
            calls = [asyncio.create_task(client.post(url, data=f"held-{i}".encode())) for i in range(10)]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while await held_requests(client, ports["admin_port"]) < 10:
                assert loop.time() < deadline, "the requests were never held"
                await asyncio.sleep(0.05)

            process.send_signal(signal.SIGTERM)
            while True:  # readiness turns off first, then the listener is closed
                async with client.get(f"http://127.0.0.1:{ports['admin_port']}/readyz") as probe:
                    if probe.status == 503:
                        break
                await asyncio.sleep(0.02)
            async with aiohttp.ClientSession() as fresh:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await fresh.get(url)

            responses = await asyncio.wait_for(asyncio.gather(*calls), timeout=15)
            assert [r.status for r in responses] == [200] * 10
            bodies = [json.loads(await r.read())["body"] for r in responses]
            assert bodies == [f"held-{i}" for i in range(10)]
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
