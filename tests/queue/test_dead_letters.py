"""Dead letters: kept with why and with which status a call died, and replayed by an operator with
`autoscaler queue-replay` (the same X-Call-Id, deleted from the dead letters once re-queued)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiohttp
import nats
import pytest

from autoscaler.queue import dead_stream
from tests.queue.conftest import MakeReceiver, MakeWorker, Stack
from tests.support.waiting import until

pytestmark = pytest.mark.nats


def replay(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", "queue-replay", *args, "--nats-url", stack.nats.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def dead_count(stack: Stack) -> int:
    nc = await nats.connect(stack.nats.url)
    try:
        return (await nc.jetstream().stream_info(dead_stream(stack.queue.queue_name))).state.messages
    finally:
        await nc.close()


class TestAReplayedDeadLetter:
    @pytest.mark.slow
    async def test_is_invoked_again_with_its_call_id_and_leaves_the_dead_letters(
        self, stack: Stack, make_receiver: MakeReceiver, make_worker: MakeWorker
    ) -> None:
        function = await make_receiver(script=[502, 502])
        callback = await make_receiver()
        await stack.provider.add("down", url=function.url, labels={"com.openfaas.retry.attempts": "2"})
        await stack.provider.add("other", url=function.url)
        await make_worker(retry_min_wait=0.1)
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                f"{stack.base}/async-function/down", data=b"later", headers={"X-Callback-Url": callback.url}
            ) as response,
        ):
            assert response.status == 202
            call_id = response.headers["X-Call-Id"]
        await until(lambda: len(callback.seen) == 1, within=10, what="the failure's callback")
        assert callback.seen[0].headers["X-Function-Status"] == "502"
        for _ in range(50):
            if await dead_count(stack) == 1:
                break
            await asyncio.sleep(0.05)
        assert await dead_count(stack) == 1

        nothing = await asyncio.to_thread(replay, stack, "other")
        assert nothing.returncode == 0, nothing.stderr
        assert "replayed 0 dead letter(s) of other.openfaas-fn" in nothing.stdout

        done = await asyncio.to_thread(replay, stack, "down")
        assert done.returncode == 0, done.stderr
        assert "replayed 1 dead letter(s) of down.openfaas-fn" in done.stdout
        await until(lambda: len(callback.seen) == 2, within=10, what="the replayed call's callback")
        assert callback.seen[1].headers["X-Function-Status"] == "200"
        assert callback.seen[1].headers["X-Call-Id"] == call_id
        assert callback.seen[1].body == b"result:later"
        assert await dead_count(stack) == 0


class TestQueueReplay:
    @pytest.mark.slow
    def test_with_nats_unreachable_exits_1_with_a_clear_line(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
        done = subprocess.run(
            [sys.executable, "-m", "autoscaler", "queue-replay", "--nats-url", "nats://127.0.0.1:1"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 1
        assert "error: NATS at nats://127.0.0.1:1 is not reachable" in done.stderr
        assert "Traceback" not in done.stderr

    @pytest.mark.parametrize(
        ("args", "message"),
        [(["Bad_Name"], "invalid function 'Bad_Name'"), (["--limit", "0"], "--limit must be at least 1")],
    )
    def test_with_bad_arguments_exits_2(self, args: list[str], message: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
        done = subprocess.run(
            [sys.executable, "-m", "autoscaler", "queue-replay", *args, "--nats-url", "nats://127.0.0.1:1"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 2
        assert message in done.stderr
        assert "Traceback" not in done.stderr
