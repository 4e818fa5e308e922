"""WebSocket calls pass through the proxy: warm and from zero, spliced until either side closes.

The function is a real aiohttp WebSocket server started by the test; the caller is aiohttp's
WebSocket client (or a raw socket where a case needs bytes aiohttp would not send).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider
from tests.support.waiting import until


@dataclass
class WsFunction:
    """A function replica that speaks WebSocket on /ws and plain HTTP elsewhere."""

    url: str = ""
    upgrades: list[tuple[str, str]] = field(default_factory=list)  # (Connection, Upgrade) received
    closed_by_client: list[int | None] = field(default_factory=list)  # close codes the client sent
    open_sockets: int = 0

    async def ws(self, request: web.Request) -> web.StreamResponse:
        self.upgrades.append((request.headers.get("Connection", ""), request.headers.get("Upgrade", "")))
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.open_sockets += 1
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT and message.data == "close-me":
                    await ws.close(code=4000, message=b"the function closes")
                elif message.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str("echo: " + message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(message.data)
            if ws.close_code != 4000:
                self.closed_by_client.append(ws.close_code)
        finally:
            self.open_sockets -= 1
        return ws

    async def silent(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await asyncio.sleep(3600)  # answers 101, then never a byte
        return ws

    async def plain(self, request: web.Request) -> web.StreamResponse:
        self.upgrades.append((request.headers.get("Connection", ""), request.headers.get("Upgrade", "")))
        return web.Response(text="no switch here")


@pytest.fixture
async def function() -> AsyncIterator[WsFunction]:
    fn = WsFunction()
    app = web.Application()
    app.router.add_get("/ws", fn.ws)
    app.router.add_get("/silent", fn.silent)
    app.router.add_get("/plain", fn.plain)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fn.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fn
    await runner.cleanup()


async def test_a_websocket_echo_passes_through_a_warm_function_with_its_upgrade_headers(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, function: WsFunction
) -> None:
    await provider.add("chat", url=function.url)
    proxy = await make_proxy()
    big = bytes(range(256)) * 12 * 1024  # 3 MiB: more than every buffer on the way
    async with client.ws_connect(base(proxy) + "/function/chat/ws") as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str(timeout=5)) == "echo: hello"
        await ws.send_bytes(big)
        assert (await ws.receive_bytes(timeout=10)) == big
        await ws.send_str("again")
        assert (await ws.receive_str(timeout=5)) == "echo: again"
    assert [(c.lower(), u.lower()) for c, u in function.upgrades] == [("upgrade", "websocket")]


async def test_a_websocket_to_a_function_at_zero_is_held_through_the_wake_up_then_spliced(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, function: WsFunction
) -> None:
    ref = await provider.add("chat", warm=False, url=function.url)
    proxy = await make_proxy()
    async with client.ws_connect(
        base(proxy) + "/function/chat/ws", timeout=aiohttp.ClientWSTimeout(10)
    ) as ws:
        assert ws._response.headers.get("X-Autoscaler-Cold-Start") is not None
        await ws.send_str("after the cold start")
        assert (await ws.receive_str(timeout=5)) == "echo: after the cold start"
    assert provider.scale_calls == [(ref, 1)]
    assert len(provider.mark_active_calls) == 1  # the wake-up's mark, once at the start


async def test_the_function_closing_first_closes_the_clients_socket_and_ends_the_call(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, function: WsFunction
) -> None:
    ref = await provider.add("chat", url=function.url)
    proxy = await make_proxy()
    async with client.ws_connect(base(proxy) + "/function/chat/ws") as ws:
        await ws.send_str("close-me")
        message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4000
    await until(lambda: not proxy.busy(ref.key), within=5, what="the call to end after the close")
    stats = proxy.invocation_stats()[ref.key]
    assert (stats.started_total, stats.completed_total, stats.inflight) == (1, 1, 0)


async def test_the_client_closing_first_reaches_the_function_and_ends_the_call(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, function: WsFunction
) -> None:
    ref = await provider.add("chat", url=function.url)
    proxy = await make_proxy()
    ws = await client.ws_connect(base(proxy) + "/function/chat/ws")
    await ws.send_str("ping")
    assert (await ws.receive_str(timeout=5)) == "echo: ping"
    await ws.close(code=1000)
    await until(lambda: function.closed_by_client == [1000], within=5, what="the function to see the close")
    await until(lambda: not proxy.busy(ref.key), within=5, what="the call to end after the close")
    assert function.open_sockets == 0


async def test_the_function_is_busy_for_as_long_as_its_websocket_is_open(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, function: WsFunction
) -> None:
    ref = await provider.add("chat", url=function.url, labels={"com.openfaas.scale.zero": "true"})
    proxy = await make_proxy()
    async with client.ws_connect(base(proxy) + "/function/chat/ws") as ws:
        for index in range(3):
            await ws.send_str(f"message {index}")
            assert (await ws.receive_str(timeout=5)) == f"echo: message {index}"
            await asyncio.sleep(0.3)
            assert proxy.busy(ref.key)
            assert proxy.invocation_stats()[ref.key].inflight == 1
        assert len(provider.mark_active_calls) == 1  # marked once, at the start, not per message
    await until(lambda: not proxy.busy(ref.key), within=5, what="the call to end after the close")


async def test_a_function_that_answers_101_and_then_sends_nothing_is_cut_after_the_upstream_timeout(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, function: WsFunction
) -> None:
    ref = await provider.add("chat", url=function.url)
    proxy = await make_proxy(upstream_timeout=1.0)
    async with client.ws_connect(base(proxy) + "/function/chat/silent", autoping=False) as ws:
        assert proxy.busy(ref.key)
        message = await ws.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    await until(lambda: not proxy.busy(ref.key), within=5, what="the silent tunnel to be closed")


def _exchange(port: int, request: bytes, *, then: bytes = b"") -> bytes:
    """Send `request` (and `then` after the first answer) on one raw connection; all that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        got = b""
        while b"no switch here" not in got:
            chunk = sock.recv(65536)
            assert chunk, f"closed before the first answer: {got!r}"
            got += chunk
        sock.sendall(then)
        while then and got.count(b"HTTP/1.1 ") < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


