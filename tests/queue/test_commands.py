"""The two commands wired together as an operator runs them: `autoscaler proxy --nats-url` in front of a
cluster (the wire-format API server) and `autoscaler queue-worker`, as processes, with a real nats-server,
a real function and a real callback receiver."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.queue.conftest import MakeReceiver
from tests.support.apiserver import FakeApiServer
from tests.support.nats import NatsServer
from tests.support.prometheus import free_port
from tests.support.waiting import until

pytestmark = pytest.mark.nats


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def spawn(started: list[subprocess.Popen[bytes]], log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "autoscaler", "--log-format", "text", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    started.append(process)
    return process


@pytest.mark.slow
async def test_an_async_call_to_the_proxy_command_is_invoked_by_the_worker_command_and_called_back(
    nats_server: NatsServer,
    make_receiver: MakeReceiver,
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    function = await make_receiver()
    callback = await make_receiver()
    async with FakeApiServer() as api:
        api.add_deployment("hello", labels={"faas_function": "hello"}, replicas=0)
        api.set_backend("hello", host="127.0.0.1", port=function.port, ready_delay=0.3)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        port, admin = free_port(), free_port()
        spawn(
            processes, tmp_path / "proxy.log", "proxy", "--kubeconfig", str(kubeconfig),
            "--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin),
            "--nats-url", nats_server.url,
        )  # fmt: skip
        spawn(
            processes, tmp_path / "worker.log", "queue-worker", "--nats-url", nats_server.url,
            "--proxy-url", f"http://127.0.0.1:{port}", "--admin-port", "0", "--admin-host", "127.0.0.1",
            "--discover-interval", "0.2",
        )  # fmt: skip

        def logs() -> str:
            return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("*.log")))

        async with aiohttp.ClientSession() as client:
            status = 0
            for _ in range(150):  # the proxy process starts and lists the cluster
                try:
                    async with client.post(
                        f"http://127.0.0.1:{port}/async-function/hello",
                        data=b"from the operator",
                        headers={"X-Callback-Url": callback.url, "X-Call-Id": "op-1"},
                    ) as response:
                        status = response.status
                        if status == 202:
                            break
                except aiohttp.ClientConnectionError:
                    status = 0
                await asyncio.sleep(0.1)
            assert status == 202, logs()
            await until(
                lambda: len(callback.seen) == 1, within=20, what=lambda: f"the callback; logs:\n{logs()}"
            )
            async with client.get(f"http://127.0.0.1:{admin}/metrics") as response:
                scrape = await response.text()
            assert 'autoscaler_async_accepted_total{function_name="hello.openfaas-fn"} 1.0' in scrape
        [posted] = callback.seen
        assert posted.headers["X-Call-Id"] == "op-1"
        assert posted.headers["X-Function-Status"] == "200"
        assert posted.body == b"result:from the operator"
        assert api.replicas("hello") == 1  # woken from zero by the proxy for the worker's call
