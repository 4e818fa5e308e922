"""Upgraded connections in bytes: half-closes, the 101 head the client gets, and pass-through.

The function here is a raw asyncio server that switches to `Upgrade: websocket` (a plain byte stream):
it echoes what it reads, and after the client's half-close it sends one last line and closes, so a
tunnel that cut both directions at the first EOF would lose that line.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import HttpVersion, HttpVersion10, HttpVersion11, web
from multidict import CIMultiDict, CIMultiDictProxy

from autoscaler.proxy._upgrades import asked_upgrade
from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider
from tests.support.rawswitch import Switcher, switch, until_closed
from tests.support.waiting import until

SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


async def _tcp_function(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    if b"upgrade: websocket" not in head.lower():
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    else:
        writer.write(SWITCH + b"welcome\n")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write(b"bye after your half-close\n")
    await writer.drain()
    writer.close()


def _stop_reading(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()


class Flood:
    """A client writing 1 MiB blocks (NUL bytes: as HTTP, a malformed request) until it is held back."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.sent = 0
        self._writer = writer
        self.task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        block = bytes(1024 * 1024)
        while True:
            self._writer.write(block)
            await self._writer.drain()  # blocks while the proxy stops reading
            self.sent += len(block)

    async def until_stalled(self) -> None:
        """Until the writes stop advancing; fails if the connection was cut instead."""
        seen = -1
        for _ in range(100):
            if self.sent == seen:
                break
            seen = self.sent
            await asyncio.sleep(0.3)
        assert not self.task.done()  # held back, not cut


@pytest.fixture
async def tcp_function() -> AsyncIterator[str]:
    server = await asyncio.start_server(_tcp_function, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


def _half_closing_call(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n".encode()
        )
        got = b""
        while b"welcome\n" not in got:
            chunk = sock.recv(65536)
            assert chunk, f"closed before the switch: {got!r}"
            got += chunk
        sock.sendall(b"one\n")
        sock.sendall(b"two\n")
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            got += chunk
        return got


async def test_a_half_close_from_the_client_reaches_the_function_and_its_last_words_still_come_back(
    provider: FakeProvider, make_proxy: MakeProxy, tcp_function: str
) -> None:
    ref = await provider.add("pipe", url=tcp_function)
    proxy = await make_proxy()
    got = await asyncio.to_thread(_half_closing_call, proxy.port, "/function/pipe/")
    head, _, rest = got.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "http/1.1 101 switching protocols"
    assert "connection: upgrade" in lines
    assert "upgrade: websocket" in lines
    assert not any(line.startswith(("content-length", "transfer-encoding")) for line in lines)
    assert rest == b"welcome\none\ntwo\nbye after your half-close\n"
    await until(lambda: not proxy.busy(ref.key), within=5, what="the call to end")


async def test_a_client_that_reads_nothing_holds_the_function_back_instead_of_filling_the_proxy(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    offered = 256 * 1024 * 1024
    written = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCH)
        block = bytes(1024 * 1024)
        try:
            while written < offered:
                writer.write(block)
                await writer.drain()  # blocks while the proxy stops reading
                written += len(block)
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    try:
        ref = await provider.add("flood", url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        proxy = await make_proxy()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, limit=1024)
        writer.write(
            b"GET /function/flood/ HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 101 ")
        _stop_reading(writer)  # the client reads nothing more
        seen = -1
        for _ in range(100):  # until the function's writes stall (or it wrote everything)
            if written in (seen, offered):
                break
            seen = written
            await asyncio.sleep(0.3)
        assert written < 64 * 1024 * 1024, f"the function wrote {written} bytes to a client reading none"
        assert proxy.busy(ref.key)  # held back, not cut
        writer.close()
    finally:
        server.close()


async def test_a_function_that_reads_nothing_holds_the_client_back_instead_of_filling_the_proxy(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        _stop_reading(writer)  # the function reads nothing more
        writer.write(SWITCH)
        await asyncio.sleep(30)

    server = await asyncio.start_server(deaf, "127.0.0.1", 0, limit=1024)
    try:
        ref = await provider.add("deaf", url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        proxy = await make_proxy()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"GET /function/deaf/ HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 101 ")
        flood = Flood(writer)
        await flood.until_stalled()
        assert proxy.busy(ref.key)
        flood.task.cancel()
        writer.transport.abort()
        assert flood.sent < 64 * 1024 * 1024, f"the client sent {flood.sent} bytes to a function reading none"
    finally:
        server.close()


StartSwitcher = Callable[..., Awaitable[Switcher]]


@pytest.fixture
async def switcher() -> AsyncIterator[StartSwitcher]:
    servers: list[asyncio.Server] = []

    async def start(protocol: bytes, **kwargs: Any) -> Switcher:
        fn = Switcher(protocol, **kwargs)
        server = await asyncio.start_server(fn.serve, "127.0.0.1", 0)
        servers.append(server)
        fn.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return fn

    yield start
    for server in servers:
        server.close()


FOO = b"GET /function/foo/chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n"


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "blank-line-across-reads"])
async def test_a_custom_protocol_upgrade_is_spliced_both_ways_with_the_bytes_sent_before_the_101(
    provider: FakeProvider, make_proxy: MakeProxy, switcher: StartSwitcher, split: bool
) -> None:
    fn = await switcher(b"foo/1", greeting=b"foo ready\n")
    ref = await provider.add("foo", url=fn.url)
    proxy = await make_proxy()
    writes = [FOO[:-1], FOO[-1:] + b"early\n"] if split else [FOO + b"early\n"]
    got = await asyncio.to_thread(switch, proxy.port, writes, until=b"foo ready\n", then=b"late\n")
    head, _, rest = got.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 101 switching protocols"
    assert b"upgrade: foo/1" in lines
    assert b"connection: upgrade" in lines
    assert rest == b"foo ready\nearly\nlate\nbye\n"
    assert fn.tunnelled == b"early\nlate\n"  # what came before the 101 reached the function first
    assert b"\r\nconnection: upgrade\r\n" in fn.heads[0]
    await until(lambda: not proxy.busy(ref.key), within=5, what="the call to end")