async def test_an_upgrade_the_function_declines_is_relayed_as_its_ordinary_answer_and_the_connection_goes_on(
    provider: FakeProvider, make_proxy: MakeProxy, function: WsFunction
) -> None:
    await provider.add("chat", url=function.url)
    proxy = await make_proxy()
    upgrade = (
        b"GET /function/chat/plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    plain = b"GET /function/chat/plain HTTP/1.1\r\nHost: x\r\n\r\n"
    got = await asyncio.to_thread(_exchange, proxy.port, upgrade, then=plain)
    first, _, second = got.partition(b"no switch here")
    assert first.startswith(b"HTTP/1.1 200 ")
    assert b"upgrade" not in first.split(b"\r\n\r\n")[0].lower()
    assert second.startswith(b"HTTP/1.1 200 ")
    assert second.endswith(b"no switch here")
    assert [(c.lower(), u.lower()) for c, u in function.upgrades] == [("upgrade", "websocket"), ("", "")]


async def test_an_open_websocket_takes_no_pooled_connection_from_ordinary_calls_to_the_same_replica(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, function: WsFunction
) -> None:
    await provider.add("chat", url=function.url)
    proxy = await make_proxy(upstream_connections=1)
    async with client.ws_connect(base(proxy) + "/function/chat/ws") as ws:
        await ws.send_str("open")
        assert (await ws.receive_str(timeout=5)) == "echo: open"
        for _ in range(3):  # one connection allowed per replica: the WebSocket's is not counted
            async with client.get(
                base(proxy) + "/function/chat/plain", timeout=aiohttp.ClientTimeout(5)
            ) as r:
                assert (r.status, await r.text()) == (200, "no switch here")
        await ws.send_str("still open")
        assert (await ws.receive_str(timeout=5)) == "echo: still open"


async def test_a_tunnel_with_traffic_outlives_the_upstream_timeout(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, function: WsFunction
) -> None:
    await provider.add("chat", url=function.url)
    proxy = await make_proxy(upstream_timeout=0.5)
    async with client.ws_connect(base(proxy) + "/function/chat/ws", autoping=False) as ws:
        for index in range(6):  # 1.2 s in all, never 0.5 s without a byte
            await ws.send_str(f"tick {index}")
            assert (await ws.receive_str(timeout=5)) == f"echo: tick {index}"
            await asyncio.sleep(0.2)


async def test_stopping_the_proxy_closes_an_open_websocket_after_the_drain_grace(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, function: WsFunction
) -> None:
    ref = await provider.add("chat", url=function.url)
    proxy = await make_proxy()
    async with client.ws_connect(base(proxy) + "/function/chat/ws") as ws:
        await ws.send_str("open")
        assert (await ws.receive_str(timeout=5)) == "echo: open"
        loop = asyncio.get_running_loop()
        began = loop.time()
        await proxy.drain(grace=0.3)
        assert proxy.busy(ref.key)  # the grace is over; the socket is still open until the stop
        await proxy.stop()
        message = await ws.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert loop.time() - began < 4
    await until(lambda: function.open_sockets == 0, within=5, what="the function's socket to close")
