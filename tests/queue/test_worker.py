"""The queue-worker against a real nats-server, the real proxy and real HTTP functions and receivers:
each call invoked through the proxy, retried on its schedule, answered to its callback, never lost."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from nats.js import JetStreamContext

from autoscaler.queue import QueuedCall, dead_stream
from tests.queue.conftest import MakeReceiver, MakeWorker, Stack
from tests.support.waiting import until

pytestmark = pytest.mark.nats


async def submit(
    client: aiohttp.ClientSession, stack: Stack, function: str, body: bytes, **headers: str
) -> str:
    async with client.post(
        f"{stack.base}/async-function/{function}",
        data=body,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    ) as response:
        assert response.status == 202, await response.text()
        return response.headers["X-Call-Id"]


async def stream_messages(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


class TestACall:
    async def test_reaches_the_function_through_the_proxy_and_its_result_the_callback(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
        js: JetStreamContext,
    ) -> None:
        function = await make_receiver()
        callback = await make_receiver()
        await stack.provider.add("hello", url=function.url)
        await make_worker()
        call_id = await submit(
            client,
            stack,
            "hello/sub/path?q=1",
            b"payload",
            X_Callback_Url=f"{callback.url}/done",
            X_Extra="1",
        )
        await until(lambda: len(callback.seen) == 1, within=10, what="the callback")
        [invoked] = function.seen
        assert (invoked.method, invoked.raw_path, invoked.body) == ("POST", "/sub/path?q=1", b"payload")
        assert invoked.headers["X-Call-Id"] == call_id
        assert invoked.headers["X-Extra"] == "1"
        [posted] = callback.seen
        assert posted.raw_path == "/done"
        assert posted.body == b"result:payload"
        assert posted.headers["X-Call-Id"] == call_id
        assert posted.headers["X-Function-Status"] == "200"
        assert posted.headers["X-Function-Name"] == "hello.openfaas-fn"
        assert float(posted.headers["X-Duration-Seconds"]) >= 0
        assert posted.headers["X-Result"] == "yes"
        # Acknowledged: the work-queue stream lets the message go.
        for _ in range(50):
            if await stream_messages(js, stack.queue.queue_name) == 0:
                break
            await asyncio.sleep(0.05)
        assert await stream_messages(js, stack.queue.queue_name) == 0

    async def test_for_a_function_at_zero_wakes_it_through_the_proxy(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
    ) -> None:
        callback = await make_receiver()
        ref = await stack.provider.add("sleepy", warm=False)
        await make_worker()
        call_id = await submit(client, stack, "sleepy", b"wake up", X_Callback_Url=callback.url)
        await until(lambda: len(callback.seen) == 1, within=10, what="the callback")
        assert stack.provider.scale_calls[0] == (ref, 1)
        [posted] = callback.seen
        assert posted.headers["X-Function-Status"] == "200"
        assert posted.headers["X-Call-Id"] == call_id


class TestRetries:
    # A 429 too: the proxy used to retry the 429s of each attempt until its hold timeout (60 s here),
    # so the worker saw a 200 on its first attempt and the call's own retry waits never applied.
    @pytest.mark.parametrize("status", [500, 429])
    async def test_a_function_answering_an_error_twice_then_200_is_retried_by_the_worker_and_succeeds(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
        status: int,
    ) -> None:
        function = await make_receiver(script=[status, status])
        callback = await make_receiver()
        await stack.provider.add("flaky", url=function.url)
        worker = await make_worker(retry_min_wait=0.3, retry_max_wait=0.6)
        call_id = await submit(client, stack, "flaky", b"again", X_Callback_Url=callback.url)
        await until(lambda: len(callback.seen) == 1, within=15, what="the callback after two retries")
        assert function.call_ids() == [call_id] * 3  # one request per attempt
        [posted] = callback.seen
        assert posted.headers["X-Function-Status"] == "200"
        assert posted.body == b"result:again"
        assert worker.metrics.retries.labels("flaky.openfaas-fn")._value.get() == 2  # the worker's own

    async def test_a_status_outside_the_retry_codes_is_final_at_once(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
    ) -> None:
        function = await make_receiver(script=[400])
        callback = await make_receiver()
        await stack.provider.add("strict", url=function.url)
        await make_worker()
        await submit(client, stack, "strict", b"bad input", X_Callback_Url=callback.url)
        await until(lambda: len(callback.seen) == 1, within=10, what="the callback")
        assert len(function.seen) == 1
        assert callback.seen[0].headers["X-Function-Status"] == "400"

    async def test_after_the_last_attempt_the_call_is_a_dead_letter_and_its_callback_says_so(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
        js: JetStreamContext,
    ) -> None:
        function = await make_receiver(script=[503, 503, 503, 503])
        callback = await make_receiver()
        await stack.provider.add(
            "broken",
            url=function.url,
            labels={"com.openfaas.retry.attempts": "3", "com.openfaas.retry.codes": "503"},
        )
        await make_worker(retry_min_wait=0.1, retry_max_wait=0.2)
        call_id = await submit(client, stack, "broken", b"doomed", X_Callback_Url=callback.url)
        await until(lambda: len(callback.seen) == 1, within=10, what="the callback")
        assert len(function.seen) == 3  # the function's own label: 3 attempts, 503 retried
        assert callback.seen[0].headers["X-Function-Status"] == "503"
        raw = await js.get_last_msg(
            dead_stream(stack.queue.queue_name), f"{dead_stream(stack.queue.queue_name)}.broken.openfaas-fn"
        )
        dead = QueuedCall.decode(raw.headers, raw.data or b"")
        assert (dead.call_id, dead.body) == (call_id, b"doomed")
        assert raw.headers is not None
        assert "last of 3 attempts" in raw.headers["Autoscaler-Dead-Reason"]
        assert raw.headers["Autoscaler-Dead-Status"] == "503"


class TestCallbacks:
    @pytest.mark.slow
    async def test_a_refusing_callback_url_does_not_block_other_calls(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
        js: JetStreamContext,
        request: pytest.FixtureRequest,
    ) -> None:
        function = await make_receiver()
        callback = await make_receiver()
        # Bound and never listening: connections are refused, and no other test's server can take the
        # port (a stopped receiver's port was taken by one in a CI run: its 404 ended the retries early).
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        request.addfinalizer(holder.close)
        refused = f"http://127.0.0.1:{holder.getsockname()[1]}"
        await stack.provider.add("hello", url=function.url)
        await make_worker(max_inflight=1, callback_attempts=5, callback_min_wait=1.0, callback_max_wait=1.0)
        lost = await submit(client, stack, "hello", b"first", X_Callback_Url=refused)
        others = [
            await submit(client, stack, "hello", f"next-{i}".encode(), X_Callback_Url=callback.url)
            for i in range(3)
        ]
        # The three later calls are answered while the first callback is still being retried (4 s).
        await until(lambda: len(callback.seen) == 3, within=3, what="the other calls' callbacks")
        assert sorted(seen.headers["X-Call-Id"] for seen in callback.seen) == sorted(others)
        dead = dead_stream(stack.queue.queue_name)
        for _ in range(150):
            if await stream_messages(js, dead) == 1:
                break
            await asyncio.sleep(0.05)
        raw = await js.get_last_msg(dead, f"{dead}.hello.openfaas-fn")
        assert raw.headers is not None
        assert QueuedCall.decode(raw.headers, raw.data or b"").call_id == lost
        assert raw.headers["Autoscaler-Dead-Reason"].startswith("callback failed after 5 attempt(s)")


class TestConcurrency:
    async def test_a_function_gets_at_most_max_inflight_calls_at_once(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
    ) -> None:
        function = await make_receiver(delay=0.2)
        await stack.provider.add("busy", url=function.url)
        for i in range(8):
            await submit(client, stack, "busy", f"job-{i}".encode())
        await make_worker(max_inflight=2)
        await until(lambda: len(function.seen) == 8 and function.busy == 0, within=10, what="all eight calls")
        assert function.most_busy == 2

    async def test_a_slow_function_does_not_hold_up_another(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
    ) -> None:
        slow = await make_receiver(delay=3.0)
        fast = await make_receiver()
        await stack.provider.add("slow", url=slow.url)
        await stack.provider.add("fast", url=fast.url)
        await submit(client, stack, "slow", b"s1")
        await submit(client, stack, "slow", b"s2")
        await make_worker(max_inflight=1)
        await until(lambda: len(slow.seen) == 1, within=5, what="the slow call")
        await submit(client, stack, "fast", b"f1")
        await until(lambda: len(fast.seen) == 1, within=2, what="the fast call while the slow one runs")
        assert len(slow.seen) == 1


class TestARestartedNatsServer:
    async def test_loses_no_accepted_call_and_the_worker_carries_on(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
    ) -> None:
        function = await make_receiver()
        callback = await make_receiver()
        await stack.provider.add("hello", url=function.url)
        before = [
            await submit(client, stack, "hello", f"b{i}".encode(), X_Callback_Url=callback.url)
            for i in range(3)
        ]
        stack.nats.stop()  # file storage: the accepted calls are on disk
        stack.nats.start()
        worker = await make_worker()
        await until(lambda: len(callback.seen) == 3, within=15, what="the calls accepted before the restart")
        subscribed = worker.subscriptions
        stack.nats.stop()
        stack.nats.start()
        after = []
        for i in range(3):
            for _ in range(100):  # 503 until the proxy's client has reconnected
                async with client.post(
                    f"{stack.base}/async-function/hello",
                    data=f"a{i}".encode(),
                    headers={"X-Callback-Url": callback.url},
                ) as response:
                    if response.status == 202:
                        after.append(response.headers["X-Call-Id"])
                        break
                    assert response.status == 503
                await asyncio.sleep(0.1)
        await until(lambda: len(callback.seen) == 6, within=15, what="the calls accepted after the restart")
        assert sorted(seen.headers["X-Call-Id"] for seen in callback.seen) == sorted(before + after)
        # Subscribed again after the reconnection, not trusting the old pull (nats-io/nats.py#504).
        assert worker.subscriptions > subscribed


class TestABatch:
    async def test_of_300_calls_to_a_function_at_zero_gets_exactly_one_callback_per_call_with_its_body(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
    ) -> None:
        callback = await make_receiver()
        await stack.provider.add("batch", warm=False)
        gate = asyncio.Semaphore(20)

        async def one(i: int) -> tuple[str, bytes]:
            body = f"item-{i}".encode()
            async with gate:
                return await submit(client, stack, "batch", body, X_Callback_Url=callback.url), body

        sent = dict(await asyncio.gather(*(one(i) for i in range(300))))
        assert len(sent) == 300  # 300 distinct call ids
        await make_worker(max_inflight=5)
        await until(
            lambda: len(callback.seen) >= 300,
            within=60,
            what=lambda: f"{len(callback.seen)} of 300 callbacks",
        )
        await asyncio.sleep(0.3)  # a duplicate would arrive about now
        got = {seen.headers["X-Call-Id"]: seen for seen in callback.seen}
        assert len(callback.seen) == 300
        assert got.keys() == sent.keys()
        for call_id, seen in got.items():
            assert seen.headers["X-Function-Status"] == "200"
            echo = json.loads(seen.body)  # the function (tests.support.upstream) echoes what it got
            assert echo["body"] == sent[call_id].decode()
            assert ["X-Call-Id", call_id] in echo["headers"]
        assert len(stack.provider.scale_calls) >= 1  # woken from zero by the proxy


class TestALongCall:
    @pytest.mark.slow
    async def test_outlasting_the_ack_wait_is_not_redelivered_while_it_runs(
        self,
        stack: Stack,
        make_receiver: MakeReceiver,
        make_worker: MakeWorker,
        client: aiohttp.ClientSession,
    ) -> None:
        function = await make_receiver(delay=4.0)
        callback = await make_receiver()
        await stack.provider.add("long", url=function.url)
        # A free second slot would take the call again if JetStream redelivered it after 1.5 s.
        await make_worker(ack_wait=1.5, max_inflight=2, adaptive_concurrency=False)
        await submit(client, stack, "long", b"slow work", X_Callback_Url=callback.url)
        await until(lambda: len(callback.seen) == 1, within=15, what="the long call's callback")
        assert len(function.seen) == 1
