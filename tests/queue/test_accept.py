"""Accepting asynchronous calls: 202 only once JetStream holds the whole request, clear errors otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from nats.js import JetStreamContext
from yarl import URL

from autoscaler.config import ProxySettings
from autoscaler.proxy import Proxy
from autoscaler.queue import QueuedCall, subject
from tests.queue.conftest import Stack
from tests.support.fakeprovider import FakeProvider

pytestmark = pytest.mark.nats


async def queued(js: JetStreamContext, stack: Stack) -> list[QueuedCall]:
    """Every call on the queue stream, in order, read back from the real server."""
    info = await js.stream_info(stack.queue.queue_name)
    calls: list[QueuedCall] = []
    if info.state.messages == 0:
        return calls
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(stack.queue.queue_name, seq)
        calls.append(QueuedCall.decode(raw.headers, raw.data or b""))
    return calls


class TestAnAcceptedCall:
    async def test_is_answered_202_with_a_call_id_once_the_whole_request_is_on_the_stream(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        await stack.provider.add("hello")
        async with client.post(
            f"{stack.base}/async-function/hello/some/path?x=1&y=two",
            data=b"the input",
            headers={"X-Callback-Url": "http://127.0.0.1:9/cb", "X-Custom": "kept"},
        ) as response:
            assert response.status == 202, await response.text()
            call_id = response.headers["X-Call-Id"]
        [call] = await queued(js, stack)
        assert call.call_id == call_id
        assert call.ref.key == "hello.openfaas-fn"
        assert (call.method, call.path, call.query) == ("POST", "/some/path", "x=1&y=two")
        assert call.body == b"the input"
        assert call.callback_url == "http://127.0.0.1:9/cb"
        assert ("X-Custom", "kept") in call.headers
        info = await js.stream_info(stack.queue.queue_name, subjects_filter=">")
        assert info.state.subjects == {subject(stack.queue.queue_name, call.ref): 1}

    async def test_keeps_the_callers_call_id_and_the_put_method(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        await stack.provider.add("hello", "team-a")
        async with client.put(
            f"{stack.base}/async-function/hello.team-a", data=b"x", headers={"X-Call-Id": "mine-123"}
        ) as response:
            assert response.status == 202
            assert response.headers["X-Call-Id"] == "mine-123"
        [call] = await queued(js, stack)
        assert (call.call_id, call.method, call.path, call.ref.namespace) == (
            "mine-123",
            "PUT",
            "/",
            "team-a",
        )

    async def test_sent_again_with_the_same_call_id_is_queued_once_and_says_so(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        await stack.provider.add("hello")
        for _ in range(2):
            async with client.post(
                f"{stack.base}/async-function/hello", data=b"once", headers={"X-Call-Id": "resent-1"}
            ) as response:
                assert response.status == 202
                text = await response.text()
        assert response.headers["X-Duplicate"] == "true"
        assert "already queued" in text
        assert [call.call_id for call in await queued(js, stack)] == ["resent-1"]
        assert stack.acceptor.accepted("hello.openfaas-fn") == 1

    async def test_without_a_body_is_queued_as_the_gateway_queues_it(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        # openfaas/faas gateway/handlers/queue_proxy.go queues whatever body it read, none included
        # (a timer that only pokes a function); it was a 400 here.
        await stack.provider.add("hello")
        async with client.post(f"{stack.base}/async-function/hello") as response:
            assert response.status == 202, await response.text()
        [call] = await queued(js, stack)
        assert call.body == b""

    async def test_one_call_id_for_another_function_or_another_body_is_a_call_of_its_own(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        # A callback chaining one asynchronous function to the next carries the first call's id: the
        # second step was dropped as a duplicate of the first.
        await stack.provider.add("hello")
        await stack.provider.add("next")
        sent = [("hello", b"step 1"), ("next", b"step 1"), ("hello", b"step 2")]
        for name, body in sent:
            async with client.post(
                f"{stack.base}/async-function/{name}", data=body, headers={"X-Call-Id": "chain-1"}
            ) as response:
                assert response.status == 202
                assert "X-Duplicate" not in response.headers
        calls = await queued(js, stack)
        assert sorted((call.ref.name, call.body) for call in calls) == sorted(sent)
        assert {call.call_id for call in calls} == {"chain-1"}  # the caller's id reaches every step

    async def test_with_expect_100_continue_gets_the_go_ahead_for_its_body(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        await stack.provider.add("hello")
        body = b"z" * 200_000
        async with asyncio.timeout(5):  # a client waiting for a 100 Continue that never comes hangs
            async with client.post(
                f"{stack.base}/async-function/hello", data=body, expect100=True
            ) as response:
                assert response.status == 202, await response.text()
        [call] = await queued(js, stack)
        assert call.body == body

    async def test_carries_the_functions_retry_labels(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        await stack.provider.add("hello", labels={"com.openfaas.retry.attempts": "3", "other": "no"})
        async with client.post(f"{stack.base}/async-function/hello", data=b"x") as response:
            assert response.status == 202
        [call] = await queued(js, stack)
        assert dict(call.retry) == {"com.openfaas.retry.attempts": "3"}


class TestARefusedCall:
    async def test_for_an_unknown_function_is_404_and_nothing_is_queued(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        async with client.post(f"{stack.base}/async-function/nobody", data=b"x") as response:
            assert response.status == 404
            assert "function nobody.openfaas-fn not found" in await response.text()
        assert await queued(js, stack) == []
        assert stack.acceptor.rejected("not_found") == 1

    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    async def test_over_the_body_limit_is_413(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext, chunked: bool
    ) -> None:
        await stack.provider.add("hello")
        body = b"x" * (stack.queue.async_max_body + 1)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        async with client.post(
            f"{stack.base}/async-function/hello", data=chunks() if chunked else body
        ) as response:
            assert response.status == 413
            assert f"the limit is {stack.queue.async_max_body} bytes" in await response.text()
        assert await queued(js, stack) == []

    async def test_at_the_body_limit_is_accepted(self, stack: Stack, client: aiohttp.ClientSession) -> None:
        await stack.provider.add("hello")
        body = b"y" * stack.queue.async_max_body
        async with client.post(f"{stack.base}/async-function/hello", data=body) as response:
            assert response.status == 202, await response.text()

    @pytest.mark.parametrize("url", ["not a url", "ftp://host/x", "/relative/path", "http://"])
    async def test_with_a_bad_callback_url_is_400(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext, url: str
    ) -> None:
        await stack.provider.add("hello")
        async with client.post(
            f"{stack.base}/async-function/hello", data=b"x", headers={"X-Callback-Url": url}
        ) as response:
            assert response.status == 400
            assert "invalid X-Callback-Url" in await response.text()
        assert await queued(js, stack) == []

    async def test_with_credentials_in_the_callback_url_is_400_saying_so(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        await stack.provider.add("hello")
        url = "http://user:secret@127.0.0.1:9099/x"
        async with client.post(
            f"{stack.base}/async-function/hello", data=b"x", headers={"X-Callback-Url": url}
        ) as response:
            assert response.status == 400
            assert "it carries credentials (user:password@)" in await response.text()
        assert await queued(js, stack) == []

    async def test_with_two_callback_urls_is_400_not_the_first_taken(
        self, stack: Stack, client: aiohttp.ClientSession, js: JetStreamContext
    ) -> None:
        await stack.provider.add("hello")
        headers = [
            ("X-Callback-Url", "http://127.0.0.1:9099/a"),
            ("X-Callback-Url", "http://127.0.0.1:9099/b"),
        ]
        async with client.post(f"{stack.base}/async-function/hello", data=b"x", headers=headers) as response:
            assert response.status == 400
            assert "more than one X-Callback-Url" in await response.text()
        assert await queued(js, stack) == []

    async def test_with_get_is_405(self, stack: Stack, client: aiohttp.ClientSession) -> None:
        await stack.provider.add("hello")
        async with client.get(f"{stack.base}/async-function/hello") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST, PUT"

    @pytest.mark.parametrize("path", ["/async-function/hello/../other", "/async-function/hello/%2e%2e/x"])
    async def test_with_a_path_that_steps_out_of_the_route_is_400(
        self, stack: Stack, client: aiohttp.ClientSession, path: str
    ) -> None:
        await stack.provider.add("hello")
        async with client.post(URL(f"{stack.base}{path}", encoded=True), data=b"x") as response:
            assert response.status == 400
            assert "invalid path" in await response.text()

    async def test_with_jetstream_down_is_503_with_a_clear_body(
        self, stack: Stack, client: aiohttp.ClientSession
    ) -> None:
        await stack.provider.add("hello")
        stack.nats.kill()
        async with client.post(f"{stack.base}/async-function/hello", data=b"x") as response:
            assert response.status == 503
            text = await response.text()
        assert "the queue is unavailable" in text
        assert stack.acceptor.rejected("unavailable") == 1
        assert "nothing was queued" in text or "retry later" in text

    async def test_is_accepted_again_once_nats_is_back(
        self, stack: Stack, client: aiohttp.ClientSession
    ) -> None:
        await stack.provider.add("hello")
        stack.nats.stop()
        async with client.post(f"{stack.base}/async-function/hello", data=b"x") as response:
            assert response.status == 503
        stack.nats.start()
        for _ in range(100):  # the client reconnects every 0.5 s
            async with client.post(f"{stack.base}/async-function/hello", data=b"x") as response:
                if response.status == 202:
                    break
            await asyncio.sleep(0.1)
        assert response.status == 202


class TestAProxyWithoutAnAcceptor:
    async def test_answers_async_routes_as_before(self, client: aiohttp.ClientSession) -> None:
        provider = FakeProvider()
        await provider.add("hello")
        proxy = Proxy(settings=ProxySettings(host="127.0.0.1", port=0, admin_port=0), provider=provider)
        await proxy.start()
        try:
            async with client.post(
                f"http://127.0.0.1:{proxy.port}/async-function/hello", data=b"x"
            ) as response:
                assert response.status == 404
        finally:
            await proxy.stop()
            await provider.close()
