"""`autoscaler queue-worker` as a process: a worker killed mid-call loses nothing, bad flags exit 2."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import nats
import pytest

from tests.queue.conftest import MakeReceiver, MakeWorker, Stack
from tests.support.prometheus import free_port
from tests.support.waiting import until

pytestmark = pytest.mark.nats


def worker_process(stack: Stack, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "autoscaler", "--log-format", "text", "queue-worker",
                "--nats-url", stack.nats.url, "--proxy-url", stack.base, "--ack-wait", "1.5",
                "--discover-interval", "0.1", "--admin-port", "0", "--admin-host", "127.0.0.1", *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


class TestAKilledWorker:
    @pytest.mark.slow
    async def test_its_call_is_redelivered_and_completed_by_a_new_worker(
        self, stack: Stack, make_receiver: MakeReceiver, make_worker: MakeWorker, tmp_path: Path
    ) -> None:
        function = await make_receiver(delays=[30.0])  # the first invocation hangs
        callback = await make_receiver()
        await stack.provider.add("long", url=function.url)
        first = worker_process(stack, tmp_path / "worker-1.log")
        try:
            async with (
                aiohttp.ClientSession() as client,
                client.post(
                    f"{stack.base}/async-function/long",
                    data=b"keep me",
                    headers={"X-Callback-Url": callback.url},
                ) as response,
            ):
                assert response.status == 202
                call_id = response.headers["X-Call-Id"]
            await until(
                lambda: len(function.seen) == 1,
                within=15,
                what=lambda: f"the first worker's call; its log:\n{(tmp_path / 'worker-1.log').read_text()}",
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=10)
        assert callback.seen == []
        await make_worker(ack_wait=1.5)
        await until(lambda: len(callback.seen) == 1, within=15, what="the redelivered call's callback")
        assert function.call_ids() == [call_id, call_id]  # the duplicate is visible to the function
        [posted] = callback.seen
        assert posted.headers["X-Call-Id"] == call_id
        assert posted.headers["X-Function-Status"] == "200"
        assert posted.body == b"result:keep me"
        await asyncio.sleep(0.5)
        assert len(callback.seen) == 1


class TestBadFlags:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ([], "--nats-url (env AUTOSCALER_NATS_URL) is required"),
            (
                ["--nats-url", "http://x:1"],
                "--nats-url (env AUTOSCALER_NATS_URL): Value error, expected nats://",
            ),
            (["--nats-url", "nats://x:1", "--retry-codes", "5xx"], "--retry-codes"),
            (["--nats-url", "nats://x:1", "--max-inflight", "0"], "--max-inflight"),
            (["--nats-url", "nats://x:1", "--proxy-url", "ftp://p"], "--proxy-url"),
            (["--nats-url", "nats://x:1", "--queue-name", "a.b"], "--queue-name"),
        ],
    )
    def test_exit_2_with_one_clear_line_and_no_traceback(self, args: list[str], message: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
        done = subprocess.run(
            [sys.executable, "-m", "autoscaler", "queue-worker", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("autoscaler queue-worker: error: ")


async def scrape(client: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """The worker's /metrics as {series: value} (series written as in the exposition)."""
    async with client.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


class TestTheAdminPort:
    @pytest.mark.slow
    async def test_exports_pending_and_inflight_calls_under_openfaas_pro_names(
        self, stack: Stack, make_receiver: MakeReceiver, tmp_path: Path
    ) -> None:
        function = await make_receiver(delay=1.5)
        await stack.provider.add("batch", url=function.url)
        port = free_port()
        worker = worker_process(
            stack, tmp_path / "worker.log", "--admin-port", str(port), "--max-inflight", "1"
        )
        pending = 'queue_worker_pending_messages{function_name="batch.openfaas-fn",queue_name="faas-request"}'
        inflight = 'queue_worker_function_invocation_inflight{function_name="batch.openfaas-fn"}'
        try:
            async with aiohttp.ClientSession() as client:
                for i in range(3):
                    async with client.post(f"{stack.base}/async-function/batch", data=f"{i}".encode()) as r:
                        assert r.status == 202
                seen: dict[str, float] = {}

                async def poll() -> None:
                    while True:
                        with contextlib.suppress(aiohttp.ClientError):
                            seen.update(await scrape(client, port))
                        if seen.get(pending) == 3 and seen.get(inflight) == 1:
                            return
                        await asyncio.sleep(0.1)

                await asyncio.wait_for(poll(), timeout=10)
                async with client.get(f"http://127.0.0.1:{port}/readyz") as response:
                    assert response.status == 200
                await until(lambda: len(function.seen) == 3 and function.busy == 0, within=15, what="3 calls")
                for _ in range(60):
                    values = await scrape(client, port)
                    if values.get(pending) == 0 and values.get(inflight) == 0:
                        break
                    await asyncio.sleep(0.1)
                assert (values.get(pending), values.get(inflight)) == (0, 0)
            assert function.most_busy == 1
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                assert worker.wait(timeout=15) == 0
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait(timeout=10)

    @pytest.mark.slow
    async def test_is_not_ready_while_nats_is_down(self, stack: Stack, tmp_path: Path) -> None:
        port = free_port()
        stack.nats.stop()
        worker = worker_process(stack, tmp_path / "worker.log", "--admin-port", str(port))
        try:
            async with aiohttp.ClientSession() as client:
                body = ""
                for _ in range(100):
                    try:
                        async with client.get(f"http://127.0.0.1:{port}/readyz") as response:
                            assert response.status == 503
                            body = await response.text()
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                assert "waiting for NATS at nats://127.0.0.1" in body
                stack.nats.start()
                for _ in range(100):
                    async with client.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.1)
                assert response.status == 200
        finally:
            worker.kill()
            worker.wait(timeout=10)


class TestAStoppedWorker:
    @pytest.mark.slow
    async def test_finishes_its_running_call_on_sigterm_and_exits_0(
        self, stack: Stack, make_receiver: MakeReceiver, tmp_path: Path
    ) -> None:
        function = await make_receiver(delay=1.5)
        callback = await make_receiver()
        await stack.provider.add("steady", url=function.url)
        worker = worker_process(stack, tmp_path / "worker.log", "--shutdown-grace", "10")
        try:
            async with (
                aiohttp.ClientSession() as client,
                client.post(
                    f"{stack.base}/async-function/steady",
                    data=b"finish me",
                    headers={"X-Callback-Url": callback.url},
                ) as response,
            ):
                assert response.status == 202
            await until(lambda: len(function.seen) == 1, within=15, what="the call")
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 15) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
        assert len(callback.seen) == 1
        assert callback.seen[0].headers["X-Function-Status"] == "200"
        # Acknowledged before the exit: the work-queue stream no longer holds it.
        nc = await nats.connect(stack.nats.url)
        try:
            assert (await nc.jetstream().stream_info(stack.queue.queue_name)).state.messages == 0
        finally:
            await nc.close()