async def test_an_h2c_upgrade_reaches_the_function_with_its_settings_and_http2_bytes_flow_both_ways(
    provider: FakeProvider, make_proxy: MakeProxy, switcher: StartSwitcher
) -> None:
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    fn = await switcher(b"h2c", greeting=settings)
    await provider.add("h2", url=fn.url)
    proxy = await make_proxy()
    head = (
        b"GET /function/h2/ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    )
    got = await asyncio.to_thread(switch, proxy.port, [head], until=settings, then=preface + settings)
    answer, _, rest = got.partition(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nupgrade: h2c" in answer.lower()
    assert rest == settings + preface + settings + b"bye\n"
    assert b"\r\nconnection: upgrade, http2-settings\r\n" in fn.heads[0]
    assert b"\r\nhttp2-settings: aamaaabkaaqaap__\r\n" in fn.heads[0]


async def test_an_upgrade_to_a_function_at_zero_is_held_through_the_wake_up_with_what_followed_its_head(
    provider: FakeProvider, make_proxy: MakeProxy, switcher: StartSwitcher
) -> None:
    fn = await switcher(b"foo/1", greeting=b"foo ready\n")
    ref = await provider.add("foo", warm=False, url=fn.url)
    proxy = await make_proxy()
    got = await asyncio.to_thread(
        switch, proxy.port, [FOO + b"early\n"], until=b"foo ready\n", then=b"late\n"
    )
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nx-autoscaler-cold-start: " in head.lower()
    assert rest == b"foo ready\nearly\nlate\nbye\n"
    assert provider.scale_calls == [(ref, 1)]


async def test_a_client_that_sends_on_before_the_101_is_held_back_instead_of_filling_the_proxy(
    provider: FakeProvider, make_proxy: MakeProxy, switcher: StartSwitcher
) -> None:
    fn = await switcher(b"foo/1")
    ref = await provider.add("foo", warm=False, url=fn.url, ready_delay=60)  # held all along
    proxy = await make_proxy()
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(FOO)
    flood = Flood(writer)
    await flood.until_stalled()
    assert proxy.invocation_stats()[ref.key].held == 1
    assert flood.sent < 16 * 1024 * 1024, f"the client sent {flood.sent} bytes before any answer"
    flood.task.cancel()
    provider.ready_now(ref)  # the function switches: everything the client sent reaches it
    sent = flood.sent
    await until(lambda: len(fn.tunnelled) >= sent, within=10, what=lambda: f"{len(fn.tunnelled)} of {sent}")
    assert not any(fn.tunnelled)  # all of it the client's bytes, none of it parsed as HTTP
    writer.transport.abort()


@pytest.mark.parametrize("later", [False, True], ids=["in-the-same-read", "in-a-later-read"])
async def test_a_declined_upgrade_closes_the_connection_and_what_followed_its_head_is_no_request(
    provider: FakeProvider, make_proxy: MakeProxy, switcher: StartSwitcher, later: bool
) -> None:
    fn = await switcher(b"foo/1", delay=0.3)
    await provider.add("foo", url=fn.url)
    proxy = await make_proxy()
    head = b"GET /function/foo/first HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: bar\r\n\r\n"
    smuggled = b"GET /function/foo/second HTTP/1.1\r\nHost: x\r\n\r\n"
    got = await asyncio.to_thread(until_closed, proxy.port, [head, smuggled] if later else [head + smuggled])
    assert got.startswith(b"HTTP/1.1 200 ")
    assert got.endswith(b"no switch")  # one answer, then the close
    assert got.count(b"HTTP/1.1 ") == 1
    assert b"\r\nconnection: close\r\n" in got.lower()
    assert [head.split(b" ")[1] for head in fn.heads] == [b"/first"]
    assert b"\r\nupgrade: bar\r\n" in fn.heads[0]  # the function was asked, and declined


async def test_a_101_to_a_protocol_the_client_did_not_ask_for_is_a_502_and_the_connection_closes(
    provider: FakeProvider, make_proxy: MakeProxy, switcher: StartSwitcher
) -> None:
    fn = await switcher(b"foo/1", claims=b"other/2")  # asked for foo/1, it switches to other/2
    await provider.add("foo", url=fn.url)
    proxy = await make_proxy()
    got = await asyncio.to_thread(until_closed, proxy.port, [FOO])
    assert got.startswith(b"HTTP/1.1 502 ")
    assert b"switched to 'other/2'" in got
    assert b"\r\nconnection: close\r\n" in got.lower()


UNRELAYED = {
    "http-1.0": b"GET /function/foo/ HTTP/1.0\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo/1\r\n\r\n",
    "with-a-body": (
        b"POST /function/foo/ HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo/1\r\n"
        b"Content-Length: 4\r\n\r\ndata"
    ),
    "behind-another-request-in-one-read": (
        b"GET /function/foo/a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /function/foo/b HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo/1\r\n\r\n"
    ),
}


@pytest.mark.parametrize("request_bytes", UNRELAYED.values(), ids=UNRELAYED.keys())
async def test_an_upgrade_the_proxy_does_not_relay_reaches_the_function_without_its_upgrade_headers(
    provider: FakeProvider, make_proxy: MakeProxy, switcher: StartSwitcher, request_bytes: bytes
) -> None:
    fn = await switcher(b"foo/1")
    await provider.add("foo", url=fn.url)
    proxy = await make_proxy()
    got = await asyncio.to_thread(until_closed, proxy.port, [request_bytes])
    assert got.startswith(b"HTTP/1.")
    assert b" 200 OK\r\n" in got
    assert got.endswith(b"no switch")  # answered, then closed
    assert fn.heads
    assert not any(b"upgrade" in head for head in fn.heads)


async def test_a_101_to_a_request_that_asked_for_no_upgrade_is_a_502(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    async def switch_anyway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCH)
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(switch_anyway, "127.0.0.1", 0)
    try:
        await provider.add("rogue", url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        proxy = await make_proxy()
        async with client.get(base(proxy) + "/function/rogue/") as response:
            assert response.status == 502
    finally:
        server.close()


async def test_a_websocket_passed_through_to_the_provider_is_spliced_like_a_function_call(
    make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    async def logs(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"provider: {message.data}")
        return ws

    app = web.Application()
    app.router.add_get("/system/stream", logs)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        proxy = await make_proxy(provider_url=f"http://127.0.0.1:{runner.addresses[0][1]}")
        async with client.ws_connect(base(proxy) + "/system/stream") as ws:
            await ws.send_str("tail")
            assert (await ws.receive_str(timeout=5)) == "provider: tail"
    finally:
        await runner.cleanup()


async def test_a_custom_upgrade_passed_through_to_the_provider_is_spliced_like_a_function_call(
    make_proxy: MakeProxy, switcher: StartSwitcher
) -> None:
    fn = await switcher(b"foo/1", greeting=b"provider ready\n")
    proxy = await make_proxy(provider_url=fn.url)
    head = b"GET /system/logs HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo/1\r\n\r\n"
    got = await asyncio.to_thread(
        switch, proxy.port, [head + b"early\n"], until=b"provider ready\n", then=b"late\n"
    )
    assert got.startswith(b"HTTP/1.1 101 ")
    assert got.endswith(b"\r\n\r\nprovider ready\nearly\nlate\nbye\n")
    assert fn.heads[0].startswith(b"get /system/logs ")


ASKED = [  # (version, header lines, the protocols asked for)
    (HttpVersion11, [("Connection", "keep-alive, Upgrade"), ("Upgrade", "h2c")], "h2c"),
    (HttpVersion11, [("Connection", "keep-alive"), ("Connection", "upgrade"), ("Upgrade", "foo/1")], "foo/1"),
    (HttpVersion11, [("Connection", "upgrade"), ("Upgrade", "foo/1"), ("Upgrade", "bar")], "foo/1, bar"),
    (HttpVersion11, [("Upgrade", "h2c")], None),  # no `upgrade` in Connection
    (HttpVersion10, [("Connection", "upgrade"), ("Upgrade", "h2c")], None),  # ignored on HTTP/1.0
    (HttpVersion11, [("Connection", "upgrade"), ("Upgrade", "foo bar")], None),  # not a protocol list
    (HttpVersion11, [("Connection", "upgrade"), ("Upgrade", "")], None),
]


@pytest.mark.parametrize(("version", "lines", "asked"), ASKED)
def test_a_request_asks_to_switch_only_as_rfc_9110_allows(
    version: HttpVersion, lines: list[tuple[str, str]], asked: str | None
) -> None:
    assert asked_upgrade(version, CIMultiDictProxy(CIMultiDict(lines))) == asked
