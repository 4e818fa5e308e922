"""At the file-descriptor limit the proxy closes idle clients to make room and goes on serving.

The proxy runs in a child process (this module, `python -m tests.proxy.test_client_limits_fds`)
limited to 400 descriptors, in front of a naive function server in a process of its own (so the
function's sockets do not count against the proxy's limit). The test opens 450 connections that
never send a byte, more than the proxy can hold, then calls the function on fresh connections:
each call must be answered, and the proxy's log must say so once instead of an error per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys

import pytest

from autoscaler.config import ProxySettings
from autoscaler.proxy import Proxy
from tests.support.fakeprovider import FakeProvider
from tests.support.naive import NaiveServer

pytestmark = pytest.mark.slow  # two processes to start, and 450 connections

CHILD_FDS = 400
SILENT = 450


async def test_at_the_descriptor_limit_idle_clients_are_shed_and_functions_are_still_served() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.proxy.test_client_limits_fds",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdin is not None
    assert child.stderr is not None
    silent: list[asyncio.StreamWriter] = []
    try:
        async with asyncio.timeout(20):
            port = int(await child.stdout.readline())
        for _ in range(SILENT):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            silent.append(writer)
        await asyncio.sleep(1.0)  # the proxy accepts what it can and runs out of descriptors
        statuses = []
        for _ in range(5):
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /function/naive/ HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
                statuses.append(await reader.readline())
                writer.close()
        assert all(status.startswith(b"HTTP/1.1 200 ") for status in statuses), statuses
    finally:
        for writer in silent:
            writer.transport.abort()
        child.stdin.close()
        async with asyncio.timeout(20):
            await child.wait()
    log = (await child.stderr.read()).decode(errors="replace")
    assert "out of file descriptors" in log
    assert len(log.splitlines()) < 20, log[-3000:]


async def _serve_limited() -> None:
    naive = NaiveServer(backlog=128, keep_alive=True)
    await naive.start()  # before the limit: the function's process is not limited
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (CHILD_FDS, hard))
    provider = FakeProvider()
    await provider.add("naive", url=naive.url)
    # Timeouts longer than the test: only shedding can free the silent connections' descriptors.
    settings = ProxySettings(
        host="127.0.0.1", port=0, admin_port=0, header_timeout=120, keepalive_timeout=120
    )
    proxy = Proxy(settings=settings, provider=provider)
    try:
        await proxy.start()
        print(proxy.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test is done
    finally:
        await proxy.stop()
        await provider.close()
        await naive.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    asyncio.run(_serve_limited())
